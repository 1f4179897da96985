"""The secure weighted-average oracle of the RFA paper (Sec. III-A).

Given w_i in R^d and beta_i > 0 on each client, return
sum_i beta_i w_i / sum_i beta_i over the included clients, computed by one
secure aggregation session on the fixed-point encoding of (beta_i w_i, beta_i)
(``encoding.py``).  The server learns the two sums, sum beta_i w_i and
sum beta_i, and nothing else about any w_i or beta_i.  The oracle counts its
calls, the cost measure of the RFA paper.

The bounds of the encoding are public and every client checks its own input
against them before it sends anything.  By default an input outside them is
refused (``OutOfBounds``, naming the client, the bound and the value): the
oracle raises before any session starts, or, with ``on_refusal="dropout"``,
plays the deployment, where only that client refuses and the session goes on
without it, as if it had dropped out before advertising its keys.  Clipping
into the bounds happens only when asked for (``clip=True``); the result then
counts the clipped inputs, and ``error_bound`` is infinite when an included
input was clipped (how far it was clipped is private; ``quantization_error``
still bounds the distance to the average of the clipped inputs).

An aggregation that makes several calls over one cohort (RFA's Weiszfeld
steps) opens one ``OracleSession`` (``oracle.session(calls)``): its calls share
one secure aggregation session, whose key rounds run once (protocol_spec.md
16).  The oracle counts ``calls`` (the RFA paper's cost measure) and
``sessions`` (key agreements and secret sharings) apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Literal, Mapping

import numpy as np

from . import reprs
from .encoding import FixedPointEncoding
from .errors import OutOfBounds, ParameterError, SurvivorsChanged
from .simulation import MultiCallSimulation, SimulationResult, setup_session, simulate

if TYPE_CHECKING:
    from .dp import CallPlan, DistributedDiscreteGaussian, PrivacyCost


@dataclass(frozen=True)
class AverageResult:
    value: np.ndarray  # float64, the weighted average over ``included``
    included: tuple[int, ...]
    sum_weights: float  # sum of the included beta_i, as the server learns it (after clipping)
    error_bound: float  # worst-case per-coordinate error of ``value`` against the inputs as given (inf if clipped)
    quantization_error: float  # the same against the inputs as encoded (clipped): the fixed-point error only
    clipped_inputs: int  # included clients whose vector or weight was clipped (clip=True only)
    clipped_values: int  # coordinates clipped to [-B, B], over the included clients
    clipped_weights: int  # included clients whose beta exceeded the weight bound
    underflows: int  # included clients whose beta encoded to zero
    refused: Mapping[int, OutOfBounds]  # on_refusal="dropout": who refused to encode, and why
    bytes_per_client: float  # mean bytes sent + received by a client in this call (call 0: key rounds too)
    session: SimulationResult  # this call's part of the session
    noise_std: float = 0.0  # dp: per-coordinate std of the DP noise in ``value``, in its units
    privacy: "PrivacyCost | None" = None  # dp: what this call spent

    def __repr__(self) -> str:
        return reprs.fields(
            "AverageResult",
            value=reprs.vector(self.value),
            included=reprs.ids(self.included),
            sum_weights=float(self.sum_weights),
            error_bound=float(self.error_bound),
            clipped_values=int(self.clipped_values),
            clipped_weights=int(self.clipped_weights),
            underflows=int(self.underflows),
            bytes_per_client=round(float(self.bytes_per_client), 1),
        )


Runner = Callable[..., SimulationResult]


class SecureAverageOracle:
    """``SecureAverageOracle(threshold).average(vectors, weights)``.

    ``threshold`` is the secure aggregation threshold t: an int, or a float in
    (0, 1) for ``ceil(threshold * n)`` of the n clients of each call.  The
    encoding's parameters are public; by default it is the most precise one
    for ``max_clients`` inputs in Z_{2**64}.  ``runner`` runs one session
    (``simulate`` by default; a network transport has the same signature).
    """

    def __init__(
        self,
        threshold: int | float | None,
        *,
        value_bound: float = 1e3,
        weight_bound: float = 1.0,
        frac_bits: int | None = None,
        modulus_bits: int = 64,
        max_clients: int = 1024,
        malicious: bool = False,
        seed: int | None = None,
        runner: Runner = simulate,
        graph: str = "complete",
        tolerated_dropout: float | None = None,
        tolerated_corrupt: float | None = None,
        dp: "DistributedDiscreteGaussian | None" = None,
    ):
        self.dp = dp  # differential privacy: the mechanism encodes before masking, decodes the sum (dp.py)
        self.graph: dict[str, object] = {}  # passed to the runner: a sparse graph's sizing
        if graph != "complete":
            self.graph = dict(graph=graph, tolerated_dropout=tolerated_dropout, tolerated_corrupt=tolerated_corrupt)
        sized = threshold is None and graph != "complete"  # t picked per call by the graph's sizing
        if not sized and (isinstance(threshold, bool) or not (
            (isinstance(threshold, int) and threshold >= 1) or (isinstance(threshold, float) and 0 < threshold < 1)
        )):
            raise ParameterError(f"threshold must be an int >= 1 or a fraction in (0, 1), got {threshold!r}")
        if frac_bits is None:
            self.encoding = FixedPointEncoding.for_clients(
                max_clients, modulus_bits=modulus_bits, value_bound=value_bound, weight_bound=weight_bound
            )
        else:
            self.encoding = FixedPointEncoding(value_bound, weight_bound, frac_bits, modulus_bits)
            self.encoding.check_capacity(max_clients)
        self.threshold = threshold
        self.max_clients = max_clients
        self.malicious = malicious
        self.seed = seed
        self.runner = runner
        self.calls = 0  # oracle calls, the RFA paper's cost measure
        self.sessions = 0  # secure aggregation sessions (key rounds) they took
        self.bytes_total = 0

    def __repr__(self) -> str:
        enc = self.encoding
        return reprs.fields(
            "SecureAverageOracle",
            threshold=self.threshold,
            value_bound=float(enc.value_bound),
            weight_bound=float(enc.weight_bound),
            frac_bits=int(enc.frac_bits),
            modulus_bits=int(enc.modulus_bits),
            malicious=self.malicious,
            calls=self.calls,
            sessions=self.sessions,
        )

    def threshold_for(self, n: int) -> int | None:
        if self.threshold is None:
            return None
        if isinstance(self.threshold, float):
            return max(1, math.ceil(self.threshold * n))
        return self.threshold

    def average(
        self,
        vectors: Mapping[int, np.ndarray],
        weights: Mapping[int, float],
        dropouts: Mapping[str, Iterable[int]] | None = None,
        *,
        clip: bool = False,
        on_refusal: Literal["raise", "dropout"] = "raise",
    ) -> AverageResult:
        """One call: one secure aggregation session over the encoded (beta_i w_i, beta_i).

        ``clip=True`` clips inputs into the public bounds instead of refusing
        them.  A refusal (``OutOfBounds``) is raised before any session starts
        (``on_refusal="raise"``), or makes the refusing clients drop out before
        their first message (``"dropout"``, listed in ``AverageResult.refused``).
        """
        if self.dp is not None:
            ids, plan, encoded = self._dp_encode(vectors, weights, clip, on_refusal)
            seed = self._seed()
            self.calls += 1
            self.sessions += 1
            session = self.runner(
                {u: encoded[u].vector for u in ids}, threshold=self.threshold_for(len(ids)), modulus=plan.modulus, dropouts=dropouts,
                malicious=self.malicious, seed=seed, **self.graph,
            )
            return self._dp_result(plan, session, ids, encoded)
        ids, encoded, refused, dropouts = self._encode(vectors, weights, dropouts, clip, on_refusal)
        # A refusing client sends nothing: in the session it is a dropout at its first round.
        blank = np.zeros(self._dim(vectors, ids) + 1, dtype=np.uint64)
        seed = self._seed()
        self.calls += 1
        self.sessions += 1
        session = self.runner(
            {u: encoded[u].vector if u in encoded else blank for u in ids},
            threshold=self.threshold_for(len(ids)),
            modulus=self.encoding.modulus,
            dropouts=dropouts,
            malicious=self.malicious,
            seed=seed,
            **self.graph,
        )
        return self._result(session, ids, encoded, refused)

    def session(self, calls: int) -> "OracleSession":
        """A multi-call session: ``calls`` averages over one cohort, with one set of key rounds."""
        return OracleSession(self, calls)

    def _seed(self) -> int | None:
        return None if self.seed is None else (self.seed << 32) + self.calls

    @staticmethod
    def _dim(vectors: Mapping[int, np.ndarray], ids: list[int]) -> int:
        return int(np.shape(vectors[ids[0]])[0])

    def _checked_ids(self, vectors: Mapping[int, np.ndarray], weights: Mapping[int, float], on_refusal: str) -> list[int]:
        """The clients of a call, once the call's arguments are checked."""
        if on_refusal not in ("raise", "dropout"):
            raise ParameterError(f'on_refusal must be "raise" or "dropout", got {on_refusal!r}')
        ids = sorted(vectors)
        if set(weights) != set(ids):
            raise ParameterError("vectors and weights must name the same clients")
        if len(ids) > self.max_clients:
            raise ParameterError(f"{len(ids)} clients exceed the oracle's max_clients={self.max_clients}")
        self.encoding.check_capacity(len(ids))
        dims = {np.shape(vectors[u]) for u in ids}
        if len(dims) != 1 or len(next(iter(dims))) != 1:
            raise ParameterError(f"vectors must be 1-D and of one length, got shapes {sorted(dims)[:3]}")
        return ids

    def _encode(
        self,
        vectors: Mapping[int, np.ndarray],
        weights: Mapping[int, float],
        dropouts: Mapping[str, Iterable[int]] | None,
        clip: bool,
        on_refusal: str,
    ) -> tuple[list[int], dict, dict[int, OutOfBounds], Mapping[str, Iterable[int]] | None]:
        """Each client encodes its own input (client side); refusals become dropouts at the first round."""
        ids = self._checked_ids(vectors, weights, on_refusal)
        encoded = {}
        refused: dict[int, OutOfBounds] = {}
        for u in ids:  # each client encodes its own input (client side)
            try:
                encoded[u] = self.encoding.encode(vectors[u], weights[u], clip=clip, client=u)
            except OutOfBounds as exc:
                if on_refusal == "raise":
                    raise
                refused[u] = exc
        if refused:
            dropouts = dict(dropouts or {})
            dropouts["advertise_keys"] = sorted(set(dropouts.get("advertise_keys", ())) | refused.keys())
        return ids, encoded, refused, dropouts

    def _result(
        self, session: SimulationResult, ids: list[int], encoded: Mapping, refused: Mapping[int, OutOfBounds]
    ) -> AverageResult:
        value, sum_weights, error = self.encoding.decode_average(session.total, len(session.included))
        traffic = sum(session.bytes_sent.values()) + sum(session.bytes_received.values())
        self.bytes_total += traffic
        inside = [encoded[u] for u in session.included]
        clipped_inputs = sum(1 for e in inside if e.clipped_values or e.clipped_weight)
        return AverageResult(
            value=value,
            included=session.included,
            sum_weights=sum_weights,
            # How far a clipped input was from the bounds is private: nothing bounds the distortion.
            error_bound=math.inf if clipped_inputs else error,
            quantization_error=error,
            clipped_inputs=clipped_inputs,
            clipped_values=sum(e.clipped_values for e in inside),
            clipped_weights=sum(e.clipped_weight for e in inside),
            underflows=sum(e.underflow for e in inside),
            refused=refused,
            bytes_per_client=traffic / len(ids),
            session=session,
        )

    def _dp_encode(
        self, vectors: Mapping[int, np.ndarray], weights: Mapping[int, float], clip: bool, on_refusal: str,
    ) -> tuple[list[int], "CallPlan", dict]:
        """Each client clips, rotates, rounds and noises its own input (``dp.py``) with its own CSPRNG."""
        from .rng import SeededRandom, SystemRandom, fresh_stream

        assert self.dp is not None
        ids = self._checked_ids(vectors, weights, on_refusal)
        if on_refusal != "raise":
            raise ParameterError('with dp, a refusal is raised (on_refusal="raise"): clip=True clips instead')
        t = self.threshold_for(len(ids))
        if t is None:
            raise ParameterError("differential privacy needs a fixed threshold t: its noise is sized for t survivors")
        base = SystemRandom() if self.seed is None else SeededRandom(f"secagg/v1/dp|{self.seed}|{self.calls}")
        d = self._dim(vectors, ids)
        plan = self.dp.plan(d, t, self.encoding.weight_bound, base.fork("rotation").bytes(32))  # public seed
        encoded = {u: plan.encode(vectors[u], weights[u], fresh_stream(base.fork(f"client/{u}")), clip=clip, client=u)
                   for u in ids}
        return ids, plan, encoded

    def _dp_result(self, plan: "CallPlan", session: SimulationResult, ids: list[int], encoded: Mapping) -> AverageResult:
        assert self.dp is not None
        self.dp.spend(plan)  # the server has seen the noisy sum, whatever decoding makes of it
        value, sum_weights, noise_std = plan.decode(session.total, len(session.included))
        traffic = sum(session.bytes_sent.values()) + sum(session.bytes_received.values())
        self.bytes_total += traffic
        inside = [encoded[u] for u in session.included]
        return AverageResult(
            value=value, included=session.included, sum_weights=sum_weights,
            error_bound=math.inf, quantization_error=math.inf,  # the noise has no worst case: see noise_std
            clipped_inputs=sum(1 for e in inside if e.clipped_norm or e.clipped_weight),
            clipped_values=sum(e.clipped_coordinates for e in inside),
            clipped_weights=sum(e.clipped_weight for e in inside), underflows=0, refused={},
            bytes_per_client=traffic / len(ids), session=session, noise_std=noise_std, privacy=plan.cost,
        )


