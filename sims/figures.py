"""Rerun the commands behind the figures the docs state, and rewrite those figures in place.

A figure in README.md or in a page under docs/ sits between markers, inline::

    <!-- fig:demo-seconds -->36<!-- /fig -->

or, for a block (a table, what a benchmark printed, a simulation's summary.md), on lines of their own
around it.  Each id comes from one *source* below: a command, run from the checkout, and a function
from what it printed (or the summary it wrote) to its figures.  So a figure cannot drift from its
command: rerun, and the text follows.

    python3 -m sims.figures                 # rerun every source, rewrite every figure
    python3 -m sims.figures --only demo     # one source (repeatable)
    python3 -m sims.figures --list          # each id, its source's command, the pages it appears on
    python3 -m sims.figures --check         # only check the pages (below)

``--check`` runs nothing and is what the test suite runs.  It reports a marker with no source, a source
with no marker, a marker still holding the placeholder of a source that never ran, and a markdown table
of numbers outside a marker unless the line above it says ``<!-- not measured: why -->`` (settings,
flags, the papers' own numbers).  A full rerun takes as long as its commands: over an hour on 2 cores,
most of it the mixture simulation, the test suite and the Flower benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from secagg.cli_support import script

log = Console(stderr=True, soft_wrap=True)  # progress goes to stderr; the pages are the output

ROOT = Path(__file__).resolve().parents[1]
INLINE = re.compile(r"<!-- fig:(?P<id>[a-z0-9-]+) -->(?P<value>.*?)<!-- /fig -->")
BLOCK = re.compile(r"^<!-- fig:(?P<id>[a-z0-9-]+) -->\n(?P<value>.*?)\n<!-- /fig -->$", re.S | re.M)


class FigureError(RuntimeError):
    """A source's command failed, or printed something its figures cannot be read from."""


@dataclass(frozen=True)
class Source:
    """One command and the figures read from what it printed (and, for a simulation, from what it wrote)."""

    command: tuple[str, ...]
    ids: tuple[str, ...]
    read: Callable[[str, str], Mapping[str, str]] | None = None  # (stdout, stderr) -> figures
    wall: str | None = None  # the id of the command's wall time in seconds, if one is shown
    env: Mapping[str, str] = field(default_factory=dict)  # e.g. COLUMNS, so a printed table has a known width

    @property
    def all_ids(self) -> tuple[str, ...]:
        return self.ids + ((self.wall,) if self.wall else ())


def _search(pattern: str, text: str, what: str) -> re.Match[str]:
    m = re.search(pattern, text, re.M)
    if m is None:
        raise FigureError(f"no {what} in the output (pattern {pattern!r})")
    return m


def _demo(out: str) -> dict[str, str]:
    rows = [line.rstrip() for line in out.splitlines() if line.startswith(("┃", "│"))]
    if len(rows) < 2:
        raise FigureError("no table in the demo's output")
    return {"demo-table": "```\n" + "\n".join(rows) + "\n```",
            "demo-seconds": _search(r"^\((\d+(?:\.\d+)?) s\)$", out, "run time").group(1)}


def _tests(out: str) -> dict[str, str]:
    m = _search(r"(\d+) passed(?:, [^\n]*?)? in (\d+(?:\.\d+)?)s", out, "pytest summary")
    return {"tests-count": f"{int(m.group(1)):,}", "tests-seconds": f"{float(m.group(2)):.0f}"}


def _bench_flower(out: str) -> dict[str, str]:
    rows = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if line.startswith("│") and len(cells) == 13 and cells[0].isdigit():
            n, _d, _t, what, trips, secs, xt, up, xup, down, xdown, error, _check = cells
            rows.append(f"| {n} | {what} | {trips} | {secs} | {xt} | {up} | {xup} | {down} | {xdown} | {error} |")
    if not rows:
        raise FigureError("no rows in bench_flower's table")
    head = ("| n | aggregation | round trips | s/round | time ratio | KB up/node | up ratio | KB down/node "
            "| down ratio | max error |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    return {"bench-flower-table": head + "\n" + "\n".join(rows),
            "bench-flower-seconds": _search(r"\((\d+) s in all\)", out, "total time").group(1)}


