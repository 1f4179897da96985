"""Neighbour graphs: the SecAgg+ Harary graph, its failure bounds and how parameters are refused."""

from __future__ import annotations

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
