"""Per-class feature statistics pooled across clients: ``fedproto``'s global prototypes and ``share-prototypes``.

A client that sends prototype statistics reports, with every train report of a task, per class of that task the
sum of its eval-mode features over its shard and their count (``proto.<c>.sum`` / ``proto.<c>.count``). The pool
keeps the latest (class, client) contribution — a repeat *replaces* the client's earlier one, so a class counts
each client once — and the prototype of a class for a client is ``Σ sums / Σ counts`` over the clients that
reported it and that the client may pool with (``partners``; None = everyone, ``fedproto``).

What a report must carry is exact: the classes of the client's current task that its shard holds, with counts at
most its shard size. The server knows both from the run config and the number of clients (the stream and its
sharding are functions of them, as the tree-quality ground truth is: :mod:`server.tree_audit`), learned in
:meth:`PrototypePool.start` before the first round.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch

from protos import treelora_fed_pb2 as pb
from protos.wire import ProtocolError, proto_name
from treelora.fed.keys import client_id, task_key
from treelora.fed.scenarios import holders, make_schedule, shard
from treelora.fed.settings import FedSettings

__all__ = ["PrototypePool", "task_catalogue"]


def task_catalogue(fed: FedSettings, num_clients: int) -> dict[str, dict[int, int]]:
    """``{leaf key: {class: the client's shard size of that task}}`` for every task of every client's schedule,
    over the classes its shard holds (the examples it may sum over)."""
    stream = fed.load_stream()
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


class PrototypePool:
    """The latest per-class (sum, count) of every client, and their counts-weighted means (module docstring)."""

    def __init__(self, fed: FedSettings) -> None:
        self.fed = fed
        self.catalogue: dict[str, dict[int, int]] = {}
        self.contributions: dict[int, dict[str, tuple[torch.Tensor, int]]] = {}  # class → client → (sum, count)
        self.feature_dim: int | None = None  # trust on first use

    def start(self, num_clients: int) -> None:
        """Learn what every client's reports must carry (its tasks' classes and shard sizes)."""
        self.catalogue = task_catalogue(self.fed, num_clients)

    def expected(self, report: pb.ClientReport) -> Mapping[int, int]:
        """``{class: most examples}`` whose statistics this train report must carry."""
        expected = self.catalogue.get(report.task_key)
        if not expected:
            raise ProtocolError("bad-value", f"task {report.task_key!r} is not a task of this run's scenario "
                                f"({len(self.catalogue)} known)")
        return expected

    def ingest(self, report: pb.ClientReport, tensors: dict[str, torch.Tensor]) -> None:
        """Store a validated report's statistics (replacing that client's earlier ones of the same classes)."""
        for cls in self.catalogue[report.task_key]:
            total = tensors[proto_name(cls, "sum")]
            self.feature_dim = int(total.shape[0])
            count = int(tensors[proto_name(cls, "count")].flatten()[0])
            self.contributions.setdefault(cls, {})[report.client_id] = (total.clone(), count)

    def mean(self, cls: int, partners: Collection[str] | None = None) -> torch.Tensor | None:
        """The counts-weighted mean feature of ``cls`` over the clients of ``partners`` (None: all) that reported
        it; None when none has."""
        parts = [v for c, v in self.contributions.get(cls, {}).items() if partners is None or c in partners]
        if not parts:
            return None
        total = sum(s.double() for s, _ in parts)
        return (total / sum(n for _, n in parts)).float()

    def tensors_for(self, client: str, rnd: int, partners: Collection[str] | None = None
                    ) -> dict[str, torch.Tensor]:
        """``proto.<c>.mean`` for the classes of the client's tasks up to the one it trains in round ``rnd`` that
        a partner has reported."""
        pos = min((rnd - 1) // self.fed.rounds_per_task, self.fed.tasks_per_client - 1)
        classes = sorted({c for i in range(pos + 1) for c in self.catalogue.get(task_key(client, i), {})})
        out = {}
        for cls in classes:
            mean = self.mean(cls, partners)
            if mean is not None:
                out[proto_name(cls, "mean")] = mean
        return out

    def state_dict(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(torch-saved part, JSON part) for the checkpoint."""
        return {"contributions": self.contributions}, {"feature_dim": self.feature_dim}

    def load_state_dict(self, blob: dict[str, Any], meta: dict[str, Any]) -> None:
        self.contributions = blob["contributions"]
        self.feature_dim = meta["feature_dim"]

    def results(self) -> dict[str, Any]:
        """Per class, the clients that reported it and their total count."""
        return {str(c): {"clients": sorted(p), "count": sum(n for _, n in p.values())}
                for c, p in sorted(self.contributions.items())}
