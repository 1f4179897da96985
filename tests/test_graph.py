"""Neighbour graphs: the SecAgg+ Harary graph, its failure bounds and how parameters are refused."""

from __future__ import annotations

import hashlib
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import InsecureParameters, ParameterError
from secagg.graph import (
    CompleteGraph,
    HararyGraph,
    _tails,
    max_corrupt_neighbours,
    min_honest_group,
    sparse_bounds,
    sparse_parameters,
)
from secagg.params import CORRECTNESS_BITS, MIN_GROUP, SECURITY_BITS, PublicParams
from secagg.keys import raw_public
from secagg.rng import SeededRandom
from secagg.simulation import identity_keys

SID = bytes(range(32))


def connected(nodes: set[int], graph) -> bool:
    if not nodes:
        return True
    start = next(iter(nodes))
    seen, todo = {start}, [start]
    while todo:
        for v in graph.neighbours(todo.pop()) & nodes:
            if v not in seen:
                seen.add(v)
                todo.append(v)
    return seen == nodes


@pytest.mark.parametrize("n,k", [(10, 2), (31, 6), (200, 36)])
def test_harary_graph_is_k_regular_symmetric_and_loop_free(n, k):
    g = HararyGraph(range(1, n + 1), k, SID, dropout=0.1, corrupt=0.0)
    for u in range(1, n + 1):
        assert len(g.neighbours(u)) == k and u not in g.neighbours(u)
        assert all(u in g.neighbours(v) for v in g.neighbours(u))


def test_the_graph_is_a_function_of_the_session_id_only():
    ids = range(1, 101)
    a, b = HararyGraph(ids, 10, SID, dropout=0.1, corrupt=0.0), HararyGraph(ids, 10, SID, dropout=0.2, corrupt=0.1)
    c = HararyGraph(ids, 10, bytes(32), dropout=0.1, corrupt=0.0)
    assert all(a.neighbours(u) == b.neighbours(u) for u in ids)
    assert any(a.neighbours(u) != c.neighbours(u) for u in ids)
    # not the identity ring: the permutation scatters neighbours across the ids
    assert any(max(a.neighbours(u)) - min(a.neighbours(u)) > 20 for u in ids)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(seed=st.integers(0, 2**32 - 1), half=st.integers(1, 4), fraction=st.floats(0.05, 0.6))
def test_survivors_stay_connected_without_a_run_of_k_over_2_removed_ring_positions(seed, half, fraction):
    """The fact the connectivity bound rests on (graph.sparse_bounds)."""
    n, k = 40, 2 * half
    g = HararyGraph(range(1, n + 1), k, seed.to_bytes(32, "big"), dropout=0.0, corrupt=0.0)
    rng = np.random.default_rng(seed)
    removed = {int(u) for u in rng.choice(np.arange(1, n + 1), size=int(fraction * n), replace=False)}
    flags = [u in removed for u in g.ring]
    longest, run = 0, 0
    for flag in flags + flags:  # twice round: runs across the wrap
        run = run + 1 if flag else 0
        longest = max(longest, run)
    if longest < half:
        assert connected(set(range(1, n + 1)) - removed, g)
    # and the ring really is the Harary graph: distance-1 ring neighbours are adjacent
    assert all(g.ring[(i + 1) % n] in g.neighbours(u) for i, u in enumerate(g.ring))


def test_corrupted_holder_bound_is_the_hypergeometric_tail_times_n():
    n, k, t, corrupted = 50, 10, 4, 5
    comb = math.comb
    exact = sum(comb(corrupted, j) * comb(n - 1 - corrupted, k - j) for j in range(t, k + 1)) / comb(n - 1, k)
    assert math.isclose(sparse_bounds(n, k, t, 0.0, corrupted / n).corrupt_holders, n * exact, rel_tol=1e-9)


def test_exact_tails_agree_with_scipy_far_in_the_tail():
    from scipy.stats import hypergeom

    for t in (10, 19, 25):
        ours = sparse_bounds(1000, 36, t, 0.0, 0.05).corrupt_holders / 1000
        assert math.isclose(ours, float(hypergeom.sf(t - 1, 999, 50, 36)), rel_tol=1e-9)


