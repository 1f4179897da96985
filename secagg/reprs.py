"""Compact reprs: what an object is at a glance, never its bulk.

A repr names the sizes and the first few entries of long things (vectors,
id lists, transcripts) and shows numbers as plain Python ints and floats,
never as numpy scalars, so ``repr(simulate(...))`` stays one readable line.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np


def plain(x: Any) -> Any:
    """A numpy scalar as the Python number it holds; anything else unchanged."""
    return x.item() if isinstance(x, np.generic) else x


def ids(values: Iterable[int], limit: int = 8) -> str:
    """``[1, 2, 4] `` or ``[1, 2, ..., 99] (57 ids)`` for a long list."""
    xs = [int(v) for v in values]
    if len(xs) <= limit:
        return repr(xs)
    head = ", ".join(map(str, xs[: limit - 1]))
    return f"[{head}, ..., {xs[-1]}] ({len(xs)} ids)"


def vector(a: Any, limit: int = 4) -> str:
    """``float64[1000] [0.1, -2, 3.5, ...]``: dtype, length and the first entries."""
    arr = np.asarray(a)
    if arr.ndim != 1:
        return f"{arr.dtype}{list(arr.shape)}"
    shown = ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in arr[:limit].tolist())
    more = ", ..." if arr.size > limit else ""
    return f"{arr.dtype}[{arr.size}] [{shown}{more}]"


def fields(name: str, **values: Any) -> str:
    """``Name(a=1, b='x')`` from already-compact values (strings are inserted as they are)."""
    parts = ", ".join(f"{k}={v if isinstance(v, str) else repr(plain(v))}" for k, v in values.items())
    return f"{name}({parts})"
