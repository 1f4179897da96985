"""rfa/plot_style.py: one colour per method everywhere, accuracy in percent, legends off the data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rfa import plot_style  # noqa: E402


def test_each_method_has_one_colour_and_no_two_methods_share_one():
    assert plot_style.color("RFA") == plot_style.color("RFA") == "tab:orange"
    colours = [plot_style.color(m) for m in plot_style.METHOD_COLORS]
    assert len(set(colours)) == len(colours)
    new = plot_style.color("some new rule")
    assert new == plot_style.color("some new rule") and new not in colours


def test_the_simulations_use_the_style_palette():
    from sims.federation import COLORS

    assert all(COLORS[m] == plot_style.color(m) for m in COLORS)


def test_percent_axis_and_outside_legend():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0.2, 0.9], label="FedAvg")
    plot_style.percent_axis(ax)
    legend = plot_style.legend(ax)
    fig.canvas.draw()
    assert ax.get_ylim() == (0.0, 1.0)
    assert ax.yaxis.get_major_formatter()(0.5, 0) == "50%"
    # The legend starts right of the axes, so it cannot cover a curve.
    renderer = fig.canvas.get_renderer()
    assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
    plt.close(fig)
