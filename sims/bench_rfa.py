"""Benchmark of the plaintext smoothed Weiszfeld algorithm against the reference package.

    python3 -m sims.bench_rfa                 # n=100, d=1e5 and n=1000, d=1e4
    python3 -m sims.bench_rfa --steps 5       # fewer Weiszfeld steps per run

For each size it draws one contaminated cloud (20% of the points shifted far
away), runs ``geom_median.numpy.compute_geometric_median`` (PyPI
``geom-median``, the reference) and ``rfa.geometric_median`` on the same
array with the same start (the weighted mean), the same nu and the same number
of steps, and prints the best-of-``--repeat`` wall time of each, their ratio
and the largest coordinate difference of the two medians.

Matching the step count: the reference stops after a step once
|g_prev - g| <= ftol * g (g its objective, normalised by the weight sum; the
ratio is the same for ours).  It runs first with ftol = 0, so it stops early
only when the objective repeats exactly; ours then takes exactly the steps it
took (``tol=None``).

Without ``geom-median`` installed (``pip install geom-median``) only our time
is printed.  The secure section prints the cost of a secure geometric median
with R = 3 against one secure mean, in oracle calls, seconds and bytes.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np

from rfa import geometric_median
from sims.common import HelpFormatter, entry_point, positive_int, progress_bar

SIZES = ((100, 10**5), (1000, 10**4))
NU = 1e-6


def contaminated_cloud(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, d))
    points[: n // 5] += 10.0  # the corrupted fifth, ||shift|| = 10 sqrt(d)
    weights = rng.uniform(0.5, 2.0, size=n)
    return points, weights


def _nothing() -> None:
    pass


def best_time(run: Callable[[], object], repeat: int, tick: Callable[[], object] = _nothing) -> tuple[float, object]:
    """The best of ``repeat`` runs, calling ``tick`` after each (a progress bar's advance)."""
    best, result = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
        tick()
    return best, result


def bench_size(n: int, d: int, steps: int, repeat: int, reference, tick: Callable[[], object] = _nothing) -> None:
    points, weights = contaminated_cloud(n, d, seed=n + d)
    print(f"n={n}, d={d}: {steps} smoothed Weiszfeld steps, nu={NU:g}")
    if reference is None:
        ours_s, ours = best_time(lambda: geometric_median(points, weights, nu=NU, max_iter=steps, tol=None), repeat,
                                 tick)
        print(f"  rfa.geometric_median   {ours_s:8.3f} s   ({ours.n_iter} steps)")
        return
    ref_s, ref = best_time(lambda: reference(points, weights, eps=NU, maxiter=steps, ftol=0.0), repeat, tick)
    ref_steps = len(ref.logs) - 1
    ours_s, ours = best_time(lambda: geometric_median(points, weights, nu=NU, max_iter=ref_steps, tol=None), repeat,
                             tick)
    diff = float(np.max(np.abs(ours.median - ref.median)))
    objective_gap = float(np.max(np.abs(ours.objective / weights.sum() - np.asarray(ref.logs)) / ref.logs[-1]))
    print(f"  geom-median (reference) {ref_s:8.3f} s   ({ref_steps} steps)")
    print(f"  rfa.geometric_median    {ours_s:8.3f} s   ({ours.n_iter} steps)")
    print(f"  speed-up (reference / ours): {ref_s / ours_s:.1f}x")
    print(f"  max |median difference|: {diff:.3e}   (median scale {np.max(np.abs(ref.median)):.3g})")
    print(f"  max relative objective difference over the steps: {objective_gap:.3e}")


SECURE_REPEAT = 2


def secure_cost_section(n: int = 50, d: int = 1000, rounds: int = 3, repeat: int = SECURE_REPEAT,
                        tick: Callable[[], object] = _nothing) -> None:
    """Secure geometric median (R Weiszfeld steps) vs one secure mean: oracle calls, seconds, bytes.

    The paper's claim (Sec. IV) is about a 3x communication cost for R = 3.
    Our secure median starts from the secure weighted mean, so it makes
    R + 1 calls; the row "from 0" starts at v = 0 instead (R calls).
    """
    from rfa import secure_geometric_median, secure_mean
    from secagg import SecureAverageOracle

    points, _ = contaminated_cloud(n, d, seed=7)
    c = float(np.linalg.norm(points, axis=1).max())

    def run(kind: str):
        oracle = SecureAverageOracle(2 / 3, value_bound=c, weight_bound=1e6, max_clients=n)
        if kind == "mean":
            secure_mean(points, norm_bound=c, oracle=oracle)
        elif kind == "median":
            secure_geometric_median(points, rounds=rounds, norm_bound=c, oracle=oracle)
        else:
            secure_geometric_median(points, rounds=rounds, norm_bound=c, oracle=oracle, init=np.zeros(d))
        return oracle

    rows = []
    for kind in ("mean", "median", "median from 0"):
        seconds, oracle = best_time(lambda: run(kind), repeat, tick)
        rows.append((kind, oracle.calls, seconds, oracle.bytes_total / n))
    base = rows[0]
    print(f"secure cost, n={n} clients, d={d}, R={rounds}, in-memory secure aggregation (t = ceil(2n/3)):")
    for kind, calls, seconds, per_client in rows:
        print(
            f"  {kind:>14}: {calls} oracle calls ({calls / base[1]:.1f}x) | {seconds:.2f} s ({seconds / base[2]:.1f}x) "
            f"| {per_client / 1024:.0f} KiB per client ({per_client / base[3]:.1f}x)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m sims.bench_rfa", description=__doc__.splitlines()[0], formatter_class=HelpFormatter
    )
    parser.add_argument("--steps", type=positive_int, default=10, help="Weiszfeld steps per run")
    parser.add_argument("--repeat", type=positive_int, default=3, help="runs per timing, the best is kept")
    args = parser.parse_args(argv)
    try:
        from geom_median.numpy import compute_geometric_median as reference
    except ImportError:
        reference = None
        print("geom-median is not installed: only rfa.geometric_median is timed.")
        print("Install the reference with:  pip install geom-median")
    runs = len(SIZES) * args.repeat * (1 if reference is None else 2) + 3 * SECURE_REPEAT
    with progress_bar("timing runs", runs) as tick:
        for n, d in SIZES:
            bench_size(n, d, args.steps, args.repeat, reference, tick)
        print()
        secure_cost_section(tick=tick)
    return 0


if __name__ == "__main__":
    entry_point("bench_rfa", main)
