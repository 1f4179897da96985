"""Robust and private federated aggregation on Flower (``pip install ".[flower]"``).

Flower is the engine and the transport; this package adds, through Flower's
public Message API only:

* ``strategy``: FedAvg subclasses that aggregate the updates w_i - w with any
  rule of ``rfa.aggregators`` (plaintext, like Flower's own strategies);
* ``client_mod`` and ``workflow``: the secure geometric median, each
  Weiszfeld step one secure weighted average run by this project's sans-I/O
  secagg state machines, their msgpack messages carried in Flower records;
* ``example``: a server app and a client app on scikit-learn digits.

The base packages ``secagg`` and ``rfa`` never import this one.
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('rfa_flower needs Flower: pip install ".[flower]"') from exc