def test_bounds_move_the_right_way_with_t_and_k():
    lo, hi = sparse_bounds(1000, 40, 15, 0.1, 0.05), sparse_bounds(1000, 40, 25, 0.1, 0.05)
    assert hi.corrupt_holders < lo.corrupt_holders and hi.too_few_holders > lo.too_few_holders
    assert sparse_bounds(1000, 60, 25, 0.1, 0.05).disconnected < sparse_bounds(1000, 40, 25, 0.1, 0.05).disconnected


@pytest.mark.parametrize("n", [100, 1000, 10_000])
def test_sparse_parameters_meet_every_bound_and_grow_slowly(n):
    choice = sparse_parameters(n, dropout=0.1, corrupt=0.05)
    b = choice.bounds
    assert b.privacy <= 2.0**-SECURITY_BITS and b.too_few_holders <= 2.0**-CORRECTNESS_BITS
    assert choice.degree % 2 == 0 and choice.threshold <= choice.degree < n - 1
    # the next smaller even degree fails some bound for every threshold
    k = choice.degree - 2
    assert all(
        sparse_bounds(n, k, t, 0.1, 0.05).privacy > 2.0**-SECURITY_BITS
        or sparse_bounds(n, k, t, 0.1, 0.05).too_few_holders > 2.0**-CORRECTNESS_BITS
        for t in range(1, k + 1)
    )
    assert choice.degree <= 12 * math.log2(n)


def test_no_sparse_graph_is_refused():
    with pytest.raises(InsecureParameters, match="complete graph"):
        sparse_parameters(30, dropout=0.3, corrupt=0.3)
    with pytest.raises(ParameterError):
        sparse_parameters(100, dropout=0.6, corrupt=0.5)


def test_params_refuse_a_threshold_without_guarantee_on_a_sparse_graph():
    ids = range(1, 1001)
    PublicParams.create(ids, modulus=2**16, dim=2, graph="sparse", dropout=0.1, corrupt=0.05)
    with pytest.raises(InsecureParameters, match="no guarantee"):
        PublicParams.create(ids, threshold=3, modulus=2**16, dim=2, graph="sparse", dropout=0.1, corrupt=0.05)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PublicParams.create(ids, threshold=3, modulus=2**16, dim=2, graph="sparse", dropout=0.1, corrupt=0.05,
                            allow_insecure=True)
    assert any("no guarantee" in str(w.message) for w in caught)


def test_params_refuse_foreign_graphs_on_sparse_graphs():
    ids = tuple(range(1, 101))
    other = HararyGraph(ids, 28, bytes(32), dropout=0.1, corrupt=0.05)
    with pytest.raises(ParameterError, match="session"):
        PublicParams(session_id=SID, client_ids=ids, threshold=18, modulus_bits=16, dim=2, graph=other)
    with pytest.raises(ParameterError, match="dropout"):
        PublicParams.create(ids, threshold=5, modulus=2**16, dim=2, dropout=0.1)
    with pytest.raises(ParameterError):
        HararyGraph(ids, 7, SID, dropout=0.1, corrupt=0.0)  # odd degree


def test_complete_graph_is_still_the_default():
    p = PublicParams.create(range(1, 6), threshold=3, modulus=2**8, dim=1)
    assert isinstance(p.graph, CompleteGraph) and not p.sparse and p.neighbours(2) == {1, 3, 4, 5}


# ---- malicious-server mode on sparse graphs (protocol_spec.md 14.5) ---------------------------


def malicious_keys(ids):
    return {u: raw_public(k) for u, k in identity_keys(ids, SeededRandom(0)).items()}


def test_max_corrupt_neighbours_is_the_smallest_count_the_union_bound_allows():
    n, k, corrupt = 1000, 36, 0.05
    c = max_corrupt_neighbours(n, k, corrupt)
    # one more than c breaks the 2^-40 bound at c - 1, and c itself meets it
    assert sparse_bounds(n, k, c + 1, 0.0, corrupt).corrupt_holders <= 2.0**-SECURITY_BITS
    assert sparse_bounds(n, k, c, 0.0, corrupt).corrupt_holders > 2.0**-SECURITY_BITS
    assert max_corrupt_neighbours(n, k, 0.0) == 0
    assert min_honest_group(n, k, 19, corrupt) == 19 - c


