"""Side by side in Flower's simulation runtime: one secure round of ours (mean, geometric median) and of Flower's SecAgg+.

    python3 -m sims.bench_flower --n 10 50 100    # d = 10,000: the table in docs/guide/flower.md
    python3 -m sims.bench_flower                  # n = 10
    python3 -m sims.bench_flower --quick          # n = 3, d = 100: a smoke run (the tests)

For each n, n clients each hold a d-vector (a fixed function of the
partition, weight 10 + partition) and one training round aggregates the
vectors by secure aggregation with threshold t = ceil(2n/3) over the complete
graph, in three ways:

* ``mean``: ``rfa_flower.SecureRFA`` with the Mean rule: the train round,
  then one secure weighted average (secagg's setup, share keys, masked input,
  unmasking: 4 Flower round trips), 64-bit fixed point;
* ``geometric median``: ``SecureRFA`` with the geometric median (the mean and
  3 smoothed Weiszfeld steps: 4 secure averages, the calls of one secagg
  session, so 4 + 3 x 2 = 10 round trips after the train round);
* ``Flower SecAgg+``: Flower's ``SecAggPlusWorkflow(num_shares=n,
  reconstruction_threshold=t)`` under ``DefaultWorkflow`` with FedAvg and
  ``secaggplus_mod`` on the clients, its default quantization.

Each n runs as two ``flwr run`` of a Flower App this script writes (one for
ours, both rules; one for Flower's) with ``--federation-config
num-supernodes=n``, in one throw-away ``FLWR_HOME``
(``rfa_flower.example.sandbox``), so Flower's simulation runtime is exactly
what ``flwr run`` gives any app.  Actors warm up first: ours runs one
untimed mean round, Flower's trains two rounds and the second is measured.
A round's time is measured inside the server app from its first message to
its aggregate.  Bytes are measured the same way on both sides: a wrapper
around the server app's ``Grid`` adds up the serialized size (protobuf) of
the content of every message the round sends (down) and every reply (up),
divided by n.  For ours the secagg messages alone (``StepRecord.bytes_received``)
are shown too.

Correctness: the mean and Flower's aggregate are compared with the exact
weighted mean; ours must be within the encoding's error bound, Flower's
within the bound of its quantization (n steps of 2 * 8 / 2^22 over the
quantized weight sum, plus its weights' rounding).  Every secure average of
the median is compared with the smoothed Weiszfeld step of the plaintext
vectors from the same broadcast point, within that step's error bound; the
table shows the final median's distance to the plaintext
``GeometricMedianRule``.  The exit code is 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from secagg.cli_support import Console, HelpFormatter, float_in, int_at_least, script, writable_dir

PROG = "python3 -m sims.bench_flower"
MAX_N = 1024  # Flower's SecAgg+ defaults: n quantized inputs of 2^22 levels must fit in 2^32
D = 10_000
SIDES = ("mean", "geometric_median", "flower")
LABELS = {"mean": "ours: secure mean", "geometric_median": "ours: secure geometric median", "flower": "Flower SecAgg+ FedAvg"}
# Flower's SecAggPlusWorkflow defaults (clipping_range, quantization_range, max_weight).
FLOWER_CLIP, FLOWER_LEVELS, FLOWER_MAX_WEIGHT = 8.0, 2**22, 1000.0
WEISZFELD_STEPS = 3
log = logging.getLogger("flwr")  # flwr run --stream shows these lines


# ---- the data: the same on every side ---------------------------------------------------------


def vector(partition: int, d: int) -> np.ndarray:
    return np.random.default_rng([11, partition]).uniform(-1.0, 1.0, d)


def examples(partition: int) -> int:
    return 10 + partition


def points(n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([vector(p, d) for p in range(n)]), np.array([examples(p) for p in range(n)], dtype=float)


def exact_mean(n: int, d: int) -> np.ndarray:
    w, a = points(n, d)
    return (a[:, None] * w).sum(axis=0) / a.sum()


def threshold(n: int) -> int:
    return math.ceil(2 * n / 3)


def policy_config(n: int, d: int) -> dict[str, Any]:
    """The run config of ours: the public privacy parameters (``SecurePolicy.from_config``)."""
    return {"norm-bound": math.sqrt(d), "alpha-min": 10.0, "alpha-max": 10.0 + n, "nu": 1.0, "max-clients": max(n, 2)}


def flower_bound(n: int) -> float:
    """Flower SecAgg+'s worst-case per-coordinate error of the weighted mean of vectors in [-1, 1].

    Each client sends round(w_i * r_i * L / 2c) with stochastic rounding (an error below one level, 2c/L) and
    r_i = examples / max_weight rounded to 1/L; the server divides the sum by the sum of the rounded r_i.
    """
    r = np.array([examples(p) for p in range(n)]) / FLOWER_MAX_WEIGHT
    dq = np.round(r * FLOWER_LEVELS) / FLOWER_LEVELS
    quantization = n * (2 * FLOWER_CLIP / FLOWER_LEVELS) / dq.sum()
    weights = 2 * float(np.max(np.abs(dq - r) / r))  # |sum dq w / sum dq - sum r w / sum r| for |w| <= 1
    return quantization + weights


# ---- measuring a round on the server: a Grid that counts bytes ---------------------------------


class CountingGrid:
    """Delegates to Flower's grid; adds up the serialized content of what is sent and received."""

    def __init__(self, grid: Any):
        self.grid = grid
        self.down = self.up = self.trips = 0
        self.seconds: list[float] = []  # of each round trip: where a round's time goes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)

    def get_node_ids(self):
        return self.grid.get_node_ids()

    def send_and_receive(self, messages, *, timeout=None):
        from flwr.common.serde import recorddict_to_proto

        messages = list(messages)
        self.trips += 1
        self.down += sum(recorddict_to_proto(m.content).ByteSize() for m in messages)
        start = time.perf_counter()
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        self.seconds.append(time.perf_counter() - start)
        self.up += sum(recorddict_to_proto(r.content).ByteSize() for r in replies if not r.has_error())
        return replies

    def counts(self) -> tuple[int, int, int]:
        return self.down, self.up, self.trips