def _bench_rfa(out: str) -> dict[str, str]:
    speedups = re.findall(r"speed-up \(reference / ours\): ([\d.]+)x", out)
    if not speedups:
        raise FigureError("no speed-up against geom-median (pip install geom-median)")
    diffs = [float(x) for x in re.findall(r"max \|median difference\|: ([\d.e+-]+)", out)]
    wall = _search(r"secure median / secure mean wall time: ([\d.]+x \[[\d.]+-[\d.]+\])", out, "wall ratio")
    cpu = _search(r"secure median / secure mean CPU time: +([\d.]+x \[[\d.]+-[\d.]+\])", out, "CPU ratio")
    kib = re.findall(r"secure +(mean|median): .*?\| ([\d.]+) s wall, ([\d.]+) s CPU .*?\| (\d+) KiB per client", out)
    if len(kib) != 2:
        raise FigureError("no secure mean and median rows")
    (_, mean_wall, mean_cpu, mean_kib), (_, med_wall, med_cpu, med_kib) = kib
    return {
        "bench-rfa-speedups": " and ".join(f"{x}x" for x in speedups),
        "bench-rfa-diff": f"{max(diffs):.0e}",
        "bench-rfa-secure-wall": wall.group(1),
        "bench-rfa-secure-cpu": cpu.group(1),
        "bench-rfa-secure-seconds": f"{med_wall} s against {mean_wall} s wall, {med_cpu} s against {mean_cpu} s CPU",
        "bench-rfa-secure-kib": f"{med_kib} KiB against {mean_kib} KiB per client "
                                f"({int(med_kib) / int(mean_kib):.2f}x)",
    }


def _joined(read: Callable[[str], Mapping[str, str]]) -> Callable[[str, str], Mapping[str, str]]:
    """A reader of stdout and stderr together (what a user sees in a terminal)."""
    return lambda out, err: read(out + "\n" + err)


def printed(fid: str) -> Callable[[str, str], Mapping[str, str]]:
    """The figure is everything the command printed on stdout (its tables and verdicts), as a text block."""
    def read(out: str, _err: str) -> dict[str, str]:
        lines = [line.rstrip() for line in out.strip("\n").splitlines()]
        if not lines:
            raise FigureError("nothing on stdout")
        return {fid: "```text\n" + "\n".join(lines) + "\n```"}
    return read


def demote(markdown: str, levels: int = 2) -> str:
    """A summary's headings, ``levels`` deeper, so it sits inside a page's section."""
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", markdown, flags=re.M)


def summary(fid: str) -> Callable[[str, str], Mapping[str, str]]:
    """The figure is the summary.md a simulation wrote; ``--json`` names it on stdout, so it is this run's."""
    def read(out: str, _err: str) -> dict[str, str]:
        try:
            path = json.loads(out.strip().splitlines()[-1])["summary"]
        except (IndexError, ValueError, KeyError, TypeError) as exc:
            raise FigureError(f"no --json report on stdout ({exc})") from None
        if path is None:
            raise FigureError("the run wrote no summary")
        return {fid: demote((ROOT / path).read_text().strip())}
    return read


# The simulations whose default run the pages show: (figure prefix, module).
SIMULATIONS = (("fig1", "fig1_weiszfeld"), ("fig2", "fig2_robustness"), ("fig4", "fig4_oracle_calls"),
               ("fig5", "fig5_one_step"), ("fig6", "fig6_personalisation"), ("tradeoff", "tradeoff"),
               ("warm-start", "warm_start"), ("table1", "table1_two_phase"), ("gmm", "gmm_personal_mean"),
               ("mixtures", "mixture_aggregation"), ("dp-tradeoff", "dp_tradeoff"))
NARROW = {"COLUMNS": "100"}  # a printed table as a 100-column terminal shows it


def _printed(name: str, *flags: str, module: str = "sims.bench_secagg", wall: bool = False) -> tuple[str, Source]:
    """A source whose figure ``NAME-output`` is what ``python3 -m MODULE FLAGS`` printed (and its wall time)."""
    fid = f"{name}-output"
    return name, Source(("python3", "-m", module, *flags), (fid,), printed(fid), wall=f"{name}-seconds" if wall else None,
                        env=NARROW)


