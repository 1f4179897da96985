"""One look for every plot of the project (the ``rfa demo`` and every simulation).

* a fixed colour per method, the same in every figure (``color``);
* accuracies on a y axis in percent, as the tables print them (``percent_axis``);
* the legend outside the axes, so it never covers a curve (``legend``).

Titles are the caller's job and must say what the curves show.
"""

from __future__ import annotations

from typing import Any

# Methods the figures compare; a method not listed gets a colour from ``_SPARE`` by first use.
METHOD_COLORS = {
    "FedAvg": "tab:blue",
    "RFA": "tab:orange",
    "one-step RFA": "tab:green",
    "coord. median": "tab:red",
    "trimmed mean": "tab:purple",
    "norm clipping": "tab:brown",
    "multi-Krum": "tab:pink",
    "Krum": "tab:olive",
    "centered clipping": "tab:cyan",
    "CenterwO": "tab:gray",
    "MeanwO": "gold",
}
_SPARE = ["navy", "darkred", "teal", "indigo", "saddlebrown", "limegreen", "crimson", "slategray"]
_ASSIGNED: dict[str, str] = {}


def color(method: str) -> str:
    """The colour of ``method`` in every figure of this process (the names above in every run)."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    if method not in _ASSIGNED:
        _ASSIGNED[method] = _SPARE[len(_ASSIGNED) % len(_SPARE)]
    return _ASSIGNED[method]


def percent_axis(ax: Any, low: float = 0.0, high: float = 1.0) -> None:
    """Fractions on the y axis shown as percentages, the unit of the tables."""
    from matplotlib.ticker import PercentFormatter

    ax.set_ylim(low, high)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))


def legend(ax: Any, **kw: Any) -> Any:
    """The legend to the right of ``ax``, outside the data (``tight_layout`` makes room for it)."""
    kw.setdefault("fontsize", 8)
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kw)
