"""Personalised RFA over Flower (Algorithm 4 of the RFA paper): the personal model u_i never leaves the node.

``PersonalisedMod()`` is a client mod for the ClientApp's ``train`` and
``evaluate`` handlers.  Each node keeps its personal parameters u_i in its
``context.state`` (zeros, in the shared model's shapes, before its first
round):

* train: the mod adds u_i to the message under ``"personal"``; the train
  function runs Algorithm 4's two local passes (u_i on the residual of the
  shared w, then w on the residual of the new u_i, as ``rfa.training.train``
  does with ``personalised=True``) and returns the trained shared model under
  ``"arrays"`` as usual and the new u_i under ``"personal"``; the mod stores
  u_i and removes it from the reply.  Only the shared part goes on, so under
  ``SecureRFAMod`` only the shared update w_i - w enters the secure robust
  aggregation, and the server side (``SecureRFA``) is unchanged;
* evaluate: the mod adds u_i the same way, so the evaluate function can
  evaluate the personalised model w + u_i on the node's own data; a
  ``"personal"`` record in the reply is removed, and u_i is not changed.

Put it inside ``SecureRFAMod``: ``@app.train(mods=[SecureRFAMod(), PersonalisedMod()])``.
Secure aggregation messages pass through untouched.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from .arrays import Layout
from .protocol import SetupError, secagg_record

PERSONAL = "rfa-personal"  # context.state: u_i (ArrayRecord, the shapes of the shared model)


class PersonalisedMod:
    """``@app.train(mods=[SecureRFAMod(), PersonalisedMod()])`` and ``@app.evaluate(mods=[PersonalisedMod()])``.

    ``key``: the record name of u_i in the message the ClientApp's function
    receives and in its reply; ``arrayrecord_key``: that of the shared model.
    """

    def __init__(self, key: str = "personal", *, arrayrecord_key: str = "arrays"):
        if key == arrayrecord_key:
            raise SetupError("the personal and the shared model need two record names")
        self.key = key
        self.arrayrecord_key = arrayrecord_key

    def __call__(self, message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if secagg_record(message) is not None or not message.has_content():
            return call_next(message, context)
        received = message.content
        if self.arrayrecord_key not in received.array_records:
            raise SetupError(f"the message carries no shared model under '{self.arrayrecord_key}'")
        if self.key in received:
            raise SetupError(f"the message already holds a record '{self.key}'")
        layout = Layout.of(received.array_records[self.arrayrecord_key])
        personal = context.state.array_records.get(PERSONAL)
        if personal is None:
            personal = layout.unflatten(np.zeros(layout.size))
        elif Layout.of(personal) != layout:
            raise SetupError("the shared model's shapes changed: the personal model no longer fits it")
        message.content = RecordDict({**received, self.key: personal})
        try:
            reply = call_next(message, context)
        finally:
            message.content = received
        if reply.has_error():
            return reply
        trained = reply.content.array_records.get(self.key)
        if message.metadata.message_type.split(".")[0] == "train":
            if trained is None:
                raise SetupError(f"the train function must return the personal model under '{self.key}'")
            layout.flatten(trained)  # LayoutMismatch unless it has the shared model's shapes
            context.state[PERSONAL] = ArrayRecord(trained.to_numpy_ndarrays())
        if self.key in reply.content:
            del reply.content[self.key]  # u_i stays on the node
        return reply
