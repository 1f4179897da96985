"""The same configuration run in memory: the same updates, aggregated by ``rfa`` directly.

Secure rules go through ``rfa.secure`` with an in-memory ``SecureAverageOracle``
whose encoding is the policy's, so a Flower run and this one quantize
identically; plaintext rules call the rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from secagg import SecureAverageOracle

from .task import ExampleConfig, accuracy, federation, initial_params, local_train


def run_in_memory(cfg: ExampleConfig) -> dict[str, Any]:
    rule = cfg.aggregator()
    policy = cfg.policy()
    counts = federation(cfg).sample_counts.astype(np.float64)
    ids = list(range(cfg.clients))
    w = initial_params(cfg)
    oracle = SecureAverageOracle(
        cfg.threshold, value_bound=policy.norm_bound, weight_bound=policy.privacy.beta_max, max_clients=cfg.max_clients
    )
    accuracies, bounds = [], []
    for server_round in range(1, cfg.rounds + 1):
        updates = np.stack([local_train(cfg, i, server_round, w)[0] - w for i in ids])
        if cfg.secure:
            privacy: dict[str, Any] = dict(
                oracle=oracle,
                norm_bound=policy.norm_bound,
                alpha_range=(policy.alpha_min, policy.alpha_max),
                max_weight=policy.max_weight,
            )
            if rule.name != "mean":
                privacy["nu"] = policy.nu
            outcome = rule.secure({i + 1: updates[i] for i in ids}, {i + 1: counts[i] for i in ids}, **privacy)
            aggregate = outcome.median
            bounds.append(max(s.error_bound for s in outcome.rounds))
        else:
            aggregate = rule(updates, counts)
        w = w + aggregate
        accuracies.append(accuracy(cfg, w))
    return {"params": w.tolist(), "accuracy": accuracies, "error_bound": bounds}
