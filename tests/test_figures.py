"""sims.figures: every figure marked in the docs has a source command, and a rerun rewrites it in place."""

from __future__ import annotations

import sys

import pytest

from sims import figures

DEMO_OUTPUT = """┏━━━━━━━━┳━━━━━━━┓
┃ method ┃  acc. ┃
┡━━━━━━━━╇━━━━━━━┩
│ FedAvg │  9.2% │
└────────┴───────┘
plots and CSV in out/demo/
(36 s)
"""


def test_every_marker_in_the_docs_has_a_source_and_every_source_a_marker():
    assert figures.check() == []
    assert figures.main(["--check"]) == 0


def test_a_marker_without_a_source_is_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("took <!-- fig:no-such-figure -->3<!-- /fig --> s")
    problems = figures.check(tmp_path)
    assert any("fig:no-such-figure has no source" in p for p in problems)
    assert any("appears on no page" in p for p in problems)  # and the real ids are missing there


def test_rewrite_replaces_inline_and_block_figures_and_leaves_the_rest():
    text = ("a <!-- fig:demo-seconds -->10.7<!-- /fig --> s, b <!-- fig:tests-count -->9<!-- /fig -->\n"
            "<!-- fig:demo-table -->\n```\nold\n```\n<!-- /fig -->\n")
    new = figures.rewrite(text, {"demo-seconds": "36", "demo-table": "```\nnew row\n```"})
    assert "<!-- fig:demo-seconds -->36<!-- /fig -->" in new
    assert "<!-- fig:tests-count -->9<!-- /fig -->" in new  # not rerun: unchanged
    assert "new row" in new and "old" not in new


def test_the_demo_and_pytest_outputs_are_read():
    assert figures._demo(DEMO_OUTPUT) == {"demo-table": "```\n┃ method ┃  acc. ┃\n│ FedAvg │  9.2% │\n```",
                                          "demo-seconds": "36"}
    assert figures._tests("....\n1363 passed, 1 warning in 511.59s (0:08:31)\n") == {
        "tests-count": "1,363", "tests-seconds": "512"}
    with pytest.raises(figures.FigureError, match="pytest summary"):
        figures._tests("2 failed in 3.0s")


