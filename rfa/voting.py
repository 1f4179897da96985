"""The voting phase of 2PRASHB (Yi et al., AAAI 2024, Algorithm 3, lines 6-10): ballots, tally, election.

After the prepare phase (``rfa.aggregators.TwoPhaseRule.candidates``) the server
sends both candidate models to the round's clients.  Each honest client
evaluates the loss of both on a fresh mini-batch of its own data and votes for
the smaller (line 8).  Corrupted clients vote for the larger, or abstain
(footnote 3: a Byzantine worker may send anything or nothing).  One client, one
vote; the candidate with more votes wins (line 10).

Tie rule: a tie, including an election in which nobody voted, goes to Inner
(CenterwO / MeanwO), and an honest client that sees two exactly equal losses
votes Inner.  Inner's error is bounded by the spread of the honest updates
whatever the corrupted ones send (Theorem 2); Outer keeps every far outlier
outside the removed cluster, so without a majority for it the bounded choice
stands.

What the server learns is the two counts (and who did not vote);
``secure_tally`` computes the counts through the secure average oracle from
one-hot ballots, so it learns nothing else about who voted for what.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from numpy.typing import ArrayLike

from secagg import SecureAverageOracle

from .errors import InvalidArgument
from .models import Model, draw_batch

__all__ = ["ABSTAIN", "INNER", "OUTER", "CorruptedVote", "Election", "cast_ballots", "elect", "secure_tally", "tally"]

INNER, OUTER, ABSTAIN = 0, 1, -1
CANDIDATE_NAMES = ("inner", "outer")
CorruptedVote = Literal["worse", "abstain"]


@dataclass(frozen=True)
class Election:
    """One round's vote: the counts and the elected candidate (INNER or OUTER)."""

    round: int
    inner_votes: int
    outer_votes: int
    abstained: int
    winner: int

    @property
    def winner_name(self) -> str:
        return CANDIDATE_NAMES[self.winner]


def _check_ballots(ballots: ArrayLike) -> np.ndarray:
    b = np.asarray(ballots)
    if b.ndim != 1 or not np.issubdtype(b.dtype, np.integer) or not np.isin(b, (INNER, OUTER, ABSTAIN)).all():
        raise InvalidArgument(f"ballots must be a 1-D integer array of INNER={INNER}, OUTER={OUTER} or ABSTAIN={ABSTAIN}")
    return b


def tally(ballots: ArrayLike) -> tuple[int, int, int]:
    """(votes for Inner, votes for Outer, abstentions)."""
    b = _check_ballots(ballots)
    return int(np.sum(b == INNER)), int(np.sum(b == OUTER)), int(np.sum(b == ABSTAIN))


def elect(inner_votes: int, outer_votes: int, abstained: int = 0, round: int = 0) -> Election:
    """Line 10: the popular vote; ties go to Inner (the module's tie rule)."""
    winner = OUTER if outer_votes > inner_votes else INNER
    return Election(round, inner_votes, outer_votes, abstained, winner)


def cast_ballots(
    model: Model,
    candidates: np.ndarray,
    voters: Sequence[tuple[np.ndarray, np.ndarray]],
    corrupted: ArrayLike,
    *,
    batch_size: int,
    rng: np.random.Generator,
    corrupted_vote: CorruptedVote = "worse",
) -> np.ndarray:
    """Lines 6-8: each voter's ballot on the (2, p) candidate models [Inner, Outer].

    ``voters[k]`` is voter k's own (X, y); voter k draws ``batch_size`` fresh rows
    of it and compares the two losses.  A corrupted voter (``corrupted[k]``)
    votes for the candidate with the larger loss on its batch (``"worse"``;
    its data should be its unpoisoned data, so that "worse" is worse), or
    abstains without drawing a batch (``"abstain"``).
    """
    if corrupted_vote not in ("worse", "abstain"):
        raise InvalidArgument(f"corrupted_vote must be 'worse' or 'abstain', got {corrupted_vote!r}")
    mask = np.asarray(corrupted, dtype=bool)
    if mask.shape != (len(voters),):
        raise InvalidArgument(f"corrupted must have one entry per voter ({len(voters)}), got shape {mask.shape}")
    ballots = np.full(len(voters), ABSTAIN, dtype=np.int64)
    voting = np.flatnonzero(~mask) if corrupted_vote == "abstain" else np.arange(len(voters))
    batches = [draw_batch(*voters[k], batch_size, rng) for k in voting]
    inner_loss, outer_loss = (model.batch_losses(c, batches) for c in candidates)
    better = np.where(outer_loss < inner_loss, OUTER, INNER)  # equal losses: Inner (the tie rule)
    ballots[voting] = np.where(mask[voting], 1 - better, better)
    return ballots


def secure_tally(ballots: ArrayLike, oracle: SecureAverageOracle) -> tuple[int, int, int]:
    """The counts of ``tally`` through one call of the secure average oracle.

    Each voter submits the one-hot vector of its vote with weight 1; an
    abstainer submits nothing.  The oracle reveals the average of the one-hot
    vectors and the total weight (the number of voters), whose product is the
    two counts; no individual ballot is revealed.  The oracle's value and weight
    bounds must both be 1: the oracle does not check that an input is one-hot,
    so with a larger bound one corrupted voter's vector could count as many
    votes; with these bounds a malformed ballot moves the margin by at most 2.
    """
    if oracle.encoding.value_bound != 1.0 or oracle.encoding.weight_bound != 1.0:
        raise InvalidArgument(
            "secure_tally needs an oracle with value_bound=1 and weight_bound=1, got "
            f"{oracle.encoding.value_bound:g} and {oracle.encoding.weight_bound:g}: a larger bound lets one "
            "voter's input count as several votes"
        )
    b = _check_ballots(ballots)
    voting = np.flatnonzero(b != ABSTAIN)
    if voting.size == 0:
        return 0, 0, int(b.size)
    one_hot = np.eye(2)
    result = oracle.average(
        {int(k) + 1: one_hot[b[k]] for k in voting}, {int(k) + 1: 1.0 for k in voting}  # secagg ids start at 1
    )
    counts = np.rint(result.value * result.sum_weights).astype(np.int64)
    return int(counts[0]), int(counts[1]), int(b.size - len(result.included))
