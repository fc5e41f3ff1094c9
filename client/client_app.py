"""Flower ClientApp of TreeLoRA-Fed: a thin shell over :class:`client.node.ClientNode`.

Actions: ``train`` (one round of local TreeLoRA), ``query`` (probe sketch before a task starts) and
``evaluate`` (scores on finished tasks). A malformed or mismatched message gets an error reply and leaves the
client's on-disk state untouched.
"""

from __future__ import annotations

import os

# OpenMP's default active wait made 2-thread steps 4x slower on a shared CPU (BENCHMARKS.md); set before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from treelora.logs import quiet_third_party

# other packages' deprecation notices and per-process "Loading weights" bars off, before any of them loads (every
# simulated client process and every deployed message's process imports this module first); ours stay on
quiet_third_party()

import logging

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from protos.envelope import pack, pack_error, unpack
from protos.wire import ProtocolError
from treelora.fed.settings import FedSettings

from .node import ClientNode
from .node_settings import NodeSettings

app = ClientApp()
log = logging.getLogger("treelora.client")


def _node(context: Context) -> ClientNode:
    fed = FedSettings.from_run_config(context.run_config)
    return ClientNode(fed, NodeSettings.from_node_config(context.node_config, fed))


def _guard(message: Message, context: Context, action: str) -> Message:
    try:
        node = _node(context)
        control, arrays = unpack(message.content)
        if action == "train":
            reply_control, reply_arrays = node.train(control, arrays)
        elif action == "query":
            reply_control, reply_arrays = node.probe(control)
        else:
            reply_control, reply_arrays = node.evaluate(control), {}
        return Message(pack(reply_control, reply_arrays), reply_to=message)
    except (ProtocolError, ValueError) as exc:
        code = getattr(exc, "code", "bad-request")
        log.warning("%s rejected (%s): %s", action, code, exc)
        return Message(pack_error(code, str(exc)), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """One round of local training on the client's current task."""
    return _guard(message, context, "train")


@app.query()
def query(message: Message, context: Context) -> Message:
    """Probe sketch of the upcoming task (for the server's warm-start choice)."""
    return _guard(message, context, "query")


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Accuracy on every finished task with the live adapter."""
    return _guard(message, context, "evaluate")
