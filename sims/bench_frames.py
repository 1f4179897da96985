"""How long a client takes to accept or refuse a parameters frame of up to 1 MiB (issue 24, item 4).

    python3 -m sims.bench_frames            # every case, frames up to 1 MiB, median of up to 5 runs
    python3 -m sims.bench_frames --quick    # frames up to 32 KiB, one run each: a smoke run

A server (or anyone between it and the client) chooses the parameters frame,
so the client must judge any frame it can be sent quickly, before it has any
reason to trust it.  This script builds frames the way the server writes them
(the dicts of ``secagg.bootstrap.params_to_wire``, packed as
``encode_params`` packs them), honest and hostile, and times the three readers
of public parameters on each:

* ``client``: what ``secagg.tcp.run_client`` does with the frame under the
  default ``ClientPolicy``: the screen of the raw frame (session size, mode,
  trusted identity keys, which a client validated once when it read its key
  directory, untimed here), then ``PublicParams`` and the policy;
* ``bootstrap``: ``secagg.bootstrap.decode_bootstrap_reply`` alone, with no
  policy and no trusted keys (every identity key validated);
* ``setup``: what the Flower mod does with a setup message wrapping the same
  parameters under the default policy (``rfa_flower.protocol.Setup.decode``
  and ``ClientPolicy.check``; skipped when flwr is not installed); the setup
  also names a node per id, so it is about three times the frame's size;
* ``transcript``: ``secagg.transcript.read_transcript`` on a transcript file
  whose header holds them (the header ``TranscriptWriter`` writes; no records).

The cases: the complete graph with as many ids as fit; the sparse graph
["harary", k, dropout, corrupt] with the hostile degree k = n - 2 at several n
and at the most ids that fit; honest sparse graphs sized by
``secagg.graph.sparse_parameters`` at n = 1,000, 10,000 and 100,000;
malicious-server frames carrying as many identity keys as fit; and malformed
frames (cut short, not msgpack, nested as deep as the limit allows, bad graph
fields, unsorted ids, junk keys).  A case whose frame exceeds ``--max-bytes``
is skipped.

Every run starts with cold caches (every ``functools`` cache of
``secagg.graph``, ``secagg.keys``, ``secagg.params`` and ``secagg.bootstrap``
is cleared): a client judges one frame per connection, and an attacker varies
its frames.  Each reader runs up to ``--repeat`` times (``time.perf_counter``)
and stops early once it has spent 2 s on one case; the table shows the median
and its ratio to the 50 ms budget.  Outcomes are "accepted" or "refused" with
the exception class; any exception outside ``SecAggError`` and ``RFAError`` is
a crash, shown in the table, and makes the exit code 1.

Known costs the table shows rather than hides: each identity key costs
libsodium's prime-order check (about 44 us), so a frame full of keys is over
budget by design of that check; the id checks of ``params_from_wire`` and
``PublicParams`` are Python loops over the ids, a few tens of milliseconds at
the ~235,000 ids a 1 MiB frame holds.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import msgpack
from nacl.bindings import crypto_core_ed25519_add, crypto_scalarmult_ed25519_base_noclamp
from rich.table import Table

import secagg.bootstrap
import secagg.graph
import secagg.keys
import secagg.params
from rfa.errors import RFAError
from secagg import transcript
from secagg import ClientPolicy, tcp
from secagg.bootstrap import decode_bootstrap_reply, params_to_wire
from secagg.keys import is_valid_identity_key
from secagg.errors import SecAggError
from secagg.messages import PROTOCOL_VERSION
from secagg.params import PublicParams
from sims.common import Console, HelpFormatter, entry_point, positive_int

BUDGET_MS = 50.0
MAX_BYTES = 1 << 20
QUICK_MAX_BYTES = 32 << 10
CASE_SECONDS = 2.0  # stop repeating a reader on one case once it has spent this long
SID = bytes(range(32))
TIMEOUTS = {"round_timeout": 30.0, "join_seconds": 10.0}  # the frame's two floats, as encode_params adds them
Wire = dict[Any, Any]


@dataclass(frozen=True)
class Case:
    name: str
    wire: Wire  # the params fields (params_to_wire), possibly hostile
    n: int | None = None  # the number of ids, when it means something
    raw: Callable[[bytes], bytes] | None = None  # byte-level damage to each reader's input, applied last


@dataclass(frozen=True)
class Row:
    case: str
    n: int | None
    reader: str
    size: int
    outcome: str
    median_ms: float
    runs: int


# ---- the frames ---------------------------------------------------------------------------


def frame(wire: Wire) -> bytes:
    """The bootstrap frame, as ``secagg.bootstrap.encode_params`` packs it."""
    return msgpack.packb({"type": "params", "version": PROTOCOL_VERSION, **wire, **TIMEOUTS}, use_bin_type=True)


def setup_message(wire: Wire) -> bytes:
    """A Flower setup (``rfa_flower.protocol.Setup.encode``): a mean step for the first id (no broadcast v)."""
    ids = wire.get("client_ids")
    first = ids[0] if isinstance(ids, list) and ids else 1
    nodes = {u: u for u in ids} if isinstance(ids, list) and all(isinstance(u, int) for u in ids) else {}
    body = {"params": wire, "id": first, "kind": "mean", "v": b"", "nodes": nodes}
    return msgpack.packb(body, use_bin_type=True)


def transcript_header(wire: Wire) -> bytes:
    """The header ``secagg.transcript.TranscriptWriter`` writes first (its own format and version)."""
    return msgpack.packb({"format": transcript.FORMAT, "version": transcript.VERSION, "params": wire})


def honest_wire(n: int, **create: Any) -> Wire:
    create.setdefault("threshold", None if create.get("graph") == "sparse" else 2 * n // 3 + 1)
    params = PublicParams.create(range(1, n + 1), modulus=2**16, dim=2, session_id=SID, **create)
    return params_to_wire(params)


def plain_wire(n: int, graph: Any, *, threshold: int, keys: list[bytes] | None = None) -> Wire:
    """A params dict written directly, for graphs no honest server would announce."""
    ids = list(range(1, n + 1))
    return {
        "session_id": SID, "client_ids": ids, "threshold": threshold, "modulus_bits": 16, "dim": 2,
        "malicious": keys is not None, "identity_keys": dict(zip(ids, keys)) if keys is not None else {},
        "graph": graph,
    }


def identity_keys(count: int) -> list[bytes]:
    """Distinct Ed25519 keys of prime order: B, 2B, 3B, ... (one point addition each, not a key generation)."""
    base = crypto_scalarmult_ed25519_base_noclamp((1).to_bytes(32, "little"))
    keys, point = [], base
    for _ in range(count):
        keys.append(point)
        point = crypto_core_ed25519_add(point, base)
    return keys


def most_ids(build: Callable[[int], Wire], limit: int, most: int | None = None) -> int:
    """The largest n <= ``most`` whose frame ``build(n)`` fits in ``limit`` bytes (frames grow with n); 0: none."""
    lo, hi = 4, max(4, limit if most is None else most)
    if len(frame(build(lo))) > limit:
        return 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if len(frame(build(mid))) <= limit else (lo, mid - 1)
    return lo


def hostile_sparse(n: int, dropout: float = 0.1, corrupt: float = 0.05, keys: list[bytes] | None = None) -> Wire:
    """The densest sparse graph a frame can announce: k = n - 2 (n - 3 for odd n: k must be even)."""
    return plain_wire(n, ["harary", n - 2 - n % 2, dropout, corrupt], threshold=n // 2, keys=keys)


def cases(limit: int, say: Callable[[str], None]) -> list[Case]:
    """Every case whose frame fits in ``limit`` bytes (the others are named on stderr)."""
    say(f"building frames up to {limit:,} bytes")
    built: list[Case] = []

    def add(name: str, wire: Wire, n: int | None = None, raw: Callable[[bytes], bytes] | None = None) -> None:
        size = len(raw(frame(wire)) if raw else frame(wire))
        if size > limit:
            say(f"skipped {name}: {size:,} bytes > {limit:,}")
        else:
            built.append(Case(name, wire, n, raw))

    def fitted(name: str, build: Callable[[int], Wire], most: int | None = None,
               raw: Callable[[bytes], bytes] | None = None) -> None:
        n = most_ids(build, limit, most)
        if n:
            add(name, build(n), n, raw)
        else:
            say(f"skipped {name}: no frame fits in {limit:,} bytes")

    def complete(n: int) -> Wire:
        return plain_wire(n, "complete", threshold=2 * n // 3 + 1)

    fitted("complete, most ids", complete)
    for n in (1_000, 8_000, 50_000):
        add(f"sparse k = n - 2, n = {n:,}", hostile_sparse(n), n)
    fitted("sparse k = n - 2, most ids", hostile_sparse)
    fitted("sparse k = n - 2, most ids, .45/.45", lambda n: hostile_sparse(n, 0.45, 0.45))
    for n in (1_000, 10_000, 100_000):
        # sizing a graph for 100,000 ids only to find the frame too big is wasted work: ~3 bytes an id
        if 3 * n <= limit:
            add(f"honest sparse n = {n:,}", honest_wire(n, graph="sparse", dropout=0.1, corrupt=0.05), n)
        else:
            say(f"skipped honest sparse n = {n:,}: more than {limit:,} bytes")
    keys = identity_keys(limit // 36 + 1)  # a key costs at least 36 bytes of frame (bin 8 header, id twice)
    fitted("malicious complete, most keys",
           lambda n: plain_wire(n, "complete", threshold=2 * n // 3 + 1, keys=keys[:n]), len(keys))
    fitted("malicious sparse k = n - 2, most keys", lambda n: hostile_sparse(n, keys=keys[:n]), len(keys))
    # malformed: each reader gets the same damage
    base = honest_wire(100)
    fitted("cut in half", complete, raw=lambda data: data[: len(data) // 2])
    add("not msgpack (0xc1 bytes)", base, raw=lambda _: b"\xc1" * limit)
    add("arrays nested to the limit", base, raw=lambda _: b"\x91" * (limit - 1) + b"\xc0")
    fitted("odd degree", lambda n: plain_wire(n, ["harary", n - 3 + n % 2, 0.1, 0.05], threshold=n // 2))
    fitted("degree 2^62", lambda n: plain_wire(n, ["harary", 2**62, 0.1, 0.05], threshold=n // 2))
    fitted("NaN dropout", lambda n: plain_wire(n, ["harary", n - 2 - n % 2, float("nan"), 0.05], threshold=n // 2))
    fitted("threshold above k", lambda n: plain_wire(n, ["harary", n - 2 - n % 2, 0.1, 0.05], threshold=n - 1))
    fitted("unsorted ids", lambda n: {**hostile_sparse(n), "client_ids": list(range(n, 0, -1))})
    def with_junk(count: int) -> Wire:  # keys the reader never looks at
        return {**base, **dict.fromkeys(range(count), 0)}

    add("junk keys in params", with_junk(most_ids(with_junk, limit)))
    return built


# ---- the readers --------------------------------------------------------------------------


def _cold() -> None:
    """Forget everything a previous run cached (lru caches of the modules on the path)."""
    for module in (secagg.graph, secagg.keys, secagg.params, secagg.bootstrap):
        for value in vars(module).values():
            if callable(getattr(value, "cache_clear", None)) and hasattr(value, "cache_info"):
                value.cache_clear()


def measure(call: Callable[[], object], repeat: int, prepare: Callable[[], object] | None = None) -> tuple[str, float, int]:
    """(outcome, median ms, runs) of ``call`` with cold caches (``prepare``, untimed, runs after they are cleared)."""
    seconds: list[float] = []
    outcome = ""
    for _ in range(repeat):
        _cold()
        if prepare is not None:
            prepare()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the transcript reader accepts insecure parameters with a warning
            start = time.perf_counter()
            try:
                call()
                outcome = "accepted"
            except (SecAggError, RFAError) as exc:
                outcome = f"refused {type(exc).__name__}"
            except Exception as exc:  # the point of the benchmark: anything else is a crash, reported
                outcome = f"CRASH {type(exc).__name__}: {exc}"[:80]
            seconds.append(time.perf_counter() - start)
        if sum(seconds) > CASE_SECONDS:
            break
    return outcome, 1e3 * statistics.median(seconds), len(seconds)


def _trusted(wire: Wire) -> dict[Any, Any] | None:
    """The keys a client trusts for this frame: the frame's own (the honest case), or none."""
    keys = wire.get("identity_keys")
    return dict(keys) if wire.get("malicious") is True and isinstance(keys, dict) else None


