"""Benchmark of one Bonawitz secure aggregation session, against the PRG floor and over loopback TCP.

    python3 -m sims.bench_secagg            # n in {10, 50, 100}, d in {1e3, 1e5}, dropout in {0, .1, .3}
    python3 -m sims.bench_secagg --quick    # n in {10, 50}, d in {1e3, 1e4}: a smoke run
    python3 -m sims.bench_secagg --transport both           # n in {50, 100, 200}, d in {1e4, 1e5}, dropout in {0, .1}
    python3 -m sims.bench_secagg --transport both --quick   # n in {10, 50}, d in {1e3, 1e4}, dropout in {0, .1}
    python3 -m sims.bench_secagg --transport tcp --n 200 --d 1e5 --dropout 0.1
    python3 -m sims.bench_secagg --graph sparse --n 100 1000 10000 --d 1e3 --dropout 0.1   # SecAgg+
    python3 -m sims.bench_secagg --graph sparse --malicious --n 100 1000 --d 1e4 --dropout 0.1   # malicious server
    python3 -m sims.bench_secagg --liar --n 50 100 200     # unmasking: honest vs one lying responder
    python3 -m sims.bench_secagg --breakdown [--graph sparse]   # the masked_input round, per component
    python3 -m sims.bench_secagg --graph sparse --n 10000 --d 1e4 --dropout 0.1 --speedup   # serial vs client pool

``--malicious`` (memory transport) runs malicious-server mode: signed keys and
the consistency round, and on a sparse graph the global quorum and signed
partner sets of protocol_spec.md 14.5, with k sized for MIN_GROUP honest
inputs per learnable sum.  Each malicious session is followed by the
honest-but-curious session of the same n, d and dropouts, and the table
gives their ratio on wall time and on CPU seconds (mal/HbC; goal at most 2
at n = 1,000).

In-memory sessions run their clients in ``simulate``'s client pool
(``secagg.pool``: one worker process per core from 1,000 clients up;
``--workers`` to choose).  ``--speedup`` instead runs each configuration
serially and in the pool (seeded, so both are the same session; each run in
a fresh process), and prints the speedup, the CPU seconds, the peak memory
of the server's process and of the largest worker, and whether the server
received the same messages in the same order and got the same sum.  ``--breakdown`` profiles every client's real
masked_input step (cProfile) at n = 100, d = 10^5 (or --n, --d) and groups
its internal time by component (keystream, X25519, HKDF, cipher setup, share
decryption, numpy additions, message coding, other) as fractions of the
client floor: the explanation of the ratio, measured.

``--graph sparse`` runs SecAgg+ sessions on the Harary graph sized by
``secagg.graph.sparse_parameters`` for ``--tolerated-dropout`` (default 0.1)
and ``--tolerated-corrupt`` (default 0.05); the table then shows k and that
t, and "per client s" (all clients' seconds / n) shows the per-client cost
growing with k ~ log n rather than with n.

For each configuration it runs one in-memory session (``secagg.simulate``)
with threshold t = floor(2n/3) + 1 (complete graph) and reports the seconds spent by all
clients together and by the server, per round; the bytes each client sends
and receives; and how far masking + unmasking is from the PRG floor.

Dropouts: the dropping clients (the first k ids, k = round(rate * n)) leave at
the masked_input round.  They completed share_keys, so every survivor has
already masked with their pairwise keys, but their masked input never
arrives: the server must reconstruct their X25519 keys and expand every
pairwise mask they share with a survivor.  That is the most expensive place
to drop.

The PRG floor is the time AES-256-CTR takes on this machine to expand exactly
the mask material the protocol must expand on the session's graph, one fresh
key per stream, each stream d * element_bytes bytes:

    clients: each of the |U3| senders expands 1 self mask + |N(u) ∩ U2| pairwise masks
    server:  |U3| self masks + one pairwise mask per (dropped, surviving neighbour) pair

(on the complete graph: |U3| (1 + |U2| - 1) and |U3| + |U2 \\ U3| * |U3|).  It is
measured twice right after each session (the lower of the two is used; the
graph is drawn from the session id), so it tracks the machine's state.

    ratio   = (masking + unmasking) / floor
    session = (all clients' seconds + the server's seconds, every round) / floor
    masking   = all clients' masked_input round (decrypt shares, X25519, HKDF, PRG, adds, encoding)
    unmasking = the server's unmasking round (Shamir reconstruction, X25519, HKDF, PRG, subtractions)

A ratio of 1 means the protocol costs no more than its unavoidable keystream;
everything above 1 is overhead (key agreement, key derivation, numpy
arithmetic, message encoding, Python).  The goal is ratio <= 2 for n=100,
d=10^5.  ``session`` puts the whole session over the same floor: the key
rounds and share_keys (key agreements, Shamir sharing, share encryption)
that the masked-input ratio leaves out.

Loopback mode (``--transport tcp`` or ``both``)
-----------------------------------------------

The same session over real sockets on 127.0.0.1 (``secagg.tcp``).  The
server (``TcpServer``) runs in its own process, started with the
multiprocessing "spawn" method so that it inherits none of this process's
memory; every client runs in this process, all in one trio event loop, each
on its own connection, with the dropping clients disconnecting instead of
sending their masked input (``secagg.tcp.leave_at``).  Rounds time out after
ROUND_TIMEOUT seconds, far more than any round takes, so nobody drops by
accident; the run checks that the included set is exactly the non-dropped
clients and that no transport rule was broken.

In these modes keys, masks and nonces are derived from ``--seed``
(``setup_session(seed=...)``, reproducible, for benchmarking only), so with
``both`` the in-memory and the TCP run of a configuration are the same
session: the run checks that the server received byte-identical messages
(an order-independent fingerprint of its transcript), that both totals are
equal, and that they equal the plaintext sum of the included inputs.

What is reported per configuration:

* wall time, end to end: TCP from the moment the clients start connecting to
  the server's result (its "done" event; both clocks are CLOCK_MONOTONIC);
  in memory the wall time of ``simulate`` minus its setup (parameters and
  client state machines, ``SimulationResult.setup_seconds``), i.e. from the
  first message to the result.  ``tcp/mem`` is their ratio.  Per round: TCP from
  the previous round's close to this one's (the first round includes
  connecting and the hello/params bootstrap); in memory clients + server
  seconds of that round.  The server process computes while the clients
  wait (and the reverse), so TCP can overlap work the in-memory run does
  serially;
* peak server memory: the server process's VmHWM (peak resident set) from
  /proc/self/status, after resetting it (/proc/self/clear_refs) once the
  process has imported everything and is about to listen, minus its
  resident set at that moment (the baseline, also printed).  So the number
  is what the session itself added to the server at its peak.  It includes
  the in-memory transcript the benchmark keeps to check that both transports
  ran the same session (about n * d * element bytes); ``secagg serve`` keeps
  none (its masked inputs are summed as they arrive);
* bytes on the wire per client (mean over the included clients), counted by
  the server on each connection and checked against the client's own count:
  every frame the client sent, 4-byte length prefixes and the hello frame
  included (TCP/IP headers are not counted); received bytes include the
  params frame.  expansion = bytes sent per client / (d * element_bytes),
  the raw input.  In ``both`` mode the message bytes (wire bytes minus hello
  and prefixes) must equal the in-memory count exactly.

Finally the expansion in the setting of Bonawitz et al. (2^10 users,
d = 2^20, 16-bit inputs, M = 2^16), for which they report 1.73x, is
*extrapolated* (not measured) two ways: from a message-size model that
encodes our real message classes with placeholder fields of the true sizes
(checked against every measured row, where it must be exact), and from a
least-squares fit bytes/client = a + b*n + c*d to this run's measured rows.

Progress goes to stderr: one line per configuration and a bar over the
configurations, moved on by every client step of the in-memory sessions.
The tables (or, with ``--json``, the rows) go to stdout.

Modules: ``config`` (configurations, grids, goals), ``floor`` (the PRG floor),
``runs`` (one configuration in memory, over TCP, both; the client pool
against the serial run), ``breakdown`` (the masked_input round per component;
unmasking with a lying responder), ``paper`` (the paper's setting,
extrapolated), ``tables`` (rich tables and verdicts), ``cli`` (arguments,
grid, main).
"""

from sims.bench_secagg.breakdown import (
    breakdown_table, masked_input_breakdown, reconstruction_table, unmasking_rows, unmasking_seconds,
)
from sims.bench_secagg.cli import grid, main, parse_args
from sims.bench_secagg.config import Config, estimated_seconds, sized
from sims.bench_secagg.floor import floor_streams, measure_floor, prg_seconds
from sims.bench_secagg.paper import model_sent_bytes, paper_table
from sims.bench_secagg.runs import run_both, run_config, run_memory, run_speedup, run_tcp

__all__ = [
    "Config", "breakdown_table", "estimated_seconds", "floor_streams", "grid", "main", "masked_input_breakdown",
    "measure_floor", "model_sent_bytes", "paper_table", "parse_args", "prg_seconds", "reconstruction_table",
    "run_both", "run_config", "run_memory", "run_speedup", "run_tcp", "sized", "unmasking_rows", "unmasking_seconds",
]
