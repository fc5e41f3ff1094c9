"""An in-process Flower ``Grid`` that delivers messages straight to ClientApp callables (no Ray, no SuperLink).

For tests and debugging: every message is handled synchronously by ``client_app(message, Context(...))``, with
the node config a SuperNode would have (partition id, number of partitions, state dir). Messages travel through
a deep copy, so neither side can alias the other's tensors, and byte-level faults can be
injected with ``tamper`` to test the server's validation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from copy import deepcopy
from typing import Any
from uuid import uuid4

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity


class LocalGrid(Grid):
    """Synchronous grid over ``n`` simulated nodes with ids 1..n."""

    def __init__(
        self,
        client_app: Callable[[Message, Context], Message],
        num_nodes: int,
        *,
        run_config: dict[str, Any],
        state_dir: str,
        tamper: Callable[[int, Message], Message | None] | None = None,
        node_config: dict[int, dict[str, Any]] | None = None,
    ) -> None:
        self.client_app = client_app
        self.nodes = list(range(1, num_nodes + 1))
        self.run_config = run_config
        self.state_dir = state_dir
        self.tamper = tamper
        self.node_config = node_config or {}  # extra node-config keys per node id (device, precision, ...)
        self.down: set[int] = set()  # nodes that do not answer
        self._run = Run.create_empty(run_id=1) if hasattr(Run, "create_empty") else None
        self._replies: dict[str, Message] = {}
        self.sent: list[Message] = []
        self.received: list[Message] = []
        # What the ServerApp runtime sets in its process before `main` runs (Message() reads it).
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run  # type: ignore[return-value]

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def context(self, node_id: int) -> Context:
        node_config = {"partition-id": node_id - 1, "num-partitions": len(self.nodes), "state-dir": self.state_dir,
                       **self.node_config.get(node_id, {})}
        return Context(run_id=1, node_id=node_id, node_config=node_config, state=RecordDict(),
                       run_config=dict(self.run_config))

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            mid = uuid4().hex
            msg.metadata.__dict__["_message_id"] = mid
            self.sent.append(msg)
            node = msg.metadata.dst_node_id
            if node in self.down:
                continue
            wire = Message(content=deepcopy(msg.content),
                           dst_node_id=node, message_type=msg.metadata.message_type,
                           group_id=msg.metadata.group_id)
            reply = self.client_app(wire, self.context(node))
            reply.metadata.__dict__["_src_node_id"] = node
            if self.tamper is not None:
                reply = self.tamper(node, reply)
                if reply is None:
                    continue
            self._replies[mid] = reply
            self.received.append(reply)
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(mid) for mid in message_ids if mid in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return list(self.pull_messages(self.push_messages(messages)))
