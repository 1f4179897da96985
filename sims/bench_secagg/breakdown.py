"""Where the time goes: the clients' masked_input round per component (cProfile), and the server's
unmasking round with one lying responder (audit 14.2)."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
from rich.table import Table

from secagg import shamir
from secagg.messages import Round, UnmaskingShares
from secagg.server import Server
from secagg.simulation import setup_session
from sims.bench_secagg.config import Config
from sims.bench_secagg.floor import measure_floor
from sims.bench_secagg.runs import expected_total, random_inputs
from sims.bench_secagg.tables import fmt_d, narrow_table


# ---- reconstruction with a lying responder (audit 14.2) ----------------------------


def _lie(y: int) -> int:
    """The share y with 1 added to every word (mod p): wrong in every chunk."""
    words = (shamir.share_array([y])[0] + np.uint64(1)) % np.uint64(shamir.PRIME)
    return int.from_bytes(words.astype(">u4").tobytes(), "big")


def unmasking_seconds(n: int, d: int, liar: bool, seed: int) -> tuple[float, list[int], bool]:
    """Seconds of the server's unmasking close (complete graph, t = floor(2n/3)+1, client n dropped at
    masked_input), the responders it named, and whether the sum is exact.  With ``liar``, client 1
    (the lowest id, so on every fast path) adds 1 to every word of every share it reveals."""
    cfg = Config(n, d, 0.0, 32)
    inputs = random_inputs(cfg, seed)
    params, clients = setup_session(inputs, threshold=cfg.threshold, modulus=1 << 32, seed=seed)
    server = Server(params, auto_close=False)
    inbox = {u: c.start() for u, c in clients.items()}
    while True:
        round_ = server.round
        for u, msgs in inbox.items():
            if round_ is Round.MASKED_INPUT and u == n:
                continue  # the dropout
            for m in msgs:
                if liar and u == 1 and isinstance(m, UnmaskingShares):
                    m = dataclasses.replace(m, b_shares={v: _lie(y) for v, y in m.b_shares.items()},
                                            s_shares={v: _lie(y) for v, y in m.s_shares.items()})
                server.receive(m.encode())
        if round_ is Round.UNMASKING:
            start = time.perf_counter()
            server.close_round()
            seconds = time.perf_counter() - start
            result = server.result
            exact = bool(np.array_equal(result.total, expected_total(inputs, result.included, 32)))
            return seconds, sorted(result.cheaters), exact
        inbox = {m.recipient: clients[m.recipient].receive(m.encode()) for m in server.close_round()}


def unmasking_rows(ns: list[int], d: int, seed: int) -> list[dict]:
    """For each n: the unmasking close honest and with one lying responder (unmasking_seconds)."""
    rows = []
    for n in ns:
        honest, _, exact_h = unmasking_seconds(n, d, False, seed)
        lying, named, exact_l = unmasking_seconds(n, d, True, seed)
        rows.append({"n": n, "t": 2 * n // 3 + 1, "honest_s": honest, "liar_s": lying, "named": named,
                     "exact": exact_h and exact_l})
    return rows


def reconstruction_table(d: int, rows: list[dict]) -> tuple[Table, bool]:
    """unmasking_rows as a table, and whether every sum was exact."""
    table = narrow_table(
        f"server unmasking round, complete graph, t = floor(2n/3)+1, d = {d}, one dropout: "
        "honest vs one lying responder",
        "the liar (client 1) is on every fast path; it is named only when the shares prove it "
        "(protocol_spec.md 4.9: with t - 1 assumed colluders they rarely can)",
        ["n", "t", "honest s", "one liar s", "liar / honest", "named", "exact"],
    )
    for r in rows:
        table.add_row(str(r["n"]), str(r["t"]), f"{r['honest_s']:.3f}", f"{r['liar_s']:.3f}",
                      f"{r['liar_s'] / r['honest_s']:.2f}", str(r["named"]), str(r["exact"]))
    return table, all(r["exact"] for r in rows)


# ---- where the clients' masked_input round goes ------------------------------------------

# (component, predicate on a cProfile entry's (file, line, function)): the first match wins.
_COMPONENTS: tuple[tuple[str, Callable[[tuple[str, int, str]], bool]], ...] = (
    ("AES-CTR keystream (the floor's work)", lambda f: "update_into" in f[2]),
    ("X25519 agreements", lambda f: "exchange" in f[2] and "x25519" in f[2].lower()),
    ("HKDF key derivation", lambda f: "hkdf" in f[0].lower() or "HKDF" in f[2]),
    ("AES cipher setup", lambda f: "ciphers" in f[0] or "create_encryption_ctx" in f[2]),
    ("share decryption and decoding", lambda f: f[0].endswith(("sharecrypt.py", "shamir.py")) or "ChaCha20" in f[2]),
    ("numpy additions (add_masks)", lambda f: f[0].endswith("masking.py") and f[2] == "add_masks"),
    ("message decoding and encoding", lambda f: f[0].endswith("messages.py") or "msgpack" in f[0] or "Packer" in f[2]),
)


def masked_input_breakdown(cfg: Config, seed: int) -> tuple[dict[str, float], float, float]:
    """cProfile of every client's real masked_input step (decode, shares, masks, encode): its
    internal time grouped by component, their sum, and the AES-CTR client floor."""
    import cProfile
    import pstats

    inputs = random_inputs(cfg, seed)
    params, clients = setup_session(inputs, threshold=cfg.threshold, modulus=1 << cfg.modulus_bits, seed=seed,
                                    **cfg.session_kwargs())
    server = Server(params)
    adverts = [m.encode() for c in clients.values() for m in c.start()]
    rosters = [m for data in adverts for m in server.receive(data)]
    shares = [r.encode() for m in rosters for r in clients[m.recipient].receive(m.encode())]
    forwarded = [(m.recipient, m.encode()) for data in shares for m in server.receive(data)]
    assert server.round is Round.MASKED_INPUT and len(forwarded) == cfg.n
    profile = cProfile.Profile()
    profile.enable()
    for u, data in forwarded:
        [m.encode() for m in clients[u].receive(data)]
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    parts = {name: 0.0 for name, _ in _COMPONENTS} | {"other (Python)": 0.0}
    for func, (_, _, internal, _, _) in stats.items():
        name = next((n for n, match in _COMPONENTS if match(func)), "other (Python)")
        parts[name] += internal
    u2 = frozenset(params.client_ids)
    floor = min(measure_floor(cfg, params, u2, u2)[0] for _ in range(2))
    return parts, sum(parts.values()), floor


def breakdown_table(cfg: Config, parts: dict[str, float], total: float, floor: float) -> Table:
    """masked_input_breakdown's result for ``cfg`` as a table."""
    table = narrow_table(
        f"all clients' masked_input round, {cfg.graph} graph, n = {cfg.n}, d = {fmt_d(cfg.d)}, k = {cfg.degree}, "
        "no dropouts: internal time per component (cProfile)",
        f"client floor (AES-256-CTR, fresh key per stream) {floor:.3f} s; the profiler adds a little "
        "to every Python-level call, so 'other' is an upper bound",
        ["component", "seconds", "of the floor"], left=("component",),
    )
    for name, seconds in parts.items():
        table.add_row(name, f"{seconds:.3f}", f"{seconds / floor:.2f}")
    table.add_row("total", f"{total:.3f}", f"{total / floor:.2f}")
    return table
