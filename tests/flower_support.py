"""What the Flower simulation tests share: a grid that records every message, and one simulation run.

Each of tests/test_rfa_flower*.py runs one ``flwr.simulation.run_simulation`` whose
server app stores what the tests check in a dict; an exception inside the server
app is stored under "error" and raised here, so it fails the tests instead of
getting lost in Flower's log.
"""

from __future__ import annotations

from typing import Any


class RecordingGrid:
    """Delegates to Flower's grid; keeps every message sent and every reply received.

    ``silence``: a node the server stops talking to after the first round trip
    (a hostile server, or a node that disappears after its setup).
    """

    def __init__(self, grid, silence: int | None = None):
        self.grid = grid
        self.silence = silence
        self.trips = 0
        self.sent: list = []
        self.replies: list = []

    def get_node_ids(self):
        return self.grid.get_node_ids()

    def send_and_receive(self, messages, *, timeout=None):
        messages = [m for m in messages if self.trips == 0 or m.metadata.dst_node_id != self.silence]
        self.trips += 1
        self.sent += messages
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        self.replies += replies
        return replies


def simulate(server_app, client_app, nodes: int, results: dict[str, Any]) -> dict[str, Any]:
    """Run one simulation with ``nodes`` SuperNodes; return the server app's results (or raise its error)."""
    from flwr.simulation import run_simulation

    run_simulation(server_app, client_app, num_supernodes=nodes,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    if "error" in results:
        raise results["error"]
    return results
