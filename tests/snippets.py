"""Checked values in documentation snippets.

A snippet states a value in a comment with an arrow, and the docs' tests compare it::

    choice.degree, choice.threshold      # -> (36, 19): the text after the colon is prose
    print(e.client, e.quantity)          # -> 2 weight: a print is compared with what it printed

``checked(code)`` rewrites every expression statement that ends in ``# -> EXPECTED`` into a call that
evaluates it (or captures what it prints) and raises ``SnippetValueError`` unless it matches.  Numbers
match to the precision written (``1.86`` accepts 1.855 to 1.865, ``84`` accepts 83.5 to 84.5), anything
else must match its ``str`` exactly, and the count of values must agree.

Any other bare expression at the top level is what a REPL would echo: its ``repr`` must fit a screen
(``REPL_SCREEN`` characters), so pasting a snippet never floods the terminal (a 45 KB transcript did).
"""

from __future__ import annotations

import ast
import contextlib
import io
import math
import re
from typing import Any

import numpy as np

ARROW = re.compile(r"#\s*->\s*(?P<expected>.*)$")
TOKEN = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|[-+]?inf|nan|[A-Za-z_][\w.]*|'[^']*'|\"[^\"]*\"", re.I)
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|[-+]?inf|nan", re.I)


class SnippetValueError(AssertionError):
    """A snippet's ``# -> value`` comment disagrees with what the code gives."""


def expected_part(comment: str) -> str:
    """The stated value: the comment after the arrow, up to a colon outside brackets."""
    depth = 0
    for i, ch in enumerate(comment):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == ":" and depth == 0:
            return comment[:i].strip()
    return comment.strip()


def flatten(value: Any) -> list[Any]:
    """The scalars of a value in reading order (tuples, lists and arrays are opened)."""
    if isinstance(value, np.ndarray):
        return [v.item() for v in value.ravel()]
    if isinstance(value, (tuple, list)):
        return [s for v in value for s in flatten(v)]
    if isinstance(value, np.generic):
        return [value.item()]
    return [value]


def _number_matches(actual: float, written: str) -> bool:
    expected = float(written)
    if math.isnan(expected) or math.isinf(expected):
        return str(float(actual)) == str(expected)
    mantissa = written.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    exponent = int(written.lower().split("e")[1]) if "e" in written.lower() else 0
    return abs(float(actual) - expected) <= 0.5 * 10.0 ** (exponent - decimals) * (1 + 1e-9)


def matches(actual_tokens: list[Any], expected: str) -> bool:
    written = TOKEN.findall(expected)
    if len(written) != len(actual_tokens):
        return False
    for a, w in zip(actual_tokens, written):
        if isinstance(a, str) and not NUMBER.fullmatch(a.strip()):
            if a != w.strip("'\""):
                return False
        elif isinstance(a, bool) or w in ("True", "False", "None"):
            if str(a) != w:
                return False
        elif NUMBER.fullmatch(w):
            try:
                if not _number_matches(float(a), w):
                    return False
            except (TypeError, ValueError):
                return False
        elif str(a) != w:
            return False
    return True


REPL_SCREEN = 2000


def _echo(value: Any, line: int) -> None:
    shown = repr(value)
    if len(shown) > REPL_SCREEN:
        raise SnippetValueError(f"line {line}: a REPL would print {len(shown):,} characters: {shown[:80]}...")


def _check_value(value: Any, expected: str, line: int) -> None:
    if not matches(flatten(value), expected):
        raise SnippetValueError(f"line {line}: the comment says {expected!r}, the code gives {value!r}")


def _check_print(run, expected: str, line: int) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run()
    printed = out.getvalue()
    if not matches(printed.split(), expected):
        raise SnippetValueError(f"line {line}: the comment says {expected!r}, the code printed {printed.strip()!r}")


class _Rewrite(ast.NodeTransformer):
    def __init__(self, lines: list[str]):
        self.lines = lines
        self.count = 0

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        m = ARROW.search(self.lines[node.end_lineno - 1])
        if not m:
            return node
        self.count += 1
        expected = ast.Constant(expected_part(m.group("expected")))
        line = ast.Constant(node.lineno)
        call = node.value
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "print":
            thunk = ast.Lambda(ast.arguments([], [], None, [], [], None, []), call)
            new = ast.Call(ast.Name("__check_print__", ast.Load()), [thunk, expected, line], [])
        else:
            new = ast.Call(ast.Name("__check_value__", ast.Load()), [call, expected, line], [])
        return ast.copy_location(ast.Expr(new), node)


def checked(code: str, filename: str, first_line: int = 1) -> tuple[Any, dict[str, Any], int]:
    """Compile ``code`` (whose first line is ``first_line`` of ``filename``) with its arrows checked.
    Returns the code object, the globals to run it in, and how many values it checks."""
    padded = "\n" * (first_line - 1) + code
    tree = ast.parse(padded, filename)
    rewrite = _Rewrite(padded.splitlines())
    tree = rewrite.visit(tree)
    for i, node in enumerate(tree.body):  # the REPL echoes these
        if isinstance(node, ast.Expr) and not (isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                                               and node.value.func.id in ("__check_value__", "__check_print__")):
            echo = ast.Call(ast.Name("__echo__", ast.Load()), [node.value, ast.Constant(node.lineno)], [])
            tree.body[i] = ast.copy_location(ast.Expr(echo), node)
    tree = ast.fix_missing_locations(tree)
    namespace = {"__name__": "doc_snippet", "__check_value__": _check_value, "__check_print__": _check_print,
                 "__echo__": _echo}
    return compile(tree, filename, "exec"), namespace, rewrite.count
