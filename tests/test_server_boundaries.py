"""The server's counted checks, each on both sides of its boundary (issue 24, item 6).

One below the boundary the server aborts with ``AbortError(round, count, threshold)``, records
the count and sends nothing; exactly at it the session goes on and ends with the exact sum.
Sessions are driven with the in-memory ``Session`` of conftest.py; dropouts are chosen so that
the honest run lands exactly on the boundary.
"""

from __future__ import annotations

import pytest

from secagg import AbortError, Server
from secagg.server import ServerState

SEED = 5
SPARSE = dict(graph="sparse", tolerated_dropout=0.1, tolerated_corrupt=0.05)
HBC_ROUNDS = ["advertise_keys", "share_keys", "masked_input", "unmasking"]
MAL_ROUNDS = ["advertise_keys", "share_keys", "masked_input", "consistency_check", "unmasking"]


def play(session, drops, until=None):
    """Step with ``{round: ids}`` dropouts until the server collects ``until`` (or the end)."""
    while session.server.result is None and session.server.round.value != until:
        session.step(drops.get(session.server.round.value, ()))
    return session


def assert_exact(session, included):
    result = session.server.result
    assert result is not None and session.server.state is ServerState.DONE
    assert result.included == tuple(sorted(included))
    assert [int(v) for v in result.total] == session.expected(result.included)


def assert_aborts(session, drops, round_name, count, threshold, detail=None):
    """Run until the server aborts in ``round_name`` with ``count`` of ``threshold``; nothing goes out."""
    with pytest.raises(AbortError) as info:
        play(session, drops)
    exc = info.value
    assert (exc.round, exc.count, exc.threshold) == (round_name, count, threshold)
    if detail is not None:
        assert detail in str(exc)
    server = session.server
    assert server.state is ServerState.ABORTED and server.result is None and server.round.value == round_name
    return exc


def ring_offset(params, v, offset):
    ring = params.graph.ring
    return ring[(ring.index(v) + offset) % len(ring)]


def far_neighbours(params, v, m):
    """m neighbours of v at the largest ring distances, alternating sides: nobody but v loses all m."""
    h = params.graph.degree // 2
    offsets = [o for d in range(h, 0, -1) for o in (-d, d)][:m]
    return tuple(ring_offset(params, v, o) for o in offsets)


# ---- close_round: t answers go on, t - 1 abort, in every round ---------------------------------


@pytest.mark.parametrize(
    "malicious,round_name",
    [(False, r) for r in HBC_ROUNDS] + [(True, r) for r in MAL_ROUNDS],
)
def test_round_with_exactly_t_answers_goes_on_to_the_exact_sum(make_session, malicious, round_name):
    s = make_session(n=7, t=4, malicious=malicious, seed=SEED)
    gone = (5, 6, 7)  # n - t
    play(s, {round_name: gone})
    assert s.server.counts[round_name] == 4
    survivors = (1, 2, 3, 4) if round_name in ("advertise_keys", "share_keys", "masked_input") else range(1, 8)
    assert_exact(s, survivors)


@pytest.mark.parametrize(
    "malicious,round_name",
    [(False, r) for r in HBC_ROUNDS] + [(True, r) for r in MAL_ROUNDS],
)
def test_round_with_t_minus_1_answers_aborts_and_records_the_count(make_session, malicious, round_name):
    s = make_session(n=7, t=4, malicious=malicious, seed=SEED)
    assert_aborts(s, {round_name: (4, 5, 6, 7)}, round_name, 3, 4)
    # 6.1: the count is recorded by close_round itself (not by a later check of the round's close)
    assert s.server.counts[round_name] == 3
    notices = s.server.abort_notices("deadline")  # 6.5: every client expected in the round, answered or not
    assert [m.recipient for m in notices] == list(range(1, 8)) and all(m.count == 3 for m in notices)


# ---- consistency quorum: q - 1 signatures abort, q go on ----------------------------------------


def test_complete_graph_quorum_is_t_signatures(make_session):
    s = make_session(n=7, t=4, malicious=True, seed=SEED)
    assert s.params.consistency_quorum == 4
    play(s, {"consistency_check": (5, 6, 7)})
    assert s.server.counts["consistency_check"] == 4
    assert_exact(s, range(1, 8))
    s = make_session(n=7, t=4, malicious=True, seed=SEED)
    assert_aborts(s, {"consistency_check": (4, 5, 6, 7)}, "consistency_check", 3, 4)


@pytest.fixture
def quorum_session(make_session):
    """Malicious, sparse: n = 60, k = 20, t = 10, q = 32 > t.  Non-signers are taken from every
    other ring position, so each client still has >= t responders among its neighbourhood."""
    def build():
        s = make_session(n=60, t=10, seed=SEED, malicious=True, min_group=5, **SPARSE)
        p = s.params
        assert p.consistency_quorum == 32 and p.graph.degree == 20 and p.threshold == 10
        s.alternate = p.graph.ring[::2]  # 30 clients, no two adjacent on the ring
        return s

    return build


