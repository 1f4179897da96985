"""A hostile server that runs several sessions under one session id (issue 24, item 1).

Identity keys are long-term and Ed25519 is deterministic, so a signature that
bound only the session id verified in every session with that id.  A server
could harvest, in earlier sessions, signatures on survivor lists and partner
sets of its choice and replay them in a later one.  The attacks below drive
unmodified ``Client`` state machines exactly as such a server would, with no
colluding client, and try to recover one client's input on its own.  They
recovered it exactly before the signatures bound the roster digest
(roster.py); now every replayed signature fails to verify and no share that
would complete the attack leaves a client.
"""

from __future__ import annotations

import numpy as np
import pytest

from secagg import Client, ProtocolViolation, PublicParams, SecAggError, Server, SeededRandom
from secagg import shamir
from secagg.keys import agree, raw_public
from secagg.ledger import FileLedger, MemoryLedger
from secagg.masking import expand, pair_mask_label, self_mask_label
from secagg.messages import ForwardedShares, KeyRoster, SurvivorList, UnmaskRequest
from secagg.simulation import identity_keys
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

MODULUS, DIM = 2**32, 6
SID = bytes(range(32))  # the id the server reuses


def make_inputs(n: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(5)
    return {u: rng.integers(0, MODULUS, DIM, dtype=np.uint64) for u in range(1, n + 1)}


def params_for(n: int, ids_keys: dict, **kw) -> PublicParams:
    return PublicParams.create(
        range(1, n + 1), modulus=MODULUS, dim=DIM, malicious=True, session_id=SID,
        identity_keys={u: raw_public(k) for u, k in ids_keys.items()}, **kw,
    )


def fresh_clients(params, inputs, identities, run: str, **kw) -> dict[int, Client]:
    """One session's clients: the same long-term identities, fresh ephemeral keys (as real clients have)."""
    return {
        u: Client(params, u, inputs[u], rng=SeededRandom(f"{run}-{u}".encode()), identity_key=identities[u], **kw)
        for u in params.client_ids
    }


def honest_until_masked(params, clients, forward=lambda u, m: m):
    """Run advertise_keys and share_keys through an honest Server; ``forward`` may edit what each
    client is forwarded.  Returns the server, the rosters and every masked input."""
    server = Server(params)
    out = []
    for c in clients.values():
        for m in c.start():
            out += server.receive(m)
    rosters = {m.recipient: m for m in out}
    nxt = []
    for m in out:
        for r in clients[m.recipient].receive(m):
            nxt += server.receive(r)
    masked = {}
    for m in nxt:
        (reply,) = clients[m.recipient].receive(forward(m.recipient, m))
        masked[m.recipient] = reply
    return server, rosters, masked


def recover_alone(params, v, y_v, s_pk_v, partners, b_shares, s_shares, s_pks):
    """x_v from v's masked input, t shares of b_v and t shares of each partner's mask key."""
    t = params.threshold

    def rebuild(shares: dict[int, int]) -> bytes:
        xs = tuple(sorted(shares))[:t]
        got = shamir.recover_group(xs, shamir.share_array([shares[x] for x in xs])[None], t, [lambda s: True],
                                   max_liars=0)
        return got.secrets[0]

    b_v = rebuild(b_shares)
    x = (y_v.astype(np.uint64) - expand(b_v, self_mask_label(v), params)) % MODULUS
    for p in partners:
        s_sk = X25519PrivateKey.from_private_bytes(rebuild(s_shares[p]))
        assert raw_public(s_sk) == s_pks[p]
        stream = expand(agree(s_sk, s_pk_v, v), pair_mask_label(v, p), params)
        x = (x - stream) % MODULUS if p > v else (x + stream) % MODULUS  # v added +PRG for p > v
    return x


def ask(client, request):
    """One unmask request; None when the client refuses (the attack's goal is that every one does)."""
    try:
        (reply,) = client.receive(request)
    except SecAggError as exc:
        return exc
    return reply


# ---- sparse graph: replayed partner set ----------------------------------------------------------


def test_replayed_partner_set_from_an_earlier_session_with_the_same_id_does_not_unmask_an_input():
    """The isolation attack of protocol_spec.md 14.5, which the signed partner sets stop, made to
    pass them by replaying v's partner set from an earlier session.  n = 60, k = 20, t = 10:
    2t <= k + 1, so v's holders outside its partners are enough and one global list does it
    (with the sized parameters the server also needs split views, i.e. replayed consistency
    signatures, which the complete-graph test below replays)."""
    n = 60
    inputs = make_inputs(n)
    identities = identity_keys(range(1, n + 1), SeededRandom(b"pki"))
    params = params_for(n, identities, graph="sparse", dropout=0.1, corrupt=0.05, threshold=10, min_group=5)
    k, t, q = params.graph.degree, params.threshold, params.consistency_quorum
    assert 2 * t <= k + 1
    v = 37

    # Earlier session, same id: v masks against all its neighbours and signs that partner set.
    _, _, masked1 = honest_until_masked(params, fresh_clients(params, inputs, identities, "first"))
    old_partners = (tuple(sorted(params.neighbours(v))), masked1[v].signature)

    # The attack session: v is forwarded the shares of only t - 1 neighbours, and the list leaves them all out.
    clients = fresh_clients(params, inputs, identities, "second")
    partners = tuple(sorted(params.neighbours(v)))[: t - 1]

    def forward(u, m):
        if u != v:
            return m
        return ForwardedShares(SID, 0, v, ciphertexts={w: c for w, c in m.ciphertexts.items() if w in partners})

    _, rosters, masked = honest_until_masked(params, clients, forward)
    listed = tuple(u for u in params.client_ids if u not in partners)
    signatures = {}
    for u in listed:
        try:
            (reply,) = clients[u].receive(SurvivorList(SID, 0, u, survivors=listed))
        except SecAggError:
            continue  # v refuses: its listed neighbours are not its partners
        signatures[u] = reply.signature
    assert v not in signatures and len(signatures) >= q
    quorum = dict(sorted(signatures.items())[:q])
    own_sets = {u: (tuple(sorted(params.neighbours(u))), masked[u].signature) for u in listed if u != v}
    replies = {}
    for w in signatures:
        entries = {x: (old_partners if x == v else own_sets[x]) for x in params.neighbours(w) & set(listed)}
        replies[w] = ask(clients[w], UnmaskRequest(SID, 0, w, survivors=listed, signatures=quorum, partners=entries))

    holders = [w for w in params.neighbours(v) if w in replies]
    assert len(holders) >= t  # enough of v's holders were asked to rebuild b_v
    b_of_v = {w: r.b_shares[v] for w, r in replies.items() if not isinstance(r, Exception) and v in r.b_shares}
    if len(b_of_v) >= t:  # what happened before the fix: the input comes out alone
        s_of = {p: {w: r.s_shares[p] for w, r in replies.items()
                    if not isinstance(r, Exception) and p in r.s_shares} for p in partners}
        keys = {u: rosters[u].keys[u] for u in params.client_ids}
        recovered = recover_alone(params, v, masked[v].masked, keys[v][1], partners, b_of_v, s_of,
                                  {p: keys[p][1] for p in partners})
        assert not np.array_equal(recovered, inputs[v]), "the server unmasked one client's input alone"
    # Every holder of v refuses the replayed set: its signature is over another session's roster digest.
    assert b_of_v == {}
    for w in holders:
        assert isinstance(replies[w], ProtocolViolation) and replies[w].rule == "partner-signature"


# ---- complete graph: replayed consistency signatures ---------------------------------------------


def test_replayed_consistency_signatures_from_earlier_sessions_with_the_same_id_do_not_unmask_an_input():
    """n = 10, t = 6, no colluder.  v is forwarded the shares of five partners only.  In five
    earlier sessions the server has every member of each list L_i = {v, p_i, four others} sign
    it; in the attack it shows each honest client one of those lists, with the harvested
    signatures, and collects b-shares of v from everyone and s-shares of every partner from
    the clients whose list leaves that partner out."""
    n = 10
    inputs = make_inputs(n)
    identities = identity_keys(range(1, n + 1), SeededRandom(b"pki"))
    params = params_for(n, identities, threshold=6)
    assert params.threshold == 6 and params.consistency_quorum == 6
    v, partners, others = 1, (2, 3, 4, 5, 6), (7, 8, 9, 10)
    lists = {p: tuple(sorted((v, p) + others)) for p in partners}

    harvested = {}
    for p, listed in lists.items():  # one earlier session per list, every member signs it
        clients = fresh_clients(params, inputs, identities, f"harvest-{p}")
        honest_until_masked(params, clients)
        harvested[listed] = {}
        for u in listed:
            (reply,) = clients[u].receive(SurvivorList(SID, 0, u, survivors=listed))
            harvested[listed][u] = reply.signature

    clients = fresh_clients(params, inputs, identities, "attack")

    def forward(u, m):
        if u != v:
            return m
        return ForwardedShares(SID, 0, v, ciphertexts={w: c for w, c in m.ciphertexts.items() if w in partners})

    _, rosters, masked = honest_until_masked(params, clients, forward)
    shown = {**{p: lists[p] for p in partners}, 7: lists[2], 8: lists[2], 9: lists[3], 10: lists[3]}
    replies = {}
    for w, listed in shown.items():
        clients[w].receive(SurvivorList(SID, 0, w, survivors=listed))  # each signs the list it is shown
        replies[w] = ask(clients[w], UnmaskRequest(SID, 0, w, survivors=listed, signatures=harvested[listed]))

    ok = {w: r for w, r in replies.items() if not isinstance(r, Exception)}
    b_of_v = {w: r.b_shares[v] for w, r in ok.items() if v in r.b_shares}
    s_of = {p: {w: r.s_shares[p] for w, r in ok.items() if p in r.s_shares} for p in partners}
    if len(b_of_v) >= 6 and all(len(s) >= 6 for s in s_of.values()):  # before the fix
        keys = {u: rosters[u].keys[u] for u in params.client_ids}
        recovered = recover_alone(params, v, masked[v].masked, keys[v][1], partners, b_of_v, s_of,
                                  {p: keys[p][1] for p in partners})
        assert not np.array_equal(recovered, inputs[v]), "the server unmasked one client's input alone"
    assert ok == {}
    assert all(isinstance(r, ProtocolViolation) and r.rule == "consistency-signature" for r in replies.values())


# ---- the ledger: a client signs in a session id once ------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_a_client_with_a_ledger_refuses_a_session_id_it_has_signed_in_before(tmp_path, kind):
    n = 5
    inputs = make_inputs(n)
    identities = identity_keys(range(1, n + 1), SeededRandom(b"pki"))
    params = params_for(n, identities, threshold=4)
    ledger = MemoryLedger() if kind == "memory" else FileLedger.beside_key(tmp_path, 1)
    first = Client(params, 1, inputs[1], rng=SeededRandom(b"a"), identity_key=identities[1], ledger=ledger)
    (advert,) = first.start()
    assert advert.signature is not None and SID in ledger
    again = Client(params, 1, inputs[1], rng=SeededRandom(b"b"), identity_key=identities[1], ledger=ledger)
    with pytest.raises(ProtocolViolation) as info:
        again.start()
    assert info.value.rule == "session-reused" and info.value.party == 0
    assert again.state.value == "start"  # nothing signed, nothing sent
    other = PublicParams.create(range(1, n + 1), modulus=MODULUS, dim=DIM, malicious=True, threshold=4,
                                identity_keys=params.identity_keys, session_id=bytes(32))
    Client(other, 1, inputs[1], rng=SeededRandom(b"c"), identity_key=identities[1], ledger=ledger).start()


def test_a_roster_digest_that_does_not_hold_the_clients_own_keys_is_refused():
    n = 40
    inputs = make_inputs(n)
    identities = identity_keys(range(1, n + 1), SeededRandom(b"pki"))
    params = params_for(n, identities, graph="sparse", dropout=0.1, corrupt=0.05)
    clients = fresh_clients(params, inputs, identities, "x")
    server = Server(params)
    out = []
    for c in clients.values():
        for m in c.start():
            out += server.receive(m)
    roster = next(m for m in out if m.recipient == 1)
    other = next(m for m in out if m.recipient == 2)
    assert isinstance(roster, KeyRoster) and roster.proof is not None
    import dataclasses

    for proof in (other.proof, dataclasses.replace(roster.proof, root=bytes(32)),
                  dataclasses.replace(roster.proof, path=roster.proof.path[:-1])):
        with pytest.raises(ProtocolViolation) as info:
            clients[1].receive(dataclasses.replace(roster, proof=proof))
        assert info.value.rule == "roster-proof"
    assert clients[1].receive(roster)  # the true proof is accepted
