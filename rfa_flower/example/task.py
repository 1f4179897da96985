"""The example's configuration, data, model and local training, shared by both apps and the in-memory run.

Every party derives the same public facts from the same ``ExampleConfig``:
the dataset split (clients ``partition-id`` 0..n-1 of scikit-learn digits),
the corrupted set (``rfa.corruption.choose_corrupted``, by weight, eq. (5))
whose data is poisoned (``negate`` or ``label_flip``), the initial model and
the public privacy parameters.  Local training of client i in round r uses its
own generator seeded by (seed, r, i), so the Flower run and the in-memory run
compute the very same updates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from rfa.aggregators import Aggregator, make_aggregator
from rfa.corruption import choose_corrupted, poison_clients
from rfa.data import FederatedDataset, digits
from rfa.models import LogisticRegression, local_sgd

from ..protocol import SecurePolicy


@dataclass(frozen=True)
class ExampleConfig:
    clients: int = 0  # data partitions; 0: as many as nodes connect (server) / num-partitions (a node)
    min_nodes: int = 2  # the server starts once this many nodes are connected
    rounds: int = 3  # federated rounds T
    local_steps: int = 5
    lr: float = 0.5
    batch_size: int = 16
    rule: str = "geometric_median"  # any name of rfa.aggregators.registry
    weiszfeld_rounds: int = 3
    secure: bool = True  # secure rules only: through rfa_flower.workflow
    corruption: str = "negate"  # "negate", "label_flip" or "" (none)
    rho: float = 0.2  # corrupted fraction by weight
    norm_bound: float = 10.0  # C: clients clip updates to it
    nu: float = 1e-3
    max_weight: float = 0.0  # s; 0: report the certificate only
    threshold: float = 2 / 3
    max_clients: int = 64  # fixes the fixed-point encoding
    alpha_min: float = 0.0  # the public weight range; 0: the smallest / largest client size of the data
    alpha_max: float = 0.0
    seed: int = 0
    timeout: float = 120.0
    out: str = ""  # the server app writes its result here (JSON) if set

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> "ExampleConfig":
        """Flower run-config keys are the field names with '-' for '_'; unknown keys are refused."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in config.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ValueError(f"unknown run-config key {key!r}; known: {sorted(fields)}")
            kind = type(getattr(cls(), name))
            values[name] = kind(value) if kind is not bool else value in (True, "true", "True", 1)
        return cls(**values)

    def sized(self, clients: int) -> "ExampleConfig":
        """This configuration with ``clients`` partitions, unless it fixes its own number."""
        return self if self.clients > 0 else dataclasses.replace(self, clients=clients)

    def aggregator(self) -> Aggregator:
        if self.rule == "geometric_median":
            return make_aggregator(self.rule, rounds=self.weiszfeld_rounds, nu=self.nu)
        if self.rule == "one_step":
            return make_aggregator(self.rule, nu=self.nu)
        return make_aggregator(self.rule)

    def with_alpha_range(self) -> "ExampleConfig":
        """The configuration with the weight range fixed from the data (so no party reloads it for that)."""
        counts = federation(self).sample_counts
        return dataclasses.replace(self, alpha_min=float(counts.min()), alpha_max=float(counts.max()))

    def policy(self) -> SecurePolicy:
        cfg = self if self.alpha_min > 0 and self.alpha_max > 0 else self.with_alpha_range()
        return SecurePolicy(
            norm_bound=self.norm_bound,
            alpha_min=cfg.alpha_min,
            alpha_max=cfg.alpha_max,
            nu=self.nu,
            max_weight=self.max_weight if self.max_weight > 0 else None,
            threshold=self.threshold,
            max_clients=self.max_clients,
        )


@lru_cache(maxsize=8)
def _federation(clients: int, corruption: str, rho: float, seed: int) -> tuple[FederatedDataset, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = digits(clients, rng=rng)
    corrupted = choose_corrupted(data.sample_counts, rho, rng) if rho > 0 and corruption else np.zeros(clients, bool)
    if corrupted.any():
        data = poison_clients(data, corrupted, corruption)
    return data, corrupted


def federation(cfg: ExampleConfig) -> FederatedDataset:
    return _federation(cfg.clients, cfg.corruption, cfg.rho, cfg.seed)[0]


def corrupted(cfg: ExampleConfig) -> np.ndarray:
    return _federation(cfg.clients, cfg.corruption, cfg.rho, cfg.seed)[1]


def model() -> LogisticRegression:
    return LogisticRegression(64, 10)


def initial_params(cfg: ExampleConfig) -> np.ndarray:
    return model().init_params(np.random.default_rng([cfg.seed, 0xF10]))


def local_train(cfg: ExampleConfig, partition: int, server_round: int, w: np.ndarray) -> tuple[np.ndarray, int]:
    """Client ``partition``'s model after local SGD from w in ``server_round``, and its example count."""
    X, y = federation(cfg).client(partition)
    rng = np.random.default_rng([cfg.seed, server_round, partition])
    trained = local_sgd(model(), w, X, y, steps=cfg.local_steps, lr=cfg.lr, batch_size=cfg.batch_size, rng=rng)
    return trained, len(y)


def accuracy(cfg: ExampleConfig, w: np.ndarray) -> float:
    data = federation(cfg)
    return float(model().accuracy(w, data.X_test, data.y_test))


def held_out_loss(cfg: ExampleConfig, w: np.ndarray) -> float:
    """The cross-entropy of w on the held-out digits."""
    data = federation(cfg)
    return float(model().loss(w, data.X_test, data.y_test))
