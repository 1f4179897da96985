"""``secagg simulate`` on the command line."""

from __future__ import annotations

import json

import pytest

from secagg.cli import main


def run_json(capsys, *args):
    code = main(["simulate", *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_simulate_json_reports_a_correct_sum(capsys):
    code, report = run_json(capsys, "--clients", "8", "--dim", "20", "--seed", "1")
    assert code == 0
    assert report["correct"] is True
    assert len(report["total"]) == 16  # --json-total default, fewer than d=20
    dropped_early = {
        u for r in ("advertise_keys", "share_keys", "masked_input") for u in report["dropouts"].get(r, [])
    }
    assert set(report["included"]) == set(range(1, 9)) - dropped_early
    assert report["counts"]["masked_input"] == len(report["included"])


def test_simulate_json_is_reproducible_with_a_seed(capsys):
    _, a = run_json(capsys, "--clients", "6", "--dim", "5", "--seed", "3")
    _, b = run_json(capsys, "--clients", "6", "--dim", "5", "--seed", "3")
    assert a["total"] == b["total"] and a["included"] == b["included"] and a["dropouts"] == b["dropouts"]


def test_simulate_with_all_dropouts_in_one_round(capsys):
    code, report = run_json(
        capsys, "--clients", "10", "--dim", "4", "--seed", "2", "--dropout", "0.3", "--dropout-round", "masked_input"
    )
    assert code == 0 and report["correct"] is True
    assert set(report["dropouts"]) <= {"masked_input"}
    dropped = set(report["dropouts"].get("masked_input", []))
    assert set(report["included"]) == set(range(1, 11)) - dropped


def test_simulate_malicious_mode_json(capsys):
    code, report = run_json(capsys, "--clients", "7", "--dim", "3", "--seed", "4", "--malicious", "--modulus-bits", "64")
    assert code == 0 and report["correct"] is True
    assert "consistency_check" in report["counts"]


def test_aborted_session_exits_3_with_an_aborted_key(capsys):
    code, report = run_json(capsys, "--clients", "5", "--threshold", "5", "--dim", "3", "--seed", "1", "--dropout", "1.0")
    assert code == 3
    assert "aborted" in report and "correct" not in report
    assert sum(len(v) for v in report["dropouts"].values()) == 5


def test_a_threshold_above_the_client_count_is_a_usage_error_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--clients", "4", "--threshold", "5", "--dim", "3", "--seed", "1"])
    assert info.value.code == 2
    assert "--threshold" in capsys.readouterr().err


def test_human_readable_report_says_equal(capsys):
    code = main(["simulate", "--clients", "5", "--dim", "6", "--seed", "1", "--dropout", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "EQUAL" in out and "DIFFERENT" not in out
    assert "advertise_keys" in out and "unmasking" in out


def test_human_readable_abort_exits_3_with_one_line_on_stderr(capsys):
    code = main(["simulate", "--clients", "4", "--threshold", "4", "--dim", "2", "--seed", "1", "--dropout", "1.0"])
    assert code == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("secagg simulate: session aborted: aborted in round") and err.count("\n") == 1


def test_a_long_abort_message_stays_one_line_on_stderr(capsys):
    # Issue 25: it went to stdout, wrapped over two lines by the console.
    code = main(["simulate", "--clients", "30", "--dim", "2", "--seed", "1", "--dropout", "0.9"])
    out, err = capsys.readouterr()
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and "threshold is 21" in err


def test_a_malicious_threshold_without_a_guarantee_is_refused_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--malicious", "--clients", "4", "--threshold", "2", "--dim", "2"])
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == ""
    assert err.splitlines()[-1].startswith("secagg simulate: error: argument --threshold: malicious-server mode")
    assert "use t >= 3" in err and "Traceback" not in err


def test_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["nonsense"])
    assert info.value.code == 2


def test_the_default_dropout_never_aborts_a_small_session(capsys):
    # Issue 15: with 5 clients the old 15% Bernoulli dropouts aborted 6 runs in 20.
    for seed in range(20):
        code, report = run_json(capsys, "--clients", "5", "--dim", "4", "--seed", str(seed))
        assert code == 0 and report["correct"] is True, (seed, report)
        assert sum(len(v) for v in report["dropouts"].values()) == 1  # round(0.15 * 5), within n - t = 1


def test_the_default_dropout_count_stays_within_what_the_threshold_survives():
    from argparse import Namespace

    from secagg.cli import _dropout_count

    for n in range(2, 300):
        t = 2 * n // 3 + 1
        count = _dropout_count(Namespace(clients=n, threshold=t, dropout=None, graph="complete"))
        assert 0 <= count <= n - t and count <= round(0.15 * n)
        sparse = _dropout_count(Namespace(clients=n, threshold=t, dropout=None, graph="sparse", tolerated_dropout=0.1))
        assert sparse <= int(0.1 * n)  # the fraction the sparse graph was sized for
    # An explicit rate is the user's: it may exceed what the session survives.
    assert _dropout_count(Namespace(clients=5, threshold=4, dropout=1.0, graph="complete")) == 5


def test_quiet_prints_only_the_verdict(capsys):
    assert main(["simulate", "--clients", "4", "--dim", "3", "--seed", "1", "--quiet"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "EQUAL" in out[0]


@pytest.mark.parametrize("malicious", [False, True], ids=["honest-but-curious", "malicious-server"])
def test_simulate_on_a_sparse_graph_uses_the_sized_degree_and_threshold(capsys, malicious):
    from secagg.graph import sparse_parameters
    from secagg.params import MIN_GROUP

    flags = ["--clients", "120", "--dim", "6", "--seed", "5", "--graph", "sparse"] + (["--malicious"] if malicious else [])
    code, report = run_json(capsys, *flags)
    choice = sparse_parameters(120, dropout=0.1, corrupt=0.05, min_group=MIN_GROUP if malicious else None)
    assert code == 0 and report["correct"] is True
    assert report["graph"] == "sparse" and report["degree"] == choice.degree < 119
    assert report["threshold"] == choice.threshold
    dropped = sum(len(ids) for ids in report["dropouts"].values())
    assert 0 < dropped <= 12  # the default dropouts stay within the tolerated fraction


def test_sparse_graph_flags_that_give_no_graph_are_a_usage_error_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--clients", "10", "--dim", "2", "--graph", "sparse", "--tolerated-dropout", "0.5"])
    assert info.value.code == 2
    assert "--graph" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--clients", "100", "--dim", "2", "--graph", "sparse", "--tolerated-corrupt", "1.5"])
    assert info.value.code == 2


def test_a_session_that_cannot_fit_in_memory_is_refused_before_it_starts_suggesting_the_sparse_graph(capsys):
    # Issue 25: --clients 100000 was killed by the kernel at 23.9 GB after a silent minute.
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--clients", "100000", "--dim", "1"])
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == ""
    line = err.splitlines()[-1]
    assert line.startswith("secagg simulate: error: argument --clients: n=100000, d=1 on the complete graph needs about ")
    assert "TB of memory" in line and "use --graph sparse (k=" in line and line.endswith("or pass --no-memory-check")


def test_the_memory_check_uses_the_free_memory_and_no_memory_check_overrides_it(capsys, monkeypatch):
    import secagg.cli

    monkeypatch.setattr(secagg.cli, "available_memory", lambda: 1e6)  # 1 MB free: nothing fits
    with pytest.raises(SystemExit) as info:
        main(["demo", "--clients", "4", "--dim", "2", "--graph", "complete"])
    assert info.value.code == 2 and "1 MB are free" in capsys.readouterr().err
    assert main(["simulate", "--clients", "4", "--dim", "2", "--seed", "1", "--quiet", "--no-memory-check"]) == 0
    assert "EQUAL" in capsys.readouterr().out


def test_the_estimate_grows_with_the_neighbours_and_the_vectors():
    from secagg.estimate import session_cost

    complete, sparse = session_cost(1000, 1000, 999), session_cost(1000, 1000, 36)
    assert sparse.bytes < complete.bytes / 10 and sparse.seconds < complete.seconds / 10
    assert session_cost(100, 10**5, 99).bytes > session_cost(100, 10, 99).bytes + 100 * 10**5 * 8  # input + masked copy
    assert session_cost(1000, 1000, 999).seconds > 10  # a run the progress bar is for


def test_simulate_draws_a_progress_bar_on_stderr_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: treat stderr as a terminal
    assert main(["simulate", "--clients", "6", "--dim", "3", "--seed", "1"]) == 0
    out, err = capsys.readouterr()
    assert "(estimate <1 s)" in err and "/24" in err  # 6 clients x 4 rounds of steps, and the time estimate
    assert "estimate" not in out and "EQUAL" in out


def test_sizes_take_e_notation_as_the_benchmarks_do(capsys):
    # Issue 25: `secagg --dim 1e3` was refused while `bench_secagg --d 1e5` was accepted.
    code, report = run_json(capsys, "--clients", "4", "--dim", "1e1", "--seed", "1")
    assert code == 0 and report["dim"] == 10 and report["correct"] is True
