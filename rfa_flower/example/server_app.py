"""The example's ServerApp: the secure workflow (secure rules) or ``RobustFedAvg`` (any rule).

It evaluates the global model on the held-out digits after every round and,
if ``out`` is set, writes the final parameters and the per-round figures as
JSON (a SuperLink runs the server app in its own process).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from ..arrays import to_record
from ..strategy import RobustFedAvg
from ..workflow import SecureRFA
from .task import ExampleConfig, accuracy, held_out_loss, initial_params

log = logging.getLogger("flwr")  # Flower's logger: `flwr run --stream` shows these lines


def run(grid: Grid, cfg: ExampleConfig) -> dict[str, Any]:
    """Train; return {"params", "accuracy", ...} of the run.

    The run sizes itself from the nodes that connect: it waits for
    ``min_nodes`` (logging, as Flower's strategies do), then splits the data
    into as many partitions as nodes are connected (``clients`` fixes the
    number instead).
    """
    connected = wait_for_nodes(grid, max(cfg.min_nodes, cfg.clients))
    cfg = cfg.sized(connected)
    log.info("digits split over %d nodes; rule %s, %s", cfg.clients, cfg.rule, "secure" if cfg.secure else "plaintext")

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        w = arrays.to_numpy_ndarrays()[0]
        return MetricRecord({"loss": held_out_loss(cfg, w), "accuracy": accuracy(cfg, w)})

    initial = to_record(initial_params(cfg))
    if cfg.secure:
        strategy = SecureRFA(cfg.aggregator(), policy=cfg.policy(), min_train_nodes=cfg.clients,
                             min_available_nodes=cfg.clients)
        result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=cfg.rounds, timeout=cfg.timeout,
                                evaluate_fn=evaluate)
        rounds = strategy.rounds
        extra = {
            "oracle_calls": sum(len(r.steps) for r in rounds),
            "error_bound": [max((s.error_bound for s in r.steps), default=0.0) for r in rounds],
            "included": [[len(s.included) for s in r.steps] for r in rounds],
            "step_seconds": float(np.mean([s.seconds for r in rounds for s in r.steps] or [0.0])),
        }
    else:
        strategy = RobustFedAvg(  # FedAvg sizes its sample before waiting for nodes: fix both minima
            cfg.aggregator(), fraction_evaluate=0.0, min_available_nodes=cfg.clients, min_train_nodes=cfg.clients
        )
        result = strategy.start(grid, initial, num_rounds=cfg.rounds, timeout=cfg.timeout, evaluate_fn=evaluate)
        extra = {}
    out = {
        "clients": cfg.clients,
        "params": result.arrays.to_numpy_ndarrays()[0].tolist(),
        "accuracy": [float(result.evaluate_metrics_serverapp[r]["accuracy"]) for r in range(1, cfg.rounds + 1)],
        **extra,
    }
    log.info("final accuracy %.4f after %d rounds", out["accuracy"][-1], cfg.rounds)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(out))
    return out


def wait_for_nodes(grid: Grid, least: int, poll: float = 1.0) -> int:
    """How many nodes are connected, once at least ``least`` are (Flower's own wait, logged the same way)."""
    while (count := len(list(grid.get_node_ids()))) < least:
        log.info("Waiting for nodes to connect: %d connected (minimum required: %d).", count, least)
        time.sleep(poll)
    return count


def make_server_app(cfg: ExampleConfig | None = None, results: list | None = None) -> ServerApp:
    """``results``, if given, receives the run's result dict (in-process runs only)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        out = run(grid, cfg if cfg is not None else ExampleConfig.from_run_config(context.run_config))
        if results is not None:
            results.append(out)

    return app


app = make_server_app()
