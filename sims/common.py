"""Plumbing shared by the simulations: output folder, CSV, plots, progress, summary.

Every simulation writes into one folder (``--out``, default ``out/<name>``):
``<name>.csv`` with one row per measurement, PNG plots, and ``summary.md``
(what was run, with which seeds, and the headline numbers).  ``--quick``
shrinks every simulation to a size that finishes in well under a minute.

``--json`` prints, on stdout at the end, what the run wrote (the folder, the
plots, the summary and every CSV's rows), and the messages go to stderr.
Progress bars always go to stderr.  ``parser`` checks the shared flags while parsing, so every simulation
inherits the checks: ``--seeds`` must be at least 1 and ``--out`` is created
and proved writable before the run starts.  The argument types
(``positive_int``, ``client_count``, ``fraction``, ``positive_float``) name
the flag in their error; ``entry_point`` ends a simulation with the exit codes of
``secagg.cli_support`` (Ctrl-C, a closed pipe or an OS error: one line, no
traceback).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, NoReturn, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: the simulations never open a window
import matplotlib.pyplot as plt  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from secagg.cli_support import USAGE, Console, HelpFormatter, float_in, int_at_least, script, writable_dir  # noqa: E402, F401 (re-exported)

console = Console()

# Argument types for any simulation's own flags; a refused value names its flag.
positive_int = int_at_least(1)
client_count = int_at_least(2)  # secure aggregation needs at least 2 clients
fraction = float_in(0, 1)
positive_float = float_in(0, low_open=True)


# What this process's simulation wrote, for --json (one simulation runs per process).
_written: dict[str, Any] = {"args": None, "figures": [], "summary": None, "rows": {}}


class SimParser(argparse.ArgumentParser):
    """Parses like argparse, then prepares ``--out``: a run never finds out at its end that it cannot write."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        ns = super().parse_args(args, namespace)
        if getattr(ns, "out", None) is not None:
            writable_dir(self, "--out", ns.out)
        # Set on every parse, so one in-process run's flags never leak into the next.
        console.quiet = bool(getattr(ns, "quiet", False))
        console.stderr = bool(getattr(ns, "json", False))  # with --json, stdout carries the JSON alone
        _written.update(args=ns, figures=[], summary=None, rows={})
        return ns


def parser(name: str, description: str, *, seed_counts: tuple[int, int] = (3, 1)) -> argparse.ArgumentParser:
    """The common flags: --out, --quick, --seeds, --quiet (with --help showing every default).

    ``seed_counts`` is (default, quick) number of seeds; ``seeds`` and ``--help`` both read it.
    """
    p = SimParser(prog=f"python3 -m sims.{name}", description=description, formatter_class=HelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out") / name, help="output folder (created if missing)")
    p.add_argument("--quick", action="store_true", help="a small, fast version (used by the tests)")
    full, quick = seed_counts
    p.add_argument("--seeds", type=positive_int, default=None,
                   help=f"number of random seeds (default: {full}, quick: {quick})")
    p.set_defaults(seed_counts=seed_counts)
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages; the files are still written")
    p.add_argument("--json", action="store_true", help="at the end, print what was written (and every CSV's rows) as JSON on stdout")
    return p


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars as Python numbers, NaN and infinities as null."""
    value = value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def with_json(name: str, main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """``main``, followed by the --json report when the parsed flags asked for it."""

    def run(argv: Sequence[str] | None = None) -> int:
        code = main(argv)
        args = _written["args"]
        if args is not None and getattr(args, "json", False):
            rows = {f: [{k: _plain(v) for k, v in row.items()} for row in r] for f, r in _written["rows"].items()}
            print(json.dumps({"name": name, "exit_code": code, "out": str(args.out), "summary": _written["summary"],
                              "figures": _written["figures"], "csv": rows}))
        return code

    return run


def entry_point(name: str, main: Callable[[Sequence[str] | None], int]) -> None:
    """``if __name__ == "__main__": entry_point(NAME, main)``: exit codes and one-line errors as in the CLIs."""
    script(f"sims.{name}", with_json(name, main))


def seeds(args: argparse.Namespace) -> list[int]:
    full, quick = getattr(args, "seed_counts", (3, 1))
    count = args.seeds if args.seeds is not None else (quick if args.quick else full)
    return list(range(count))


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    _written["rows"][path.name] = [dict(row) for row in rows]
    return path


def save_figure(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    _written["figures"].append(str(path))
    return path


def write_summary(path: Path, title: str, lines: Iterable[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n\n" + "\n".join(lines) + "\n")
    _written["summary"] = str(path)
    return path


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Any]:
    """A rich progress bar on stderr (stdout carries the results); yields ``advance(n=1)``."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), disable=console.quiet,
        # On a terminal, what the run prints meanwhile goes above the bar; into a pipe or a file, straight there.
        redirect_stdout=sys.stdout.isatty(),
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def _one_blas_thread() -> None:
    threadpool_limits(1)


def pooled(function: Callable[..., Any], jobs: list[tuple], workers: int, description: str,
           chunksize: int = 1) -> list[Any]:
    """``function(*job)`` for every job, in order, under a progress bar: in this process for one worker,
    else in a pool of fresh (spawned) processes with one BLAS thread each (a forked or multi-threaded
    OpenBLAS oversubscribes the cores)."""
    results: list[Any] = []
    with progress_bar(description, len(jobs)) as advance:
        if workers == 1:
            for job in jobs:
                results.append(function(*job))
                advance()
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_one_blas_thread) as pool:
                for result in pool.map(function, *zip(*jobs), chunksize=chunksize):
                    results.append(result)
                    advance()
    return results


@contextmanager
def timed(label: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    console.print(f"{label}: {time.perf_counter() - start:.1f} s")


def not_a_command(module: str) -> NoReturn:
    """``python3 -m`` on a module of shared code: say so in one line (exit 2) instead of silently doing nothing."""
    print(f"python3 -m {module}: shared code of the simulations, not a command; run a simulation instead, "
          "e.g. python3 -m sims.fig1_weiszfeld --help (docs/reproductions/ lists them)", file=sys.stderr)
    raise SystemExit(USAGE)


if __name__ == "__main__":
    not_a_command("sims.common")
