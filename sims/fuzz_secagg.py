"""Fuzz the secagg state machines with mutated frames (issue 24, "Done when").

    python3 -m sims.fuzz_secagg                      # 50,000 mutated frames per party (about 3 minutes on 2 cores)
    python3 -m sims.fuzz_secagg --quick              # 300 frames per party: a smoke run (tests/test_fuzz_secagg.py)
    python3 -m sims.fuzz_secagg --replay server:mal/sparse/pinned:1234   # one frame again, verbosely

Three parties are fuzzed, each with the frames it reads off the wire:

* ``client``: ``secagg.Client.receive`` in every state (ADVERTISED, SHARED,
  MASKED, SIGNED, DONE) of honest sessions, fed mutated versions of the server
  frame it expects there, and of other server frames (other rounds, other
  recipients, abort notices) for the out-of-order paths;
* ``server``: ``secagg.Server.receive`` in every round, at several points of
  the round, fed mutated versions of a client frame of that round (and of
  client frames of other rounds, for the wrong-round and duplicate paths);
* ``bootstrap``: what ``secagg.tcp.run_client`` does with the parameters
  frame (``decode_bootstrap_reply(data, screen=...)`` with ``tcp._screen``,
  then ``tcp._check_params`` with a ``ClientPolicy``), and
  ``bootstrap.decode_refusal`` on every frame and on mutated refusal frames.

Configurations: honest-but-curious and malicious server, complete graph
(n = 7..12) and sparse graph (n = 30..40, ``graph="sparse"``, dropout 0.1,
corrupt 0.05), each ``plain`` (no dropouts), ``dropouts`` (clients that go
silent at random rounds, within what the session tolerates) and ``pinned``
(dropouts, with ``pinned=`` the expected survivor set on the server and on
about half the clients; malicious clients also get a ``ledger=``).  Sessions
come from ``secagg.simulation.setup_session(seed=...)``; the clients are
rebuilt from its parameters with ``pinned=``/``ledger=`` and a deterministic
random source whose position can be copied.

Mutations: two thirds are structure-aware (msgpack-decode the genuine frame,
then change the tree: integers by +-1, to 0, huge, negative or another
client id; byte strings by bit flips, truncation, extension, swaps with
other byte strings of the frame; arrays and maps by deleting, inserting,
duplicating, reordering or re-keying entries, repeated map keys; type
changes; non-canonical encodings and lying length headers), the rest
byte-level (bit flips, truncation, insertion, splices with other genuine
frames, msgpack markers, random bytes).  The fuzzer's own choices come from
a seeded ``numpy`` Generator per frame: (``--seed``, party, configuration,
index) reproduces a frame, and ``--replay`` runs it again with its traceback.

Oracles, per frame:

* crash: an exception that is not a ``secagg.SecAggError``;
* state change on refusal: a refused frame (``SecAggError``, except an
  ``AbortError`` of a server whose round closed) must leave the party as it
  was: its observable state (client: state, completed_share_keys,
  abort_reason, unmasked_over, roster_digest; server: state, round,
  waiting_for, counts, result) and, checked too, every other attribute;
* hang: any one call taking more than 2 s (``time.perf_counter``; reported,
  not killed);
* wrong total: the session is finished with the genuine frames (a party whose
  genuine frame is then refused drops out) and the server's total must equal
  the plaintext sum mod M over ``result.included``, where a client whose
  masked-input slot took a mutated vector m counts with x + m - y (y: the
  vector it sent).  An abort is a fine ending (counted).  A frame refused with
  the party's whole state unchanged leads to exactly the session already
  checked, so only accepted frames (and ``--verify-refused`` of the refused
  ones, as a check of that argument) are finished live.  On the client side,
  a wrong total after the client accepted a server frame whose content differs
  from the genuine one is the server's own deviation: protocol_spec.md 1.2
  and 1.4 leave the output's correctness against a deviating server out of
  scope, so it is counted apart ("deviated") and does not fail the run;
* bootstrap: the outcome is accepted parameters or a ``SecAggError``, and
  ``decode_refusal`` returns ``None`` or ``(rule, detail)`` and never raises.

Speed: every frame starts from a snapshot taken during one honest run.
Clients are copied on write (a shallow copy, with a copy of the random
source's position; a ``Client`` is never changed in place), the server by a
shallow copy of its containers: about 6 us each (n = 40, sparse, malicious).
Measured against the alternatives: ``copy.deepcopy`` cannot copy a client of
``setup_session`` at all (``SeededRandom`` holds a ChaCha20 context), takes
0.5 ms per client and 1 ms per server with a copyable source, and replaying a
session from ``setup_session(seed=...)`` to the snapshot costs up to a whole
session (25 ms at n = 10 honest-but-curious, 160 ms at n = 35 sparse and
malicious).  Client steps of live finishes are memoised on (history of the
client, frame).  The full run takes about 3 minutes on one core of 2.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import math
import re
import struct
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import msgpack
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from secagg import tcp
from secagg.bootstrap import Refused, decode_bootstrap_reply, decode_refusal, encode_params, encode_refusal
from secagg.client import Client, ClientState
from secagg.errors import AbortError, MalformedMessage, ProtocolViolation, SecAggError, WeakParameters
from secagg.ledger import MemoryLedger
from secagg.masking import MaskAccumulator
from secagg.messages import PROTOCOL_VERSION, Abort, KINDS, MaskedInput, Round, decode, rounds_for
from secagg.params import PublicParams
from secagg.policy import ClientPolicy
from secagg.rng import SeededRandom
from secagg.server import Server, ServerState
from secagg.simulation import identity_keys, setup_session
from sims.common import Console, HelpFormatter, entry_point, positive_int

FRAMES_PER_PARTY = 50_000
QUICK_FRAMES = 300
HANG_SECONDS = 2.0
STRUCTURED = 2 / 3  # fraction of structure-aware mutations
PARTIES = ("client", "server", "bootstrap")
BASES = (("hbc/complete", False, False), ("mal/complete", True, False),
         ("hbc/sparse", False, True), ("mal/sparse", True, True))
VARIANTS = ("plain", "dropouts", "pinned")
TIMEOUTS = {"round_timeout": 30.0, "join_seconds": 10.0}


@dataclass(frozen=True)
class Config:
    base: str
    malicious: bool
    sparse: bool
    variant: str  # plain | dropouts | pinned | refusal (bootstrap only)

    @property
    def name(self) -> str:
        return f"{self.base}/{self.variant}" if self.variant != "-" else self.base


SESSION_CONFIGS = [Config(b, m, s, v) for b, m, s in BASES for v in VARIANTS]
BOOTSTRAP_CONFIGS = [Config(b, m, s, "-") for b, m, s in BASES] + [Config("refusal", False, False, "-")]


def configs_of(party: str) -> list[Config]:
    return BOOTSTRAP_CONFIGS if party == "bootstrap" else SESSION_CONFIGS


# ---- a random source whose position can be copied -------------------------------------------


class CloneableRandom:
    """A deterministic ``RandomSource`` (SHAKE-256 of a key and a call counter) that can be copied.

    Test tooling only, like ``SeededRandom``: anyone who knows the key knows every output."""

    __slots__ = ("key", "counter")

    def __init__(self, key: bytes, counter: int = 0):
        self.key, self.counter = key, counter

    def bytes(self, n: int) -> bytes:
        out = hashlib.shake_256(self.key + self.counter.to_bytes(8, "big")).digest(n)
        self.counter += 1
        return out

    def fork(self, label: str) -> "CloneableRandom":
        return CloneableRandom(hashlib.sha256(self.key + b"|" + label.encode()).digest())

    def clone(self) -> "CloneableRandom":
        return CloneableRandom(self.key, self.counter)


# ---- copies and comparisons of the state machines -------------------------------------------


def clone_client(c: Client) -> Client:
    """A copy that shares every immutable part (keys, frozensets, bytes) and copies the rest."""
    new = object.__new__(Client)
    d = dict(c.__dict__)
    for k, v in d.items():
        if isinstance(v, CloneableRandom):
            d[k] = v.clone()
        elif isinstance(v, (dict, list, set)):
            d[k] = type(v)(v) if not isinstance(v, dict) else dict(v)
        elif isinstance(v, np.ndarray):
            d[k] = v.copy()
    new.__dict__.update(d)
    return new


def clone_server(s: Server) -> Server:
    new = object.__new__(Server)
    d = dict(s.__dict__)
    for k, v in d.items():
        if isinstance(v, dict):
            d[k] = dict(v)
        elif isinstance(v, (set, list)):
            d[k] = type(v)(v)
        elif isinstance(v, MaskAccumulator):
            acc = object.__new__(MaskAccumulator)
            acc.__dict__.update(v.__dict__)
            acc.value = v.value.copy()
            d[k] = acc
        elif isinstance(v, np.ndarray):
            d[k] = v.copy()
    new.__dict__.update(d)
    return new


def _same(x: Any, y: Any) -> bool:
    if x is y:
        return True
    if isinstance(x, MaskAccumulator) and isinstance(y, MaskAccumulator):
        return np.array_equal(x.value, y.value)
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and np.array_equal(x, y)
    try:
        return bool(x == y)
    except Exception:  # e.g. numpy arrays inside containers: unequal unless the same object
        return False


def state_diff(before: Any, after: Any) -> tuple[list[str], bool]:
    """Attributes that differ, and whether the random source moved (reported apart: not a failure)."""
    a, b = vars(before), vars(after)
    if a.keys() != b.keys():
        return [f"attributes {sorted(a.keys() ^ b.keys())}"], False
    diffs, rng_moved = [], False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, CloneableRandom):
            rng_moved = x.counter != y.counter
        elif not _same(x, y):
            diffs.append(k)
    return diffs, rng_moved


def client_view(c: Client) -> tuple:
    return (c.state, c.completed_share_keys, c.abort_reason, c.unmasked_over, c.roster_digest)


def server_view(s: Server) -> tuple:
    return (s.state, s.round, s.waiting_for, dict(s.counts), id(s.result))


CLIENT_VIEW = ("state", "completed_share_keys", "abort_reason", "unmasked_over", "roster_digest")
SERVER_VIEW = ("state", "round", "waiting_for", "counts", "result")


def view_diff(names: Sequence[str], before: tuple, after: tuple) -> list[str]:
    return [n for n, x, y in zip(names, before, after) if not _same(x, y)]


def same_content(a: bytes, b: bytes, params: PublicParams) -> bool:
    """Whether two frames decode to the same message (a re-encoding, not a change)."""
    try:
        x, y = decode(a, params), decode(b, params)
    except SecAggError:
        return False
    if type(x) is not type(y):
        return False
    return all(_same(getattr(x, f.name), getattr(y, f.name)) for f in dataclasses.fields(x))


# ---- msgpack trees: a writer that can also write what msgpack.packb never does ---------------


class Forced:
    """A value written in a chosen msgpack form: a wider integer, a longer length header, or a lying one."""

    __slots__ = ("value", "form")

    def __init__(self, value: Any, form: str):
        self.value, self.form = value, form


class Pair(list):
    """One (key, value) entry of a ``Pairs`` map."""


class Pairs(list):
    """A map written entry by entry, in this order; keys may repeat."""


_INT_FORMS = [("u8", 0xCC, ">B", 0, 2**8 - 1), ("u16", 0xCD, ">H", 0, 2**16 - 1), ("u32", 0xCE, ">I", 0, 2**32 - 1),
              ("u64", 0xCF, ">Q", 0, 2**64 - 1), ("i8", 0xD0, ">b", -(2**7), 2**7 - 1),
              ("i16", 0xD1, ">h", -(2**15), 2**15 - 1), ("i32", 0xD2, ">i", -(2**31), 2**31 - 1),
              ("i64", 0xD3, ">q", -(2**63), 2**63 - 1)]


def _header(out: bytearray, n: int, small: tuple[int, int] | None, forms: list[tuple[int, str]]) -> None:
    """A length header: the smallest form that fits (``small`` = (fix base, fix limit))."""
    if small is not None and n < small[1]:
        out.append(small[0] | n)
        return
    for marker, fmt in forms:
        if n < 1 << (8 * struct.calcsize(fmt)):
            out.append(marker)
            out += struct.pack(fmt, n)
            return
    raise OverflowError("too long")


_ARRAY = ((0x90, 16), [(0xDC, ">H"), (0xDD, ">I")])
_MAP = ((0x80, 16), [(0xDE, ">H"), (0xDF, ">I")])
_STR = ((0xA0, 32), [(0xD9, ">B"), (0xDA, ">H"), (0xDB, ">I")])
_BIN = (None, [(0xC4, ">B"), (0xC5, ">H"), (0xC6, ">I")])


def write(obj: Any, out: bytearray) -> None:
    t = type(obj)
    if t is Forced:
        _write_forced(obj, out)
    elif obj is None:
        out.append(0xC0)
    elif obj is True or obj is False:
        out.append(0xC3 if obj else 0xC2)
    elif t is int or t is float:
        out += msgpack.packb(obj)
    elif t is str:
        raw = obj.encode("utf-8", "surrogatepass")
        _header(out, len(raw), *_STR)
        out += raw
    elif t is bytes:
        _header(out, len(obj), *_BIN)
        out += obj
    elif t is list or t is Pair:
        _header(out, len(obj), *_ARRAY)
        for x in obj:
            write(x, out)
    elif t is dict or t is Pairs:
        items = obj.items() if t is dict else obj
        _header(out, len(obj), *_MAP)
        for k, v in items:
            write(k, out)
            write(v, out)
    else:
        raise TypeError(f"cannot write {t.__name__}")


def _write_forced(f: Forced, out: bytearray) -> None:
    v, form = f.value, f.form
    if type(v) is int:
        for name, marker, fmt, lo, hi in _INT_FORMS:
            if name == form and lo <= v <= hi:
                out.append(marker)
                out += struct.pack(fmt, v)
                return
        write(v, out)
    elif type(v) is bytes and form == "as-str":  # raw bytes under a str header: maybe not UTF-8
        _header(out, len(v), *_STR)
        out += v
    elif type(v) is float and form == "f32":
        out.append(0xCA)
        out += struct.pack(">f", v)
    elif type(v) in (str, bytes, list, dict, Pairs, Pair):
        raw = v.encode("utf-8", "surrogatepass") if type(v) is str else None
        n = len(raw) if raw is not None else len(v)
        shown = n + 1 if form == "len+1" else max(n - 1, 0) if form == "len-1" else n
        spec = {str: _STR, bytes: _BIN, list: _ARRAY, Pair: _ARRAY, dict: _MAP, Pairs: _MAP}[type(v)]
        forms = spec[1]
        if form == "wide":  # the widest length header, where the canonical one is shorter
            _header(out, shown, None, forms[-1:])
        else:
            _header(out, shown, *spec)
        if raw is not None:
            out += raw
        elif type(v) is bytes:
            out += v
        elif type(v) in (list, Pair):
            for x in v:
                write(x, out)
        else:
            for k, x in (v.items() if type(v) is dict else v):
                write(k, out)
                write(x, out)
    else:
        write(v, out)


def pack(obj: Any) -> bytes:
    out = bytearray()
    write(obj, out)
    return bytes(out)


# ---- mutations ------------------------------------------------------------------------------


@dataclass
class Context:
    """What the mutator knows of the session: valid ids, names, other genuine frames."""

    ids: list[int]
    n: int
    threshold: int
    pool: list[bytes]  # genuine frames to splice with

    @property
    def max_id(self) -> int:
        return self.ids[-1]


NAMES = [r.value for r in Round] + list(KINDS) + [
    "params", "refused", "hello", "harary", "complete", "type", "version", "session_id", "client_ids", "threshold",
    "modulus_bits", "dim", "malicious", "identity_keys", "graph", "round_timeout", "join_seconds", "rule", "detail"]
MARKERS = [0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xCA, 0xCB, 0xCC, 0xCF, 0xD0, 0xD3, 0xD4, 0xD9, 0xDA,
           0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0x90, 0x9F, 0x80, 0x8F, 0xA0, 0xBF, 0x7F, 0xFF, 0xE0]


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _nodes(holder: list[Any], start: tuple[Any, Any] | None = None) -> list[tuple[Any, Any]]:
    """Every (container, key) of the tree, the root as (holder, 0); or of the subtree at ``start``."""
    out: list[tuple[Any, Any]] = []
    stack: list[tuple[Any, Any]] = [start or (holder, 0)]
    while stack:
        c, k = stack.pop()
        out.append((c, k))
        v = c[k]
        if type(v) in (list, Pair, Pairs):
            stack.extend((v, i) for i in range(len(v)))
        elif type(v) is dict:
            stack.extend((v, key) for key in v)
    return out


def _bins(holder: list[Any]) -> list[bytes]:
    return [c[k] for c, k in _nodes(holder) if type(c[k]) is bytes]


def _random_value(rng: np.random.Generator, ctx: Context) -> Any:
    kind = int(rng.integers(10))
    return [None, True, 0, -1, 1.5, "", b"", [], {}, _pick(rng, ctx.ids)][kind]


def _interesting_int(rng: np.random.Generator, ctx: Context, v: int) -> int:
    choices = [v + 1, v - 1, 0, -v, -1, 1, 2**64 - 1, 2**63, 2**63 - 1, -(2**63), 2**31 - 1, 2**31, 2**32,
               ctx.max_id, ctx.max_id + 1, ctx.n, ctx.n + 1, ctx.threshold - 1, ctx.threshold + 1,
               PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1, int(rng.integers(0, ctx.max_id + 3))]
    out = _pick(rng, choices)
    return min(max(out, -(2**63)), 2**64 - 1)


def _mutate_int(v: int, rng: np.random.Generator, ctx: Context) -> tuple[Any, str]:
    r = rng.random()
    if r < 0.35:
        return _pick(rng, [u for u in ctx.ids if u != v] or ctx.ids), "int:other-id"
    if r < 0.85:
        return _interesting_int(rng, ctx, v), "int:value"
    if r < 0.92:
        fits = [name for name, _, _, lo, hi in _INT_FORMS if lo <= v <= hi]
        return Forced(v, _pick(rng, fits)), "int:wide-form"
    return _pick(rng, [float(v), str(v), v != 0, None, v.to_bytes(8, "big", signed=True) if -(2**63) <= v < 2**63 else b""]), "int:type"


def _flip_bits(b: bytearray, rng: np.random.Generator, most: int) -> bytes:
    """1 to ``most`` random bit flips of ``b`` (in place); the result as bytes."""
    for _ in range(int(rng.integers(1, most + 1))):
        i = int(rng.integers(len(b) * 8))
        b[i // 8] ^= 1 << (i % 8)
    return bytes(b)


def _mutate_bytes(v: bytes, rng: np.random.Generator, ctx: Context, holder: list[Any]) -> tuple[Any, str]:
    r = rng.random()
    b = bytearray(v)
    if r < 0.35 and b:
        return _flip_bits(b, rng, 3), "bin:bit-flip"
    if r < 0.45:
        return bytes(b[: int(rng.integers(len(b) + 1))]) if b else b"\0", "bin:truncate"
    if r < 0.52:
        return bytes(b) + bytes(rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8)), "bin:extend"
    if r < 0.6:
        same = [x for x in _bins(holder) if len(x) == len(v) and x != v]
        if same:
            return _pick(rng, same), "bin:swap"
        return bytes(rng.integers(0, 256, len(v), dtype=np.uint8)), "bin:random"
    if r < 0.68:
        return bytes(len(v)) if rng.random() < 0.5 else b"\xff" * len(v), "bin:fill"
    if r < 0.74:
        return bytes(rng.integers(0, 256, len(v), dtype=np.uint8)), "bin:random"
    if r < 0.8 and len(v) >= 4:  # a word in a share or masked vector set to its largest value
        i = int(rng.integers(0, len(v) // 4)) * 4
        b[i:i + 4] = b"\xff\xff\xff\xff" if rng.random() < 0.5 else (2**32 - 5).to_bytes(4, "big")
        return bytes(b), "bin:big-word"
    if r < 0.88:
        return Forced(v, _pick(rng, ["wide", "len+1", "len-1"])), "bin:form"
    return _pick(rng, [v.decode("latin-1"), Forced(v, "as-str"), None, list(v[:8]),
                       int.from_bytes(v[:8], "big") if v else 0, b""]), "bin:type"


def _mutate_str(v: str, rng: np.random.Generator, ctx: Context) -> tuple[Any, str]:
    r = rng.random()
    if r < 0.5:
        return _pick(rng, NAMES), "str:name"
    if r < 0.65:
        return _pick(rng, ["", v.upper(), v + "\0", v[:-1], "x" * 1025, "é" * 600, v * 3, "\udcff"]), "str:value"
    if r < 0.8:
        return Forced(v, _pick(rng, ["wide", "len+1", "len-1"])), "str:form"
    return _pick(rng, [v.encode("utf-8", "surrogatepass"), None, 0, [v]]), "str:type"


def _mutate_list(v: list, rng: np.random.Generator, ctx: Context) -> tuple[Any, str]:
    r = rng.random()
    v = list(v)
    if r < 0.2 and v:
        del v[int(rng.integers(len(v)))]
        return v, "array:delete"
    if r < 0.35:
        item = v[int(rng.integers(len(v)))] if v and rng.random() < 0.7 else _random_value(rng, ctx)
        v.insert(int(rng.integers(len(v) + 1)), item)
        return v, "array:insert"
    if r < 0.45 and len(v) > 1:
        i, j = rng.choice(len(v), 2, replace=False)
        v[i], v[j] = v[j], v[i]
        return v, "array:swap"
    if r < 0.5:
        return v[::-1], "array:reverse"
    if r < 0.55:
        return [], "array:empty"
    if r < 0.62:
        return v[: len(v) // 2], "array:truncate"
    if r < 0.68 and v:
        return v + [v[-1]] * int(rng.integers(1, ctx.n + 10)), "array:long"
    if r < 0.8:
        return Forced(v, _pick(rng, ["wide", "len+1", "len-1"])), "array:form"
    if r < 0.9:
        return {i: x for i, x in enumerate(v)}, "array:to-map"
    return _pick(rng, [None, b"", v[0] if v else 0]), "array:type"


def _mutate_map(v: dict | Pairs, rng: np.random.Generator, ctx: Context) -> tuple[Any, str]:
    items = list(v.items()) if type(v) is dict else [tuple(p) for p in v]
    r = rng.random()
    if r < 0.15 and items:
        del items[int(rng.integers(len(items)))]
        return dict(items), "map:delete"
    if r < 0.3 and items:
        k, x = items[int(rng.integers(len(items)))]
        new = _pick(rng, [u for u in ctx.ids if u not in dict(items)] or [0])
        items.append((new if rng.random() < 0.8 else _pick(rng, [0, -1, ctx.max_id + 1, "1", 2**40]), x))
        return Pairs(Pair(p) for p in items), "map:add"
    if r < 0.42 and items:
        i = int(rng.integers(len(items)))
        k, x = items[i]
        items[i] = (_pick(rng, [u for u in ctx.ids if u != k] or ctx.ids), x)
        return Pairs(Pair(p) for p in items), "map:rekey"
    if r < 0.54 and len(items) > 1:
        i, j = rng.choice(len(items), 2, replace=False)
        (ki, xi), (kj, xj) = items[i], items[j]
        items[i], items[j] = (ki, xj), (kj, xi)
        return Pairs(Pair(p) for p in items), "map:swap-values"
    if r < 0.64 and items:
        items.insert(int(rng.integers(len(items) + 1)), items[int(rng.integers(len(items)))])
        return Pairs(Pair(p) for p in items), "map:duplicate-key"
    if r < 0.72:
        return Pairs(Pair(p) for p in items[::-1]), "map:reorder"
    if r < 0.78:
        return {}, "map:empty"
    if r < 0.86:
        return Forced(Pairs(Pair(p) for p in items), _pick(rng, ["wide", "len+1", "len-1"])), "map:form"
    if r < 0.93 and items:
        i = int(rng.integers(len(items)))
        k, x = items[i]
        items[i] = (str(k) if type(k) is int else 0, x)
        return Pairs(Pair(p) for p in items), "map:key-type"
    return _pick(rng, [[x for _, x in items], None, b""]), "map:type"


def _mutate_other(v: Any, rng: np.random.Generator, ctx: Context) -> tuple[Any, str]:
    if v is None:
        return _pick(rng, [bytes(64), b"", 0, [], {}, False, bytes(32)]), "nil:value"
    if type(v) is bool:
        return _pick(rng, [not v, int(v), None]), "bool:value"
    if type(v) is float:
        whole = int(v) if math.isfinite(v) else 0
        return _pick(rng, [math.nan, math.inf, -1.0, 0.0, 1e308, v * 2, whole, -v, Forced(v, "f32"), 1e7]), "float:value"
    return _random_value(rng, ctx), "other:value"


def mutate_tree(holder: list[Any], rng: np.random.Generator, ctx: Context) -> str:
    """One change somewhere in the tree ``holder[0]``; returns its name.

    Three times in four the change is inside a message's body (the envelope's last element), where
    the checks of each round are: changes to the envelope are mostly refused at once."""
    root = holder[0]
    body = type(root) is list and len(root) == 7 and rng.random() < 0.75
    nodes = _nodes(holder, (root, 6) if body else None)
    c, k = nodes[int(rng.integers(len(nodes)))]
    v = c[k]
    if type(v) is Forced:
        return "noop"
    if rng.random() < 0.06 and type(c) in (list, dict) and c is not holder:
        del c[k]
        return "delete-node"
    if rng.random() < 0.04:
        c[k] = _random_value(rng, ctx)
        return "type-change"
    t = type(v)
    if t is int:
        new, name = _mutate_int(v, rng, ctx)
    elif t is bytes:
        new, name = _mutate_bytes(v, rng, ctx, holder)
    elif t is str:
        new, name = _mutate_str(v, rng, ctx)
    elif t is list:
        new, name = _mutate_list(v, rng, ctx)
    elif t in (dict, Pairs):
        new, name = _mutate_map(v, rng, ctx)
    elif t is Pair:
        return "noop"
    else:
        new, name = _mutate_other(v, rng, ctx)
    c[k] = new
    return name


def mutate_bytes(data: bytes, rng: np.random.Generator, ctx: Context) -> tuple[bytes, str]:
    b = bytearray(data)
    r = rng.random()
    if r < 0.3 and b:
        return _flip_bits(b, rng, 8), "bytes:bit-flip"
    if r < 0.45:
        return bytes(b[: int(rng.integers(len(b) + 1))]), "bytes:truncate"
    if r < 0.52:
        i = int(rng.integers(len(b) + 1))
        return bytes(b[:i]) + bytes(rng.integers(0, 256, int(rng.integers(1, 33)), dtype=np.uint8)) + bytes(b[i:]), "bytes:insert"
    if r < 0.6 and b:
        i = int(rng.integers(len(b)))
        j = min(len(b), i + int(rng.integers(1, 33)))
        return bytes(b[:i] + b[j:]), "bytes:delete"
    if r < 0.72 and ctx.pool:
        other = _pick(rng, ctx.pool)
        return bytes(b[: int(rng.integers(len(b) + 1))]) + other[int(rng.integers(len(other) + 1)):], "bytes:splice"
    if r < 0.86 and b:
        for _ in range(int(rng.integers(1, 3))):
            b[int(rng.integers(len(b)))] = _pick(rng, MARKERS)
        return bytes(b), "bytes:marker"
    if r < 0.92 and b:
        i = int(rng.integers(len(b)))
        j = min(len(b), i + int(rng.integers(1, 65)))
        return bytes(b[:j] + b[i:j] + b[j:]), "bytes:duplicate"
    return bytes(rng.integers(0, 256, int(rng.integers(0, 2 * len(b) + 2)), dtype=np.uint8)), "bytes:random"


def mutate(data: bytes, rng: np.random.Generator, ctx: Context) -> tuple[bytes, str, bool]:
    """A mutated frame, the names of the changes, and whether it was structure-aware."""
    for _ in range(8):
        if rng.random() < STRUCTURED:
            try:
                holder = [msgpack.unpackb(data, raw=False, strict_map_key=False)]
            except Exception:
                holder = None
            if holder is not None:
                count = 1 if rng.random() < 0.6 else 2 if rng.random() < 0.6 else 3
                try:
                    names = [mutate_tree(holder, rng, ctx) for _ in range(count)]
                    out = pack(holder[0])
                except (OverflowError, TypeError, ValueError, struct.error, UnicodeError):
                    continue  # a tree the writer cannot write (an int beyond 64 bits, say): draw again
                except Exception as exc:  # noqa: BLE001 - a bug of this fuzzer's mutator: counted, shown, not fatal
                    MUTATOR_ERRORS[f"{type(exc).__name__}: {exc}"] += 1
                    continue
                if out != data:
                    return out, "+".join(names), True
                continue
        out, name = mutate_bytes(data, rng, ctx)
        if out != data:
            return out, name, False
    b = bytearray(data or b"\0")
    b[0] ^= 0x01
    return bytes(b), "bytes:bit-flip", False


MUTATOR_ERRORS: collections.Counter = collections.Counter()


def retarget(data: bytes, position: int, value: int) -> bytes:
    """The genuine frame with one envelope field (4 sender, 5 recipient) set."""
    obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    obj[position] = value
    return msgpack.packb(obj, use_bin_type=True)


# ---- sessions: one honest run, snapshots along it, and finishing from a snapshot ------------


@dataclass
class Party:
    """A client and a digest of its history (initial state, then every frame it accepted)."""

    client: Client
    token: bytes


def _next_token(token: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(token + data, digest_size=16).digest()


@dataclass
class World:
    """Everything needed to go on with a session from one point.  Client objects are never
    changed in place (every step works on a copy), so worlds share them; servers are copied."""

    server: Server
    parties: dict[int, Party]
    gone: set[int]
    ys: dict[int, np.ndarray]  # masked vector each client produced (uint64)
    ms: dict[int, np.ndarray]  # masked vector the server accepted in each slot (uint64)

    def copy(self, server: Server | None = None) -> "World":
        return World(server or clone_server(self.server), {u: Party(p.client, p.token) for u, p in self.parties.items()},
                     set(self.gone), dict(self.ys), dict(self.ms))


@dataclass
class ClientSnap:
    world: World
    out: list[tuple[int, bytes, Round]]  # the server messages of this round, in delivery order
    frames: dict[int, bytes]  # target -> the genuine frame it expects
    state: str


@dataclass
class ServerSnap:
    world: World
    inbox: list[tuple[int, bytes]]  # this round's genuine client frames not yet received
    round: Round


@dataclass
class Hazard:
    """A crash or hang seen while finishing a session."""

    kind: str
    detail: str


class Meter:
    """Times every call of a state machine; a call over HANG_SECONDS is a hang."""

    def __init__(self) -> None:
        self.hazards: list[Hazard] = []

    def call(self, label: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            seconds = time.perf_counter() - start
            if seconds > HANG_SECONDS:
                self.hazards.append(Hazard("hang", f"{label} took {seconds:.2f} s"))


class CachedRefusal(SecAggError):
    """A refusal replayed from the step cache (the original's class and message, without its traceback)."""


class StepCache:
    """Client steps keyed by (history, frame): a client is a deterministic function of both."""

    def __init__(self, size: int = 40_000):
        self.size = size
        self.data: collections.OrderedDict[tuple[bytes, bytes], tuple] = collections.OrderedDict()

    def get(self, key: tuple[bytes, bytes]) -> tuple | None:
        hit = self.data.get(key)
        if hit is not None:
            self.data.move_to_end(key)
        return hit

    def put(self, key: tuple[bytes, bytes], value: tuple) -> None:
        self.data[key] = value
        if len(self.data) > self.size:
            self.data.popitem(last=False)


CACHE = StepCache(20_000)


@dataclass
class Session:
    cfg: Config
    key: bytes
    params: PublicParams
    inputs: dict[int, np.ndarray]
    plan: dict[Round, frozenset[int]]
    pinned: tuple[int, ...] | None
    pinned_clients: frozenset[int]
    client_snaps: list[ClientSnap] = field(default_factory=list)
    server_snaps: list[ServerSnap] = field(default_factory=list)
    server_frames: list[bytes] = field(default_factory=list)  # every genuine server -> client frame
    client_frames: list[tuple[int, bytes]] = field(default_factory=list)  # every genuine client -> server frame
    total: np.ndarray | None = None
    included: tuple[int, ...] = ()
    ctx: Context | None = None

    def expected_total(self, included: Iterable[int], ys: dict[int, np.ndarray], ms: dict[int, np.ndarray]) -> np.ndarray | None:
        p = self.params
        total = np.zeros(p.dim, dtype=np.uint64)
        for w in included:
            if w not in ys or w not in ms:
                return None
            total += self.inputs[w] + ms[w] - ys[w]  # wraps mod 2**64, which M divides
        if p.modulus_bits < 64:
            total &= np.uint64(p.modulus - 1)
        return total


def client_step(sess: Session, world: World, u: int, data: bytes, meter: Meter) -> list[bytes]:
    """Client u receives ``data``; returns its replies.  Raises SecAggError on refusal (the party then stays)."""
    party = world.parties[u]
    key = (party.token, data)
    hit = CACHE.get(key)
    if hit is None:
        c = clone_client(party.client)
        try:
            replies = meter.call(f"client {u} receive", lambda: c.receive(data))
        except SecAggError as exc:
            CACHE.put(key, (None, (), None, f"{type(exc).__name__}: {exc}"))
            raise
        masked = next((r.masked.astype(np.uint64) for r in replies if isinstance(r, MaskedInput)), None)
        hit = (c, tuple(r.encode() for r in replies), masked, None)
        CACHE.put(key, hit)
    client, replies, masked, refusal = hit
    if refusal is not None:
        raise CachedRefusal(refusal)
    party.client, party.token = client, _next_token(party.token, data)
    if masked is not None:
        world.ys[u] = masked
    return list(replies)


def deliver(sess: Session, world: World, msgs: Iterable[tuple[int, bytes, Round]], meter: Meter) -> list[tuple[int, bytes]]:
    """Each live recipient handles its server frame; planned dropouts go silent (as simulate() plays them)."""
    inbox: list[tuple[int, bytes]] = []
    for w, data, round_ in msgs:
        if w in world.gone:
            continue
        if w in sess.plan.get(round_, ()):
            world.gone.add(w)
            if round_ is Round.MASKED_INPUT:  # the vector it would have sent, should another frame take its slot
                try:
                    client_step(sess, world, w, data, meter)
                except SecAggError:
                    pass
            continue
        try:
            replies = client_step(sess, world, w, data, meter)
        except SecAggError:
            world.gone.add(w)  # it cannot go on
            continue
        if world.parties[w].client.state is ClientState.ABORTED:
            world.gone.add(w)
        inbox += [(w, r) for r in replies]
    return inbox


def feed(sess: Session, world: World, w: int, data: bytes, meter: Meter) -> list[Any]:
    """The server receives one genuine frame; a refused one drops its sender.  AbortError propagates."""
    server = world.server
    round_ = server.round
    try:
        out = meter.call(f"server receive ({round_.value})", lambda: server.receive(data))
    except AbortError:
        raise
    except SecAggError:
        world.gone.add(w)
        return []
    if round_ is Round.MASKED_INPUT:
        msg = decode(data, sess.params)
        world.ms[msg.sender] = msg.masked.astype(np.uint64)
    return out


def wire(out: Iterable[Any]) -> list[tuple[int, bytes, Round]]:
    return [(m.recipient, m.encode(), m.round) for m in out]


class Recorder:
    """Takes the snapshots of an honest run."""

    def __init__(self, sess: Session, rng: np.random.Generator):
        self.sess, self.rng = sess, rng
        self.positions: set[int] = set()
        self.last_frame: dict[int, bytes] = {}

    def round_opened(self, world: World, out: list[tuple[int, bytes, Round]]) -> None:
        sess = self.sess
        frames = {w: data for w, data, r in out if w not in world.gone and w not in sess.plan.get(r, ())}
        for w, data, _ in out:
            self.last_frame[w] = data
            sess.server_frames.append(data)
        if frames:
            state = world.parties[next(iter(frames))].client.state.value
            sess.client_snaps.append(ClientSnap(world.copy(), out, frames, state))

    def before_feed(self, world: World, inbox: list[tuple[int, bytes]], i: int) -> None:
        if i == 0:
            L = len(inbox)
            self.positions = {0, L // 2, L - 1, int(self.rng.integers(L))}
        self.sess.client_frames.append(inbox[i])
        if i in self.positions:
            self.sess.server_snaps.append(ServerSnap(world.copy(), inbox[i:], world.server.round))

    def finished(self, world: World) -> None:
        done = {w: self.last_frame[w] for w, p in world.parties.items()
                if p.client.state is ClientState.DONE and w in self.last_frame}
        if done:
            self.sess.client_snaps.append(ClientSnap(world.copy(), [], done, "done"))


@dataclass
class Ending:
    kind: str  # done | abort | crash
    result: Any = None
    detail: str = ""


def drive(sess: Session, world: World, inbox: list[tuple[int, bytes]], out: list[Any], meter: Meter,
          rec: Recorder | None = None) -> Ending:
    """Run the session from here to its end: the server's rounds and every live client."""
    server = world.server
    try:
        while server.state is ServerState.COLLECTING:
            if out:
                msgs = wire(out)
                if rec:
                    rec.round_opened(world, msgs)
                inbox = inbox + deliver(sess, world, msgs, meter)
                out = []
            for i, (w, data) in enumerate(inbox):
                if rec:
                    rec.before_feed(world, inbox, i)
                out += feed(sess, world, w, data, meter)
            inbox = []
            if server.state is not ServerState.COLLECTING:
                break
            if not out:
                out = meter.call(f"server close_round ({server.round.value})", server.close_round)
    except AbortError as exc:
        return Ending("abort", exc, str(exc))
    except Exception as exc:  # noqa: BLE001 - a crash while finishing: reported
        return Ending("crash", exc, _describe(exc))
    if rec:
        rec.finished(world)
    return Ending("done", server.result)


def _describe(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = next((f"{f.filename.split('/')[-1]}:{f.lineno} {f.name}" for f in reversed(tb) if "/secagg/" in f.filename),
                 tb[-1].name if tb else "?")
    return f"{type(exc).__name__}: {str(exc)[:200]} (at {where})"


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0])


def build_session(cfg: Config, seed: int) -> Session:
    """An honest session of ``cfg`` run once to its end, with snapshots along the way."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 41)) if cfg.sparse else int(rng.integers(7, 13))
    ids = sorted(int(u) for u in rng.choice(np.arange(1, 3 * n + 1), n, replace=False))
    bits = int(_pick(rng, [8, 13, 16, 32, 64]))
    dim = int(rng.integers(1, 5))
    top = np.iinfo(np.uint64).max if bits == 64 else 2**bits - 1
    inputs = {u: rng.integers(0, top, dim, dtype=np.uint64, endpoint=True) for u in ids}
    if cfg.sparse:
        kw: dict[str, Any] = dict(graph="sparse", tolerated_dropout=0.1, tolerated_corrupt=0.05)
    else:
        kw = dict(threshold=int(rng.integers(n // 2 + 1, n - 1)))
    params, _ = setup_session(inputs, modulus=2**bits, malicious=cfg.malicious, seed=seed, **kw)
    rounds = rounds_for(cfg.malicious)
    plan: dict[Round, set[int]] = {}
    if cfg.variant != "plain":
        most = math.floor(0.1 * n) if cfg.sparse else n - params.threshold
        for u in rng.choice(ids, int(rng.integers(1, most + 1)), replace=False):
            plan.setdefault(_pick(rng, rounds), set()).add(int(u))
    early = {Round.ADVERTISE_KEYS, Round.SHARE_KEYS, Round.MASKED_INPUT}
    pinned = None
    pinned_clients: frozenset[int] = frozenset()
    if cfg.variant == "pinned":
        pinned = tuple(u for u in ids if not any(u in plan.get(r, ()) for r in early))
        pinned_clients = frozenset(u for u in ids if rng.random() < 0.5)
    key = hashlib.sha256(f"{cfg.name}|{seed}".encode()).digest()
    sess = Session(cfg, key, params, inputs, {r: frozenset(w) for r, w in plan.items()}, pinned, pinned_clients)
    # The clients of setup_session, rebuilt with pinned=, ledger= and a random source that can be copied.
    identities = identity_keys(ids, SeededRandom(seed)) if cfg.malicious else {}
    source = CloneableRandom(key)
    parties = {}
    for u in ids:
        c = Client(params, u, inputs[u], rng=source.fork(f"client-{u}"), identity_key=identities.get(u),
                   ledger=MemoryLedger() if cfg.malicious else None, pinned=pinned if u in pinned_clients else None)
        parties[u] = Party(c, hashlib.blake2b(key + u.to_bytes(8, "big"), digest_size=16).digest())
    world = World(Server(params, pinned=pinned), parties, set(plan.get(Round.ADVERTISE_KEYS, ())), {}, {})
    inbox = []
    for u in ids:
        if u not in world.gone:
            c = clone_client(parties[u].client)
            inbox += [(u, m.encode()) for m in c.start()]
            parties[u] = Party(c, _next_token(parties[u].token, b"start"))
    meter = Meter()
    ending = drive(sess, world, inbox, [], meter, Recorder(sess, rng))
    if ending.kind != "done":
        raise RuntimeError(f"the honest session {cfg.name} seed {seed} did not finish: {ending.detail}")
    expected = {u for u in ids if not any(u in plan.get(r, ()) for r in early)}
    result = ending.result
    if set(result.included) != expected:
        raise RuntimeError(f"honest session {cfg.name} seed {seed}: included {result.included}, expected {sorted(expected)}")
    want = sess.expected_total(result.included, world.ys, world.ms)
    if want is None or not np.array_equal(want, result.total):
        raise RuntimeError(f"honest session {cfg.name} seed {seed}: wrong total")
    sess.total, sess.included = result.total, result.included
    sess.ctx = Context(list(params.client_ids), params.n, params.threshold,
                       sess.server_frames[:50] + [d for _, d in sess.client_frames[:50]])
    # Abort notices are server frames too (out-of-order and terminal paths of the client).
    for r in rounds:
        w = _pick(rng, ids)
        sess.server_frames.append(Abort(params.session_id, 0, w, at_round=r, count=int(rng.integers(0, n + 1)),
                                        reason=_pick(rng, ["", "deadline", "é" * 400])).encode())
    return sess


# ---- tallies ---------------------------------------------------------------------------------


@dataclass
class Finding:
    kind: str
    party: str
    config: str
    index: int
    detail: str
    frame: bytes = b""
    mutation: str = ""


@dataclass
class Tally:
    frames: int = 0
    structured: int = 0
    accepted: int = 0
    accepted_same: int = 0  # accepted, and decodes to the genuine message (a re-encoding)
    refused: int = 0
    aborts: int = 0
    crashes: int = 0
    hangs: int = 0
    state_changes: int = 0
    wrong_totals: int = 0
    deviated: int = 0  # client: wrong total after the client accepted a changed server frame (out of scope)
    unverifiable: int = 0
    finished_live: int = 0
    rng_moved: int = 0
    seconds: float = 0.0
    frames_at: collections.Counter = field(default_factory=collections.Counter)  # client state / server round
    accepted_at: collections.Counter = field(default_factory=collections.Counter)
    by_class: collections.Counter = field(default_factory=collections.Counter)
    by_rule: collections.Counter = field(default_factory=collections.Counter)

    def add(self, other: "Tally") -> None:
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, a + b if not isinstance(a, collections.Counter) else a + b)

    @property
    def failures(self) -> int:
        return self.crashes + self.hangs + self.state_changes + self.wrong_totals


@dataclass
class Report:
    tallies: dict[tuple[str, str], Tally]
    findings: list[Finding]
    seconds: float
    sessions: int
    seed: int

    @property
    def failures(self) -> int:
        return sum(t.failures for t in self.tallies.values())


_INDEX = re.compile(r"\[[^]]*\]")


def refusal_label(exc: BaseException) -> str:
    name = type(exc).__name__
    detail = None
    if isinstance(exc, ProtocolViolation):
        detail = exc.rule
    elif isinstance(exc, MalformedMessage):
        detail = exc.field
    elif isinstance(exc, AbortError):
        detail = exc.round
    elif isinstance(exc, WeakParameters):
        detail = exc.item
    elif isinstance(exc, Refused):
        detail = exc.rule[:24]
    if detail is None:
        return name
    return f"{name}:{_INDEX.sub('[*]', str(detail))}"


class Fuzzer:
    def __init__(self, seed: int, sessions: int, verify_refused: float, findings_cap: int = 200):
        self.seed = seed
        self.sessions = sessions
        self.verify_refused = verify_refused
        self.findings: list[Finding] = []
        self.findings_cap = findings_cap
        self.deviated_cap = 12
        self._pools: dict[str, list[Session]] = {}

    # -- sessions --

    def pool(self, cfg: Config) -> list[Session]:
        if cfg.name not in self._pools:
            ci = SESSION_CONFIGS.index(cfg)
            built = []
            for j in range(self.sessions):
                built.append(build_session(cfg, _seed(self.seed, ci, j)))
            self._pools = {cfg.name: built}  # one configuration at a time: memory stays small
            CACHE.data.clear()
        return self._pools[cfg.name]

    def record(self, tally: Tally, finding: Finding) -> None:
        """Keep the first findings of each kind (the expected deviations must not crowd out the rest)."""
        kept = sum(f.kind == finding.kind for f in self.findings)
        if kept < (self.deviated_cap if finding.kind == "deviated" else self.findings_cap):
            self.findings.append(finding)

    # -- one frame per party --

    def frame_rng(self, party: str, cfg: Config, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, PARTIES.index(party), configs_of(party).index(cfg), index])

    def run_frame(self, party: str, cfg: Config, index: int, tally: Tally, verbose: bool = False) -> None:
        rng = self.frame_rng(party, cfg, index)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if party == "client":
                self.client_frame(cfg, index, rng, tally, verbose)
            elif party == "server":
                self.server_frame(cfg, index, rng, tally, verbose)
            else:
                self.bootstrap_frame(cfg, index, rng, tally, verbose)
        tally.frames += 1
        tally.seconds += time.perf_counter() - start

    def _outcome(self, tally: Tally, fn: Callable[[], Any], party: str, cfg: Config, index: int, frame: bytes,
                 mutation: str, aborts_close: bool = False) -> tuple[str, Any]:
        """Run the call on the mutated frame: ('accepted', value) | ('refused', exc) | ('abort', exc) | ('crash', exc)."""
        start = time.perf_counter()
        try:
            value = fn()
            kind: tuple[str, Any] = ("accepted", value)
        except AbortError as exc:
            kind = ("abort", exc) if aborts_close else ("refused", exc)
        except SecAggError as exc:
            kind = ("refused", exc)
        except Exception as exc:  # noqa: BLE001 - the point of the fuzzer
            kind = ("crash", exc)
        seconds = time.perf_counter() - start
        if seconds > HANG_SECONDS:
            tally.hangs += 1
            self.record(tally, Finding("hang", party, cfg.name, index, f"one call took {seconds:.2f} s", frame, mutation))
        if kind[0] == "crash":
            tally.crashes += 1
            self.record(tally, Finding("crash", party, cfg.name, index, _describe(kind[1]), frame, mutation))
        elif kind[0] == "abort":
            tally.aborts += 1
        elif kind[0] == "refused":
            tally.refused += 1
            tally.by_class[type(kind[1]).__name__] += 1
            tally.by_rule[refusal_label(kind[1])] += 1
        else:
            tally.accepted += 1
        return kind

    def _check_ending(self, sess: Session, world: World, ending: Ending, meter: Meter, tally: Tally, party: str,
                      index: int, frame: bytes, mutation: str, deviated: bool) -> None:
        tally.finished_live += 1
        for h in meter.hazards:
            tally.hangs += 1
            self.record(tally, Finding("hang", party, sess.cfg.name, index, "while finishing: " + h.detail, frame, mutation))
        if ending.kind == "crash":
            tally.crashes += 1
            self.record(tally, Finding("crash", party, sess.cfg.name, index, "while finishing: " + ending.detail, frame, mutation))
        elif ending.kind == "abort":
            tally.aborts += 1
        else:
            result = ending.result
            want = sess.expected_total(result.included, world.ys, world.ms)
            if want is None:
                tally.unverifiable += 1
            elif not np.array_equal(want, result.total):
                detail = (f"total {result.total.tolist()} != expected {want.tolist()} over included "
                          f"{list(result.included)} (genuine session: {sess.total.tolist()} over {list(sess.included)}); "
                          f"cheaters={result.cheaters}")
                if deviated:
                    tally.deviated += 1
                    self.record(tally, Finding("deviated", party, sess.cfg.name, index, detail, frame, mutation))
                else:
                    tally.wrong_totals += 1
                    self.record(tally, Finding("wrong total", party, sess.cfg.name, index, detail, frame, mutation))

    def client_frame(self, cfg: Config, index: int, rng: np.random.Generator, tally: Tally, verbose: bool) -> None:
        sessions = self.pool(cfg)
        sess = sessions[index % len(sessions)]
        snap = _pick(rng, sess.client_snaps)
        u = _pick(rng, sorted(snap.frames))
        genuine = snap.frames[u]
        base = genuine
        if rng.random() < 0.2:  # another server frame: another round, another recipient, an abort notice
            base = _pick(rng, sess.server_frames)
            if rng.random() < 0.7:
                base = retarget(base, 5, u)
        mutated, mutation, structured = mutate(base, rng, sess.ctx)
        tally.structured += structured
        party = snap.world.parties[u]
        c = clone_client(party.client)
        before = client_view(party.client)
        kind, value = self._outcome(tally, lambda: c.receive(mutated), "client", cfg, index, mutated, mutation)
        tally.frames_at[snap.state] += 1
        tally.accepted_at[snap.state] += kind == "accepted"
        if verbose:
            _say_frame(sess, f"client {u} in state {snap.state}", base, mutated, mutation, kind, value)
        if kind == "crash":
            return
        diffs, rng_moved = state_diff(party.client, c)
        if kind == "refused":
            changed = view_diff(CLIENT_VIEW, before, client_view(c))
            if changed or diffs:
                tally.state_changes += 1
                what = f"observable {changed}" if changed else f"internal {diffs}"
                self.record(tally, Finding("state change", "client", cfg.name, index,
                                           f"refused ({refusal_label(value)}) but changed {what}", mutated, mutation))
                return
            tally.rng_moved += rng_moved
            if not rng_moved and rng.random() >= self.verify_refused:
                return  # the client is as it was: the session goes on exactly as the genuine one
        same = kind == "accepted" and same_content(mutated, genuine, sess.params)
        tally.accepted_same += same
        # Finish the session: u with what the mutated frame left, everybody else with the genuine frames.
        world = snap.world.copy()
        meter = Meter()
        inbox: list[tuple[int, bytes]] = []
        world.parties[u] = Party(c, party.token if kind == "refused" and not rng_moved else _next_token(party.token, mutated))
        if kind == "accepted":
            for r in value:
                if isinstance(r, MaskedInput):
                    world.ys[u] = r.masked.astype(np.uint64)
                inbox.append((u, r.encode()))
            if c.state is ClientState.ABORTED:
                world.gone.add(u)
            msgs = [(w, d, r) for w, d, r in snap.out if w != u]
        else:
            msgs = snap.out
        inbox += deliver(sess, world, msgs, meter)
        ending = drive(sess, world, inbox, [], meter)
        self._check_ending(sess, world, ending, meter, tally, "client", index, mutated, mutation,
                           deviated=kind == "accepted" and not same)
        if verbose:
            print(f"finished: {ending.kind} {ending.detail or ''}")

    def server_frame(self, cfg: Config, index: int, rng: np.random.Generator, tally: Tally, verbose: bool) -> None:
        sessions = self.pool(cfg)
        sess = sessions[index % len(sessions)]
        snap = _pick(rng, sess.server_snaps)
        u, genuine = snap.inbox[int(rng.integers(len(snap.inbox)))]
        base = genuine
        if rng.random() < 0.15:  # another client frame: another round, a duplicate, someone else's
            v, base = _pick(rng, sess.client_frames)
            if rng.random() < 0.3:
                base = retarget(base, 4, u)
        mutated, mutation, structured = mutate(base, rng, sess.ctx)
        tally.structured += structured
        server = clone_server(snap.world.server)
        before = server_view(snap.world.server)
        kind, value = self._outcome(tally, lambda: server.receive(mutated), "server", cfg, index, mutated, mutation,
                                    aborts_close=True)
        tally.frames_at[snap.round.value] += 1
        tally.accepted_at[snap.round.value] += kind == "accepted"
        if verbose:
            _say_frame(sess, f"server in {snap.round.value}, {len(snap.inbox)} to come", base, mutated, mutation, kind, value)
        if kind == "crash":
            return
        if kind == "refused":
            changed = view_diff(SERVER_VIEW, before, server_view(server))
            diffs, _ = state_diff(snap.world.server, server)
            if changed or diffs:
                tally.state_changes += 1
                what = f"observable {changed}" if changed else f"internal {diffs}"
                self.record(tally, Finding("state change", "server", cfg.name, index,
                                           f"refused ({refusal_label(value)}) but changed {what}", mutated, mutation))
                return
            if rng.random() >= self.verify_refused:
                return
        world = snap.world.copy(server)
        meter = Meter()
        if kind == "abort":  # the frame closed the round and the close aborted: a fine ending, counted by _outcome
            return
        remaining = list(snap.inbox)
        out: list[Any] = []
        if kind == "accepted":
            same = same_content(mutated, genuine, sess.params)
            tally.accepted_same += same
            msg = decode(mutated, sess.params)
            if isinstance(msg, MaskedInput):
                world.ms[msg.sender] = msg.masked.astype(np.uint64)
            # The slot is taken: that client's genuine frame is not sent, and it goes on as if it had been.
            remaining = [(w, d) for w, d in remaining if w != msg.sender]
            out = list(value)
        ending = drive(sess, world, remaining, out, meter)
        self._check_ending(sess, world, ending, meter, tally, "server", index, mutated, mutation, deviated=False)
        if verbose:
            print(f"finished: {ending.kind} {ending.detail or ''}")

    # -- bootstrap --

    def bootstrap_params(self, cfg: Config, j: int) -> PublicParams:
        key = (cfg.name, j)
        cache = self.__dict__.setdefault("_bootstrap", {})
        if key not in cache:
            base = next(c for c in SESSION_CONFIGS if c.base == cfg.base) if cfg.base != "refusal" else SESSION_CONFIGS[0]
            rng = np.random.default_rng(_seed(self.seed, 99, BOOTSTRAP_CONFIGS.index(cfg), j))
            n = int(rng.integers(30, 41)) if base.sparse else int(rng.integers(7, 13))
            ids = sorted(int(u) for u in rng.choice(np.arange(1, 3 * n + 1), n, replace=False))
            kw: dict[str, Any] = (dict(graph="sparse", tolerated_dropout=0.1, tolerated_corrupt=0.05) if base.sparse
                                  else dict(threshold=int(rng.integers(n // 2 + 1, n))))
            params, _ = setup_session({u: np.zeros(2, np.uint64) for u in ids}, modulus=2 ** int(_pick(rng, [8, 16, 32, 64])),
                                      malicious=base.malicious, seed=_seed(self.seed, 98, j), **kw)
            cache[key] = params
        return cache[key]

    def bootstrap_frame(self, cfg: Config, index: int, rng: np.random.Generator, tally: Tally, verbose: bool) -> None:
        params = self.bootstrap_params(cfg, index % self.sessions)
        if cfg.base == "refusal":
            rule = _pick(rng, ["policy:min-group", "identity-keys", "malformed:params", "mode-downgrade", "x" * 64, ""])
            genuine = encode_refusal(rule, _pick(rng, ["", "the server could learn a sum of 1 honest input", "é" * 300]))
        else:
            genuine = encode_params(params, **TIMEOUTS)
        ids = list(params.client_ids)
        ctx = Context(ids, params.n, params.threshold, [encode_params(params, **TIMEOUTS), encode_refusal("r", "d")])
        mutated, mutation, structured = mutate(genuine, rng, ctx)
        tally.structured += structured
        r = rng.random()
        policy: ClientPolicy | None = (ClientPolicy() if r < 0.7 else None if r < 0.8 else
                                       ClientPolicy(min_group=int(rng.integers(1, 12)), corrupt=float(_pick(rng, [0.0, 0.05, 0.2])),
                                                    dropout=float(_pick(rng, [0.0, 0.1, 0.3])),
                                                    min_threshold=float(_pick(rng, [0.3, 0.5, 0.9])),
                                                    max_clients=int(_pick(rng, [2, 20, 10_000]))))
        trusted = dict(params.identity_keys) if params.malicious and rng.random() < 0.9 else None
        if not params.malicious and rng.random() < 0.05:
            trusted = {}
        client_id = _pick(rng, ids) if rng.random() < 0.95 else _pick(rng, [0, ids[-1] + 1, -1])
        allow_insecure = rng.random() < 0.05

        def join() -> Any:  # what tcp.run_client does with the reply to its hello
            info = decode_bootstrap_reply(mutated, allow_insecure=allow_insecure,
                                          screen=lambda obj: tcp._screen(obj, policy, trusted, allow_insecure))
            tcp._check_params(info.params, client_id, None, allow_insecure, policy)
            return info

        kind, value = self._outcome(tally, join, "bootstrap", cfg, index, mutated, mutation)
        if verbose:
            _say_frame(None, f"bootstrap (policy {policy}, trusted keys: {trusted is not None})", genuine, mutated, mutation, kind, value)
        start = time.perf_counter()
        try:
            refusal = decode_refusal(mutated)
            if refusal is not None and (type(refusal) is not tuple or len(refusal) != 2
                                        or not all(type(x) is str for x in refusal) or len(refusal[0]) > 64):
                tally.crashes += 1
                self.record(tally, Finding("crash", "bootstrap", cfg.name, index,
                                           f"decode_refusal returned {refusal!r:.100}", mutated, mutation))
        except Exception as exc:  # noqa: BLE001 - decode_refusal must never raise
            tally.crashes += 1
            self.record(tally, Finding("crash", "bootstrap", cfg.name, index, "decode_refusal raised " + _describe(exc),
                                       mutated, mutation))
        if time.perf_counter() - start > HANG_SECONDS:
            tally.hangs += 1
            self.record(tally, Finding("hang", "bootstrap", cfg.name, index, "decode_refusal took over 2 s", mutated, mutation))


def _say_frame(sess: Session | None, where: str, base: bytes, mutated: bytes, mutation: str, kind: str, value: Any) -> None:
    print(f"target:   {where}")
    print(f"base:     {base.hex()}")
    print(f"mutated:  {mutated.hex()}")
    print(f"mutation: {mutation}")
    if kind == "crash":
        print("outcome:  CRASH")
        traceback.print_exception(value, file=sys.stdout)
    elif kind == "accepted":
        print(f"outcome:  accepted -> {value!r:.300}")
    else:
        print(f"outcome:  {kind}: {refusal_label(value)}: {value}")


# ---- the run ---------------------------------------------------------------------------------


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def run(args: argparse.Namespace, err: Console) -> Report:
    frames = args.frames_per_party if args.frames_per_party is not None else (QUICK_FRAMES if args.quick else FRAMES_PER_PARTY)
    sessions = args.sessions or (1 if args.quick else 6)
    fuzzer = Fuzzer(args.seed, sessions, args.verify_refused)
    tallies: dict[tuple[str, str], Tally] = {}
    plan = {party: dict(zip([c.name for c in configs_of(party)], split(frames, len(configs_of(party))))) for party in PARTIES}
    started = time.perf_counter()
    with Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[note]}"), console=err, disable=args.quiet) as progress:
        tasks = {p: progress.add_task(p, total=frames, note="") for p in PARTIES}
        for cfg in SESSION_CONFIGS:  # the session parties, one configuration (one pool of sessions) at a time
            for party in ("client", "server"):
                tally = tallies.setdefault((party, cfg.name), Tally())
                progress.update(tasks[party], note=cfg.name)
                for i in range(plan[party][cfg.name]):
                    fuzzer.run_frame(party, cfg, i, tally)
                    progress.advance(tasks[party])
        for cfg in BOOTSTRAP_CONFIGS:
            tally = tallies.setdefault(("bootstrap", cfg.name), Tally())
            progress.update(tasks["bootstrap"], note=cfg.name)
            for i in range(plan["bootstrap"][cfg.name]):
                fuzzer.run_frame("bootstrap", cfg, i, tally)
                progress.advance(tasks["bootstrap"])
    return Report(tallies, fuzzer.findings, time.perf_counter() - started, sessions, args.seed)


def counts_table(report: Report) -> Table:
    t = Table(title=f"secagg fuzz: mutated frames per party and configuration (seed {report.seed}, "
                    f"{report.sessions} session(s) per configuration, {report.seconds:.0f} s)")
    cols = ["party", "configuration", "frames", "struct", "accepted", "same", "refused", "Malformed", "Violation",
            "Abort", "other", "aborts", "live", "crash", "hang", "state", "wrong", "deviated", "s"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("party", "configuration") else "right", no_wrap=True)
    rows = sorted(report.tallies.items(), key=lambda kv: PARTIES.index(kv[0][0]))
    for i, ((party, cfg), x) in enumerate(rows):
        other = sum(v for k, v in x.by_class.items() if k not in ("MalformedMessage", "ProtocolViolation", "AbortError"))
        bad = lambda v: f"[red]{v}[/]" if v else "0"  # noqa: E731
        t.add_row(party, cfg, f"{x.frames:,}", f"{x.structured:,}", f"{x.accepted:,}", f"{x.accepted_same:,}",
                  f"{x.refused:,}", f"{x.by_class['MalformedMessage']:,}", f"{x.by_class['ProtocolViolation']:,}",
                  f"{x.by_class['AbortError']:,}", f"{other:,}", f"{x.aborts:,}", f"{x.finished_live:,}",
                  bad(x.crashes), bad(x.hangs), bad(x.state_changes), bad(x.wrong_totals), f"{x.deviated:,}",
                  f"{x.seconds:.0f}", end_section=i + 1 < len(rows) and rows[i + 1][0][0] != party)
    totals: dict[str, Tally] = {}
    for (party, _), x in rows:
        totals.setdefault(party, Tally()).add(x)
    t.add_section()
    for party, x in totals.items():
        other = sum(v for k, v in x.by_class.items() if k not in ("MalformedMessage", "ProtocolViolation", "AbortError"))
        t.add_row(party, "all", f"{x.frames:,}", f"{x.structured:,}", f"{x.accepted:,}", f"{x.accepted_same:,}",
                  f"{x.refused:,}", f"{x.by_class['MalformedMessage']:,}", f"{x.by_class['ProtocolViolation']:,}",
                  f"{x.by_class['AbortError']:,}", f"{other:,}", f"{x.aborts:,}", f"{x.finished_live:,}",
                  str(x.crashes), str(x.hangs), str(x.state_changes), str(x.wrong_totals), f"{x.deviated:,}",
                  f"{x.seconds:.0f}")
    return t


def rules_table(report: Report) -> Table:
    t = Table(title="refusals by exception and rule/field (top 10 per party and configuration)")
    t.add_column("party")
    t.add_column("configuration")
    t.add_column("top refusals", overflow="fold")
    rows = sorted(report.tallies.items(), key=lambda kv: PARTIES.index(kv[0][0]))
    for i, ((party, cfg), x) in enumerate(rows):
        top = ", ".join(f"{k} {v:,}" for k, v in x.by_rule.most_common(10))
        t.add_row(party, cfg, top, end_section=i + 1 < len(rows) and rows[i + 1][0][0] != party)
    return t


def notes(report: Report) -> list[str]:
    """How deep each party got: mutated frames fed and accepted per client state and server round."""
    lines = []
    for party in ("client", "server"):
        x = Tally()
        for (p, _), t in report.tallies.items():
            if p == party:
                x.add(t)
        where = ", ".join(f"{k} {x.accepted_at[k]:,}/{v:,}" for k, v in x.frames_at.items())
        lines.append(f"{party}: accepted/fed per {'state' if party == 'client' else 'round'}: {where}")
        if party == "client":
            lines.append(f"client: refused frames after which the client's random source had moved (state otherwise "
                         f"unchanged; finished live): {x.rng_moved:,}")
    if MUTATOR_ERRORS:
        lines.append(f"fuzzer's own mutator errors (frames drawn again): {dict(MUTATOR_ERRORS.most_common(5))}")
    dev = sum(t.deviated for t in report.tallies.values())
    if dev:
        lines.append(f"deviated: {dev:,} wrong totals after a client accepted a server frame whose content differs from "
                     "the genuine one (the server's own deviation: out of scope, protocol_spec.md 1.2, 1.4; not a failure)")
    return lines


def findings_text(report: Report, args: argparse.Namespace) -> list[str]:
    lines = []
    for f in report.findings:
        again = (f"python3 -m sims.fuzz_secagg --seed {report.seed} --sessions {report.sessions} "
                 f"--replay {f.party}:{f.config}:{f.index}")
        lines.append(f"{f.kind.upper()} [{f.party} {f.config} #{f.index}] {f.detail}")
        lines.append(f"    mutation {f.mutation}; frame {f.frame[:96].hex()}{'...' if len(f.frame) > 96 else ''}")
        lines.append(f"    reproduce: {again}")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python3 -m sims.fuzz_secagg", description=__doc__.split("\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--frames-per-party", type=positive_int, default=None,
                    help=f"mutated frames per party (default: {FRAMES_PER_PARTY:,}; quick: {QUICK_FRAMES})")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sessions and of every mutation")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_FRAMES} frames per party, one session per configuration")
    ap.add_argument("--sessions", type=positive_int, default=None,
                    help="honest sessions per configuration the frames start from (default: 6; quick: 1)")
    ap.add_argument("--verify-refused", type=float, default=0.02,
                    help="fraction of refused frames whose session is finished live anyway, to check that an "
                         "unchanged party gives the genuine session's total")
    ap.add_argument("--replay", metavar="PARTY:CONFIG:INDEX",
                    help="run one frame again and print it, its outcome and any traceback (same --seed and --sessions)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    if not 0 <= args.verify_refused <= 1:
        ap.error(f"argument --verify-refused: must be in [0, 1], got {args.verify_refused}")
    if args.replay:
        try:
            party, config, index = args.replay.rsplit(":", 2)
            cfg = next(c for c in configs_of(party) if c.name == config)
            args.replay = (party, cfg, int(index))
        except (ValueError, StopIteration):
            ap.error(f"argument --replay: expected PARTY:CONFIG:INDEX with a party of {PARTIES} and one of its "
                     f"configurations, got {args.replay!r}")
    return args


def replay(args: argparse.Namespace) -> int:
    party, cfg, index = args.replay
    fuzzer = Fuzzer(args.seed, args.sessions or (1 if args.quick else 6), verify_refused=0.0 if party == "bootstrap" else 1.0)
    tally = Tally()
    fuzzer.run_frame(party, cfg, index, tally, verbose=True)
    for f in fuzzer.findings:
        print(f"{f.kind.upper()}: {f.detail}")
    return 1 if tally.failures else 0


LAST_REPORT: Report | None = None


def main(argv: Sequence[str] | None = None) -> int:
    global LAST_REPORT
    args = parse_args(argv)
    if args.replay:
        return replay(args)
    err = Console(stderr=True)
    out = Console() if sys.stdout.isatty() else Console(width=230)
    report = LAST_REPORT = run(args, err)
    out.print(counts_table(report))
    out.print(rules_table(report))
    for line in findings_text(report, args):
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    for line in notes(report):
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    frames = sum(t.frames for t in report.tallies.values())
    out.print(f"{frames:,} frames in {report.seconds:.1f} s; {report.failures} failure(s) "
              f"(crashes, hangs, state changes on refusal, wrong totals)", highlight=False)
    return 1 if report.failures else 0


if __name__ == "__main__":
    entry_point("fuzz_secagg", main)
