"""``python3 -m rfa_flower.example``: run the shipped Flower app in Flower's simulation runtime and in memory, compare.

The Flower run is ``flwr run rfa_flower/example/flower_app --stream
--federation-config "num-supernodes=N" --run-config "..."`` in a throw-away
``FLWR_HOME`` (``sandbox.Sandbox``): the CLI starts a local SuperLink in
simulation mode, the app sizes itself from the N nodes that connect, and its
server app writes its result as JSON (run config ``out``).  Its log goes to
``<out>/simulation-flwr.log``; the rounds are shown on stderr as they end.

The Flower run and the in-memory run (``reference.py``) of one configuration
must agree up to quantization: the script prints the largest difference of
the final parameters against the sum of the oracle's error bounds and exits 1
if it is exceeded.  ``deploy.py`` does the same over a real local deployment.
Ctrl-C stops every process of the run and removes its FLWR_HOME: exit 130,
one line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from secagg.cli_support import Console, HelpFormatter, float_in, int_at_least, script, writable_dir

from .task import ExampleConfig

PROG = "python3 -m rfa_flower.example"
APP_DIR = Path(__file__).with_name("flower_app")
SECURE_RULES = ("mean", "geometric_median", "one_step")  # computable by secure weighted averages
MAX_CLIENTS = ExampleConfig.max_clients  # the fixed-point encoding is sized for this many

positive_int = int_at_least(1)
positive_seconds = float_in(0, low_open=True)


def client_count(text: str) -> int:
    """2 to MAX_CLIENTS: secure aggregation needs two nodes, the encoding is sized for MAX_CLIENTS."""
    value = int_at_least(2)(text)
    if value > MAX_CLIENTS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_CLIENTS} (the encoding's max_clients), got {value}")
    return value


def rule_names() -> list[str]:
    from rfa.aggregators import TwoPhaseRule, registry

    return [name for name, cls in registry.items() if not issubclass(cls, TwoPhaseRule)]  # two-phase rules need a vote


def rule_name(text: str) -> str:
    """A rule of ``rfa.aggregators`` that aggregates in one exchange."""
    from rfa.aggregators import TwoPhaseRule, registry

    if text not in registry:
        raise argparse.ArgumentTypeError(f"unknown rule {text!r}; one of {', '.join(rule_names())}")
    if issubclass(registry[text], TwoPhaseRule):
        raise argparse.ArgumentTypeError(f"{text} needs the clients' votes on its two candidates, which a Flower "
                                         f"strategy does not run (rfa.training.train does)")
    return text


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    p.add_argument("--quick", action="store_true", help="5 clients and 2 rounds (unless --clients/--rounds say otherwise)")
    p.add_argument("--rule", default="geometric_median", type=rule_name,
                   help=f"the aggregation rule; secure mode: {', '.join(SECURE_RULES)}; any of "
                        f"{', '.join(rule_names())} with --plaintext")
    p.add_argument("--plaintext", action="store_true", help="RobustFedAvg (updates in the clear) instead of SecureRFA")
    p.add_argument("--rounds", type=positive_int, default=None, help="federated rounds (default: 3; quick: 2)")
    p.add_argument("--clients", type=client_count, default=None,
                   help=f"clients, each a SuperNode, 2 to {MAX_CLIENTS} (default: 6; quick: 5)")
    p.add_argument("--out", type=Path, default=Path("out/flower_example"), help="folder for the results and logs")
    p.add_argument("--timeout", type=positive_seconds, default=1800.0, help="seconds to wait for the Flower run")
    return p


def build_parser() -> argparse.ArgumentParser:
    return parser(PROG, "Run the example app under `flwr run` in Flower's simulation runtime and compare with the "
                        "in-memory run")


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse and check what one flag alone cannot: a plaintext rule needs --plaintext."""
    args = p.parse_args(argv)
    if not args.plaintext and args.rule not in SECURE_RULES:
        p.error(f"argument --rule: {args.rule} needs every update in the clear; add --plaintext to run it "
                f"with RobustFedAvg (secure rules: {', '.join(SECURE_RULES)})")
    writable_dir(p, "--out", args.out)
    return args


def config_from(args: argparse.Namespace, mode: str) -> ExampleConfig:
    clients = args.clients or (5 if args.quick else 6)
    rounds = args.rounds or (2 if args.quick else 3)
    out = str(Path(args.out).resolve() / f"{mode}.json")
    return ExampleConfig(clients=clients, rounds=rounds, rule=args.rule, secure=not args.plaintext, out=out)


def app_run_config(cfg: ExampleConfig) -> dict[str, Any]:
    """The run config of the shipped app for ``cfg``: its size fixed, the public weight range computed once."""
    return dict(
        clients=cfg.clients, rounds=cfg.rounds, rule=cfg.rule, secure=cfg.secure, out=cfg.out,
        alpha_min=cfg.alpha_min, alpha_max=cfg.alpha_max, **{"min-nodes": cfg.clients},
    )


ROUND = re.compile(r"(\[ROUND \d+/\d+\].*)")


EVENT = re.compile(r"^\s*(?:INFO|WARNING)\s*:\s+(\S.*)")


@contextmanager
def progress(prog: str, rounds: int) -> Iterator[Callable[[str], None]]:
    """Shows the app's round lines of Flower's log on stderr, and on a terminal a bar over the rounds.

    The bar shows the time elapsed and Flower's latest log line: a deployment's round takes a minute or
    more (a ClientApp process per message), which the round lines alone would leave silent.
    """
    err = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("starting the run", total=rounds)

        def show(line: str) -> None:
            m = ROUND.search(line)
            if m:
                bar.advance(task)
                print(f"{prog}: {m.group(1)}", file=sys.stderr, flush=True)  # above the bar on a terminal
            elif "Successfully started run" in line:
                print(f"{prog}: {line.strip().lower().replace('successfully ', '')}", file=sys.stderr, flush=True)
            else:
                event = EVENT.search(line)
                if event:
                    bar.update(task, description=event.group(1)[:60])

        yield show


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


def main(argv: Sequence[str] | None = None) -> int:
    from .sandbox import RunFailed, Sandbox

    args = parse(build_parser(), argv)
    cfg = config_from(args, "simulation").with_alpha_range()  # the public range, computed once here
    result = Path(cfg.out)
    result.unlink(missing_ok=True)
    log = result.with_name("simulation-flwr.log")
    start = time.perf_counter()
    with Sandbox() as box:
        print(f"{PROG}: flwr run with {cfg.clients} simulated SuperNodes, local SuperLink on 127.0.0.1:"
              f"{box.link_port} (FLWR_HOME {box.home}; log {log})", file=sys.stderr, flush=True)
        try:
            with progress(PROG, cfg.rounds) as on_line:
                code = box.flwr_run(APP_DIR, "--federation-config", f"num-supernodes={cfg.clients}",
                                    config=app_run_config(cfg), log=log, on_line=on_line, timeout=args.timeout)
        except RunFailed as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 1
    if not result.exists():
        print(f"{PROG}: the Flower run ended without a result (flwr run exit {code}); its log: {log}", file=sys.stderr)
        return 1
    flower = json.loads(result.read_text())
    return compare(cfg, flower, "simulation", time.perf_counter() - start)


if __name__ == "__main__":
    script(PROG, main)
