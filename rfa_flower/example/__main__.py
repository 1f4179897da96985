"""``python3 -m rfa_flower.example``: run the example in Flower's simulation engine and in memory, compare.

The Flower run and the in-memory run (``reference.py``) of one configuration
must agree up to quantization: the script prints the largest difference of
the final parameters against the sum of the oracle's error bounds and exits
non-zero if it is exceeded.  ``deploy.py`` does the same over a real local
deployment.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .task import ExampleConfig


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="2 rounds, 5 clients")
    p.add_argument("--rule", default="geometric_median", help="a rule of rfa.aggregators")
    p.add_argument("--plaintext", action="store_true", help="RobustFedAvg instead of the secure workflow")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--clients", type=int, default=None)
    p.add_argument("--out", default="out/flower_example")
    return p


def config_from(args: argparse.Namespace, mode: str) -> ExampleConfig:
    clients = args.clients or (5 if args.quick else 6)
    rounds = args.rounds or (2 if args.quick else 3)
    out = str(Path(args.out).resolve() / f"{mode}.json")
    return ExampleConfig(clients=clients, rounds=rounds, rule=args.rule, secure=not args.plaintext, out=out)


def compare(cfg: ExampleConfig, flower: dict[str, Any], mode: str, seconds: float) -> int:
    """Print the comparison with the in-memory run; 0 if they agree within the bound."""
    from .reference import run_in_memory

    memory = run_in_memory(cfg)
    diff = float(np.max(np.abs(np.asarray(flower["params"]) - np.asarray(memory["params"]))))
    bound = float(sum(memory["error_bound"])) if cfg.secure else 1e-9
    print(f"{mode}: rule={cfg.rule} secure={cfg.secure} clients={cfg.clients} rounds={cfg.rounds} ({seconds:.1f} s)")
    print("  accuracy per round (Flower):   ", " ".join(f"{a:.4f}" for a in flower["accuracy"]))
    print("  accuracy per round (in memory):", " ".join(f"{a:.4f}" for a in memory["accuracy"]))
    if cfg.secure:
        print(f"  secure averages: {flower['oracle_calls']}, mean seconds per secure average: {flower['step_seconds']:.2f}")
    print(f"  max |w_flower - w_memory| = {diff:.3g}  (bound: {bound:.3g})")
    ok = diff <= bound
    print("  MATCH" if ok else "  MISMATCH")
    Path(cfg.out).with_name(f"{mode}-comparison.json").write_text(
        json.dumps({"max_abs_diff": diff, "bound": bound, "memory_accuracy": memory["accuracy"], **flower})
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parser("Run the example in Flower's simulation engine and compare with the in-memory run").parse_args(argv)
    cfg = config_from(args, "simulation")
    from flwr.simulation import run_simulation

    from .client_app import make_client_app
    from .server_app import make_server_app

    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    run_simulation(
        make_server_app(cfg, results),
        make_client_app(cfg),
        num_supernodes=cfg.clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    if not results:
        print("the Flower simulation produced no result (see its log above)", file=sys.stderr)
        return 1
    return compare(cfg, results[0], "simulation", time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