class OracleSession:
    """Up to ``calls`` oracle calls over one cohort in one secure aggregation session (protocol_spec.md 16).

    The first ``average`` runs the key rounds and pins the survivor set; each
    later one is a masked_input and an unmasking round over that set only.  A
    later call that loses a survivor (a dropout, or a client refusing its
    input) stops with ``SurvivorsChanged`` before anything is unmasked, and so
    does every call after it.  In memory only (``simulate``'s transport); the
    TCP server and the Flower workflow run the same protocol over the network.
    """

    def __init__(self, oracle: SecureAverageOracle, calls: int):
        if type(calls) is not int or calls < 1:
            raise ParameterError(f"calls must be a positive integer, got {calls!r}")
        self.oracle = oracle
        self.calls = calls
        self.done = 0  # calls completed
        self._ids: list[int] = []
        self._pending: dict[int, np.ndarray] = {}  # each client's encoded input for the call in progress
        self._simulation: MultiCallSimulation | None = None

    def __repr__(self) -> str:
        return reprs.fields("OracleSession", calls=self.calls, done=self.done, clients=len(self._ids))

    def average(
        self,
        vectors: Mapping[int, np.ndarray],
        weights: Mapping[int, float],
        dropouts: Mapping[str, Iterable[int]] | None = None,
        *,
        clip: bool = False,
        on_refusal: Literal["raise", "dropout"] = "raise",
        broadcast: bytes = b"",
    ) -> AverageResult:
        """The session's next call; arguments as ``SecureAverageOracle.average``.

        ``broadcast`` is the call's public input as the server announces it (call_open);
        the first call has none.  A later call names clients of the first (usually its
        survivors); one it leaves out sends nothing."""
        oracle = self.oracle
        if self.done >= self.calls:
            raise ParameterError(f"the session's {self.calls} planned calls are done")
        plan = None
        if oracle.dp is not None:  # fresh noise, rotation seed and rounding in every call (dp.py)
            ids, plan, encoded = oracle._dp_encode(vectors, weights, clip, on_refusal)
            refused: dict[int, OutOfBounds] = {}
            modulus = plan.modulus
        else:
            ids, encoded, refused, dropouts = oracle._encode(vectors, weights, dropouts, clip, on_refusal)
            modulus = oracle.encoding.modulus
        if oracle.runner is not simulate:
            return self._separate_call(ids, encoded, refused, dropouts, plan, modulus)
        if self._simulation is not None:
            if modulus != self._simulation.params.modulus:
                raise ParameterError("a later call of a session must keep its modulus (a DP plan sized it)")
            if not set(ids) <= set(self._ids):
                raise ParameterError(f"clients {sorted(set(ids) - set(self._ids))[:5]} are not in this session")
            # A client of the session left out of a later call sends nothing in it (pinning then stops the call).
            absent = set(self._ids) - set(ids)
            if absent:
                dropouts = dict(dropouts or {})
                dropouts["masked_input"] = sorted(set(dropouts.get("masked_input", ())) | absent)
        blank = np.zeros_like(next(iter(encoded.values())).vector)
        self._pending = {u: encoded[u].vector if u in encoded else blank for u in ids}
        if self._simulation is None:
            params, clients = setup_session(
                self._pending,
                threshold=oracle.threshold_for(len(ids)),
                modulus=modulus,
                malicious=oracle.malicious,
                seed=oracle._seed(),
                calls=self.calls,
                client_inputs=self._inputs_of,
                **oracle.graph,
            )
            self._ids, self._simulation = ids, MultiCallSimulation(params, clients)
            oracle.sessions += 1
        oracle.calls += 1
        session = self._simulation.run_call(dropouts, broadcast)
        self.done += 1
        return oracle._result(session, ids, encoded, refused) if plan is None else oracle._dp_result(
            plan, session, ids, encoded)

    def _separate_call(self, ids, encoded, refused, dropouts, plan, modulus) -> AverageResult:
        """A custom runner (``SecureAverageOracle(runner=...)``) runs one-call sessions: each call is one,
        and the session keeps the pinning rule itself."""
        oracle = self.oracle
        if self._ids and set(ids) != set(self._ids):
            raise SurvivorsChanged("masked_input", len(ids), len(self._ids),
                                   f"call {self.done} names other clients than the survivors of call 0")
        blank = np.zeros_like(next(iter(encoded.values())).vector)
        seed = oracle._seed()
        oracle.calls += 1
        oracle.sessions += 1
        session = oracle.runner(
            {u: encoded[u].vector if u in encoded else blank for u in ids},
            threshold=oracle.threshold_for(len(ids)), modulus=modulus,
            dropouts=dropouts, malicious=oracle.malicious, seed=seed, **oracle.graph,
        )
        if self._ids and set(session.included) != set(self._ids):
            # A one-call runner cannot stop before its unmasking; the simulation discards the call instead.
            raise SurvivorsChanged("masked_input", len(session.included), len(self._ids),
                                   f"call {self.done} lost survivors of call 0: its result is discarded")
        if not self._ids:
            self._ids = list(session.included)
        self.done += 1
        return oracle._result(session, ids, encoded, refused) if plan is None else oracle._dp_result(
            plan, session, ids, encoded)

    def _inputs_of(self, u: int):
        """Client u's inputs callback: in this simulation the cohort's owner hands each client its vector."""
        return lambda call, opened: self._pending[u]