@pytest.mark.parametrize("n", [100, 1000])
def test_malicious_sizing_grows_k_until_every_learnable_sum_covers_min_group_honest_inputs(n):
    plain = sparse_parameters(n, dropout=0.1, corrupt=0.05)
    for m in (2, 10, 20):
        choice = sparse_parameters(n, dropout=0.1, corrupt=0.05, min_group=m)
        assert choice.min_group >= m and choice.degree >= plain.degree
        assert choice.min_group == min_honest_group(n, choice.degree, choice.threshold, 0.05)
        smaller = choice.degree - 2
        if smaller >= plain.degree:  # the next smaller degree misses the group size
            tries = [t for t in range(1, smaller + 1)
                     if sparse_bounds(n, smaller, t, 0.1, 0.0).too_few_holders <= 2.0**-CORRECTNESS_BITS]
            assert not tries or min_honest_group(n, smaller, max(tries), 0.05) < m
    with pytest.raises(ParameterError, match="min_group"):
        sparse_parameters(n, dropout=0.1, corrupt=0.05, min_group=1)


def test_malicious_params_on_a_sparse_graph_use_a_global_signature_quorum():
    ids = tuple(range(1, 101))
    p = PublicParams.create(ids, modulus=2**16, dim=2, graph="sparse", dropout=0.1, corrupt=0.05, malicious=True,
                            identity_keys=malicious_keys(ids))
    assert p.sparse and p.malicious
    assert p.consistency_quorum == (100 + 5) // 2 + 1 > p.threshold
    assert min_honest_group(100, p.graph.degree, p.threshold, 0.05) >= MIN_GROUP
    # the complete graph keeps the rule of [BIK+17]: t signatures
    full = PublicParams.create(ids, threshold=70, modulus=2**16, dim=2, malicious=True, identity_keys=p.identity_keys)
    assert full.consistency_quorum == 70


def test_malicious_params_refuse_sparse_graphs_that_single_out_an_input_or_cannot_reach_the_quorum():
    ids = tuple(range(1, 1001))
    keys = malicious_keys(ids)
    sid = bytes(32)
    # k = 38, t = 19 suit honest-but-curious mode, but 50 corrupted clients can leave one honest input alone
    graph = HararyGraph(ids, 38, sid, dropout=0.1, corrupt=0.05)
    assert min_honest_group(1000, 38, 19, 0.05) == 1
    PublicParams(session_id=sid, client_ids=ids, threshold=19, modulus_bits=16, dim=2, graph=graph)
    with pytest.raises(InsecureParameters, match="sum of 1 honest input"):
        PublicParams(session_id=sid, client_ids=ids, threshold=19, modulus_bits=16, dim=2, graph=graph,
                     malicious=True, identity_keys=keys)
    # 50% tolerated dropouts leave fewer than (n + C)/2 + 1 = 526 signers
    wide = HararyGraph(ids, 200, sid, dropout=0.5, corrupt=0.05)
    with pytest.raises(InsecureParameters, match="consistency signatures"):
        PublicParams(session_id=sid, client_ids=ids, threshold=60, modulus_bits=16, dim=2, graph=wide,
                     malicious=True, identity_keys=keys, allow_insecure=False)
    with pytest.raises(InsecureParameters, match="fewer than 20 honest"):
        PublicParams.create(ids, threshold=19, modulus=2**16, dim=2, graph="sparse", dropout=0.1, corrupt=0.05,
                            malicious=True, identity_keys=keys, min_group=20)
    with pytest.raises(ParameterError, match="malicious=True"):
        PublicParams.create(ids, modulus=2**16, dim=2, graph="sparse", dropout=0.1, corrupt=0.05, min_group=5)
    with pytest.raises(ParameterError, match="complete graph takes none"):
        PublicParams.create(ids, threshold=600, modulus=2**16, dim=2, malicious=True, identity_keys=keys, min_group=5)


# ---- the tails in floating point against exact integer arithmetic -----------------------------


