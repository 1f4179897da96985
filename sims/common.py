"""Plumbing shared by the simulations: output folder, CSV, plots, progress, summary.

Every simulation writes into one folder (``--out``, default ``out/<name>``):
``<name>.csv`` with one row per measurement, PNG plots, and ``summary.md``
(what was run, with which seeds, and the headline numbers).  ``--quick``
shrinks every simulation to a size that finishes in well under a minute.
"""

from __future__ import annotations

import argparse
import csv
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: the simulations never open a window
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

console = Console()


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """The common flags: --out, --quick, --seeds."""
    p = argparse.ArgumentParser(prog=f"python3 -m sims.{name}", description=description)
    p.add_argument("--out", type=Path, default=Path("out") / name, help="output folder")
    p.add_argument("--quick", action="store_true", help="a small, fast version (used by the tests)")
    p.add_argument("--seeds", type=int, default=None, help="number of random seeds (default: 3, quick: 1)")
    return p


def seeds(args: argparse.Namespace) -> list[int]:
    count = args.seeds if args.seeds is not None else (1 if args.quick else 3)
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
    return path


def save_figure(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_summary(path: Path, title: str, lines: Iterable[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n\n" + "\n".join(lines) + "\n")
    return path


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Any]:
    """A rich progress bar; yields ``advance(n=1)``."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


@contextmanager
def timed(label: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    console.print(f"{label}: {time.perf_counter() - start:.1f} s")
