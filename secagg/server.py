"""The server's side of the protocol as a sans-I/O state machine.

The server collects one message per live client per round.  ``receive(data)``
validates and records one client message; when the last expected client has
answered it closes the round itself and returns the messages to send.  The
transport calls ``close_round()`` when the round's deadline passes instead;
that is the only decision it makes.  Every client missing at that point is a
dropout from then on.  Fewer than ``t`` answers raise ``AbortError``.

The server knows U1 (advertised keys), U2 (sent shares), U3 (sent masked
inputs: the inputs in the sum), U4 (signed the survivor list, malicious mode)
and U5 (sent unmasking shares), as in Bonawitz et al. 2017, Fig. 4.
A ``receive`` that raises ``MalformedMessage`` or ``ProtocolViolation``
leaves the server exactly as it was; ``AbortError`` is terminal.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from . import reprs, shamir
from .errors import AbortError, MalformedMessage, ProtocolViolation
from .keys import agree, consistency_payload, is_small_order, keys_payload, raw_public, seed_commitment, verify_signature, x25519_point
from .masking import MaskAccumulator, pair_mask_label, self_mask_label
from .messages import (
    SERVER,
    Abort,
    AdvertiseKeys,
    ConsistencySignature,
    EncryptedShares,
    ForwardedShares,
    KeyRoster,
    MaskedInput,
    Message,
    Round,
    SurvivorList,
    UnmaskingShares,
    UnmaskRequest,
    decode,
    rounds_for,
)
from .params import PublicParams


_EMPTY = np.zeros(0, dtype=np.uint64)


class ServerState(enum.Enum):
    COLLECTING = "collecting"
    DONE = "done"
    ABORTED = "aborted"


@dataclass(frozen=True)
class ServerResult:
    total: np.ndarray  # uint64, the sum mod M of the inputs of ``included``
    included: tuple[int, ...]  # U3
    counts: dict[str, int]  # clients that completed each round
    cheaters: dict[int, str] = field(default_factory=dict)  # responders whose shares were wrong


class Server:
    def __init__(self, params: PublicParams):
        self.params = params
        self.state = ServerState.COLLECTING
        self._rounds = rounds_for(params.malicious)
        self._index = 0
        self._expected: frozenset[int] = frozenset(params.client_ids)
        self._received: dict[int, Message] = {}
        self.counts: dict[str, int] = {}
        self.result: ServerResult | None = None
        # Per-round facts, filled as rounds close.
        self._keys: dict[int, tuple[bytes, bytes, bytes | None]] = {}
        self._ciphertexts: dict[int, dict[int, bytes]] = {}
        self._commitments: dict[int, bytes] = {}
        self._u2: frozenset[int] = frozenset()
        self._u3: tuple[int, ...] = ()
        self._masked_sum: MaskAccumulator | None = None
        self._signatures: dict[int, bytes] = {}

    def __repr__(self) -> str:
        p = self.params
        return reprs.fields(
            "Server", n=p.n, threshold=p.threshold, dim=p.dim, modulus_bits=p.modulus_bits, malicious=p.malicious,
            state=self.state.value, round=self.round.value, waiting_for=reprs.ids(sorted(self.waiting_for)),
        )

    # ---- public -------------------------------------------------------------

    @property
    def round(self) -> Round:
        return self._rounds[min(self._index, len(self._rounds) - 1)]

    @property
    def waiting_for(self) -> frozenset[int]:
        """Clients still expected to answer in the current round."""
        if self.state is not ServerState.COLLECTING:
            return frozenset()
        return self._expected - self._received.keys()

    def receive(self, data: bytes | Message) -> list[Message]:
        """Validate and record one client message; close the round if it was the last one."""
        if isinstance(data, Message):
            data = data.encode()
        msg = decode(data, self.params)
        if self.state is not ServerState.COLLECTING:
            raise ProtocolViolation(msg.sender, "session-over", f"session is {self.state.value}")
        if msg.FROM_SERVER:
            raise MalformedMessage(f"{msg.KIND} is a server message", party=msg.sender, field="kind")
        u = msg.sender
        if msg.round is not self.round:
            raise ProtocolViolation(u, "wrong-round", f"{msg.round} message during {self.round}")
        if u not in self._expected:
            raise ProtocolViolation(u, "not-expected", f"client {u} is not live in {self.round}")
        if u in self._received:
            raise ProtocolViolation(u, "duplicate", f"second {msg.KIND} from client {u}")
        self._validate(msg)
        if isinstance(msg, MaskedInput):
            # Add on arrival and keep no copy: memory O(d), not O(n d).  The message is
            # validated, and an accepted masked input is in the sum whatever happens next.
            if self._masked_sum is None:
                self._masked_sum = MaskAccumulator(self.params)
            self._masked_sum.add_vector(msg.masked, +1)
            msg = dataclasses.replace(msg, masked=_EMPTY)
        self._received[u] = msg
        if not self.waiting_for:
            return self.close_round()
        return []

    def close_round(self) -> list[Message]:
        """End the current round with whoever answered (the deadline passed)."""
        if self.state is not ServerState.COLLECTING:
            raise ProtocolViolation(SERVER, "session-over", f"session is {self.state.value}")
        round_, count = self.round, len(self._received)
        if count < self.params.threshold:
            self.state = ServerState.ABORTED
            self.counts[round_.value] = count
            raise AbortError(round_.value, count, self.params.threshold)
        close = {
            Round.ADVERTISE_KEYS: self._close_advertise,
            Round.SHARE_KEYS: self._close_share_keys,
            Round.MASKED_INPUT: self._close_masked_input,
            Round.CONSISTENCY_CHECK: self._close_consistency,
            Round.UNMASKING: self._close_unmasking,
        }[round_]
        try:
            outgoing, next_expected = close()
        except AbortError:
            self.state = ServerState.ABORTED
            raise
        self.counts[round_.value] = count
        self._index += 1
        self._expected = frozenset(next_expected)
        self._received = {}
        return outgoing

    def abort_notices(self, reason: str = "") -> list[Abort]:
        """After an abort: one notice for every client that was still live."""
        if self.state is not ServerState.ABORTED:
            raise ProtocolViolation(SERVER, "not-aborted", "the session has not aborted")
        count = len(self._received)
        return [
            Abort(self.params.session_id, SERVER, u, at_round=self.round, count=count, reason=reason)
            for u in sorted(self._expected)
        ]

    # ---- validation of one message (raises; no state change) ----------------

    def _validate(self, msg: Message) -> None:
        p, u = self.params, msg.sender
        if isinstance(msg, AdvertiseKeys):
            if p.malicious and not verify_signature(
                p.identity_keys[u], msg.signature, keys_payload(p.session_id, u, msg.c_pk, msg.s_pk)
            ):
                raise ProtocolViolation(u, "key-signature", "keys not signed by the client's identity key")
            # As points: a non-canonical encoding of a taken key is the same key (keys.x25519_point).
            taken = {x25519_point(k) for other in self._received.values() for k in (other.c_pk, other.s_pk)}  # type: ignore[attr-defined]
            c_point, s_point = x25519_point(msg.c_pk), x25519_point(msg.s_pk)
            if c_point == s_point or {c_point, s_point} & taken:
                raise ProtocolViolation(u, "duplicate-key", "public keys must be fresh and distinct")
            if is_small_order(msg.c_pk) or is_small_order(msg.s_pk):
                raise ProtocolViolation(u, "small-order-key", "advertised X25519 key has small order")
        elif isinstance(msg, EncryptedShares):
            want = p.neighbours(u) & self._keys.keys()
            if set(msg.ciphertexts) != want:
                raise ProtocolViolation(u, "share-recipients", "one ciphertext per neighbour in U1 is required")
        elif isinstance(msg, ConsistencySignature):
            if not verify_signature(p.identity_keys[u], msg.signature, consistency_payload(p.session_id, self._u3)):
                raise ProtocolViolation(u, "consistency-signature", "signature over the survivor list is invalid")
        elif isinstance(msg, UnmaskingShares):
            held = (p.neighbours(u) & self._u2) | {u}
            survivors = frozenset(self._u3)
            if set(msg.b_shares) != held & survivors or set(msg.s_shares) != held - survivors:
                raise ProtocolViolation(
                    u, "unmasking-shares", "must hold b shares of exactly the survivors and s shares of the dropped"
                )
        else:
            assert isinstance(msg, MaskedInput)

    # ---- closing each round -------------------------------------------------

    def _close_advertise(self) -> tuple[list[Message], frozenset[int]]:
        p = self.params
        self._keys = {u: (m.c_pk, m.s_pk, m.signature) for u, m in self._received.items()}  # type: ignore[attr-defined]
        u1 = frozenset(self._keys)
        out: list[Message] = [
            KeyRoster(p.session_id, SERVER, u, keys={v: self._keys[v] for v in sorted((p.neighbours(u) & u1) | {u})})
            for u in sorted(u1)
        ]
        return out, u1

    def _close_share_keys(self) -> tuple[list[Message], frozenset[int]]:
        p = self.params
        self._ciphertexts = {u: dict(m.ciphertexts) for u, m in self._received.items()}  # type: ignore[attr-defined]
        self._commitments = {u: m.commitment for u, m in self._received.items()}  # type: ignore[attr-defined]
        self._u2 = frozenset(self._received)
        out: list[Message] = [
            ForwardedShares(
                p.session_id,
                SERVER,
                u,
                ciphertexts={v: self._ciphertexts[v][u] for v in sorted(p.neighbours(u) & self._u2)},
            )
            for u in sorted(self._u2)
        ]
        return out, self._u2

    def _close_masked_input(self) -> tuple[list[Message], frozenset[int]]:
        p = self.params
        self._u3 = tuple(sorted(self._received))
        if p.malicious:
            out: list[Message] = [SurvivorList(p.session_id, SERVER, u, survivors=self._u3) for u in self._u3]
        else:
            out = [UnmaskRequest(p.session_id, SERVER, u, survivors=self._u3) for u in self._u3]
        return out, frozenset(self._u3)

    def _close_consistency(self) -> tuple[list[Message], frozenset[int]]:
        p = self.params
        self._signatures = {u: m.signature for u, m in sorted(self._received.items())}  # type: ignore[attr-defined]
        signers = frozenset(self._signatures)
        out: list[Message] = [
            UnmaskRequest(p.session_id, SERVER, u, survivors=self._u3, signatures=self._signatures)
            for u in sorted(signers)
        ]
        return out, signers

    def _name_hidden_cheaters(self, verified: dict[str, list[tuple[int, dict[int, int]]]], cheaters: dict[int, str]) -> None:
        """Check the shares the fast path did not use; name responders whose shares are off.

        ``verified`` lists, per kind of share, the secrets rebuilt from their t
        lowest responders' shares and verified, so those t shares are right.
        A wrong share from any other responder cannot change the sum, but an
        auditor wants it named.  One batched check covers every such secret
        (shamir.consistent); only if it fails is each secret examined.
        """
        p = self.params
        for which, members in verified.items():
            groups: dict[frozenset[int], list[tuple[int, dict[int, int]]]] = {}
            for v, shares in members:
                if len(shares) > p.threshold:
                    groups.setdefault(frozenset(shares), []).append((v, shares))
            for group in groups.values():
                digest = hashlib.sha256(p.session_id + which.encode())
                for v, shares in group:
                    digest.update(v.to_bytes(4, "big"))
                    for r, y in sorted(shares.items()):
                        digest.update(r.to_bytes(4, "big") + shamir.share_to_bytes(y))
                if shamir.consistent([shares for _, shares in group], p.threshold, digest.digest()):
                    continue
                for v, shares in group:
                    for r in shamir.off_polynomial(shares, p.threshold):
                        cheaters.setdefault(r, f"sent a wrong {which[0]} share for client {v}")

    def _close_unmasking(self) -> tuple[list[Message], frozenset[int]]:
        """Reconstruct b_u of every survivor and s_sk of every dropped client; unmask the sum."""
        p = self.params
        survivors = frozenset(self._u3)
        dropped = sorted(self._u2 - survivors)
        responses: dict[int, UnmaskingShares] = self._received  # type: ignore[assignment]
        cheaters: dict[int, str] = {}

        def shares_of(v: int, which: str) -> dict[int, int]:
            shares = {r: getattr(m, which)[v] for r, m in responses.items() if v in getattr(m, which)}
            if len(shares) < p.threshold:
                raise AbortError(Round.UNMASKING.value, len(shares), p.threshold, f"too few shares of client {v}")
            return shares

        verified: dict[str, list[tuple[int, dict[int, int]]]] = {"b_shares": [], "s_shares": []}

        def recover(v: int, which: str, verify) -> bytes:
            shares = shares_of(v, which)
            found = shamir.reconstruct_verified(shares, p.threshold, verify)
            if found is None:
                raise AbortError(
                    Round.UNMASKING.value, len(responses), p.threshold, f"shares of client {v} cannot be decoded"
                )
            if found[2]:
                verified[which].append((v, shares))
            for r in found[1]:
                cheaters[r] = f"sent a wrong {which[0]} share for client {v}"
            return found[0]

        assert self._masked_sum is not None
        total = MaskAccumulator(p, self._masked_sum.value)
        mask_keys = {u: X25519PublicKey.from_public_bytes(self._keys[u][1]) for u in self._u3}
        masks = []
        for v in self._u3:
            seed = recover(v, "b_shares", lambda s, v=v: seed_commitment(p.session_id, v, s) == self._commitments[v])
            masks.append((seed, self_mask_label(v), -1))
        for v in dropped:
            s_pk = self._keys[v][1]
            raw = recover(
                v, "s_shares", lambda s, pk=s_pk: raw_public(X25519PrivateKey.from_private_bytes(s)) == pk
            )
            s_sk = X25519PrivateKey.from_private_bytes(raw)
            for u in sorted(p.neighbours(v) & survivors):
                # y_u holds +PRG(s_uv) if v > u, else -PRG(s_uv): remove it.
                masks.append((agree(s_sk, mask_keys[u], u), pair_mask_label(u, v), -1 if v > u else +1))
        total.add_masks(masks)
        self._name_hidden_cheaters(verified, cheaters)
        counts = {**self.counts, Round.UNMASKING.value: len(responses)}
        self.result = ServerResult(total=total.reduced(), included=self._u3, counts=counts, cheaters=cheaters)
        self.state = ServerState.DONE
        return [], frozenset()
