"""End-to-end sessions through the in-memory transport: exact sums under dropouts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import secagg
from secagg import AbortError, ParameterError, simulate
from secagg.messages import rounds_for
from secagg.simulation import setup_session

BEFORE_MASKED = ("advertise_keys", "share_keys", "masked_input")


def plaintext_sum(inputs, included, modulus):
    """The sum mod M of the inputs of ``included``, in Python integers."""
    dim = len(next(iter(inputs.values())))
    return [sum(int(inputs[u][i]) for u in included) % modulus for i in range(dim)]


@st.composite
def sessions(draw):
    n = draw(st.integers(3, 30))
    malicious = draw(st.booleans())
    t = draw(st.integers(n // 2 + 1 if malicious else 1, n))
    dim = draw(st.integers(1, 12))
    modulus = draw(st.sampled_from([2**16, 2**32, 2**64]))
    rounds = [r.value for r in rounds_for(malicious)]
    n_drop = draw(st.integers(0, n - t))
    order = draw(st.permutations(range(1, n + 1)))
    dropouts: dict[str, list[int]] = {}
    for u in order[:n_drop]:
        dropouts.setdefault(draw(st.sampled_from(rounds)), []).append(u)
    extreme = draw(st.booleans())
    input_seed = draw(st.integers(0, 2**32 - 1))
    return n, t, dim, modulus, malicious, dropouts, extreme, input_seed


@pytest.mark.filterwarnings("ignore::secagg.InsecureParametersWarning")
@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(sessions())
def test_output_is_the_exact_sum_of_the_included_inputs(case):
    n, t, dim, modulus, malicious, dropouts, extreme, input_seed = case
    rng = np.random.default_rng(input_seed)
    if extreme:  # every input at M - 1: the sum wraps around M many times
        inputs = {u: np.full(dim, modulus - 1, dtype=np.uint64) for u in range(1, n + 1)}
    else:
        inputs = {u: rng.integers(0, modulus, dim, dtype=np.uint64) for u in range(1, n + 1)}
    result = simulate(inputs, threshold=t, modulus=modulus, dropouts=dropouts, malicious=malicious, seed=input_seed)
    gone_early = {u for r in BEFORE_MASKED for u in dropouts.get(r, [])}
    assert set(result.included) == set(range(1, n + 1)) - gone_early
    assert list(result.included) == sorted(result.included)
    assert [int(v) for v in result.total] == plaintext_sum(inputs, result.included, modulus)


def matrix_cases():
    cases = []
    for malicious, n, t in ((False, 7, 4), (True, 7, 5)):
        for round_ in rounds_for(malicious):
            for case in ("nobody", "n-t", "n-t+1"):
                cases.append(pytest.param(malicious, n, t, round_.value, case, id=f"{'mal' if malicious else 'hbc'}-{round_.value}-{case}"))
    return cases


@pytest.mark.parametrize("malicious,n,t,round_,case", matrix_cases())
def test_dropout_matrix(malicious, n, t, round_, case):
    rng = np.random.default_rng(n * t)
    inputs = {u: rng.integers(0, 2**32, 3, dtype=np.uint64) for u in range(1, n + 1)}
    k = {"nobody": 0, "n-t": n - t, "n-t+1": n - t + 1}[case]
    dropped = [2, 4, 6, 7, 5][:k]
    run = lambda: simulate(
        inputs, threshold=t, modulus=2**32, dropouts={round_: dropped}, malicious=malicious, seed=3
    )
    if case == "n-t+1":
        with pytest.raises(AbortError) as info:
            run()
        assert info.value.round == round_
        assert info.value.count == t - 1
        assert info.value.threshold == t
        return
    result = run()
    if round_ in BEFORE_MASKED:
        expected_included = sorted(set(inputs) - set(dropped))
    else:  # their masked input arrived: still in the sum
        expected_included = sorted(inputs)
    assert list(result.included) == expected_included
    assert [int(v) for v in result.total] == plaintext_sum(inputs, expected_included, 2**32)
    assert result.counts[round_] == n - len(dropped)
    assert set(result.counts) == {r.value for r in rounds_for(malicious)}


def test_readme_example_client_dropping_in_unmasking_stays_in_the_sum():
    inputs = {u: np.arange(5, dtype=np.uint64) * u for u in range(1, 11)}
    result = simulate(inputs, threshold=7, modulus=2**32, dropouts={"masked_input": [3], "unmasking": [4]}, seed=0)
    assert result.included == tuple(u for u in range(1, 11) if u != 3)
    assert [int(v) for v in result.total] == plaintext_sum(inputs, result.included, 2**32)


def test_transcript_holds_one_masked_input_per_included_client():
    rng = np.random.default_rng(1)
    inputs = {u: rng.integers(0, 2**16, 4, dtype=np.uint64) for u in range(1, 7)}
    result = simulate(inputs, threshold=4, modulus=2**16, dropouts={"share_keys": [2], "unmasking": [5]}, seed=1)
    kinds: dict[str, list[int]] = {}
    for raw in result.transcript:
        msg = secagg.decode(raw, result.params)
        assert msg.recipient == 0
        kinds.setdefault(msg.KIND, []).append(msg.sender)
    assert sorted(kinds["advertise_keys"]) == [1, 2, 3, 4, 5, 6]
    assert sorted(kinds["encrypted_shares"]) == [1, 3, 4, 5, 6]
    assert sorted(kinds["masked_input"]) == list(result.included) == [1, 3, 4, 5, 6]
    assert sorted(kinds["unmasking_shares"]) == [1, 3, 4, 6]


def test_same_seed_gives_the_same_session_and_transcript():
    inputs = {u: np.full(3, u, dtype=np.uint64) for u in range(1, 6)}
    a = simulate(inputs, threshold=3, modulus=2**16, seed=42)
    b = simulate(inputs, threshold=3, modulus=2**16, seed=42)
    c = simulate(inputs, threshold=3, modulus=2**16, seed=43)
    assert a.transcript == b.transcript
    assert a.params.session_id == b.params.session_id != c.params.session_id
    assert a.transcript != c.transcript
    assert np.array_equal(a.total, c.total)


def test_unseeded_sessions_are_fresh():
    inputs = {u: np.full(3, u, dtype=np.uint64) for u in range(1, 4)}
    a = simulate(inputs, threshold=2, modulus=2**16)
    b = simulate(inputs, threshold=2, modulus=2**16)
    assert a.params.session_id != b.params.session_id
    assert np.array_equal(a.total, b.total)


def test_byte_counts_are_recorded_per_client():
    inputs = {u: np.full(8, u, dtype=np.uint64) for u in range(1, 6)}
    result = simulate(inputs, threshold=3, modulus=2**32, dropouts={"advertise_keys": [5]}, seed=2)
    assert set(result.bytes_sent) == set(inputs)
    assert result.bytes_sent[5] == 0 and result.bytes_received[5] == 0
    assert all(result.bytes_sent[u] > 0 and result.bytes_received[u] > 0 for u in range(1, 5))
    assert sum(result.bytes_sent.values()) == sum(len(raw) for raw in result.transcript)


@pytest.mark.parametrize(
    "dropouts,malicious",
    [
        ({"consistency_check": [1]}, False),  # no such round in honest-but-curious mode
        ({"sharekeys": [1]}, False),
        ({"masked_input": [99]}, False),
        ({"unmasking": [0]}, True),
    ],
)
def test_invalid_dropout_plans_are_refused(dropouts, malicious):
    inputs = {u: np.zeros(2, dtype=np.uint64) for u in range(1, 6)}
    with pytest.raises(ParameterError):
        simulate(inputs, threshold=4, modulus=2**16, dropouts=dropouts, malicious=malicious, seed=0)


@pytest.mark.parametrize(
    "inputs",
    [
        {},
        {1: np.zeros(2, dtype=np.uint64), 2: np.zeros(3, dtype=np.uint64)},
        {1: np.zeros(2), 2: np.zeros(2)},  # float
        {1: np.array([-1, 0]), 2: np.zeros(2, dtype=np.int64)},
        {1: np.array([2**16, 0], dtype=np.uint64), 2: np.zeros(2, dtype=np.uint64)},
        {1: np.zeros((2, 2), dtype=np.uint64), 2: np.zeros((2, 2), dtype=np.uint64)},
    ],
)
def test_invalid_inputs_are_refused_before_any_message(inputs):
    with pytest.raises(ParameterError):
        simulate(inputs, threshold=2, modulus=2**16, seed=0)


def test_threshold_above_n_is_refused():
    inputs = {u: np.zeros(2, dtype=np.uint64) for u in range(1, 4)}
    with pytest.raises(ParameterError):
        simulate(inputs, threshold=4, modulus=2**16, seed=0)


def test_everyone_dropping_aborts_in_the_first_round():
    inputs = {u: np.zeros(2, dtype=np.uint64) for u in range(1, 5)}
    with pytest.raises(AbortError) as info:
        simulate(inputs, threshold=2, modulus=2**16, dropouts={"advertise_keys": [1, 2, 3, 4]}, seed=0)
    assert info.value.round == "advertise_keys" and info.value.count == 0


@pytest.mark.parametrize("malicious", [False, True])
def test_sparse_and_large_client_ids(malicious):
    ids = [3, 1000, 65536, 2**24 + 1, 2**31 - 1]
    rng = np.random.default_rng(6)
    inputs = {u: rng.integers(0, 2**16, 3, dtype=np.uint64) for u in ids}
    result = simulate(
        inputs, threshold=4 if malicious else 3, modulus=2**16, malicious=malicious,
        dropouts={"masked_input": [65536]}, seed=6,
    )
    assert result.included == (3, 1000, 2**24 + 1, 2**31 - 1)
    assert [int(v) for v in result.total] == plaintext_sum(inputs, result.included, 2**16)
    for raw in result.transcript:
        msg = secagg.decode(raw, result.params)
        assert msg.sender in ids


# ---- SecAgg+ sparse graphs ----------------------------------------------------------

SPARSE = dict(graph="sparse", tolerated_dropout=0.1, tolerated_corrupt=0.05)  # n=40: k=14, t=10


def sparse_inputs(n=40, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    return {u: rng.integers(0, 2**16, dim, dtype=np.uint64) for u in range(1, n + 1)}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sparse_graph_sum_is_exact_with_dropouts_at_every_round(seed):
    inputs = sparse_inputs(seed=seed)
    plan = {"advertise_keys": [3], "share_keys": [11], "masked_input": [19, 27], "unmasking": [35]}
    res = simulate(inputs, modulus=2**16, dropouts=plan, seed=seed, **SPARSE)
    assert res.params.sparse and res.params.graph.degree == 14 and res.params.threshold == 10
    assert res.included == tuple(u for u in range(1, 41) if u not in (3, 11, 19, 27))
    expected = sum(inputs[u].astype(np.uint64) for u in res.included) % np.uint64(2**16)
    assert np.array_equal(res.total, expected)
    # only neighbours exchange anything: a client's traffic does not depend on n
    assert max(res.bytes_received.values()) < 40 * 300


def test_sparse_per_client_traffic_is_flat_in_n_while_the_complete_graph_grows():
    sizes = {}
    for n in (40, 80):
        res = simulate(sparse_inputs(n=n), modulus=2**16, seed=1, graph="sparse", tolerated_dropout=0.05,
                       tolerated_corrupt=0.0)
        full = simulate(sparse_inputs(n=n), modulus=2**16, seed=1, threshold=n // 2 + 1)
        k = res.params.graph.degree
        sizes[n] = (np.mean(list(res.bytes_received.values())) / k, np.mean(list(full.bytes_received.values())))
    # bytes per neighbour stay put; the complete graph's bytes per client double with n
    assert sizes[80][0] == pytest.approx(sizes[40][0], rel=0.1)
    assert sizes[80][1] > 1.8 * sizes[40][1]


def test_sparse_neighbourhood_below_threshold_aborts_even_with_many_global_survivors():
    inputs = sparse_inputs()
    params, _ = setup_session(inputs, modulus=2**16, seed=4, **SPARSE)
    victim = 1
    gone = sorted(params.neighbours(victim))[:6]  # 15 holders - 6 = 9 < t = 10 answer for the victim
    with pytest.raises(AbortError) as info:
        simulate(inputs, modulus=2**16, seed=4, dropouts={"unmasking": gone}, **SPARSE)
    assert info.value.round == "unmasking" and "too few shares of client" in str(info.value)


# ---- malicious-server mode on sparse graphs (protocol_spec.md 14.5) -----------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_malicious_sparse_sum_is_exact_with_dropouts_at_every_round(seed):
    inputs = sparse_inputs(seed=seed)
    plan = {"advertise_keys": [3], "share_keys": [11], "masked_input": [19, 27], "consistency_check": [30],
            "unmasking": [35]}
    res = simulate(inputs, modulus=2**16, dropouts=plan, seed=seed, malicious=True, **SPARSE)
    p = res.params
    assert p.sparse and p.malicious and p.graph.degree < 39
    assert res.included == tuple(u for u in range(1, 41) if u not in (3, 11, 19, 27))
    assert [int(v) for v in res.total] == plaintext_sum(inputs, res.included, 2**16)


def test_malicious_sparse_server_aborts_below_the_signature_quorum_though_t_clients_signed():
    inputs = sparse_inputs()
    params, _ = setup_session(inputs, modulus=2**16, seed=4, malicious=True, **SPARSE)
    quorum = params.consistency_quorum
    gone = list(range(1, 40 - quorum + 2))  # leaves quorum - 1 signers, far more than t
    assert 40 - len(gone) >= params.threshold
    with pytest.raises(AbortError) as info:
        simulate(inputs, modulus=2**16, seed=4, malicious=True, dropouts={"consistency_check": gone}, **SPARSE)
    assert info.value.round == "consistency_check" and info.value.threshold == quorum


def honest_components(nodes, graph):
    left, parts = set(nodes), []
    while left:
        part = {left.pop()}
        todo = list(part)
        while todo:
            for v in graph.neighbours(todo.pop()) & left:
                left.discard(v)
                part.add(v)
                todo.append(v)
        parts.append(part)
    return parts


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(seed=st.integers(0, 2**32 - 1), excluded=st.integers(0, 25))
def test_every_honest_group_a_signed_list_allows_has_at_least_t_minus_c_members(seed, excluded):
    """The argument of 14.5: if every member of L has t - 1 neighbours in L, its honest part of L has
    components of at least t - c members, c the most corrupted neighbours any client has."""
    from secagg.graph import HararyGraph

    rng = np.random.default_rng(seed)
    ids = list(range(1, 61))
    graph = HararyGraph(ids, 14, seed.to_bytes(32, "big"), dropout=0.1, corrupt=0.1)
    t = 10
    corrupted = set(rng.choice(ids, 6, replace=False).tolist())
    listed = set(ids) - set(rng.choice(ids, excluded, replace=False).tolist())
    while True:  # what the client guard leaves: members with at least t - 1 listed neighbours
        weak = {u for u in listed if len(graph.neighbours(u) & listed) < t - 1}
        if not weak:
            break
        listed -= weak
    c = max(len(graph.neighbours(u) & corrupted) for u in ids)
    for part in honest_components(listed - corrupted, graph):
        assert len(part) >= t - c


@settings(max_examples=8, deadline=None, derandomize=True, database=None)
@given(plan=st.lists(st.sampled_from([None] * 30 + list(rounds_for(True))), min_size=40, max_size=40))
def test_malicious_sparse_sum_is_exact_or_aborts_for_any_dropout_plan(plan):
    """Client u drops in round plan[u - 1] (None: stays): the session either aborts with a typed
    error or returns exactly the sum of the clients that sent masked inputs."""
    inputs = sparse_inputs(seed=5)
    drops: dict[str, list[int]] = {}
    for u, round_ in zip(range(1, 41), plan):
        if round_ is not None:
            drops.setdefault(round_.value, []).append(u)
    try:
        res = simulate(inputs, modulus=2**16, dropouts=drops, seed=5, malicious=True, **SPARSE)
    except AbortError:
        return
    early = {u for r in ("advertise_keys", "share_keys", "masked_input") for u in drops.get(r, [])}
    assert res.included == tuple(u for u in range(1, 41) if u not in early)
    assert [int(v) for v in res.total] == plaintext_sum(inputs, res.included, 2**16)