def exact_tails(population: int, marked: int, draws: int) -> list[float]:
    """Reference: P[X >= j] as sums of products of binomials in Python integers, one division per tail.

    The binomials are built by the exact recurrence C(m, j + 1) = C(m, j) (m - j) / (j + 1)
    (math.comb per term would take seconds at population 20,000).
    """
    left, right = [1], [1]  # C(marked, j) and C(population - marked, i) for j, i = 0 .. draws
    for j in range(draws):
        left.append(left[-1] * (marked - j) // (j + 1))
        right.append(right[-1] * (population - marked - j) // (j + 1))
    total = math.comb(population, draws)
    tails, running = [0.0] * (draws + 2), 0
    for j in range(draws, -1, -1):
        running += left[j] * right[draws - j]
        tails[j] = running / total  # correctly rounded: subnormal or 0 where the tail underflows
    return tails


def assert_tails_match(population: int, marked: int, draws: int) -> None:
    ours, exact = _tails(population, marked, draws), exact_tails(population, marked, draws)
    assert len(ours) == len(exact) == draws + 2
    for j, (got, want) in enumerate(zip(ours.tolist(), exact)):
        if want >= 1e-300:
            assert abs(got - want) <= 1e-9 * want, (population, marked, draws, j, got, want)
        else:
            assert 0.0 <= got <= 1e-290, (population, marked, draws, j, got, want)


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_tails_match_exact_integer_arithmetic(data):
    population = data.draw(st.integers(1, 20_000), label="population")
    # integers shrink towards the edges of the support; fractions spread over the middle
    count = st.integers(0, population) | st.floats(0, 1).map(lambda f: round(f * population))
    marked, draws = data.draw(count, label="marked"), data.draw(count, label="draws")
    assert_tails_match(population, marked, draws)


@pytest.mark.parametrize(
    "population,marked,draws",
    [
        (19_999, 1_000, 36),  # n = 20,000, 5% corrupted, an honest k: the 2^-40 tail the bounds live in
        (19_999, 6_000, 134),
        (7_999, 400, 7_998),  # the hostile frame of issue 24: k = n - 2
        (7_999, 800, 7_998),
        (20_000, 1_000, 19_000),  # lower end of the support far from 0
        (20_000, 10_000, 10_000),  # both tails run below 1e-300 and underflow
        (20_000, 19_999, 20_000),  # X is certain
        (20_000, 1, 5),
        (20_000, 0, 100),
        (20_000, 20_000, 3),
        (1, 1, 1),
        (0, 0, 0),
    ],
)
def test_tails_match_exact_integer_arithmetic_far_in_the_tail(population, marked, draws):
    assert_tails_match(population, marked, draws)


def test_tails_are_a_distribution_function_on_hostile_sizes():
    n = 235_000  # about the most ids a 1 MB frame holds
    tails = _tails(n - 1, n // 2, n - 2)
    assert tails[0] == 1.0 and tails[-1] == 0.0 and np.all(np.diff(tails) <= 0) and not tails.flags.writeable
    with pytest.raises(ValueError):
        _tails(10, 11, 3)
    with pytest.raises(ValueError):
        _tails(10, 3, 11)


@pytest.mark.parametrize("n,k,corrupt", [(100, 28, 0.05), (1000, 36, 0.05), (1000, 88, 0.1), (3000, 998, 0.3)])
def test_max_corrupt_neighbours_reads_the_exact_tail(n, k, corrupt):
    tails = exact_tails(n - 1, math.floor(corrupt * n), k)
    assert max_corrupt_neighbours(n, k, corrupt) == next(c for c in range(k + 1) if n * tails[c + 1] <= 2.0**-40)


# (n, dropout, corrupt, min_group) -> (degree, threshold, min_group) of sparse_parameters, or None for
# InsecureParameters.  Printed by the exact integer implementation (secagg/graph.py of commit eabe703,
# before the floating-point tails) with
#   for n in (10, 20, 40, 60, 100, 300, 1000, 3000, 10000):
#       for dropout, corrupt in ((0.1, 0.05), (0.3, 0.1), (0.0, 0.0), (0.2, 0.0)):
#           for m in (None, 5, 10):
#               try:
#                   c = sparse_parameters(n, dropout=dropout, corrupt=corrupt, min_group=m)
#                   out = (c.degree, c.threshold, c.min_group)
#               except InsecureParameters:
#                   out = None
#               print(f"    ({n}, {dropout}, {corrupt}, {m}): {out},")
SIZED_BY_EXACT_TAILS = {
    (10, 0.1, 0.05, None): (4, 3, 3), (10, 0.1, 0.05, 5): (6, 5, 5), (10, 0.1, 0.05, 10): None,
    (10, 0.3, 0.1, None): None, (10, 0.3, 0.1, 5): None, (10, 0.3, 0.1, 10): None, (10, 0.0, 0.0, None): (2, 2, 2),
    (10, 0.0, 0.0, 5): (6, 6, 6), (10, 0.0, 0.0, 10): None, (10, 0.2, 0.0, None): (6, 4, 4),
    (10, 0.2, 0.0, 5): (8, 6, 6), (10, 0.2, 0.0, 10): None,
    (20, 0.1, 0.05, None): (8, 6, 5), (20, 0.1, 0.05, 5): (8, 6, 5), (20, 0.1, 0.05, 10): (14, 12, 11),
    (20, 0.3, 0.1, None): (18, 12, 10), (20, 0.3, 0.1, 5): (18, 12, 10), (20, 0.3, 0.1, 10): (18, 12, 10),
    (20, 0.0, 0.0, None): (2, 2, 2), (20, 0.0, 0.0, 5): (6, 6, 6), (20, 0.0, 0.0, 10): (10, 10, 10),
    (20, 0.2, 0.0, None): (10, 6, 6), (20, 0.2, 0.0, 5): (10, 6, 6), (20, 0.2, 0.0, 10): (14, 10, 10),
    (40, 0.1, 0.05, None): (14, 10, 8), (40, 0.1, 0.05, 5): (14, 10, 8), (40, 0.1, 0.05, 10): (16, 12, 10),
    (40, 0.3, 0.1, None): (34, 22, 18), (40, 0.3, 0.1, 5): (34, 22, 18), (40, 0.3, 0.1, 10): (34, 22, 18),
    (40, 0.0, 0.0, None): (2, 2, 2), (40, 0.0, 0.0, 5): (6, 6, 6), (40, 0.0, 0.0, 10): (10, 10, 10),
    (40, 0.2, 0.0, None): (18, 10, 10), (40, 0.2, 0.0, 5): (18, 10, 10), (40, 0.2, 0.0, 10): (18, 10, 10),
    (60, 0.1, 0.05, None): (20, 14, 11), (60, 0.1, 0.05, 5): (20, 14, 11), (60, 0.1, 0.05, 10): (20, 14, 11),
    (60, 0.3, 0.1, None): (46, 28, 22), (60, 0.3, 0.1, 5): (46, 28, 22), (60, 0.3, 0.1, 10): (46, 28, 22),
    (60, 0.0, 0.0, None): (2, 2, 2), (60, 0.0, 0.0, 5): (6, 6, 6), (60, 0.0, 0.0, 10): (10, 10, 10),
    (60, 0.2, 0.0, None): (26, 14, 14), (60, 0.2, 0.0, 5): (26, 14, 14), (60, 0.2, 0.0, 10): (26, 14, 14),
    (100, 0.1, 0.05, None): (28, 18, 13), (100, 0.1, 0.05, 5): (28, 18, 13), (100, 0.1, 0.05, 10): (28, 18, 13),
    (100, 0.3, 0.1, None): (54, 26, 16), (100, 0.3, 0.1, 5): (54, 26, 16), (100, 0.3, 0.1, 10): (54, 26, 16),
    (100, 0.0, 0.0, None): (2, 2, 2), (100, 0.0, 0.0, 5): (6, 6, 6), (100, 0.0, 0.0, 10): (10, 10, 10),
    (100, 0.2, 0.0, None): (32, 15, 15), (100, 0.2, 0.0, 5): (32, 15, 15), (100, 0.2, 0.0, 10): (32, 15, 15),
    (300, 0.1, 0.05, None): (34, 19, 5), (300, 0.1, 0.05, 5): (34, 19, 5), (300, 0.1, 0.05, 10): (42, 25, 10),
    (300, 0.3, 0.1, None): (68, 28, 2), (300, 0.3, 0.1, 5): (74, 31, 5), (300, 0.3, 0.1, 10): (84, 38, 11),
    (300, 0.0, 0.0, None): (2, 2, 2), (300, 0.0, 0.0, 5): (6, 6, 6), (300, 0.0, 0.0, 10): (10, 10, 10),
    (300, 0.2, 0.0, None): (40, 17, 17), (300, 0.2, 0.0, 5): (40, 17, 17), (300, 0.2, 0.0, 10): (40, 17, 17),
    (1000, 0.1, 0.05, None): (36, 19, 2), (1000, 0.1, 0.05, 5): (44, 25, 6), (1000, 0.1, 0.05, 10): (50, 30, 10),
    (1000, 0.3, 0.1, None): (88, 36, 1), (1000, 0.3, 0.1, 5): (100, 43, 6), (1000, 0.3, 0.1, 10): (110, 49, 10),
    (1000, 0.0, 0.0, None): (2, 2, 2), (1000, 0.0, 0.0, 5): (6, 6, 6), (1000, 0.0, 0.0, 10): (10, 10, 10),
    (1000, 0.2, 0.0, None): (42, 16, 16), (1000, 0.2, 0.0, 5): (42, 16, 16), (1000, 0.2, 0.0, 10): (42, 16, 16),
    (3000, 0.1, 0.05, None): (40, 21, 2), (3000, 0.1, 0.05, 5): (46, 25, 5), (3000, 0.1, 0.05, 10): (54, 32, 10),
    (3000, 0.3, 0.1, None): (98, 40, 1), (3000, 0.3, 0.1, 5): (112, 47, 5), (3000, 0.3, 0.1, 10): (126, 56, 11),
    (3000, 0.0, 0.0, None): (2, 2, 2), (3000, 0.0, 0.0, 5): (6, 6, 6), (3000, 0.0, 0.0, 10): (10, 10, 10),
    (3000, 0.2, 0.0, None): (46, 18, 18), (3000, 0.2, 0.0, 5): (46, 18, 18), (3000, 0.2, 0.0, 10): (46, 18, 18),
    (10000, 0.1, 0.05, None): (42, 22, 2), (10000, 0.1, 0.05, 5): (50, 28, 6), (10000, 0.1, 0.05, 10): (58, 34, 10),
    (10000, 0.3, 0.1, None): (106, 43, 1), (10000, 0.3, 0.1, 5): (120, 51, 5), (10000, 0.3, 0.1, 10): (134, 59, 10),
    (10000, 0.0, 0.0, None): (2, 2, 2), (10000, 0.0, 0.0, 5): (6, 6, 6), (10000, 0.0, 0.0, 10): (10, 10, 10),
    (10000, 0.2, 0.0, None): (46, 17, 17), (10000, 0.2, 0.0, 5): (46, 17, 17), (10000, 0.2, 0.0, 10): (46, 17, 17),
}


def test_sparse_parameters_are_unchanged_from_the_exact_integer_implementation():
    for (n, dropout, corrupt, m), expected in SIZED_BY_EXACT_TAILS.items():
        try:
            c = sparse_parameters(n, dropout=dropout, corrupt=corrupt, min_group=m)
            got = (c.degree, c.threshold, c.min_group)
        except InsecureParameters:
            got = None
        assert got == expected, (n, dropout, corrupt, m)


# ---- the Harary graph is derived lazily, and the same as the eager construction ---------------


def reference_harary(ids, degree: int, seed: bytes) -> tuple[tuple[int, ...], dict[int, frozenset[int]]]:
    """Straightforward eager construction: sort by SHA-256(seed, id), then k/2 ring positions each side."""
    prefix = b"secagg/v2/graph|" + seed
    ring = sorted(sorted(set(ids)), key=lambda u: hashlib.sha256(prefix + u.to_bytes(4, "big")).digest())
    n, half = len(ring), degree // 2
    return tuple(ring), {
        u: frozenset(ring[(i + d) % n] for d in range(-half, half + 1) if d) for i, u in enumerate(ring)
    }


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    ids=st.sets(st.integers(1, 2**31 - 1), min_size=4, max_size=80),
    half=st.integers(1, 39),
    seed=st.binary(min_size=32, max_size=32),
)
def test_lazy_harary_graph_is_the_eager_reference(ids, half, seed):
    degree = min(2 * half, (len(ids) - 2) // 2 * 2)
    graph = HararyGraph(list(ids), degree, seed, dropout=0.1, corrupt=0.05)
    ring, neighbours = reference_harary(ids, degree, seed)
    assert all(graph.neighbours(u) == neighbours[u] for u in sorted(ids, reverse=True))
    assert graph.ring == ring
    with pytest.raises(KeyError):
        graph.neighbours(0)


def test_a_hostile_sparse_graph_is_judged_without_building_the_ring_or_any_neighbour_set():
    n = 20_000
    ids = tuple(range(1, n + 1))
    graph = HararyGraph(ids, n - 2, SID, dropout=0.1, corrupt=0.05)
    PublicParams(session_id=SID, client_ids=ids, threshold=n // 2, modulus_bits=16, dim=2, graph=graph)
    assert not {"ring", "_position"} & vars(graph).keys() and not graph._neighbours
    assert len(graph.neighbours(7)) == n - 2 and "ring" in vars(graph)
