"""Benchmark: what the distributed discrete Gaussian costs over the plain secure average.

    python3 -m sims.bench_dp             # n = 100, d = 10^4, 3 alternating pairs (about 1 min)
    python3 -m sims.bench_dp --quick     # n = 20, d = 10^3 (a smoke run)
    python3 -m sims.bench_dp --n 50 --d 100000 --repeats 5

Each pair runs one plain call of ``SecureAverageOracle`` (fixed point in
Z_{2^64}) and one with ``dp=DistributedDiscreteGaussian(l2_clip=1,
noise_multiplier=z)`` on the same inputs, alternating, through real in-memory
secure aggregation sessions; the ratio is of the medians (target: DP at most
1.3x the plain call at n = 100, d = 10^4).  The DP call pads d + 1 to a power
of two D and samples D exact discrete Gaussians per client, but its modulus
needs far fewer bits, so its masks are shorter.  Also printed: the DP call's
own split (client encoding: clip, rotate, round, sample; the session; the
server's decoding), the modulus bits, and the bits per input coordinate on
the wire (element bytes x 8 x D / d) against the plain call's 64.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from secagg import SecureAverageOracle
from secagg.dp import DistributedDiscreteGaussian
from secagg.params import element_bytes
from secagg.rng import SystemRandom, fresh_stream
from sims.common import (
    console, entry_point, parser, positive_float, positive_int, progress_bar, write_csv, write_summary,
)

NAME = "bench_dp"


def main(argv: list[str] | None = None) -> int:
    p = parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--n", type=positive_int, default=None, help="clients (default: 100; with --quick 20)")
    p.add_argument("--d", type=positive_float, default=None, help="dimension (default: 1e4; with --quick 1e3)")
    p.add_argument("--repeats", type=positive_int, default=None, help="alternating pairs (default: 3; with --quick 1)")
    p.add_argument("--z", type=positive_float, default=1.0, help="noise multiplier")
    args = p.parse_args(argv)
    n = args.n or (20 if args.quick else 100)
    d = int(args.d or (1e3 if args.quick else 1e4))
    repeats = args.repeats or (1 if args.quick else 3)
    t = (2 * n) // 3 + 1
    data = np.random.default_rng(0).normal(size=(n, d))  # benchmark inputs, not noise
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    vectors = {u: data[u - 1] / 2 for u in range(1, n + 1)}
    weights = {u: 1.0 for u in vectors}
    mech = DistributedDiscreteGaussian(l2_clip=1.0, noise_multiplier=args.z, max_clients=n)
    plain = SecureAverageOracle(t, value_bound=1.0, max_clients=n)
    noisy = SecureAverageOracle(t, value_bound=1.0, max_clients=n, dp=mech)
    times: dict[str, list[float]] = {"plain": [], "dp": []}
    results: dict[str, Any] = {}
    with progress_bar("plain and DP secure averages", 2 * repeats) as advance:  # on stderr
        for i in range(repeats):
            pair = (("plain", plain), ("dp", noisy)) if i % 2 == 0 else (("dp", noisy), ("plain", plain))
            for label, oracle in pair:
                start = time.perf_counter()
                results[label] = oracle.average(vectors, weights)
                times[label].append(time.perf_counter() - start)
                advance()
    plan = next(iter(mech._plans.values()))
    bits = plan["modulus_bits"]
    D = plan["dim"]
    wire_dp = element_bytes(bits) * 8 * D / d
    # The DP call's own split, measured once more outside the oracle.
    p1 = mech.plan(d, t, 1.0, b"bench")
    start = time.perf_counter()
    encoded = {u: p1.encode(vectors[u], 1.0, fresh_stream(SystemRandom())) for u in vectors}
    encode_s = time.perf_counter() - start
    total = np.zeros(D, dtype=np.uint64)
    for e in encoded.values():
        total += e.vector
    start = time.perf_counter()
    p1.decode(total, n)
    decode_s = time.perf_counter() - start
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["dp"] / med["plain"]
    truth = data.mean(axis=0) / 2
    rmse = float(np.sqrt(np.mean((results["dp"].value - truth) ** 2)))
    rows = [dict(n=n, d=d, t=t, z=args.z, plain_s=med["plain"], dp_s=med["dp"], ratio=ratio,
                 dp_encode_all_clients_s=encode_s, dp_decode_s=decode_s, modulus_bits=bits, padded_dim=D,
                 wire_bits_per_coordinate_dp=wire_dp, wire_bits_per_coordinate_plain=64 * (d + 1) / d,
                 bytes_per_client_plain=results["plain"].bytes_per_client, bytes_per_client_dp=results["dp"].bytes_per_client,
                 noise_std=results["dp"].noise_std, rmse=rmse, epsilon_per_call=results["dp"].privacy.epsilon)]
    write_csv(args.out / f"{NAME}.csv", rows)
    r = rows[0]
    lines = [
        f"n = {n}, d = {d}, t = {t}, z = {args.z}, {repeats} alternating pair(s), medians:",
        "",
        "| plain s | DP s | DP / plain | DP encode (all clients) s | DP decode s | modulus bits | D |"
        " wire bits/coord DP | plain | KiB/client DP | plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['plain_s']:.2f} | {r['dp_s']:.2f} | {ratio:.2f}x | {encode_s:.2f} | {decode_s:.3f} | {bits} | {D} | "
        f"{wire_dp:.1f} | {r['wire_bits_per_coordinate_plain']:.1f} | {r['bytes_per_client_dp'] / 1024:,.0f} | "
        f"{r['bytes_per_client_plain'] / 1024:,.0f} |",
        "",
        f"noise_std per coordinate {r['noise_std']:.4g}, measured RMSE against the true mean {rmse:.4g}; "
        f"epsilon of one call at delta = 1e-5: {r['epsilon_per_call']:.3g}. Target: DP / plain <= 1.3.",
    ]
    write_summary(args.out / "summary.md", "Cost of distributed DP over the plain secure average", lines)
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)  # a table row is one line, whatever the width
    return 0


if __name__ == "__main__":
    entry_point(NAME, main)
