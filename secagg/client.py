"""The client's side of the protocol as a sans-I/O state machine.

``Client.start()`` returns the client's ``advertise_keys`` message and
``Client.receive(data)`` consumes one server message and returns the messages
to send back.  No sockets, clocks or global randomness: the transport moves
bytes, the injected ``RandomSource`` supplies keys, seeds and nonces.

Every check a client makes on the server lives here (Bonawitz et al. 2017,
Fig. 4, the "assert" lines): the roster, the forwarded ciphertexts, the
survivor list, the consistency signatures and, above all, the rule that no
peer ever gets both its self-mask share and its mask-key share revealed.
In malicious-server mode every signature after round 1 binds the digest of
this session's roster (roster.py), and an injected ledger refuses a session
id signed in before (ledger.py); a pinned survivor set restricts which list
the client will unmask (one aggregation, one set).  A ``receive`` that
raises leaves the client exactly as it was.

A multi-call session (``params.calls`` = L > 1, protocol_spec.md 16) runs the
key rounds once: share_keys shares one fresh self-mask seed per call, and
after unmasking call l the client accepts a ``call_open`` for call l + 1 only
if that unmasking listed it (so no honest peer revealed a share of its mask
key) and then masks the input its ``inputs`` callback returns, against the
survivors pinned by call 0 only.
"""

from __future__ import annotations

import enum
from typing import Callable, Iterable, Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from . import reprs, shamir
from .errors import AbortError, ParameterError, ProtocolViolation
from .keys import (
    agree,
    consistency_payload,
    keys_payload,
    partners_payload,
    raw_private,
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
)
from .ledger import SessionLedger
from .params import PublicParams
from .rng import RandomSource, SystemRandom
from .roster import leaf_hash, roster_root, verify_inclusion
from .sharecrypt import channel_keys, decrypt_shares, encrypt_shares


class ClientState(enum.Enum):
    START = "start"
    ADVERTISED = "advertised"  # sent keys, waits for the roster
    SHARED = "shared"  # sent encrypted shares, waits for the forwarded ones
    MASKED = "masked"  # sent masked input, waits for survivors / unmask request
    SIGNED = "signed"  # malicious mode: signed the survivor list
    DONE = "done"  # revealed its shares for the current call (a multi-call session may open the next)
    ABORTED = "aborted"


# A client's input for one call: (call index, the call_open that opened it, None for call 0) -> vector.
Inputs = Callable[[int, "CallOpen | None"], np.ndarray]