def client_reader(wire: Wire) -> tuple[Callable[[bytes], object], Callable[[], object]]:
    """What ``run_client`` does with a parameters frame under the default ``ClientPolicy``, and, untimed,
    what it did at start: read its key directory, validating every trusted key (cached from then on)."""
    policy, trusted = ClientPolicy(), _trusted(wire)
    ids = wire.get("client_ids")
    me = ids[0] if isinstance(ids, list) and ids and isinstance(ids[0], int) else 1

    def judge(data: bytes) -> object:
        info = decode_bootstrap_reply(data, screen=lambda obj: tcp._screen(obj, policy, trusted, False))
        tcp._check_params(info.params, me, None, False, policy)
        return info

    return judge, lambda: [is_valid_identity_key(k) for k in (trusted or {}).values()]


def _setup_reader() -> Callable[[bytes], object] | None:
    """What the Flower mod does with a setup under the default ``ClientPolicy`` (None without flwr)."""
    try:
        from rfa_flower.protocol import Setup
    except ImportError:  # flwr is optional (pip install ".[flower]")
        return None
    policy = ClientPolicy()

    def judge(data: bytes) -> object:
        setup = Setup.decode(data, policy)
        return policy.check(setup.params)

    return judge


def run(limit: int, repeat: int, err: Console) -> list[Row]:
    say = functools.partial(err.print, highlight=False)
    setup_decode = _setup_reader()
    if setup_decode is None:
        say("flwr is not installed: Setup.decode is skipped")
    rows: list[Row] = []
    all_cases = cases(limit, say)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "transcript.msgpack"
        for i, case in enumerate(all_cases, 1):
            damage = case.raw or (lambda data: data)
            judge, prepare = client_reader(case.wire)
            inputs: list[tuple[str, bytes, Callable[[bytes], object], Callable[[], object] | None]] = [
                ("client", damage(frame(case.wire)), judge, prepare),
                ("bootstrap", damage(frame(case.wire)), decode_bootstrap_reply, None),
            ]
            if setup_decode is not None:
                inputs.append(("setup", damage(setup_message(case.wire)), setup_decode, None))
            header = damage(transcript_header(case.wire))
            path.write_bytes(header)
            inputs.append(("transcript", header, lambda _: transcript.read_transcript(path), None))
            for reader, data, decode, before in inputs:
                outcome, ms, runs = measure(functools.partial(decode, data), repeat, before)
                rows.append(Row(case.name, case.n, reader, len(data), outcome, ms, runs))
                say(f"[{i}/{len(all_cases)}] {case.name}, {reader}: {outcome}, {ms:.1f} ms")
    return rows