def write_result(path: str, rows: list[dict[str, Any]]) -> None:
    Path(path).write_text(json.dumps(rows))


# ---- ours: one flwr run, the mean and the geometric median ----------------------------------------


def _ours_apps() -> tuple[Any, Any]:
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    from rfa.aggregators import GeometricMedianRule
    from rfa.weiszfeld import weiszfeld_weights
    from rfa_flower import SecurePolicy, SecureRFA, SecureRFAMod
    from rfa_flower.arrays import to_record

    client = ClientApp()

    @client.train(mods=[SecureRFAMod()])  # the policy from the run config
    def train(message, context):
        p = int(context.node_config["partition-id"])
        w = message.content["arrays"].to_numpy_ndarrays()[0]
        d = int(context.run_config["d"])
        reply = RecordDict({"arrays": ArrayRecord([w + vector(p, d)]), "metrics": MetricRecord({"num-examples": examples(p)})})
        return Message(reply, reply_to=message)

    server = ServerApp()

    @server.main()
    def main(grid, context):
        n, d = int(context.run_config["n"]), int(context.run_config["d"])
        policy = SecurePolicy.from_config(context.run_config)
        initial = to_record(np.zeros(d))
        W, alpha = points(n, d)
        log.info("bench: warm-up round (mean, untimed)")
        SecureRFA("mean", policy=policy, min_train_nodes=n, min_available_nodes=n).start(
            grid=grid, initial_arrays=initial, num_rounds=1)
        rows = []
        for side, params in (("mean", {}), ("geometric_median", {"rounds": WEISZFELD_STEPS})):
            log.info("bench: measured round: %s", side)
            counting = CountingGrid(grid)
            strategy = SecureRFA(side, policy=policy, min_train_nodes=n, min_available_nodes=n, rule_params=params)
            start = time.perf_counter()
            result = strategy.start(grid=counting, initial_arrays=initial, num_rounds=1)
            seconds = time.perf_counter() - start
            steps = strategy.rounds[0].steps
            aggregate = result.arrays.to_numpy_ndarrays()[0]
            if side == "mean":
                error = float(np.max(np.abs(aggregate - exact_mean(n, d))))
                ok = bool(steps) and error <= steps[0].error_bound
                worst_step = error
            else:  # every secure average against the plaintext step from the same broadcast point
                ratios = []
                for step in steps:
                    beta = alpha if step.kind == "mean" else weiszfeld_weights(W, step.broadcast, alpha, policy.nu)
                    exact = (beta[:, None] * W).sum(axis=0) / beta.sum()
                    norm = float(np.linalg.norm(exact))
                    exact = exact if norm <= policy.norm_bound else exact * (policy.norm_bound / norm)
                    ratios.append(float(np.max(np.abs(step.output - exact))) / step.error_bound)
                plain = GeometricMedianRule(rounds=WEISZFELD_STEPS, nu=policy.nu)(W, alpha)
                error = float(np.max(np.abs(aggregate - plain)))
                worst_step = max(ratios, default=math.inf)
                ok = len(steps) == WEISZFELD_STEPS + 1 and worst_step <= 1.0
            down, up, trips = counting.counts()
            rows.append({
                "side": side, "n": n, "d": d, "t": policy.threshold_for(n), "seconds": seconds,
                "bytes_up_per_node": up / n, "bytes_down_per_node": down / n,
                "secagg_bytes_up_per_node": sum(s.bytes_received for s in steps) / n,
                "round_trips": trips, "trip_seconds": counting.seconds, "secure_averages": len(steps),
                "included": min((len(s.included) for s in steps), default=0),
                "max_error": error, "error_bound": sum(s.error_bound for s in steps),
                "worst_step_error_over_bound": worst_step if side != "mean" else None,
                "ok": bool(ok and all(len(s.included) == n for s in steps)),
            })
            log.info("bench: %s: %.2f s", side, seconds)
        write_result(str(context.run_config["out"]), rows)

    return server, client