def test_sparse_quorum_of_exactly_q_signatures_goes_on_to_the_exact_sum(quorum_session):
    s = quorum_session()
    p = s.params
    q = p.consistency_quorum
    silent = s.alternate[: p.n - q]
    play(s, {"consistency_check": silent})
    assert s.server.counts["consistency_check"] == q
    assert_exact(s, p.client_ids)  # the silent clients are in U3: their inputs are in the sum


def test_sparse_quorum_of_q_minus_1_signatures_aborts(quorum_session):
    s = quorum_session()
    p = s.params
    q = p.consistency_quorum
    silent = s.alternate[: p.n - q + 1]
    assert q - 1 >= p.threshold  # close_round's own count passes: only the quorum stops it
    assert_aborts(s, {"consistency_check": silent}, "consistency_check", q - 1, q, "too few consistency signatures")


# ---- unmasking: t holders of one client's shares rebuild it, t - 1 abort --------------------------


@pytest.fixture
def holders_session(make_session):
    def build():
        s = make_session(n=40, t=None, seed=SEED, **SPARSE)  # honest-but-curious, k = 14, t = 10
        assert (s.params.graph.degree, s.params.threshold) == (14, 10)
        return s

    return build


def responders_holding(s, owner, silent, own):
    """Responders in unmasking that hold a share of ``owner`` (``own``: owner's own share counts)."""
    p = s.params
    group = p.neighbours(owner) | ({owner} if own else set())
    return group - set(silent)


@pytest.mark.parametrize("extra", [0, 1], ids=["exactly-t", "t-minus-1"])
def test_sparse_self_mask_seed_needs_t_holders_in_its_neighbourhood(holders_session, extra):
    """b_v of survivor v: exactly t of N(v) + {v} answer in unmasking (rebuilt), or t - 1 (abort)."""
    s = holders_session()
    p, v = s.params, 1
    t = p.threshold
    silent = far_neighbours(p, v, p.graph.degree + 1 - t + extra)
    assert len(responders_holding(s, v, silent, own=True)) == t - extra
    # every other survivor keeps at least t holders: v is the only one at (or below) the boundary
    assert all(len(responders_holding(s, u, silent, own=u not in silent)) > t - extra for u in p.client_ids if u != v)
    if extra == 0:
        play(s, {"unmasking": silent})
        assert_exact(s, p.client_ids)
    else:
        assert_aborts(s, {"unmasking": silent}, "unmasking", t - 1, t, f"too few shares of client {v}")
        assert "unmasking" not in s.server.counts  # the round's own count passed; the holders did not


@pytest.mark.parametrize("extra", [0, 1], ids=["exactly-t", "t-minus-1"])
def test_sparse_mask_key_of_a_dropped_client_needs_t_holders_among_its_neighbours(holders_session, extra):
    """s_sk of v, dropped in masked_input: exactly t of N(v) answer in unmasking (rebuilt), or t - 1."""
    s = holders_session()
    p, v = s.params, 1
    t = p.threshold
    silent = far_neighbours(p, v, p.graph.degree - t + extra)
    assert len(responders_holding(s, v, silent, own=False)) == t - extra
    drops = {"masked_input": (v,), "unmasking": silent}
    gone = set(silent) | {v}
    assert all(len(responders_holding(s, u, gone, own=u not in silent)) >= t for u in p.client_ids if u != v)
    if extra == 0:
        play(s, drops)
        assert_exact(s, set(p.client_ids) - {v})
    else:
        assert_aborts(s, drops, "unmasking", t - 1, t, f"too few shares of client {v}")


# ---- pinned survivor set: equal goes on, one client more or less aborts ----------------------------


@pytest.mark.parametrize("malicious", [False, True], ids=["honest-but-curious", "malicious"])
@pytest.mark.parametrize(
    "pinned,ok",
    [
        pytest.param((1, 2, 3, 4, 5), True, id="equal"),
        pytest.param((1, 2, 3, 4), False, id="one-survivor-not-pinned"),
        pytest.param((1, 2, 3, 4, 5, 6), False, id="one-pinned-client-lost"),
        pytest.param((1, 2, 3, 4, 5, 7), False, id="one-pinned-client-never-shared"),
    ],
)
def test_pinned_set_must_equal_the_survivors(make_session, malicious, pinned, ok):
    s = make_session(n=7, t=4, malicious=malicious, seed=SEED)
    s.server = Server(s.params, pinned=pinned)
    drops = {"share_keys": (7,), "masked_input": (6,)}  # U3 = {1, ..., 5}
    if ok:
        play(s, drops)
        assert_exact(s, (1, 2, 3, 4, 5))
        return
    play(s, drops, until="masked_input")
    with pytest.raises(AbortError) as info:
        s.step(drops["masked_input"])
    assert info.value.round == "masked_input" and "pinned" in str(info.value)
    # aborted at the close of masked_input: no survivor list or unmask request was returned
    assert s.server.state is ServerState.ABORTED and s.server.round.value == "masked_input"
    assert s.server.result is None
