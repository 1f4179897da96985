"""The roster digest (secagg/roster.py): an RFC 6962-shaped Merkle tree over U1's keys."""

from __future__ import annotations

import dataclasses
import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.roster import RosterProof, leaf_hash, roster_leaves, roster_proofs, roster_root, verify_inclusion


def reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962, Section 2.1: MTH(D[n]) = H(0x01 || MTH(D[0:k]) || MTH(D[k:n])), k the largest power of two < n."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while 2 * k < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + reference_root(leaves[:k]) + reference_root(leaves[k:])).digest()


rosters = st.dictionaries(
    st.integers(1, 2**31 - 1), st.tuples(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32)),
    min_size=1, max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(rosters)
def test_the_root_is_rfc_6962_and_every_clients_proof_verifies_only_its_own_leaf(keys):
    leaves = roster_leaves(keys)
    assert roster_root(keys) == reference_root(leaves)
    proofs = roster_proofs(keys)
    ids = sorted(keys)
    for i, u in enumerate(ids):
        proof = proofs[u]
        assert (proof.root, proof.index, proof.size) == (roster_root(keys), i, len(ids))
        assert verify_inclusion(leaves[i], proof)
        if len(ids) > 1:
            assert not verify_inclusion(leaves[(i + 1) % len(ids)], proof)  # another client's leaf


@settings(max_examples=50, deadline=None)
@given(rosters.filter(lambda k: len(k) > 1), st.data())
def test_a_tampered_proof_does_not_verify(keys, data):
    ids = sorted(keys)
    u = data.draw(st.sampled_from(ids))
    proof, leaf = roster_proofs(keys)[u], leaf_hash(u, *keys[u])
    bad_hash = bytes(32)
    tampered = [
        dataclasses.replace(proof, root=hashlib.sha256(proof.root).digest()),
        dataclasses.replace(proof, path=proof.path[:-1]),
        dataclasses.replace(proof, path=proof.path + (bad_hash,)),
        dataclasses.replace(proof, index=proof.size),
        dataclasses.replace(proof, index=-1),
    ]
    if proof.path:
        k = data.draw(st.integers(0, len(proof.path) - 1))
        tampered.append(dataclasses.replace(proof, path=proof.path[:k] + (bad_hash,) + proof.path[k + 1:]))
    for bad in tampered:
        assert not verify_inclusion(leaf, bad)


def test_the_leaf_binds_the_id_and_both_keys_and_is_domain_separated_from_inner_nodes():
    c, s = bytes(range(32)), bytes(range(32, 64))
    variants = {leaf_hash(1, c, s), leaf_hash(2, c, s), leaf_hash(1, s, c), leaf_hash(1, c, c)}
    assert len(variants) == 4
    # A leaf can never be read as an inner node: different first byte under SHA-256.
    single = {1: (c, s)}
    assert roster_root(single) == leaf_hash(1, c, s)
    assert verify_inclusion(leaf_hash(1, c, s), RosterProof(roster_root(single), 0, 1, ()))