# ---- Flower's SecAgg+: one flwr run, two rounds, the second measured ------------------------------


def _flower_apps() -> tuple[Any, Any]:
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    class Fixed(NumPyClient):
        def __init__(self, partition: int, d: int):
            self.partition, self.d = partition, d

        def fit(self, parameters, config):
            return [vector(self.partition, self.d)], examples(self.partition), {}  # the model: the mean is exact

    def client_fn(context):
        return Fixed(int(context.node_config["partition-id"]), int(context.run_config["d"])).to_client()

    client = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    server = ServerApp()

    @server.main()
    def main(grid, context):
        n, d = int(context.run_config["n"]), int(context.run_config["d"])
        counting = CountingGrid(grid)
        measured: dict[str, Any] = {}

        class Timed(FedAvg):
            def configure_fit(self, server_round, parameters, client_manager):
                log.info("bench: %s round: flower", "warm-up" if server_round == 1 else "measured")
                measured.update(start=time.perf_counter(), before=counting.counts())
                return super().configure_fit(server_round, parameters, client_manager)

            def aggregate_fit(self, server_round, results, failures):
                out = super().aggregate_fit(server_round, results, failures)
                measured.update(seconds=time.perf_counter() - measured["start"], after=counting.counts(),
                                aggregate=parameters_to_ndarrays(out[0])[0], included=len(results))
                return out

        strategy = Timed(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
                         initial_parameters=ndarrays_to_parameters([np.zeros(d)]), fit_metrics_aggregation_fn=lambda m: {})
        legacy = LegacyContext(context, config=ServerConfig(num_rounds=2), strategy=strategy)
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=n, reconstruction_threshold=threshold(n)))
        workflow(counting, legacy)
        (down0, up0, trips0), (down1, up1, trips1) = measured["before"], measured["after"]
        error = float(np.max(np.abs(measured["aggregate"] - exact_mean(n, d))))
        bound = flower_bound(n)
        log.info("bench: flower: %.2f s", measured["seconds"])
        write_result(str(context.run_config["out"]), [{
            "side": "flower", "n": n, "d": d, "t": threshold(n), "seconds": measured["seconds"],
            "bytes_up_per_node": (up1 - up0) / n, "bytes_down_per_node": (down1 - down0) / n,
            "secagg_bytes_up_per_node": None, "round_trips": trips1 - trips0,
            "trip_seconds": counting.seconds[trips0:trips1], "secure_averages": 1,
            "included": n, "max_error": error, "error_bound": bound, "worst_step_error_over_bound": None,
            "ok": bool(error <= bound),
        }])

    return server, client


