"""The federated prototype baseline's server side (``fedproto``): one counts-weighted global mean per class.

Clients run a frozen encoder (the ``head-only`` learner: the LoRA never moves) and the ``ncm`` head. Every train
report of a task carries, per class of that task, the sum of the client's eval-mode features over its shard and
their count (``proto.<c>.sum`` / ``proto.<c>.count``). The encoder is frozen, so these are the same in every round
of the task: the client computes them once, when the task starts, and sends them with each of the task's reports.
Sending them every round (not only at the task's end) makes the global prototype of the task's classes reach the
client *during* the task, so the accuracy row written at its end is scored with the federation's prototypes, and
a missed round costs nothing; the server *replaces* the client's contribution each time, so a repeat counts once.
With ``rounds-per-task`` 1 the global prototypes of a task's classes first reach the client with its next task
(its row for that task is scored with its own class means, later rows with the federation's). The ``evaluate``
round is tensor-free, so a client scores it with the prototypes of its last ``train`` assignment.

The server keeps every (class, client) contribution, and the global prototype of a class is
``Σ sums / Σ counts`` over the clients that reported it. Each train assignment carries ``proto.<c>.mean`` for the
classes of the client's tasks up to the one it trains this round that someone has reported.

What a report must carry is exact: the classes of the client's current task that its shard holds, with counts
at most its shard size. The server knows both from the run config and the number of clients (the stream and its
sharding are functions of them, as the tree-quality ground truth is: :mod:`server.tree_audit`); the loop calls
:meth:`FedProto.start` with the number of clients before the first round.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from protos import treelora_fed_pb2 as pb
from protos.wire import ProtocolError, proto_name
from treelora.fed.keys import client_id, task_key
from treelora.fed.scenarios import holders, make_schedule, shard
from treelora.fed.settings import FedSettings

from .strategies import STRATEGY_REGISTRY, Strategy

if TYPE_CHECKING:
    from .state import ClientInfo, GlobalState

__all__ = ["FedProto", "task_catalogue"]


def task_catalogue(fed: FedSettings, num_clients: int) -> dict[str, dict[int, int]]:
    """``{leaf key: {class: the client's shard size of that task}}`` for every task of every client's schedule,
    over the classes its shard holds (the examples it may sum over)."""
    from treelora.streams import load_stream

    stream = load_stream(fed.stream, seed=fed.seed, train_per_class=fed.train_per_class,
                         test_per_class=fed.test_per_class)
    n_tasks = len(stream.tasks)
    out: dict[str, dict[int, int]] = {}
    for c in range(num_clients):
        sched = make_schedule(fed.scenario, c, num_clients, n_tasks, fed.tasks_per_client, fed.rounds_per_task,
                              families=fed.families)
        for pos, t in enumerate(sched.tasks):
            owners = holders(t, fed.scenario, num_clients, n_tasks, fed.tasks_per_client, fed.rounds_per_task,
                             families=fed.families)
            part = shard(stream.tasks[t].train, owners.index(c), len(owners), fed.seed)
            present = {int(e.label) for e in part}
            out[task_key(client_id(c), pos)] = {int(k): len(part) for k in stream.tasks[t].classes if k in present}
    return out


@STRATEGY_REGISTRY.register("fedproto")
class FedProto(Strategy):
    """Federated prototypes: the counts-weighted global mean of every class's features (see the module
    docstring). Nothing is averaged between adapters."""

    def __init__(self, fed: FedSettings, out_dir: Path) -> None:
        super().__init__(fed, out_dir)
        self.catalogue: dict[str, dict[int, int]] = {}
        self.contributions: dict[int, dict[str, tuple[torch.Tensor, int]]] = {}  # class → client → (sum, count)

    def start(self, state: GlobalState, num_clients: int) -> None:
        """Learn what every client's reports must carry (its tasks' classes and shard sizes)."""
        self.catalogue = task_catalogue(self.fed, num_clients)

    def expected_prototypes(self, state: GlobalState, report: pb.ClientReport) -> Mapping[int, int]:
        expected = self.catalogue.get(report.task_key)
        if not expected:
            raise ProtocolError("bad-value", f"task {report.task_key!r} is not a task of this run's scenario "
                                f"({len(self.catalogue)} known)")
        return expected

    def ingest_train(self, state: GlobalState, report: pb.ClientReport, tensors: dict[str, torch.Tensor],
                     info: ClientInfo) -> None:
        for cls in self.catalogue[report.task_key]:
            total = tensors[proto_name(cls, "sum")]
            self.feature_dim = int(total.shape[0])
            count = int(tensors[proto_name(cls, "count")].flatten()[0])
            self.contributions.setdefault(cls, {})[report.client_id] = (total.clone(), count)

    def global_prototype(self, cls: int) -> torch.Tensor | None:
        """The counts-weighted mean feature of ``cls`` over every client that reported it (None: nobody has)."""
        parts = self.contributions.get(cls)
        if not parts:
            return None
        total = sum(s.double() for s, _ in parts.values())
        return (total / sum(n for _, n in parts.values())).float()

    def configure_train(self, state: GlobalState, client: str, info: ClientInfo | None, rnd: int
                        ) -> tuple[list[pb.LayerAssignment], dict[str, torch.Tensor], str]:
        if info is None:
            return [], {}, ""
        pos = min((rnd - 1) // self.fed.rounds_per_task, self.fed.tasks_per_client - 1)
        classes = sorted({c for i in range(pos + 1) for c in self.catalogue.get(task_key(client, i), {})})
        tensors = {}
        for cls in classes:
            mean = self.global_prototype(cls)
            if mean is not None:
                tensors[proto_name(cls, "mean")] = mean
        return [], tensors, ""

    def state_dict(self) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        return {"prototypes": self.contributions}, {"feature_dim": self.feature_dim}, []

    def load_state_dict(self, blob: dict[str, Any], meta: dict[str, Any], leaves: list[dict[str, Any]],
                        num_layers: int) -> None:
        self.contributions = blob["prototypes"]
        self.feature_dim = meta["feature_dim"]

    def results(self) -> dict[str, Any]:
        per_class = {str(c): {"clients": sorted(p), "count": sum(n for _, n in p.values())}
                     for c, p in sorted(self.contributions.items())}
        return {"leaves": [], "tree": None, "prototypes": per_class}
