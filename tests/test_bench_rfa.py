"""sims/bench_rfa.py: what it prints, and where."""

from __future__ import annotations

from sims import bench_rfa


def test_bench_rfa_shows_a_progress_bar_on_stderr_and_its_figures_on_stdout(capsys, monkeypatch):
    # Issue 25: the full run was silent for 29 s.  Tiny sizes here; the bar counts every timed run.
    monkeypatch.setattr(bench_rfa, "SIZES", ((12, 30),))
    assert bench_rfa.main(["--repeat", "1", "--steps", "2", "--n", "6", "--d", "8"]) == 0
    out, err = capsys.readouterr()
    try:
        import geom_median  # noqa: F401

        runs = 2 + 2
    except ImportError:
        runs = 1 + 2
    assert "timing runs" in err and f"{runs}/{runs}" in err
    assert "n=12, d=30" in out and "oracle calls" in out and "timing runs" not in out
    assert "secure median / secure mean wall time" in out