def test_a_rerun_rewrites_the_pages_from_the_commands_output(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    page.write_text("ran in <!-- fig:demo-seconds -->1<!-- /fig --> s\n")
    fake = figures.Source((sys.executable, "-c", "print('(42 s)')"), ("demo-seconds",),
                          lambda out, err: {"demo-seconds": figures._search(r"\((\d+) s\)", out, "time").group(1)})
    monkeypatch.setattr(figures, "SOURCES", {"demo": fake})
    monkeypatch.setattr(figures, "IDS", {"demo-seconds": "demo"})
    monkeypatch.setattr(figures, "ROOT", tmp_path)
    (tmp_path / "README.md").write_text("")
    assert figures.main(["--only", "demo"]) == 0
    assert page.read_text() == "ran in <!-- fig:demo-seconds -->42<!-- /fig --> s\n"


def test_a_failing_command_is_one_error_and_changes_nothing(tmp_path, monkeypatch, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("<!-- fig:demo-seconds -->1<!-- /fig -->")
    fake = figures.Source((sys.executable, "-c", "raise SystemExit(3)"), ("demo-seconds",), lambda out, err: {})
    monkeypatch.setattr(figures, "SOURCES", {"demo": fake})
    monkeypatch.setattr(figures, "IDS", {"demo-seconds": "demo"})
    monkeypatch.setattr(figures, "ROOT", tmp_path)
    assert figures.main([]) == 1
    assert "exited 3" in capsys.readouterr().err
    assert (tmp_path / "README.md").read_text() == "<!-- fig:demo-seconds -->1<!-- /fig -->"


def test_list_and_check_run_no_command(monkeypatch, capsys):
    def refuse(name):
        raise AssertionError(f"ran {name}")
    monkeypatch.setattr(figures, "run_source", refuse)
    assert figures.main(["--list"]) == 0
    assert "demo-seconds" in capsys.readouterr().out
    assert figures.main(["--check"]) == 0


BENCH_FLOWER_OUTPUT = """\
┃   n ┃      d ┃  t ┃ aggregation                   ┃ trips ┃ s/round ┃ x time ┃ KB up/node ┃ x up ┃ KB down/node ┃ x down ┃ max error ┃ check                              ┃
│  10 │ 10,000 │  7 │ ours: secure mean             │     5 │    0.72 │   0.61 │       82.0 │ 0.94 │         82.5 │   0.91 │   3.8e-14 │ ok: <= 3.3e-13                     │
│  10 │ 10,000 │  7 │ ours: secure geometric median │    11 │    2.17 │   1.86 │      325.0 │ 3.72 │        324.3 │   3.56 │   2.4e-12 │ ok: each step <= 0.18 x its bound  │
command: python3 -m sims.bench_flower --n 10 50 100  (753 s in all)
"""


def test_the_flower_benchmark_table_becomes_a_markdown_table():
    figures_ = figures._bench_flower(BENCH_FLOWER_OUTPUT)
    assert figures_["bench-flower-seconds"] == "753"
    rows = figures_["bench-flower-table"].splitlines()
    assert rows[0].startswith("| n | aggregation |") and len(rows) == 2 + 2
    assert rows[2] == "| 10 | ours: secure mean | 5 | 0.72 | 0.61 | 82.0 | 0.94 | 82.5 | 0.91 | 3.8e-14 |"


BENCH_RFA_OUTPUT = """\
n=100, d=100000: 10 smoothed Weiszfeld steps, nu=1e-06
  speed-up (reference / ours): 32.5x
  max |median difference|: 6.217e-15   (median scale 2.1)
n=1000, d=10000: 10 smoothed Weiszfeld steps, nu=1e-06
  speed-up (reference / ours): 4.6x
  max |median difference|: 1.110e-15   (median scale 2.1)
  secure   mean: 1 oracle calls in 1 session | 3.77 s wall, 1.23 s CPU (medians) | 109 KiB per client (1.00x)
  secure median: 4 oracle calls in 1 session | 6.12 s wall, 2.02 s CPU (medians) | 612 KiB per client (5.61x)
  secure median / secure mean wall time: 1.39x [1.09-3.79] (target <= 2.0x)
  secure median / secure mean CPU time:  1.63x [1.51-1.71]
"""


def test_the_weiszfeld_and_secure_median_figures_are_read_from_bench_rfa():
    got = figures._bench_rfa(BENCH_RFA_OUTPUT)
    assert got == {
        "bench-rfa-speedups": "32.5x and 4.6x",
        "bench-rfa-diff": "6e-15",
        "bench-rfa-secure-wall": "1.39x [1.09-3.79]",
        "bench-rfa-secure-cpu": "1.63x [1.51-1.71]",
        "bench-rfa-secure-seconds": "6.12 s against 3.77 s wall, 2.02 s against 1.23 s CPU",
        "bench-rfa-secure-kib": "612 KiB against 109 KiB per client (5.61x)",
    }
    with pytest.raises(figures.FigureError, match="geom-median"):
        figures._bench_rfa("n=100, d=100000: ...\n  rfa.geometric_median   0.1 s")


def test_a_table_of_figures_outside_a_marker_is_a_problem_unless_declared_not_measured():
    measured = "text\n\n| rule | accuracy |\n|---|---|\n| RFA | 0.91 |\n"
    declared = "<!-- not measured: the paper's numbers -->\n" + measured.split("\n\n", 1)[1]
    names = "| module | what |\n|---|---|\n| fig1_weiszfeld | `sims.fig2` |\n"  # digits in names are no figures
    inline = "| sim | s |\n|---|---:|\n| fig1 | <!-- fig:sim-fig1-seconds -->7<!-- /fig --> |\n"
    fenced = "```text\n| n | s |\n|---|---|\n| 10 | 0.5 |\n```\n"
    marked = "<!-- fig:demo-table -->\n| n | s |\n|---|---|\n| 10 | 0.5 |\n<!-- /fig -->\n"
    assert figures.unmarked_tables(measured) == [3]
    assert figures.unmarked_tables("intro\n" + marked + measured) == [9]  # line numbers survive a block
    for text in (declared, names, inline, fenced, marked):
        assert figures.unmarked_tables(text) == [], text


def test_the_pages_problems_name_the_unmarked_table(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("| n | s |\n|---|---|\n| 10 | 0.5 |\n")
    assert any(p.startswith("README.md:1: a table of figures") for p in figures.check(tmp_path))


def test_printed_output_becomes_a_text_block_and_empty_output_is_an_error():
    read = figures.printed("bench-x-output")
    got = read("\n  n   s  \n 10  0.5\n\n", "progress 3/3\n")
    assert got == {"bench-x-output": "```text\n  n   s\n 10  0.5\n```"}  # stdout only, right-trimmed
    with pytest.raises(figures.FigureError, match="nothing on stdout"):
        read("", "a traceback\n")


def test_a_summary_is_read_from_the_file_the_json_report_names_with_headings_demoted(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "ROOT", tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.md").write_text("# Fig. 9\n\n## Part 1\n\n| a | 1 |\n#not a heading\n")
    read = figures.summary("sim-x-summary")
    got = read('{"name": "x", "summary": "out/summary.md"}\n', "")
    assert got == {"sim-x-summary": "### Fig. 9\n\n#### Part 1\n\n| a | 1 |\n#not a heading"}
    with pytest.raises(figures.FigureError, match="--json"):
        read("no json here", "")
    with pytest.raises(figures.FigureError, match="no summary"):
        read('{"summary": null}', "")


def test_a_source_with_a_wall_time_adds_its_seconds(tmp_path, monkeypatch):
    fake = figures.Source((sys.executable, "-c", "print('table')"), ("x-output",), figures.printed("x-output"),
                          wall="x-seconds", env={"COLUMNS": "100"})
    monkeypatch.setattr(figures, "SOURCES", {"x": fake})
    got = figures.run_source("x")
    assert got["x-output"] == "```text\ntable\n```" and got["x-seconds"].isdigit()


def test_every_sources_command_parses_its_flags(capsys):
    # A typo in a source's flags would only show after the sources before it had run for an hour.
    import importlib
    import importlib.util
    for name, source in figures.SOURCES.items():
        assert source.command[:2] == ("python3", "-m"), name
        module, *flags = source.command[2:]
        if module == "pytest":
            continue
        main = getattr(importlib.import_module(module), "main", None)
        for entry in (f"{module}.cli", f"{module}.__main__"):  # rfa/__main__.py runs at import: its cli first
            if main is None and importlib.util.find_spec(entry) is not None:
                main = getattr(importlib.import_module(entry), "main", None)
        with pytest.raises(SystemExit) as info:
            main([*flags, "--help"])
        assert info.value.code == 0, f"{name}: {' '.join(source.command)}: {capsys.readouterr().err}"


def test_a_marker_still_holding_the_placeholder_is_a_problem(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(f"took <!-- fig:demo-seconds -->{figures.PLACEHOLDER}<!-- /fig --> s")
    assert any("fig:demo-seconds was never measured" in p for p in figures.check(tmp_path))
