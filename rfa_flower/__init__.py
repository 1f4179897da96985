"""Robust and private federated aggregation on Flower (``pip install ".[flower]"``).

Flower is the engine and the transport; this package adds, through Flower's
public Message API only:

* ``strategy``: ``RobustFedAvg``, FedAvg with the updates w_i - w aggregated
  by any rule of ``rfa.aggregators`` (plaintext, like Flower's own strategies);
  with a two-phase rule (``cent2p``, ``mean2p``) each round adds the nodes'
  vote, tallied by a secure weighted average (``voting``; the nodes run
  ``client_mod.SecureVoteMod`` on their evaluate handler);
* ``workflow.SecureRFA`` (a strategy: ``start(grid=..., initial_arrays=...,
  num_rounds=...)``) and ``client_mod.SecureRFAMod`` (a client mod): the
  secure geometric median, each Weiszfeld step one secure weighted average run
  by this project's sans-I/O secagg state machines, their msgpack messages
  carried in Flower records;
* ``personal.PersonalisedMod``: Algorithm 4's personal model u_i, kept in the
  node's context state; only the shared part is aggregated;
* ``example``: a server app and a client app on scikit-learn digits.

The base packages ``secagg`` and ``rfa`` never import this one.
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('rfa_flower needs Flower: pip install ".[flower]"') from exc

from .client_mod import SecureRFAMod, SecureVoteMod  # noqa: E402
from .personal import PersonalisedMod  # noqa: E402
from .protocol import SecurePolicy, TallyPolicy  # noqa: E402
from .strategy import RobustFedAvg  # noqa: E402
from .workflow import SecureRFA  # noqa: E402

__all__ = ["PersonalisedMod", "RobustFedAvg", "SecurePolicy", "SecureRFA", "SecureRFAMod", "SecureVoteMod", "TallyPolicy"]
