"""sims.bench_secagg: a smoke run of the sparse-graph benchmark (figures are printed, not asserted)."""

from __future__ import annotations

import json

import numpy as np

from secagg.simulation import setup_session
from sims import bench_secagg


def test_sparse_benchmark_runs_and_counts_the_masks_of_the_graph(capsys):
    code = bench_secagg.main(["--graph", "sparse", "--n", "40", "--d", "100", "--dropout", "0.1", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    (row,) = json.loads(captured.out)  # --json: stdout is the rows alone, the tables go to stderr
    assert row["graph"] == "sparse" and row["k"] == 14 and row["t"] == 10 and row["correct"]
    assert "per client s" in captured.err


def test_sparse_floor_counts_one_pairwise_mask_per_neighbour():
    inputs = {u: np.zeros(2, dtype=np.uint64) for u in range(1, 41)}
    params, _ = setup_session(inputs, modulus=2**16, seed=1, graph="sparse", tolerated_dropout=0.1,
                              tolerated_corrupt=0.05)
    u2 = frozenset(range(1, 41))
    u3 = u2 - {1, 2}
    clients, server = bench_secagg.floor_streams(params, u2, u3)
    assert clients == 38 * (1 + 14)
    assert server == 38 + len(params.neighbours(1) & u3) + len(params.neighbours(2) & u3)


def test_liar_benchmark_times_an_exact_unmasking_with_and_without_the_liar():
    for liar in (False, True):
        seconds, named, exact = bench_secagg.unmasking_seconds(12, 10, liar, seed=3)
        assert seconds > 0 and exact and named == []  # t - 1 = 8 assumed colluders: no proof at n = 12
