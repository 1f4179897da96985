"""What every command line of the project shares: exit codes, flag checks, one line instead of a traceback.

``secagg``, ``rfa`` and the ``sims`` scripts all end through ``run_main``:
a problem the user can fix (Ctrl-C, a port in use, a path that cannot be
written, a closed pipe) ends with one line on stderr and a documented exit
code, never with a traceback.  The argument types below refuse a bad value
while the command line is parsed, so the message names the flag
(``argument --dropout: must be in [0, 1], got 1.5``), not a Python field.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import rich.console

# The exit codes, documented in docs/guide/tcp.md ("Exit codes").
OK = 0
FAILED = 1  # the run finished without the right result, or the OS refused a file or a port
USAGE = 2  # a flag's value was refused before anything ran (argparse uses 2 as well)
ABORTED = 3  # a secure aggregation session aborted: fewer than t clients remained
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
BROKEN_PIPE = 141  # the reader of stdout went away, e.g. `| head` (128 + SIGPIPE)


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` shows each flag's default, unless its help already says it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        # A switch (store_true/store_false) has no default worth showing: its help says what it turns on or off.
        quiet = action.default is None or isinstance(action.default, bool) or action.default == argparse.SUPPRESS \
            or not action.option_strings
        if "default" in text or quiet:
            return text
        return text + " (default: %(default)s)"


def _integer(text: str) -> int:
    """``1000``, ``10_000`` or, as the benchmarks take sizes, ``1e3``: any notation of a whole number."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value.is_integer() and abs(value) <= 2**53):  # exact in a float
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}")
    return int(value)


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer >= ``low`` (and <= ``high`` if given), in any notation ``_integer`` reads."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer {shown}, got {value}")
        return value

    shown = f">= {low}" if high is None else f"in [{low}, {high}]"
    parse.__name__ = f"integer {shown}"  # argparse names the type in some messages
    return parse


def float_in(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """A float in the interval; ``low_open``/``high_open`` exclude the ends."""
    shown = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open or high == math.inf else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        below = value <= low if low_open else value < low
        above = value >= high if high_open or high == math.inf else value > high
        if math.isnan(value) or below or above:
            raise argparse.ArgumentTypeError(f"must be in {shown}, got {text}")
        return value

    parse.__name__ = f"number in {shown}"
    return parse


def writable_dir(parser: argparse.ArgumentParser, flag: str, path: Path) -> Path:
    """Create ``path`` if needed and prove a file can be written there, before any long run starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        parser.error(f"{flag} {path}: cannot write there ({exc.strerror or exc})")
    return path


def describe_os_error(exc: OSError) -> str:
    """One line a user can act on."""
    if exc.errno == errno.EADDRINUSE:
        return "the port is already in use (pick another with --port, or --port 0 for any free one)"
    what = exc.strerror or str(exc)
    return f"{what}: {exc.filename}" if exc.filename else what


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups, as trio raises them."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _silence_stdout() -> None:
    # Python flushes stdout again at exit; pointing it at /dev/null stops a second BrokenPipeError.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


class Console(rich.console.Console):
    """rich's console, ending a closed pipe with ``BROKEN_PIPE`` like ``run_main`` (rich itself exits 1)."""

    def on_broken_pipe(self) -> None:
        _silence_stdout()
        raise SystemExit(BROKEN_PIPE)


def run_main(prog: str, main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` and turn the user-fixable failures into one stderr line and an exit code."""
    try:
        return main(argv)
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - sorted into the documented codes below, or re-raised
        leaves = _leaves(exc)
        if any(isinstance(e, KeyboardInterrupt) for e in leaves):
            print(f"\n{prog}: interrupted", file=sys.stderr)
            # CPython 3.11 marks a KeyboardInterrupt that leaves any exec() of a string (dataclasses
            # and numpy run some while a lazy import is under way) as unhandled, and `python -m`
            # then ends by killing itself with SIGINT (exit -2) instead of this code.  Every exec()
            # clears that mark first, so a harmless one restores the documented exit.
            exec("pass")  # noqa: S102 - a constant, to clear the interpreter's flag
            return INTERRUPTED
        if any(isinstance(e, BrokenPipeError) for e in leaves):
            _silence_stdout()
            return BROKEN_PIPE
        os_errors = [e for e in leaves if isinstance(e, OSError)]
        if os_errors:
            print(f"{prog}: {describe_os_error(os_errors[0])}", file=sys.stderr)
            return FAILED
        raise


def script(prog: str, main: Callable[[Sequence[str] | None], int]) -> None:
    """``if __name__ == "__main__": script(prog, main)``: exit with ``run_main``'s code."""
    sys.exit(run_main(prog, main))
