"""The example's ClientApp: local SGD on one partition of digits; secure mode adds ``SecureRFAMod``.

The node's partition is ``partition-id`` of its node config, out of
``num-partitions`` (the simulation engine sets both; a SuperNode gets them
from ``--node-config``).  ``app`` reads the configuration from the run
config of ``flwr run``; ``make_client_app(cfg)`` fixes it instead, for a
program that builds the app itself.  In secure runs the mod keeps
the model and ``num-examples`` on the node; in plaintext runs both go to the
server, as in any Flower app.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from ..client_mod import SecureRFAMod
from .task import ExampleConfig, local_train


def make_client_app(cfg: ExampleConfig | None = None) -> ClientApp:
    def config(context: Context) -> ExampleConfig:
        c = cfg if cfg is not None else ExampleConfig.from_run_config(context.run_config)
        return c.sized(int(context.node_config.get("num-partitions", 0)))

    def secure_when_configured(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        c = config(context)
        return SecureRFAMod(c.policy())(message, context, call_next) if c.secure else call_next(message, context)

    app = ClientApp()

    @app.train(mods=[secure_when_configured])
    def train(message: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        w = message.content["arrays"].to_numpy_ndarrays()[0]
        server_round = int(message.content["config"]["server-round"])  # type: ignore[arg-type]
        trained, examples = local_train(config(context), partition, server_round, w)
        reply = RecordDict({"arrays": ArrayRecord([trained]), "metrics": MetricRecord({"num-examples": examples})})
        return Message(reply, reply_to=message)

    return app


app = make_client_app()