def table(rows: list[Row]) -> Table:
    out = Table(title=f"judging a parameters frame (budget {BUDGET_MS:g} ms; median of cold runs)")
    for name, justify in [("case", "left"), ("n", "right"), ("reader", "left"), ("bytes", "right"),
                          ("outcome", "left"), ("median ms", "right"), ("runs", "right"), ("x budget", "right")]:
        out.add_column(name, justify=justify)  # type: ignore[arg-type]
    for i, r in enumerate(rows):
        ratio = r.median_ms / BUDGET_MS
        colour = "red" if ratio > 1 or r.outcome.startswith("CRASH") else "green"
        out.add_row(
            r.case, "" if r.n is None else f"{r.n:,}", r.reader, f"{r.size:,}", r.outcome,
            f"{r.median_ms:.2f}", str(r.runs), f"[{colour}]{ratio:.2f}[/]",
            end_section=i + 1 < len(rows) and rows[i + 1].case != r.case,
        )
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python3 -m sims.bench_frames", description=__doc__.split("\n")[0], formatter_class=HelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help=f"frames up to {QUICK_MAX_BYTES:,} bytes, one run each")
    ap.add_argument(
        "--max-bytes", type=positive_int, help=f"largest frame (default: {MAX_BYTES:,}; quick: {QUICK_MAX_BYTES:,})"
    )
    ap.add_argument("--repeat", type=positive_int, help="runs per case and reader, median shown (default: 5; quick: 1)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit = args.max_bytes or (QUICK_MAX_BYTES if args.quick else MAX_BYTES)
    repeat = args.repeat or (1 if args.quick else 5)
    # A file or pipe gets a fixed width so the table is not folded to 80 columns.
    out = Console() if sys.stdout.isatty() else Console(width=160)
    rows = run(limit, repeat, Console(stderr=True, soft_wrap=True))
    out.print(table(rows))
    over = [r for r in rows if r.median_ms > BUDGET_MS]
    out.print(f"{len(over)} of {len(rows)} over the {BUDGET_MS:g} ms budget", highlight=False)
    return 1 if any(r.outcome.startswith("CRASH") for r in rows) else 0


if __name__ == "__main__":
    entry_point("bench_frames", main)
