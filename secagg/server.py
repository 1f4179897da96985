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

A multi-call session (``params.calls`` = L > 1, protocol_spec.md 16) stops
in ``CALL_DONE`` after each call's unmasking but the last; ``open_call``
starts the next call's masked_input round over the survivors of call 0
(pinned: a later call over any other set aborts before anything is unmasked).
``results`` holds every completed call's result.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from . import reprs, shamir
from .errors import AbortError, MalformedMessage, ProtocolViolation, SurvivorsChanged
from .keys import (
    agree,
    consistency_payload,
    is_small_order,
    keys_payload,
    partners_payload,
    raw_public,
    seed_commitment,
    verify_signature,
    x25519_point,
)
from .masking import MaskAccumulator, pair_mask_keys, self_mask_label
from .messages import (
    SERVER,
    Abort,
    AdvertiseKeys,
    CallOpen,
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
from .roster import roster_proofs, roster_root


_EMPTY = np.zeros(0, dtype=np.uint64)


class ServerState(enum.Enum):
    COLLECTING = "collecting"
    CALL_DONE = "call_done"  # a call of a multi-call session is unmasked; open_call starts the next
    DONE = "done"
    ABORTED = "aborted"


@dataclass(frozen=True)
class ServerResult:
    total: np.ndarray  # uint64, the sum mod M of the inputs of ``included`` in this call
    included: tuple[int, ...]  # U3
    counts: dict[str, int]  # clients that completed each round
    cheaters: dict[int, str] = field(default_factory=dict)  # responders proven to have sent wrong shares
    unattributed: bool = False  # a share was wrong but its sender could not be proven (nobody named for it)
    call: int = 0  # the oracle call of a multi-call session


class Server:
    """``auto_close=False``: the last answer of a round does not close it; the transport
    calls ``close_round()`` itself (tcp.py does, to run unmasking in a worker thread).
    ``max_liars``: the most responders assumed to lie about one secret's shares, the
    bound under which naming a cheater is sound (default ``params.max_liars``).
    ``pinned``: the survivor set of the aggregation's first call; see ``_close_masked_input``."""

    def __init__(
        self, params: PublicParams, *, auto_close: bool = True, max_liars: int | None = None,
        pinned: Iterable[int] | None = None,
    ):
        self.params = params
        self.pinned = None if pinned is None else tuple(sorted(pinned))
        self.state = ServerState.COLLECTING
        self.call = 0
        self.results: list[ServerResult] = []  # one per completed call
        self._rounds = rounds_for(params.malicious)
        self._index = 0
        self._expected: frozenset[int] = frozenset(params.client_ids)
        self._received: dict[int, Message] = {}
        self.counts: dict[str, int] = {}
        self.result: ServerResult | None = None
        # Per-round facts, filled as rounds close.
        self._keys: dict[int, tuple[bytes, bytes, bytes | None]] = {}
        self.roster_digest = b""  # malicious mode: root of the tree over U1's keys (roster.py)
        self._ciphertexts: dict[int, dict[int, bytes]] = {}
        self._commitments: dict[int, bytes] = {}
        self._u2: frozenset[int] = frozenset()
        self._u3: tuple[int, ...] = ()
        self._u3_set: frozenset[int] = frozenset()
        self._masked_sum: MaskAccumulator | None = None
        self._signatures: dict[int, bytes] = {}
        self._partner_signatures: dict[int, bytes] = {}  # sparse, malicious: each masked input's signed partners
        self._taken_keys: set[bytes] = set()  # advertise_keys: canonical points accepted so far (O(1) duplicate check)
        self._auto_close = auto_close
        self.max_liars = params.max_liars if max_liars is None else max_liars

    def __repr__(self) -> str:
        p = self.params
        return reprs.fields(
            "Server", n=p.n, threshold=p.threshold, dim=p.dim, modulus_bits=p.modulus_bits, malicious=p.malicious,
            state=self.state.value, call=self.call, round=self.round.value,
            waiting_for=reprs.ids(sorted(self.waiting_for)),
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

    @property
    def round_complete(self) -> bool:
        """Every client expected in this round has answered (O(1): answers are a subset of the expected)."""
        return self.state is ServerState.COLLECTING and len(self._received) == len(self._expected)

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
        if msg.call != self.call:  # a message of another call never counts for this one (spec 16.4)
            raise ProtocolViolation(u, "wrong-call", f"message of call {msg.call} during call {self.call}")
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
        if isinstance(msg, AdvertiseKeys):
            self._taken_keys |= {x25519_point(msg.c_pk), x25519_point(msg.s_pk)}
        self._received[u] = msg
        if self._auto_close and self.round_complete:
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

    def open_call(self, broadcast: bytes = b"") -> list[CallOpen]:
        """Start the next call of a multi-call session: its masked_input round, over the pinned survivors.

        ``broadcast`` is the call's public input (opaque here: RFA's Weiszfeld v)."""
        p = self.params
        if self.state is not ServerState.CALL_DONE:
            raise ProtocolViolation(SERVER, "out-of-order", f"open_call while the session is {self.state.value}")
        assert self.pinned is not None  # set when call 0 completed
        self.call += 1
        self.state = ServerState.COLLECTING
        self.result = None
        self._index = self._rounds.index(Round.MASKED_INPUT)
        self._expected = frozenset(self.pinned)
        self._received = {}
        self._masked_sum = None
        self._signatures = {}
        self._partner_signatures = {}
        return [CallOpen(p.session_id, SERVER, u, call=self.call, broadcast=broadcast) for u in self.pinned]

    def abort_notices(self, reason: str = "") -> list[Abort]:
        """After an abort: one notice for every client that was still live."""
        if self.state is not ServerState.ABORTED:
            raise ProtocolViolation(SERVER, "not-aborted", "the session has not aborted")
        count = len(self._received)
        return [
            Abort(self.params.session_id, SERVER, u, call=self.call, at_round=self.round, count=count, reason=reason)
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
            c_point, s_point = x25519_point(msg.c_pk), x25519_point(msg.s_pk)
            if c_point == s_point or {c_point, s_point} & self._taken_keys:
                raise ProtocolViolation(u, "duplicate-key", "public keys must be fresh and distinct")
            if is_small_order(msg.c_pk) or is_small_order(msg.s_pk):
                raise ProtocolViolation(u, "small-order-key", "advertised X25519 key has small order")
        elif isinstance(msg, EncryptedShares):
            want = p.neighbours(u) & self._keys.keys()
            if set(msg.ciphertexts) != want:
                raise ProtocolViolation(u, "share-recipients", "one ciphertext per neighbour in U1 is required")
        elif isinstance(msg, ConsistencySignature):
            payload = consistency_payload(p.session_id, self.roster_digest, self._u3, self.call)
            if not verify_signature(p.identity_keys[u], msg.signature, payload):
                raise ProtocolViolation(u, "consistency-signature", "signature over the survivor list is invalid")
        elif isinstance(msg, UnmaskingShares):
            held = (p.neighbours(u) & self._u2) | {u}
            # A later call is over the pinned survivors of call 0: nobody is dropped, no mask key is asked for.
            dropped = held - self._u3_set if self.call == 0 else set()
            if set(msg.b_shares) != held & self._u3_set or set(msg.s_shares) != dropped:
                raise ProtocolViolation(
                    u, "unmasking-shares", "must hold b shares of exactly the survivors and s shares of the dropped"
                )
        else:
            assert isinstance(msg, MaskedInput)
            if p.malicious and p.sparse and not verify_signature(
                p.identity_keys[u], msg.signature,
                partners_payload(p.session_id, self.roster_digest, u, self._partners_of(u), self.call),
            ):
                raise ProtocolViolation(u, "partner-signature", "masked input without a signature on its partners")

    # ---- closing each round -------------------------------------------------

    def _close_advertise(self) -> tuple[list[Message], frozenset[int]]:
        p = self.params
        self._keys = {u: (m.c_pk, m.s_pk, m.signature) for u, m in self._received.items()}  # type: ignore[attr-defined]
        u1 = frozenset(self._keys)
        proofs = {}
        if p.malicious:
            if p.sparse:  # a client sees only its neighbours: it gets the root and a path to its own entry
                proofs = roster_proofs(self._keys)
                self.roster_digest = next(iter(proofs.values())).root
            else:
                self.roster_digest = roster_root(self._keys)
        out: list[Message] = [
            KeyRoster(
                p.session_id, SERVER, u, keys={v: self._keys[v] for v in sorted((p.neighbours(u) & u1) | {u})},
                proof=proofs.get(u),
            )
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

    def _partners_of(self, u: int) -> tuple[int, ...]:
        """The neighbours u masked against: those whose shares were forwarded to it, in a later call
        only the pinned survivors among them."""
        live = self._u2 if self.call == 0 else self._u2 & frozenset(self.pinned or ())
        return tuple(sorted(self.params.neighbours(u) & live))

    def _local_survivors(self, u: int) -> tuple[int, ...]:
        """The survivors among u and its neighbours: the list u acts on.

        All of U3 on the complete graph, and in malicious mode on any graph:
        there every client signs the same list (14.5)."""
        if not self.params.sparse or self.params.malicious:
            return self._u3
        return tuple(sorted((self.params.neighbours(u) & self._u3_set) | {u}))

    def _close_masked_input(self) -> tuple[list[Message], frozenset[int]]:
        p = self.params
        # A later call of one aggregation over another survivor set would let its sum be subtracted
        # from the first call's: stop before anything is unmasked (the clients would refuse anyway).
        if self.pinned is not None and tuple(sorted(self._received)) != self.pinned:
            lost = sorted(set(self.pinned) - self._received.keys())
            raise SurvivorsChanged(
                Round.MASKED_INPUT.value, len(self._received), p.threshold,
                f"the survivors differ from the pinned set (lost {lost[:5]}, extra "
                f"{sorted(self._received.keys() - set(self.pinned))[:5]}): two sums over different sets reveal "
                "their difference",
            )
        self._u3 = tuple(sorted(self._received))
        self._u3_set = frozenset(self._u3)
        if p.malicious and p.sparse:  # validated on arrival (14.5)
            self._partner_signatures = {u: m.signature for u, m in self._received.items()}  # type: ignore[attr-defined]
        kind = SurvivorList if p.malicious else UnmaskRequest
        out: list[Message] = [
            kind(p.session_id, SERVER, u, call=self.call, survivors=self._local_survivors(u)) for u in self._u3
        ]
        return out, self._u3_set

    def _close_consistency(self) -> tuple[list[Message], frozenset[int]]:
        p = self.params
        self._signatures = {u: m.signature for u, m in sorted(self._received.items())}  # type: ignore[attr-defined]
        signers = frozenset(self._signatures)
        quorum = p.consistency_quorum
        if len(signers) < quorum:
            raise AbortError(Round.CONSISTENCY_CHECK.value, len(signers), quorum, "too few consistency signatures")
        if not p.sparse:
            out: list[Message] = [
                UnmaskRequest(p.session_id, SERVER, u, call=self.call, survivors=self._u3, signatures=self._signatures)
                for u in sorted(signers)
            ]
            return out, signers
        # Sparse graph (14.5): a quorum (the lowest ids), not O(n) more signatures than a client checks,
        # and the signed partner sets of the recipient's listed neighbours.
        base = dict(list(self._signatures.items())[:quorum])
        partners = {v: (self._partners_of(v), self._partner_signatures[v]) for v in self._u3}
        out = [
            UnmaskRequest(
                p.session_id, SERVER, u, call=self.call, survivors=self._u3, signatures=base,
                partners={v: partners[v] for v in sorted(p.neighbours(u) & self._u3_set)},
            )
            for u in sorted(signers)
        ]
        return out, signers

    def _recover(
        self, which: str, owners: list[int], verify: dict[int, Callable[[bytes], bool]], found: "_Findings"
    ) -> dict[int, bytes]:
        """Verified secrets of ``owners`` from the ``which`` shares of the unmasking answers.

        Secrets shared among the same responders (all of them, on the complete
        graph) are rebuilt together (shamir.recover_groups); responders caught
        lying stay suspects for every later group, so they cost one decoding in
        the session, not one per secret (audit 14.2).
        """
        p = self.params
        responses: dict[int, UnmaskingShares] = self._received  # type: ignore[assignment]
        groups: dict[tuple[int, ...], list[int]] = {}
        holders: dict[int, dict[int, int]] = {v: {} for v in owners}
        for r in sorted(responses):
            for v, y in getattr(responses[r], which).items():
                holders[v][r] = y
        for v in owners:
            if len(holders[v]) < p.threshold:
                raise AbortError(Round.UNMASKING.value, len(holders[v]), p.threshold, f"too few shares of client {v}")
            groups.setdefault(tuple(holders[v]), []).append(v)
        secrets: dict[int, bytes] = {}
        # All groups in one call: on a sparse graph every owner's holders differ, and the honest
        # groups are settled together (shamir.recover_groups), not one small interpolation each.
        results = shamir.recover_groups(
            [
                (xs, np.stack([shamir.share_array([holders[v][x] for x in xs]) for v in members]),
                 [verify[v] for v in members])
                for xs, members in groups.items()
            ],
            p.threshold,
            suspects=found.suspects,
            max_liars=self.max_liars,
        )
        for (xs, members), got in zip(groups.items(), results):
            found.suspects |= got.suspects
            for r in sorted(got.liars):
                found.cheaters.setdefault(r, f"sent a wrong {which[0]} share (secrets of clients {members[:3]}...)")
            found.unattributed |= got.unattributed
            for v, secret in zip(members, got.secrets):
                if secret is None:
                    raise AbortError(
                        Round.UNMASKING.value, len(xs), p.threshold, f"shares of client {v} cannot be decoded"
                    )
                secrets[v] = secret
        return secrets

    def _close_unmasking(self) -> tuple[list[Message], frozenset[int]]:
        """Reconstruct b_u^(l) of every survivor and s_sk of every dropped client; unmask call l's sum."""
        p, call = self.params, self.call
        survivors = self._u3_set
        dropped = sorted(self._u2 - survivors) if call == 0 else []  # later calls: the pinned set, no dropouts
        found = _Findings()
        span = slice(32 * call, 32 * (call + 1))  # u's commitment to b_u^(l) among its L
        seeds = self._recover(
            "b_shares",
            list(self._u3),
            {v: (lambda s, v=v: seed_commitment(p.session_id, v, s, call) == self._commitments[v][span])
             for v in self._u3},
            found,
        )
        keys = self._recover(
            "s_shares",
            dropped,
            {
                v: (lambda s, pk=self._keys[v][1]: raw_public(X25519PrivateKey.from_private_bytes(s)) == pk)
                for v in dropped
            },
            found,
        )
        assert self._masked_sum is not None
        total = MaskAccumulator(p, self._masked_sum.value)
        masks = [(seeds[v], self_mask_label(v, call), -1) for v in self._u3]
        keyed: list[tuple[bytes, int]] = []
        s_pks: dict[int, X25519PublicKey] = {}  # one key object per survivor, not per (dropped, survivor) pair
        for v in dropped:
            s_sk = X25519PrivateKey.from_private_bytes(keys[v])
            for u in sorted(p.neighbours(v) & survivors):
                # y_u holds +PRG(s_uv) if v > u, else -PRG(s_uv): remove it.
                if u not in s_pks:
                    s_pks[u] = X25519PublicKey.from_public_bytes(self._keys[u][1])
                key = pair_mask_keys(agree(s_sk, s_pks[u], u), p.session_id, u, v, call + 1)[call]
                keyed.append((key, -1 if v > u else +1))
        total.add_masks(masks, keyed)
        counts = {**self.counts, Round.UNMASKING.value: len(self._received)}
        self.result = ServerResult(
            total=total.reduced(),
            included=self._u3,
            counts=counts,
            cheaters=found.cheaters,
            unattributed=found.unattributed,
            call=call,
        )
        self.results.append(self.result)
        if call + 1 < p.calls:
            self.state = ServerState.CALL_DONE
            if self.pinned is None:
                self.pinned = self._u3  # spec 16.3: every later call is over these survivors
        else:
            self.state = ServerState.DONE
        return [], frozenset()


@dataclass
class _Findings:
    """What reconstruction learnt about the responders, carried across secrets."""

    suspects: frozenset[int] = frozenset()
    cheaters: dict[int, str] = field(default_factory=dict)
    unattributed: bool = False