class Client:
    def __init__(
        self,
        params: PublicParams,
        client_id: int,
        value: np.ndarray | None,
        *,
        rng: RandomSource | None = None,
        identity_key: Ed25519PrivateKey | None = None,
        ledger: SessionLedger | None = None,
        pinned: Iterable[int] | None = None,
        inputs: Inputs | None = None,
    ):
        """``ledger``: where a client with a long-term identity records the session ids it
        signs in; ``start()`` refuses one recorded before (malicious mode, ledger.py).
        ``pinned``: the survivor set of the earlier calls of the same aggregation; the
        client signs and unmasks only a survivor list equal to it (protocol_spec.md, RFA
        section "Across calls").
        ``inputs``: the input of each call of a multi-call session, asked for when the
        call opens (required when ``params.calls > 1``; ``value`` is then ignored)."""
        if client_id not in params.id_set:
            raise ParameterError(f"client id {client_id} is not in this session")
        if params.calls > 1 and inputs is None:
            raise ParameterError(f"client {client_id}: a session of {params.calls} calls needs an inputs callback")
        if inputs is None:
            value = self._checked(params, client_id, value)
        if params.malicious:
            if identity_key is None:
                raise ParameterError(f"client {client_id}: malicious-server mode needs an identity key")
            if raw_public(identity_key) != params.identity_keys[client_id]:
                raise ParameterError(f"client {client_id}: identity key does not match the public parameters")
        self.params = params
        self.id = client_id
        self.state = ClientState.START
        self.call = 0  # the oracle call in progress
        self._value = value if inputs is None else None
        self._inputs = inputs
        self._rng = rng or SystemRandom()
        self._identity = identity_key
        self._ledger = ledger
        self._pinned = None if pinned is None else frozenset(pinned)
        self._c_sk = X25519PrivateKey.from_private_bytes(self._rng.bytes(32))
        self._s_sk = X25519PrivateKey.from_private_bytes(self._rng.bytes(32))
        self._roster: dict[int, tuple[bytes, bytes, bytes | None]] = {}
        self._channels: dict[int, tuple[bytes, bytes]] = {}  # peer -> (send key, receive key)
        self._mask_keys: dict[int, X25519PublicKey] = {}  # peer -> its pairwise-mask public key
        self._seeds: list[bytes] = []  # b^(l), one per call
        self._own_shares: tuple[tuple[int, ...], int] = ((), 0)
        self._held: dict[int, tuple[tuple[int, ...], int]] = {}  # peer -> (b^(l) shares, s share) held for it
        self._pair_keys: dict[int, list[bytes]] = {}  # peer -> the PRG key of our pair's mask in each call
        self._partners: tuple[int, ...] = ()  # the peers this client masks against in the current call
        self._replaying = False  # inside receive(replay=True)
        self._survivors: frozenset[int] | None = None  # the list signed (malicious mode)
        self.roster_digest = b""  # malicious mode: root of the roster tree, bound into every later signature
        self.unmasked_over: frozenset[int] | None = None  # the survivor list this client revealed shares for
        self._revealed_b: frozenset[int] = frozenset()
        self._revealed_s: frozenset[int] = frozenset()
        self.abort_reason: str | None = None

    def __repr__(self) -> str:
        p = self.params
        return reprs.fields(
            "Client", id=self.id, n=p.n, threshold=p.threshold, dim=p.dim, call=self.call, state=self.state.value
        )

    @staticmethod
    def _checked(params: PublicParams, client_id: int, value: object) -> np.ndarray:
        value = np.asarray(value)
        if value.shape != (params.dim,) or value.dtype.kind not in "ui":
            raise ParameterError(f"client {client_id}: input must be an integer vector of length {params.dim}")
        if value.size and (int(value.min()) < 0 or int(value.max()) >= params.modulus):
            raise ParameterError(f"client {client_id}: input values must lie in [0, 2**{params.modulus_bits})")
        return value.astype(params.dtype)

    def _input(self, call: int, opened: CallOpen | None) -> np.ndarray:
        if self._inputs is None:
            assert self._value is not None
            return self._value
        return self._checked(self.params, self.id, self._inputs(call, opened))

    # ---- public -------------------------------------------------------------

    @property
    def completed_share_keys(self) -> frozenset[int]:
        """U2 as this client saw it: itself and the peers whose shares it holds."""
        return frozenset(self._held) | {self.id}

    def start(self) -> list[Message]:
        """Round advertise_keys: publish the two X25519 public keys."""
        if self.state is not ClientState.START:
            raise ProtocolViolation(self.id, "out-of-order", "start() called twice")
        if self.params.malicious and self._ledger is not None and not self._ledger.claim(self.params.session_id):
            raise ProtocolViolation(
                SERVER, "session-reused", f"client {self.id} has already signed in session {self.params.session_id.hex()[:16]}..."
            )
        c_pk, s_pk = raw_public(self._c_sk), raw_public(self._s_sk)
        signature = None
        if self.params.malicious:
            assert self._identity is not None
            signature = self._identity.sign(keys_payload(self.params.session_id, self.id, c_pk, s_pk))
        self.state = ClientState.ADVERTISED
        return [AdvertiseKeys(self.params.session_id, self.id, SERVER, c_pk=c_pk, s_pk=s_pk, signature=signature)]

    def receive(self, data: bytes | Message, *, replay: bool = False) -> list[Message]:
        """Consume one server message; return the replies. Raises without changing state.

        ``replay=True`` rebuilds the state from a message this client answered before
        (a transport that keeps no client in memory, rfa_flower): every check runs and the
        state moves as before, but no reply is returned, so a masked input is not expanded
        again (a multi-call session would otherwise replay every earlier call's masks)."""
        if isinstance(data, Message):
            data = data.encode()  # same validation path as bytes off the wire
        msg = decode(data, self.params)
        if msg.sender != SERVER or msg.recipient != self.id:
            raise ProtocolViolation(SERVER, "recipient", f"message addressed to {msg.recipient}, not {self.id}")
        if isinstance(msg, Abort):  # whatever call it names: the session is over
            self.state = ClientState.ABORTED
            self.abort_reason = f"server aborted in {msg.at_round} with {msg.count} clients: {msg.reason}"
            return []
        self._replaying = replay
        try:
            replies = self._on_call_open(msg) if isinstance(msg, CallOpen) else self._dispatch(msg)
        finally:
            self._replaying = False
        return [] if replay else replies

    def _dispatch(self, msg: Message) -> list[Message]:
        """A message of the current call, to the handler of its kind if the state allows it."""
        if msg.call != self.call:
            raise ProtocolViolation(SERVER, "wrong-call", f"{msg.KIND} of call {msg.call} during call {self.call}")
        handler, states = {
            KeyRoster: (self._on_roster, {ClientState.ADVERTISED}),
            ForwardedShares: (self._on_forwarded, {ClientState.SHARED}),
            SurvivorList: (self._on_survivors, {ClientState.MASKED} if self.params.malicious else set()),
            UnmaskRequest: (
                self._on_unmask,
                {ClientState.SIGNED if self.params.malicious else ClientState.MASKED, ClientState.DONE},
            ),
        }.get(type(msg), (None, set()))
        if handler is None or self.state not in states:
            raise ProtocolViolation(SERVER, "out-of-order", f"{msg.KIND} while client {self.id} is {self.state.value}")
        return handler(msg)

    # ---- rounds -------------------------------------------------------------

    def _on_roster(self, msg: KeyRoster) -> list[Message]:
        """Round share_keys: check the roster, share b_u and s_sk, encrypt to each peer."""
        p, u = self.params, self.id
        roster = dict(msg.keys)
        mine = roster.get(u)
        if mine is None or mine[:2] != (raw_public(self._c_sk), raw_public(self._s_sk)):
            raise ProtocolViolation(SERVER, "roster-self", "the roster omits or alters this client's keys")
        if len(roster) < p.threshold:
            raise AbortError(Round.SHARE_KEYS.value, len(roster), p.threshold, "roster too short")
        all_keys = [x25519_point(k) for c_pk, s_pk, _ in roster.values() for k in (c_pk, s_pk)]  # as points
        if len(set(all_keys)) != len(all_keys):
            raise ProtocolViolation(SERVER, "roster-duplicate-key", "two advertised public keys are equal")
        digest = b""
        if p.malicious:
            for v, (c_pk, s_pk, sig) in roster.items():
                if not verify_signature(p.identity_keys[v], sig, keys_payload(p.session_id, v, c_pk, s_pk)):
                    raise ProtocolViolation(SERVER, "roster-signature", f"keys of client {v} are not signed by it")
            digest = self._digest_of(msg, roster)
        peers = sorted(p.neighbours(u) & roster.keys())
        # The agreements first: a small-order key raises here, before any randomness is drawn,
        # so a refused roster leaves even the injected RNG where it was.
        channels = {v: channel_keys(agree(self._c_sk, roster[v][0], v), p.session_id, u, v) for v in peers}
        mask_keys = {v: X25519PublicKey.from_public_bytes(roster[v][1]) for v in peers}
        # Spec 16.2: one fresh seed per planned call, all shared now; unmasking call l reveals b^(l) only.
        seeds = [self._rng.bytes(shamir.SECRET_BYTES) for _ in range(p.calls)]
        holders = peers + [u]
        *b_shares, s_shares = shamir.split_many([*seeds, raw_private(self._s_sk)], holders, p.threshold, self._rng)
        ciphertexts = {
            v: encrypt_shares(channels[v][0], p.session_id, u, v, [b[v] for b in b_shares], s_shares[v], self._rng)
            for v in peers
        }
        commitment = b"".join(seed_commitment(p.session_id, u, seed, call) for call, seed in enumerate(seeds))
        reply = EncryptedShares(p.session_id, u, SERVER, commitment=commitment, ciphertexts=ciphertexts)
        self._roster, self._channels, self._mask_keys, self._seeds = roster, channels, mask_keys, seeds
        self.roster_digest = digest
        self._own_shares = (tuple(b[u] for b in b_shares), s_shares[u])
        self.state = ClientState.SHARED
        return [reply]

    def _digest_of(self, msg: KeyRoster, roster: Mapping[int, tuple[bytes, bytes, bytes | None]]) -> bytes:
        """The roster digest this client signs under from now on (roster.py).

        Complete graph: the root of the roster it received, which is all of U1.
        Sparse graph: the root the server sent, once the proof shows it holds
        this client's own fresh keys, so no root of another session can.
        """
        if msg.proof is None:
            return roster_root(roster)
        c_pk, s_pk, _ = roster[self.id]
        if msg.proof.size < len(roster) or not verify_inclusion(leaf_hash(self.id, c_pk, s_pk), msg.proof):
            raise ProtocolViolation(SERVER, "roster-proof", "the roster digest does not hold this client's keys")
        return msg.proof.root

    def _on_forwarded(self, msg: ForwardedShares) -> list[Message]:
        """Round masked_input: decrypt the shares held for peers, mask the input (Fig. 4, round 2)."""
        p, u = self.params, self.id
        senders = set(msg.ciphertexts)
        allowed = p.neighbours(u) & self._roster.keys()
        if not senders <= allowed:
            raise ProtocolViolation(SERVER, "forwarded-sender", f"shares from {sorted(senders - allowed)[:5]}")
        if len(senders) + 1 < p.threshold:
            raise AbortError(Round.MASKED_INPUT.value, len(senders) + 1, p.threshold, "too few peers shared keys")
        held: dict[int, tuple[tuple[int, ...], int]] = {}
        for v in sorted(senders):
            opened = decrypt_shares(self._channels[v][1], p.session_id, v, u, msg.ciphertexts[v], p.calls)
            if opened is None:
                raise ProtocolViolation(SERVER, "share-authentication", f"ciphertext from client {v} does not verify")
            try:
                held[v] = (tuple(map(shamir.share_from_bytes, opened[0])), shamir.share_from_bytes(opened[1]))
            except ValueError as exc:
                raise ProtocolViolation(v, "share-encoding", str(exc)) from None
        value = self._input(0, None)
        # One X25519 agreement and one derivation per pair, here, for every call of the session (16.2).
        keys = {
            v: pair_mask_keys(agree(self._s_sk, self._mask_keys[v], v), p.session_id, u, v, p.calls)
            for v in sorted(senders)
        }
        reply = self._masked(value, tuple(sorted(senders)), keys)
        self._held, self._pair_keys = held, keys
        self.state = ClientState.MASKED
        return [reply]

    def _masked(self, value: np.ndarray, partners: tuple[int, ...], keys: Mapping[int, list[bytes]]) -> MaskedInput:
        """The masked input of the current call: y = x + PRG(b^(l)) + sum of +-PRG(s_uv, l) (Fig. 4, round 2)."""
        p, u, call = self.params, self.id, self.call
        self._partners = partners
        if self._replaying:  # the reply was sent before and is dropped (receive(replay=True))
            return MaskedInput(p.session_id, u, SERVER, call=call)
        acc = MaskAccumulator(p, value)
        acc.add_masks(
            [(self._seeds[call], self_mask_label(u, call), +1)],
            keyed=[(keys[v][call], +1 if v > u else -1) for v in partners],
        )
        signature = None
        if p.malicious and p.sparse:  # 14.5: my holders check whom I masked against, without me
            assert self._identity is not None
            signature = self._identity.sign(partners_payload(p.session_id, self.roster_digest, u, partners, call))
        return MaskedInput(p.session_id, u, SERVER, call=call, masked=acc.wire(), signature=signature)

    def _on_call_open(self, msg: CallOpen) -> list[Message]:
        """Spec 16.3: mask call l + 1's input against the pinned survivors, once call l listed this client.

        Only a client whose own unmasking of call l listed it gets here (state DONE):
        a client the server counted as dropped in any call had its mask key s_sk
        reconstructed, which exposes every later pairwise mask of its, so its
        input would be in the clear; it refuses (a dropped client never comes back).
        """
        if self.state is not ClientState.DONE or msg.call != self.call + 1:
            raise ProtocolViolation(
                SERVER, "out-of-order",
                f"call_open for call {msg.call} while client {self.id} is {self.state.value} in call {self.call}",
            )
        assert self._pinned is not None  # set by call 0's unmasking
        value = self._input(msg.call, msg)  # may refuse (raise): nothing has changed yet
        self.call = msg.call
        reply = self._masked(value, tuple(v for v in self._partners if v in self._pinned), self._pair_keys)
        self._survivors = None
        self.state = ClientState.MASKED
        return [reply]

    def _check_survivors(self, survivors: tuple[int, ...], round_: Round) -> frozenset[int]:
        """The guards on a survivor list: no duplicates, own neighbourhood part inside U2, contains self, >= t.

        The list is U3 restricted to this client's neighbourhood, except in
        malicious mode on a sparse graph, where it is all of U3 (one list for
        everybody to sign, 14.5); the guards then apply to its neighbourhood part.
        """
        p, listed = self.params, frozenset(survivors)
        if len(listed) != len(survivors):
            raise ProtocolViolation(SERVER, "survivors-duplicate", "the survivor list repeats an id")
        local = listed & (p.neighbours(self.id) | {self.id}) if p.sparse and p.malicious else listed
        unknown = local - self.completed_share_keys
        if unknown:
            raise ProtocolViolation(SERVER, "survivors-unknown", f"{sorted(unknown)[:5]} never completed share_keys")
        if self.id not in listed:
            raise ProtocolViolation(SERVER, "survivors-omit-self", "the survivor list omits this client")
        if len(local) < p.threshold:
            raise AbortError(round_.value, len(local), p.threshold, "survivor list too short")
        if p.malicious and len(listed) < p.consistency_quorum:
            raise AbortError(round_.value, len(listed), p.consistency_quorum, "fewer survivors than the signature quorum")
        if self._pinned is not None:
            # On a sparse graph in honest-but-curious mode the list is this client's neighbourhood part.
            pinned = self._pinned if not p.sparse or p.malicious else self._pinned & (p.neighbours(self.id) | {self.id})
            if listed != pinned:
                raise ProtocolViolation(
                    SERVER, "survivors-pinned",
                    f"survivors differ from the set pinned by this aggregation's first call "
                    f"(missing {sorted(pinned - listed)[:5]}, extra {sorted(listed - pinned)[:5]})",
                )
        return listed

    def _on_survivors(self, msg: SurvivorList) -> list[Message]:
        """Round consistency_check (malicious mode): sign the survivor set."""
        listed = self._check_survivors(msg.survivors, Round.CONSISTENCY_CHECK)
        assert self._identity is not None
        signature = self._identity.sign(
            consistency_payload(self.params.session_id, self.roster_digest, msg.survivors, self.call)
        )
        self._survivors = listed
        self.state = ClientState.SIGNED
        return [ConsistencySignature(self.params.session_id, self.id, SERVER, call=self.call, signature=signature)]

    def _check_partners(self, listed: frozenset[int], partners: Mapping[int, tuple[tuple[int, ...], bytes]]) -> None:
        """14.5: reveal a listed neighbour's b-share only if it masked against t - 1 listed clients.

        Otherwise the server could have forwarded v few shares, left all of v's
        partners out of the list, and unmasked x_v alone with their s-keys.  The
        partner set is signed by v with its masked input, so every honest holder
        of v judges the same set against the same list.
        """
        p = self.params
        for v in sorted(listed & self._held.keys()):
            if v not in partners:
                raise AbortError(Round.UNMASKING.value, 0, p.threshold - 1, f"no partner set of listed client {v}")
            ids, sig = partners[v]
            if not verify_signature(
                p.identity_keys[v], sig, partners_payload(p.session_id, self.roster_digest, v, ids, self.call)
            ):
                raise ProtocolViolation(SERVER, "partner-signature", f"partner set of client {v} is not signed by it")
            if len(set(ids)) != len(ids) or not set(ids) <= p.neighbours(v):
                raise ProtocolViolation(v, "partner-set", f"client {v} signed partners that are not its neighbours")
            kept = len(set(ids) & listed)
            if kept < p.threshold - 1:
                raise AbortError(
                    Round.UNMASKING.value, kept, p.threshold - 1, f"the list keeps too few partners of client {v}"
                )

    def _on_unmask(self, msg: UnmaskRequest) -> list[Message]:
        """Round unmasking: reveal b shares of survivors and s shares of the dropped, never both."""
        p = self.params
        listed = self._check_survivors(msg.survivors, Round.UNMASKING)
        if p.malicious:
            if listed != self._survivors:
                raise ProtocolViolation(SERVER, "survivors-changed", "differs from the list this client signed")
            signatures = msg.signatures or {}
            if not signatures.keys() <= listed:
                raise ProtocolViolation(SERVER, "consistency-signer", "a signature from a non-survivor")
            if len(signatures) < p.consistency_quorum:
                raise AbortError(
                    Round.UNMASKING.value, len(signatures), p.consistency_quorum, "too few consistency signatures"
                )
            payload = consistency_payload(p.session_id, self.roster_digest, msg.survivors, self.call)
            for v, sig in signatures.items():
                if not verify_signature(p.identity_keys[v], sig, payload):
                    raise ProtocolViolation(SERVER, "consistency-signature", f"signature of client {v} does not verify")
            if p.sparse:
                self._check_partners(listed, msg.partners or {})
        elif msg.signatures is not None:
            raise ProtocolViolation(SERVER, "unexpected-signatures", "signatures in honest-but-curious mode")
        holdings = {**self._held, self.id: self._own_shares}
        reveal_b = listed & holdings.keys()
        # The unlisted among this call's partners: in a later call all of them are listed (pinning), so
        # only call 0 reveals mask keys (spec 16.3).
        reveal_s = frozenset(self._partners) - listed
        # Bonawitz et al. Sec. 4: revealing both shares of one peer unmasks its input.
        if reveal_b & (self._revealed_s | reveal_s) or reveal_s & (self._revealed_b | reveal_b):
            raise ProtocolViolation(SERVER, "both-shares", "asks for both shares of a peer")
        reply = UnmaskingShares(
            p.session_id,
            self.id,
            SERVER,
            call=self.call,
            b_shares={v: holdings[v][0][self.call] for v in sorted(reveal_b)},
            s_shares={v: holdings[v][1] for v in sorted(reveal_s)},
        )
        self._revealed_b |= reveal_b
        self._revealed_s |= reveal_s
        self.unmasked_over = listed
        if self._pinned is None and p.calls > 1:
            self._pinned = listed  # every later call of this session must be over the same survivors
        self.state = ClientState.DONE
        return [reply]