SOURCES: dict[str, Source] = {
    # the teaching demo: its table and its run time
    "demo": Source(("python3", "-m", "rfa", "demo"), ("demo-table", "demo-seconds"), _joined(_demo)),
    # the whole test suite: how many tests, how many seconds
    "tests": Source(("python3", "-m", "pytest", "-q", "-p", "no:cacheprovider"), ("tests-count", "tests-seconds"),
                    _joined(_tests)),
    # ours (secure mean, secure geometric median) against Flower's SecAgg+ in Flower's simulation runtime
    "bench-flower": Source(("python3", "-m", "sims.bench_flower", "--n", "10", "50", "100"),
                           ("bench-flower-table", "bench-flower-seconds"), _joined(_bench_flower)),
    # our Weiszfeld against geom-median, and the secure median against the secure mean
    "bench-rfa": Source(("python3", "-m", "sims.bench_rfa", "--repeat", "5"),
                        ("bench-rfa-speedups", "bench-rfa-diff", "bench-rfa-secure-wall", "bench-rfa-secure-cpu",
                         "bench-rfa-secure-seconds", "bench-rfa-secure-kib"), _joined(_bench_rfa)),
    # each simulation's default run: the summary it wrote, and its wall time
    **{f"sim-{name}": Source(("python3", "-m", f"sims.{module}", "--quiet", "--json"), (f"sim-{name}-summary",),
                             summary(f"sim-{name}-summary"), wall=f"sim-{name}-seconds")
       for name, module in SIMULATIONS},
    # what each of these commands printed, as a block of text
    **dict((
        # the differential-privacy demo of docs/guide/differential-privacy.md
        _printed("dp-demo", "demo", "--epsilon", "16", "--clients", "40", "--per-round", "40", "--rounds", "15",
                 "--norm-bound", "3", module="rfa", wall=True),
        # the benchmarks of docs/benchmarks.md
        _printed("bench-secagg-floor", "--n", "100", "--d", "100000", "--repeat", "3", "--stat", "median",
                 "--dropout", "0", "0.1"),
        _printed("bench-secagg-breakdown", "--breakdown"),
        _printed("bench-secagg-breakdown-sparse", "--breakdown", "--graph", "sparse"),
        _printed("bench-secagg-tcp", "--transport", "both", "--n", "50", "100", "--d", "100000", "--dropout", "0"),
        _printed("bench-secagg-sparse", "--graph", "sparse", "--n", "100", "1000", "--d", "1e4", "--dropout", "0.1"),
        _printed("bench-secagg-sparse-10k", "--graph", "sparse", "--n", "10000", "--d", "1e3", "--dropout", "0.1"),
        _printed("bench-secagg-speedup", "--graph", "sparse", "--n", "10000", "--d", "1e4", "--dropout", "0.1",
                 "--speedup"),
        _printed("bench-secagg-malicious", "--graph", "sparse", "--malicious", "--n", "100", "1000", "--d", "1e4",
                 "--dropout", "0.1", "--repeat", "2"),
        _printed("bench-secagg-liar", "--liar", "--n", "50", "100", "200"),
        _printed("bench-frames", module="sims.bench_frames"),
        # the Flower example and deployment of docs/guide/flower.md, with their wall times
        _printed("flower-example", "--quick", module="rfa_flower.example", wall=True),
        _printed("flower-deploy-mean", "--clients", "3", "--rounds", "1", "--rule", "mean",
                 module="rfa_flower.example.deploy", wall=True),
        _printed("flower-deploy-median", "--clients", "3", "--rounds", "1", module="rfa_flower.example.deploy", wall=True),
    )),
    # the DP benchmark is a simulation: its figures are the summary it writes
    "bench-dp": Source(("python3", "-m", "sims.bench_dp", "--repeats", "5", "--quiet", "--json"), ("bench-dp-summary",),
                       summary("bench-dp-summary")),
}
IDS = {fid: name for name, source in SOURCES.items() for fid in source.all_ids}


def pages(root: Path | None = None) -> list[Path]:
    root = root or ROOT  # looked up when called, so a test can point it elsewhere
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def markers(text: str) -> list[str]:
    return [m.group("id") for m in INLINE.finditer(text)] + [m.group("id") for m in BLOCK.finditer(text)]


def rewrite(text: str, figures: Mapping[str, str]) -> str:
    """``text`` with every marked figure whose id is in ``figures`` replaced by its new value."""
    def inline(m: re.Match[str]) -> str:
        value = figures.get(m.group("id"))
        return m.group(0) if value is None else f"<!-- fig:{m.group('id')} -->{value}<!-- /fig -->"

    def block(m: re.Match[str]) -> str:
        value = figures.get(m.group("id"))
        return m.group(0) if value is None else f"<!-- fig:{m.group('id')} -->\n{value}\n<!-- /fig -->"

    return INLINE.sub(inline, BLOCK.sub(block, text))


NOT_MEASURED = re.compile(r"^<!-- not measured: .+ -->$")
PLACEHOLDER = "(not yet measured)"  # what a new marker holds until its source first runs
NUMBER = re.compile(r"(?<![\w.])\d")  # a number, not a digit inside a name such as fig1


