"""The example's ServerApp: the secure workflow (secure rules) or ``RobustFedAvg`` (any rule).

It evaluates the global model on the held-out digits after every round and,
if ``out`` is set, writes the final parameters and the per-round figures as
JSON (a SuperLink runs the server app in its own process).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from ..arrays import to_record
from ..strategy import RobustFedAvg
from ..workflow import SecureRFAWorkflow
from .task import ExampleConfig, accuracy, initial_params


def run(grid: Grid, cfg: ExampleConfig) -> dict[str, Any]:
    """Train; return {"params", "accuracy", "oracle_calls", "error_bound", "included"} per the run."""
    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        return MetricRecord({"accuracy": accuracy(cfg, arrays.to_numpy_ndarrays()[0])})

    initial = to_record(initial_params(cfg))
    if cfg.secure:
        workflow = SecureRFAWorkflow(cfg.policy(), cfg.aggregator(), timeout=cfg.timeout, min_nodes=cfg.clients)
        history = workflow.run(grid, initial, cfg.rounds, evaluate_fn=evaluate)
        rounds = history.rounds
        out = {
            "params": history.arrays.to_numpy_ndarrays()[0].tolist(),
            "accuracy": [float(r.metrics["accuracy"]) for r in rounds],  # type: ignore[index]
            "oracle_calls": sum(len(r.steps) for r in rounds),
            "error_bound": [max((s.error_bound for s in r.steps), default=0.0) for r in rounds],
            "included": [[len(s.included) for s in r.steps] for r in rounds],
            "step_seconds": float(np.mean([s.seconds for r in rounds for s in r.steps])),
        }
    else:
        strategy = RobustFedAvg(  # FedAvg sizes its sample before waiting for nodes: fix both minima
            cfg.aggregator(), fraction_evaluate=0.0, min_available_nodes=cfg.clients, min_train_nodes=cfg.clients
        )
        result = strategy.start(grid, initial, num_rounds=cfg.rounds, timeout=cfg.timeout, evaluate_fn=evaluate)
        out = {
            "params": result.arrays.to_numpy_ndarrays()[0].tolist(),
            "accuracy": [float(result.evaluate_metrics_serverapp[r]["accuracy"]) for r in range(1, cfg.rounds + 1)],
        }
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(out))
    return out


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
