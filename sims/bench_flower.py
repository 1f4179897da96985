"""Side by side in Flower's simulation engine: one secure FedAvg round, ours against Flower's SecAgg+.

    python3 -m sims.bench_flower              # n=10 clients, d=10,000 parameters
    python3 -m sims.bench_flower --quick      # n=5, d=1,000
    python3 -m sims.bench_flower --n 20 --d 100000

Both sides run the same n clients, each holding a d-vector, through one
training round whose aggregate is computed by secure aggregation with a
threshold of ceil(2n/3) over the complete graph:

* ours: ``rfa_flower.workflow`` with the secure mean (one secure weighted
  average: setup, share keys, masked input, unmasking, 4 Flower round trips
  after the train round), 64-bit fixed point;
* Flower's: ``SecAggPlusWorkflow(num_shares=n, reconstruction_threshold=t)``
  under ``DefaultWorkflow`` with the legacy FedAvg strategy and
  ``secaggplus_mod`` on the clients, its default quantization.

Each side runs in its own simulation and trains two rounds; the time of the
second is measured inside the server app from its first message to the
aggregate, so the engine's start-up and its actors' warm-up are excluded.  The script prints both times and their ratio, and the
largest error of each aggregate against the exact weighted mean.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

RESOURCES = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}}


def vector(partition: int, d: int) -> np.ndarray:
    return np.random.default_rng([11, partition]).uniform(-1.0, 1.0, d)


def examples(partition: int) -> int:
    return 10 + partition


def exact_mean(n: int, d: int) -> np.ndarray:
    w = np.array([examples(p) for p in range(n)], dtype=float)
    return sum(w[p] * vector(p, d) for p in range(n)) / w.sum()


def ours(n: int, d: int) -> dict[str, Any]:
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from rfa.aggregators import Mean
    from rfa_flower.arrays import to_record
    from rfa_flower.client_mod import SecureRFAMod
    from rfa_flower.protocol import SecurePolicy
    from rfa_flower.workflow import SecureRFA

    policy = SecurePolicy(norm_bound=math.sqrt(d), alpha_min=10.0, alpha_max=10.0 + n, nu=1.0, max_clients=max(n, 2))
    client = ClientApp()

    @client.train(mods=[SecureRFAMod(policy)])
    def train(message, context):
        p = int(context.node_config["partition-id"])
        w = message.content["arrays"].to_numpy_ndarrays()[0]
        out = RecordDict({"arrays": ArrayRecord([w + vector(p, d)]), "metrics": MetricRecord({"num-examples": examples(p)})})
        return Message(out, reply_to=message)

    result: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def main(grid, context):
        strategy = SecureRFA(Mean(), policy=policy, min_train_nodes=n, min_available_nodes=n)
        strategy.start(grid=grid, initial_arrays=to_record(np.zeros(d)), num_rounds=1)  # warm-up: starts the actors
        start = time.perf_counter()
        out = strategy.start(grid=grid, initial_arrays=to_record(np.zeros(d)), num_rounds=1)
        result["seconds"] = time.perf_counter() - start
        result["aggregate"] = out.arrays.to_numpy_ndarrays()[0]

    run_simulation(server, client, num_supernodes=n, backend_config=RESOURCES)
    return result


def flowers(n: int, d: int, threshold: int) -> dict[str, Any]:
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation

    class Fixed(NumPyClient):
        def __init__(self, partition: int):
            self.partition = partition

        def fit(self, parameters, config):
            return [vector(self.partition, d)], examples(self.partition), {}  # the model: the mean is exact

    def client_fn(context):
        return Fixed(int(context.node_config["partition-id"])).to_client()

    client = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    result: dict[str, Any] = {}

    class Timed(FedAvg):
        def configure_fit(self, server_round, parameters, client_manager):
            result["start"] = time.perf_counter()
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            out = super().aggregate_fit(server_round, results, failures)
            result["seconds"] = time.perf_counter() - result["start"]
            from flwr.common import parameters_to_ndarrays

            result["aggregate"] = parameters_to_ndarrays(out[0])[0]
            return out

    strategy = Timed(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
        initial_parameters=ndarrays_to_parameters([np.zeros(d)]),
    )
    server = ServerApp()

    @server.main()
    def main(grid, context):
        legacy = LegacyContext(context, config=ServerConfig(num_rounds=2), strategy=strategy)
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=n, reconstruction_threshold=threshold))
        workflow(grid, legacy)

    run_simulation(server, client, num_supernodes=n, backend_config=RESOURCES)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="clients (default 10; 5 with --quick)")
    p.add_argument("--d", type=int, default=None, help="parameters (default 10,000; 1,000 with --quick)")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    n = args.n or (5 if args.quick else 10)
    d = args.d or (1_000 if args.quick else 10_000)
    t = math.ceil(2 * n / 3)
    truth = exact_mean(n, d)
    a = ours(n, d)
    b = flowers(n, d, t)
    print(f"one secure FedAvg round in Flower's simulation engine, n={n}, d={d}, t={t}")
    print(f"  rfa_flower (secagg messages over Flower)  {a['seconds']:8.2f} s   "
          f"max error {np.max(np.abs(a['aggregate'] - truth)):.2e}")
    print(f"  Flower SecAggPlusWorkflow                 {b['seconds']:8.2f} s   "
          f"max error {np.max(np.abs(b['aggregate'] - truth)):.2e}")
    print(f"  ratio Flower / ours: {b['seconds'] / a['seconds']:.2f}x")


if __name__ == "__main__":
    main()
