"""The roster digest: a Merkle tree over the keys advertised in round 1 (malicious-server mode).

Every signature a client makes after ``advertise_keys`` (its consistency
signature and, on a sparse graph, its partner set) binds the root of this tree
over U1, the clients whose keys the server accepted.  The client checks that
the tree holds its own keys of this session, which are fresh randomness, so a
signature made in any other session, whatever its session id, is over another
root and never verifies here (protocol_spec.md 4.2, 9.2).

On the complete graph every client receives all of U1 and computes the root
itself.  On a sparse graph it receives only its neighbours, so the server
sends the root with an inclusion proof of the client's own entry.  The tree's
shape and hashing follow RFC 6962, section 2.1 (leaf hashes prefixed 0x00,
inner nodes 0x01, an unpaired last node carried up a level); the proof check is
the one of RFC 9162, section 2.1.3.2.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping, Sequence

DIGEST_BYTES = 32
MAX_PATH = 32  # a proof over at most 2**31 - 1 leaves (the client ids) has at most 31 hashes
_LEAF = b"\x00secagg/v3/roster|"
_NODE = b"\x01"


@dataclass(frozen=True)
class RosterProof:
    """The root of the roster tree and the path from one client's leaf to it."""

    root: bytes
    index: int  # the leaf's position (U1 in increasing id order)
    size: int  # |U1|
    path: tuple[bytes, ...]


def leaf_hash(u: int, c_pk: bytes, s_pk: bytes) -> bytes:
    return hashlib.sha256(_LEAF + u.to_bytes(4, "big") + c_pk + s_pk).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def roster_leaves(keys: Mapping[int, Sequence[bytes | None]]) -> list[bytes]:
    """Leaf hashes of ``{id: (c_pk, s_pk, ...)}`` in increasing id order."""
    return [leaf_hash(u, keys[u][0], keys[u][1]) for u in sorted(keys)]  # type: ignore[arg-type]


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first; an unpaired last node moves up unchanged."""
    if not leaves:
        raise ValueError("a roster tree needs at least one leaf")
    levels = [leaves]
    while len(levels[-1]) > 1:
        below = levels[-1]
        above = [_node(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        if len(below) % 2:
            above.append(below[-1])
        levels.append(above)
    return levels


def roster_root(keys: Mapping[int, Sequence[bytes | None]]) -> bytes:
    return _levels(roster_leaves(keys))[-1][0]


def roster_proofs(keys: Mapping[int, Sequence[bytes | None]]) -> dict[int, RosterProof]:
    """One inclusion proof per client of the roster, from one pass over the tree."""
    ids = sorted(keys)
    levels = _levels(roster_leaves(keys))
    root, size = levels[-1][0], len(ids)
    proofs = {}
    for index, u in enumerate(ids):
        path, i = [], index
        for level in levels[:-1]:
            sibling = i ^ 1
            if sibling < len(level):  # the last node of an odd level has no sibling: it moves up
                path.append(level[sibling])
            i //= 2
        proofs[u] = RosterProof(root, index, size, tuple(path))
    return proofs


def verify_inclusion(leaf: bytes, proof: RosterProof) -> bool:
    """Whether ``leaf`` sits at ``proof.index`` of a tree of ``proof.size`` leaves with ``proof.root``."""
    if not 0 <= proof.index < proof.size:
        return False
    fn, sn, r = proof.index, proof.size - 1, leaf
    for p in proof.path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:  # levels where this node had no sibling
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == proof.root