class Apps:
    """``APPS.ours_server``, ``APPS.ours_client``, ``APPS.flower_server``, ``APPS.flower_client``: the Flower
    apps, built when Flower loads them (so this module imports Flower only in the runs' processes)."""

    def __init__(self) -> None:
        self._built: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        builders = {"ours": _ours_apps, "flower": _flower_apps}
        side, _, role = name.partition("_")
        if side not in builders or role not in ("server", "client"):
            raise AttributeError(name)
        if side not in self._built:
            self._built[side] = builders[side]()
        return self._built[side][0 if role == "server" else 1]


APPS = Apps()  # the components of the apps' pyproject.toml: "sims.bench_flower:APPS.ours_server", ...


# ---- the runs --------------------------------------------------------------------------------------


def app_dir(root: Path, side: str, n: int, d: int, out: Path) -> Path:
    """A Flower App directory for one run: its pyproject.toml names this module's apps and the run config."""
    from rfa_flower.example.sandbox import config_value

    config = {"n": n, "d": d, "out": str(out)}
    if side == "ours":
        config.update(policy_config(n, d))
    app = root / f"app-{side}-{n}"
    app.mkdir(parents=True, exist_ok=True)
    lines = "\n".join(f'"{k}" = {config_value(v)}' for k, v in config.items())
    (app / "pyproject.toml").write_text(f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "rfa-bench-{side}"
version = "1.0.0"
description = "sims.bench_flower: one secure round, {side}"
license = "MIT"
dependencies = []

[tool.flwr.app]
publisher = "secagg-rfa"

[tool.flwr.app.components]
serverapp = "sims.bench_flower:APPS.{side}_server"
clientapp = "sims.bench_flower:APPS.{side}_client"

[tool.flwr.app.config]
{lines}
""")
    return app


PHASE = re.compile(r"bench: (.*)|(\[ROUND \d+/\d+\])|(Secure aggregation \w+)")


def run_side(box: Any, side: str, n: int, d: int, out: Path, timeout: float, status: Any) -> list[dict[str, Any]]:
    """One ``flwr run``; the rows its server app wrote.  Raises ``RunFailed``."""
    from rfa_flower.example.sandbox import RunFailed

    result = out / f"{side}-n{n}.json"
    result.unlink(missing_ok=True)
    log_path = out / f"{side}-n{n}.log"

    def on_line(line: str) -> None:
        m = PHASE.search(line)
        if m:
            status(next(g for g in m.groups() if g))

    code = box.flwr_run(app_dir(box.home, side, n, d, result), "--federation-config", f"num-supernodes={n}",
                        log=log_path, on_line=on_line, timeout=timeout)
    if not result.exists():
        raise RunFailed(f"the {side} run with n={n} ended without a result (flwr run exit {code}); its log: {log_path}")
    return json.loads(result.read_text())


def ratio_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its ratios to Flower's row of the same n (ours / Flower)."""
    flower = {r["n"]: r for r in rows if r["side"] == "flower"}
    for r in rows:
        f = flower.get(r["n"])
        r["time_ratio"] = r["seconds"] / f["seconds"] if f else None
        r["bytes_up_ratio"] = r["bytes_up_per_node"] / f["bytes_up_per_node"] if f else None
        r["bytes_down_ratio"] = r["bytes_down_per_node"] / f["bytes_down_per_node"] if f else None
    return rows


def table(rows: list[dict[str, Any]]):
    from rich.table import Table

    t = Table(title="One secure round in Flower's simulation runtime (flwr run); ratios: ours / Flower's")
    for name in ("n", "d", "t", "aggregation", "trips", "s/round", "x time", "KB up/node", "x up",
                 "KB down/node", "x down", "max error", "check"):
        t.add_column(name, justify="left" if name in ("aggregation", "check") else "right")
    for i, r in enumerate(rows):
        last = i + 1 == len(rows) or rows[i + 1]["n"] != r["n"]
        error = f"{r['max_error']:.1e}"
        if r["side"] == "geometric_median":
            check = f"{'ok' if r['ok'] else 'FAILED'}: each step <= {r['worst_step_error_over_bound']:.2g} x its bound"
        else:
            check = f"{'ok' if r['ok'] else 'FAILED'}: <= {r['error_bound']:.1e}"
        ratio = (lambda v: f"{v:.2f}" if v is not None and r["side"] != "flower" else "")
        t.add_row(str(r["n"]), f"{r['d']:,}", str(r["t"]), LABELS[r["side"]], str(r["round_trips"]),
                  f"{r['seconds']:.2f}", ratio(r["time_ratio"]), f"{r['bytes_up_per_node'] / 1e3:,.1f}",
                  ratio(r["bytes_up_ratio"]), f"{r['bytes_down_per_node'] / 1e3:,.1f}", ratio(r["bytes_down_ratio"]),
                  error, check, end_section=last)
    return t


# ---- command line ------------------------------------------------------------------------------------


def client_count(text: str) -> int:
    value = int_at_least(3)(text)  # Flower's SecAgg+ needs num_shares > 2
    if value > MAX_N:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_N} (Flower's SecAgg+ defaults overflow beyond), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    ap.add_argument("--n", type=client_count, nargs="+",
                    help=f"clients, one or more (3 to {MAX_N}; Flower's SecAgg+ needs 3) (default: 10; quick: 3)")
    ap.add_argument("--d", type=int_at_least(1), help=f"parameters per client (default: {D:,}; quick: 100)")
    ap.add_argument("--quick", action="store_true", help="n = 3, d = 100: a smoke run")
    ap.add_argument("--out", type=Path, default=Path("out/bench_flower"),
                    help="folder for each run's flwr log and result")
    ap.add_argument("--timeout", type=float_in(0, low_open=True), default=3600.0,
                    help="seconds each flwr run may take")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON on stdout (the table goes to stderr)")
    return ap


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_args(argv)
    writable_dir(ap, "--out", args.out)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from rfa_flower.example.sandbox import RunFailed, Sandbox

    args = parse_args(argv)
    ns = args.n or ([3] if args.quick else [10])
    d = args.d or (100 if args.quick else D)
    out = args.out.resolve()
    stream = sys.stderr if args.json else sys.stdout  # with --json, stdout carries the rows alone
    console = Console(file=stream) if stream.isatty() else Console(file=stream, width=200)
    err = Console(stderr=True)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with Sandbox() as box, Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                   console=err, transient=not err.is_terminal) as progress:
        for n in ns:
            for side in ("ours", "flower"):
                what = "ours (mean, geometric median)" if side == "ours" else "Flower SecAgg+"
                task = progress.add_task(f"n={n} d={d:,}: {what}", total=None)
                status = (lambda text, task=task, what=what, n=n:
                          progress.update(task, description=f"n={n} d={d:,}: {what}: {text}"))
                try:
                    got = run_side(box, side, n, d, out, args.timeout, status)
                except RunFailed as exc:
                    progress.stop()
                    err.print(f"{PROG}: {exc}", highlight=False, soft_wrap=True)
                    return 1
                rows += got
                done = f"n={n} d={d:,}: {what}: " + ", ".join(f"{r['side']} {r['seconds']:.2f} s" for r in got)
                progress.update(task, description=done, total=1, completed=1)
                if not err.is_terminal:  # no live display on a file or pipe: one line per run as it ends
                    progress.console.print(done, highlight=False, soft_wrap=True)
    rows = ratio_rows(sorted(rows, key=lambda r: (r["n"], SIDES.index(r["side"]))))
    console.print(table(rows))
    console.print("Where a round's time goes (s): each Flower round trip (the nodes' work and the transport), "
                  "then the server's own work between and after them", highlight=False, soft_wrap=True)
    for r in rows:
        trips = r["trip_seconds"]
        console.print(f"  n={r['n']} {LABELS[r['side']]}: round trips {' + '.join(f'{x:.2f}' for x in trips)}; "
                      f"server {r['seconds'] - sum(trips):.2f}", highlight=False, soft_wrap=True)
    console.print(f"command: {PROG} " + " ".join(argv if argv is not None else sys.argv[1:])
                  + f"  ({time.perf_counter() - started:.0f} s in all)", highlight=False, soft_wrap=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    script(PROG, main)
