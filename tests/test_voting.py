"""The voting phase of 2PRASHB: ballots from real losses, the tally, the tie rule, the secure tally."""

from __future__ import annotations

import numpy as np
import pytest

from rfa.models import LeastSquares
from rfa.voting import ABSTAIN, INNER, OUTER, cast_ballots, elect, secure_tally, tally
from secagg import SecureAverageOracle


def test_the_candidate_with_more_votes_wins():
    assert elect(*tally([INNER, OUTER, OUTER, ABSTAIN])).winner == OUTER
    assert elect(*tally([INNER, INNER, OUTER])).winner == INNER


def test_a_tie_and_an_empty_election_go_to_inner():
    assert elect(*tally([INNER, OUTER, ABSTAIN, ABSTAIN])).winner == INNER
    empty = elect(*tally([ABSTAIN, ABSTAIN]), round=3)
    assert (empty.inner_votes, empty.outer_votes, empty.abstained, empty.winner_name) == (0, 0, 2, "inner")
    assert empty.round == 3


def test_tally_rejects_anything_but_the_three_ballots():
    with pytest.raises(ValueError, match="ballots"):
        tally([0, 1, 2])
    with pytest.raises(ValueError, match="ballots"):
        tally([0.0, 1.0])


def _voters(n: int, seed: int = 0):
    """n clients of y = x . (1, -1) + small noise; Outer (the truth) beats Inner (zero) on any batch."""
    rng = np.random.default_rng(seed)
    truth = np.array([1.0, -1.0])
    voters = []
    for _ in range(n):
        X = rng.normal(size=(20, 2))
        voters.append((X, X @ truth + 0.01 * rng.normal(size=20)))
    candidates = np.stack([np.zeros(2), truth])  # [Inner, Outer]
    return LeastSquares(2), candidates, voters


def test_honest_voters_vote_for_the_lower_loss_and_corrupted_ones_for_the_higher():
    model, candidates, voters = _voters(6)
    corrupted = np.array([False, True, False, True, False, False])
    ballots = cast_ballots(model, candidates, voters, corrupted, batch_size=4, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(ballots, np.where(corrupted, INNER, OUTER))
    assert elect(*tally(ballots)).winner == OUTER  # honest majority


def test_a_corrupted_majority_voting_for_the_worse_candidate_wins_and_abstaining_ones_cannot():
    model, candidates, voters = _voters(5)
    corrupted = np.array([True, True, True, False, False])
    worse = cast_ballots(model, candidates, voters, corrupted, batch_size=4, rng=np.random.default_rng(1))
    assert elect(*tally(worse)).winner == INNER
    abstain = cast_ballots(model, candidates, voters, corrupted, batch_size=4, rng=np.random.default_rng(1),
                           corrupted_vote="abstain")
    np.testing.assert_array_equal(abstain, [ABSTAIN] * 3 + [OUTER] * 2)
    assert elect(*tally(abstain)) == elect(0, 2, 3)


def test_identical_candidates_get_every_honest_vote_for_inner():
    model, candidates, voters = _voters(4)
    same = np.stack([candidates[1], candidates[1]])
    ballots = cast_ballots(model, same, voters, np.zeros(4, dtype=bool), batch_size=4, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(ballots, [INNER] * 4)


def test_cast_ballots_checks_the_corrupted_mask_and_the_behaviour():
    model, candidates, voters = _voters(3)
    with pytest.raises(ValueError, match="one entry per voter"):
        cast_ballots(model, candidates, voters, np.zeros(2, dtype=bool), batch_size=2, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="worse"):
        cast_ballots(model, candidates, voters, np.zeros(3, dtype=bool), batch_size=2, rng=np.random.default_rng(0),
                     corrupted_vote="random")


def test_secure_tally_through_the_oracle_equals_the_plaintext_tally():
    ballots = np.array([INNER, OUTER, OUTER, ABSTAIN, INNER, OUTER])
    oracle = SecureAverageOracle(2 / 3, value_bound=1.0, weight_bound=1.0, max_clients=8, seed=0)
    assert secure_tally(ballots, oracle) == tally(ballots) == (2, 3, 1)
    assert oracle.calls == 1
    assert secure_tally([ABSTAIN, ABSTAIN], oracle) == (0, 0, 2)


def test_secure_tally_refuses_an_oracle_whose_bounds_let_one_ballot_count_as_many():
    loose = SecureAverageOracle(2 / 3, value_bound=1e3, weight_bound=1.0, max_clients=8, seed=0)
    with pytest.raises(ValueError, match="value_bound=1"):
        secure_tally([INNER, OUTER], loose)