def unmarked_tables(text: str) -> list[int]:
    """Line numbers of markdown tables with a number in a data row that are neither a marked figure nor
    declared ``<!-- not measured: why -->`` on the line before (settings, the papers' own numbers)."""
    text = INLINE.sub("", BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), text))  # keeps line numbers
    lines = text.splitlines()
    found, fenced, i = [], False, 0
    while i < len(lines):
        if lines[i].startswith("```"):
            fenced = not fenced
        elif not fenced and lines[i].startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            declared = i > 0 and NOT_MEASURED.match(lines[i - 1].strip())
            if not declared and any(NUMBER.search(row) for row in lines[i + 2:j]):
                found.append(i + 1)
            i = j
            continue
        i += 1
    return found


def check(root: Path | None = None) -> list[str]:
    """Problems: markers whose id no source produces, ids no page shows, and tables of figures with no source."""
    root = root or ROOT
    seen: dict[str, list[str]] = {}
    problems = []
    for page in pages(root):
        text = page.read_text()
        for fid in markers(text):
            seen.setdefault(fid, []).append(str(page.relative_to(root)))
        problems += [f"{page.relative_to(root)}:{line}: a table of figures outside a fig marker (or say "
                     "<!-- not measured: why --> above it)" for line in unmarked_tables(text)]
        problems += [f"{page.relative_to(root)}: fig:{m.group('id')} was never measured (rerun its source)"
                     for m in (*INLINE.finditer(text), *BLOCK.finditer(text)) if PLACEHOLDER in m.group("value")]
    problems += [f"{', '.join(where)}: fig:{fid} has no source in sims/figures.py" for fid, where in seen.items()
                 if fid not in IDS]
    problems += [f"fig:{fid} ({IDS[fid]}) appears on no page" for fid in IDS if fid not in seen]
    return problems


def run_source(name: str) -> dict[str, str]:
    source = SOURCES[name]
    log.print(f"[bold]{name}[/]: {' '.join(source.command)}")
    start = time.monotonic()
    # a source can run for many minutes: a spinner with the elapsed time shows it is alive (stderr, terminals only)
    with Progress(SpinnerColumn(), TextColumn(name), TimeElapsedColumn(), console=log, transient=True) as bar:
        bar.add_task(name, total=None)
        proc = subprocess.run(source.command, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, **source.env})
    if proc.returncode != 0:
        # pytest reports on stdout: its FAILED lines name the tests, its last line counts them
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        said = [line for line in lines if line.startswith("FAILED ")][:5] + lines[-1:]
        raise FigureError(f"{' '.join(source.command)} exited {proc.returncode}: {'; '.join(said)[-600:]}")
    elapsed = time.monotonic() - start
    figures = dict(source.read(proc.stdout, proc.stderr)) if source.read else {}
    if source.wall:
        figures[source.wall] = f"{elapsed:.0f}"
    if set(figures) != set(source.all_ids):
        raise FigureError(f"read {sorted(figures)}, expected {sorted(source.all_ids)}")
    log.print(f"  {len(figures)} figures in {elapsed:.0f} s")
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m sims.figures", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=sorted(SOURCES), metavar="SOURCE",
                    help="rerun only this source (repeatable; --list names every source's figures)")
    ap.add_argument("--list", action="store_true", help="list every figure id, its command and its pages")
    ap.add_argument("--check", action="store_true", help="run nothing; check the pages: markers against sources, placeholders, tables outside markers")
    args = ap.parse_args(argv)
    problems = check()
    if args.list:
        for fid, name in IDS.items():
            where = [str(p.relative_to(ROOT)) for p in pages() if fid in markers(p.read_text())]
            print(f"{fid:16} {' '.join(SOURCES[name].command):40} {', '.join(where)}")
    if args.check or args.list:
        for p in problems:
            print(p, file=sys.stderr)
        return 1 if problems else 0
    # A rerun goes ahead unless a marker names no source: that figure could never be rewritten.
    unknown = [p for p in problems if "has no source" in p]
    for p in unknown:
        print(p, file=sys.stderr)
    if unknown:
        return 1
    for name in args.only or list(SOURCES):
        try:
            figures = run_source(name)
        except FigureError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        for page in pages():  # after each source, so a later failure keeps what earlier ones measured
            text = page.read_text()
            new = rewrite(text, figures)
            if new != text:
                page.write_text(new)
                log.print(f"rewrote {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    script("sims.figures", main)
