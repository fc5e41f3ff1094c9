"""The server's federated state as plain, tested code: clients, the method's strategy, shares, accounting.

:class:`GlobalState` holds what every method needs — the clients it knows, the adapter shapes, the next round's
shared layers, per-round accounting, accuracy rows, rejected messages and the DP accountant — and delegates what
differs between methods to its :class:`server.strategies.Strategy` (the global tree, bandits, leaves and warm
starts of TreeLoRA-Fed).

Trust on first use: the adapter shapes and layer count are learned from the first *valid* report and every later
report must match them. A report is validated completely before anything changes, so a bad report never
corrupts the tree, the statistics or the leaf store; the rejection is recorded in ``errors``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protos import treelora_fed_pb2 as pb
from protos.wire import (
    ProtocolError,
    ReportExpectation,
    adapter_name,
    encode_tensors,
    is_done_report,
    make_assignment,
    make_sketch_spec,
    parse_report,
    share_name,
    validate_done,
    validate_report,
)
from treelora.fed.keys import task_key
from treelora.fed.settings import FedSettings

from .admission import check_done, check_identity, check_progress
from .aggregation import Adapter, average_groups
from .privacy import ClientPrivacy
from .strategies import Strategy, make_strategy
from .tree_audit import TreeAudit

log = logging.getLogger("treelora.server")

__all__ = ["ClientInfo", "GlobalState"]


@dataclass
class ClientInfo:
    """What the server knows about one client."""

    client_id: str
    node_id: int = 0
    task_key: str = ""
    task_index: int = -1
    finished_last: bool = True  # the next round starts a task
    done: bool = False
    bandit_t: int = 0
    examples: int = 0
    last_round: int = 0  # the last round with an accepted report (one report per client per round)


class GlobalState:
    """Clients, strategy, shares and accounting of one federated run."""

    def __init__(self, fed: FedSettings, out_dir: str | Path, run_id: str = "") -> None:
        self.fed = fed
        self.out_dir = Path(out_dir)
        self.run_id = run_id
        self.round = 0
        self.num_layers = 0
        self.adapter_shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        self.clients: dict[str, ClientInfo] = {}
        self.shares: dict[str, Adapter] = {}
        self.round_adapters: dict[str, tuple[Adapter, int]] = {}  # this round's reports, averaged at its end
        self.acc_rows: dict[str, list[dict[str, float]]] = {}  # CIL rows (the headline accuracy matrix)
        self.view_rows: dict[str, dict[str, list[dict[str, float]]]] = {}  # client → til / task_inference rows
        self.history: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []  # the evaluate rounds' scores (eval-every, and the final one)
        self.errors: list[dict[str, Any]] = []
        self.model_bytes = 0
        self.privacy = ClientPrivacy(fed)
        self.strategy: Strategy = make_strategy(fed, self.out_dir)
        self.offered: dict[str, tuple[int, dict[int, frozenset[str]]]] = {}  # client -> (round, layer -> leaves)
        self.audit = TreeAudit(fed)  # ground truth and the tree-guided choices, for the tree-quality figures

    def max_rounds(self) -> int:
        return self.fed.max_rounds()

    # ------------------------------------------------------------------ outgoing
    def assignment(self, client: str, rnd: int) -> tuple[pb.Assignment, dict[str, np.ndarray]]:
        """The ``train`` message for one client: the strategy's candidates and warm start, its shared layers."""
        info = self.clients.get(client)
        layers, tensors, warm_leaf = self.strategy.configure_train(self, client, info, rnd)
        tensors.update(self.strategy.prototype_tensors(self, client, rnd))
        self.offered[client] = (rnd, {la.layer: frozenset(la.candidates) for la in layers if la.candidates})
        by_layer = {la.layer: la for la in layers}
        for layer, ab in sorted(self.shares.get(client, {}).items()):
            la = by_layer.get(layer)
            if la is None:
                la = pb.LayerAssignment(layer=layer)
                layers.append(la)
                by_layer[layer] = la
            la.shared = True
            if set(ab) != {"A", "B"}:
                la.share_parts.extend(p for p in ("A", "B") if p in ab)
            for part, t in sorted(ab.items()):
                tensors[share_name(layer, part)] = t
        if warm_leaf:
            tensors.update(self.strategy.warm_tensors(warm_leaf, self.num_layers))
        arrays, manifest = encode_tensors(
            tensors, lambda n: "float32" if n.startswith(("cand.", "proto.")) else self.fed.wire_dtype
        )
        layers.sort(key=lambda la: la.layer)
        msg = make_assignment(
            round=rnd, run_id=self.run_id, client_id=client if info else "", local_steps=self.fed.local_steps,
            lam=self.fed.lam, layers=layers, warm_start_leaf=warm_leaf, manifest=manifest,
            sketch=make_sketch_spec(self.fed.sketch_kind, self.fed.sketch_dim, self.fed.sketch_seed, ()),
        )
        return msg, arrays

    def control(self, client: str, rnd: int) -> pb.Assignment:
        """A tensor-free assignment (for ``query`` and ``evaluate`` messages)."""
        return make_assignment(round=rnd, run_id=self.run_id, client_id=client if client in self.clients else "")

    def wants_probe(self, client: str) -> bool:
        """Probe before a task starts, when the strategy has a leaf to reuse."""
        return self.strategy.wants_probe(self, self.clients.get(client))

    def ingest_probe(self, client: str, rnd: int, control: bytes, arrays: dict[str, np.ndarray]) -> str:
        """A ``query`` reply: the warm-start leaf chosen for ``client`` ("" for none)."""
        return self.strategy.ingest_probe(self, client, rnd, control, arrays)

    # ------------------------------------------------------------------ incoming
    def _shapes_of(self, report: pb.ClientReport) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """Per-layer (A, B) shapes declared by a report's manifest (trust on first use: learned, once it is valid);
        a part the method does not send has the empty shape ``()``."""
        sent = self.fed.fed_method.sent_parts
        shapes: dict[int, dict[str, tuple[int, ...]]] = {}
        for info in report.manifest:
            parts = info.name.split(".")
            if len(parts) == 3 and parts[0] == "adapter" and parts[1].isdigit() and parts[2] in ("A", "B"):
                shapes.setdefault(int(parts[1]), {})[parts[2]] = tuple(int(d) for d in info.shape)
        n = len(shapes)
        if n == 0 or sorted(shapes) != list(range(n)) or any(set(v) != set(sent) for v in shapes.values()):
            raise ProtocolError("missing-tensor", f"first report must carry adapter.<l>.{'/'.join(sent)} for every "
                                f"layer")
        return [(shapes[l].get("A", ()), shapes[l].get("B", ())) for l in range(n)]

    def ingest(self, client_hint: str | None, node_id: int, rnd: int, control: bytes,
               arrays: dict[str, np.ndarray], *, live_nodes: Collection[int] | None = None) -> pb.ClientReport:
        """Validate a train reply completely, then apply it. Raises ProtocolError and changes nothing on bad input.

        ``client_hint`` is the client ``node_id`` is bound to (None for a node not seen yet); ``live_nodes`` the
        nodes connected now (for ``allow-rebind``). See :mod:`server.admission` for the identity and progress
        rules and :mod:`protos.report_validation` for the field checks."""
        report = parse_report(control)
        info = check_identity(self, report, client_hint, node_id, rnd, live_nodes)
        expect = self._expectation(report, rnd)
        if is_done_report(report):
            validate_done(report, arrays, expect=expect)
            check_done(self, rnd)
            info = self._bind(report.client_id, node_id, info)
            info.done, info.last_round = True, rnd
            return report
        check_progress(self, report, info, rnd)
        method = self.fed.fed_method
        if method.sends_adapters:
            adapter_shapes = self.adapter_shapes if self.num_layers else self._shapes_of(report)
        else:
            adapter_shapes = []
        known = self.strategy.known_leaves()
        tensors = validate_report(
            report, arrays, num_layers=len(adapter_shapes), adapter_shapes=adapter_shapes,
            sketch_dim=self.fed.sketch_dim, known_leaves=known, with_sketches=method.sends_sketches,
            with_adapters=method.sends_adapters, adapter_parts=method.sent_parts, expect=expect,
            prototypes=self.strategy.expected_prototypes(self, report), feature_dim=self.strategy.feature_dim,
        )
        if report.task_finished and (report.task_key in known):
            raise ProtocolError("malformed", f"leaf {report.task_key!r} already exists")
        # --- everything validated: apply
        new_task = info is None or info.task_index != int(report.task_index)
        info = self._record_progress(report, self._bind(report.client_id, node_id, info), rnd)
        if self.strategy.pool is not None:
            self.strategy.pool.ingest(report, tensors)
        if not method.sends_adapters:
            self.strategy.ingest_train(self, report, tensors, info)
            return report
        self.num_layers, self.adapter_shapes = len(adapter_shapes), adapter_shapes
        self.strategy.ingest_train(self, report, tensors, info)
        sketches = self._sketch_releases(report, new_task) if method.sends_sketches else 0
        self.privacy.record(report.client_id, sketches=sketches, adapters=1)
        adapter = {l: {p: tensors[adapter_name(l, p)] for p in method.sent_parts} for l in range(self.num_layers)}
        self.round_adapters[report.client_id] = (adapter, int(report.num_examples))
        return report

    def _sketch_releases(self, report: pb.ClientReport, new_task: bool) -> int:
        """Sketch releases a report makes: the running signature every round and the final one at a task's end;
        a shared-probe signature once per task (its later copies are post-processing of that release)."""
        if self.fed.tree_signature == "live":
            return 1 + int(report.task_finished)
        return int(new_task)

    def _expectation(self, report: pb.ClientReport, rnd: int) -> ReportExpectation:
        """What a report of ``report.client_id`` in ``rnd`` must agree with: what the server sent it and knows."""
        cid = report.client_id
        sent_round, offered = self.offered.get(cid, (0, {}))
        return ReportExpectation(
            round=rnd, client_id=cid, max_steps=self.fed.local_steps, batch_size=self.fed.batch_size,
            offered=offered if sent_round == rnd else {},
            acc_keys=[task_key(cid, i) for i in range(int(report.task_index) + 1)],
        )

    def _bind(self, client: str, node_id: int, info: ClientInfo | None) -> ClientInfo:
        """The client's record, created (bound to ``node_id``) on its first accepted report, or moved to it when
        :func:`server.admission.check_identity` allowed a rebind."""
        if info is None:
            info = self.clients[client] = ClientInfo(client, node_id)
        info.node_id = node_id
        return info

    def _record_progress(self, report: pb.ClientReport, info: ClientInfo, rnd: int) -> ClientInfo:
        """What every accepted report updates: the client's task, counts, the model size and, at a task's end,
        its accuracy row."""
        info.task_key, info.task_index = report.task_key, int(report.task_index)
        info.finished_last = bool(report.task_finished)
        info.examples += int(report.num_examples)
        info.last_round = rnd
        if "model_bytes" in report.metrics:
            self.model_bytes = int(report.metrics["model_bytes"])
        if report.task_finished:
            row = {k[4:]: float(v) for k, v in report.metrics.items() if k.startswith("acc/")}
            self.acc_rows.setdefault(report.client_id, []).append(row)
            for view, prefix in (("til", "til/"), ("task_inference", "ti/")):
                vrow = {k[len(prefix):]: float(v) for k, v in report.metrics.items() if k.startswith(prefix)}
                if vrow:
                    self.view_rows.setdefault(report.client_id, {}).setdefault(view, []).append(vrow)
        return info

    def record_error(self, rnd: int, node_id: int, exc: Exception) -> None:
        """Record (and log) a rejected or missing reply."""
        code = getattr(exc, "code", type(exc).__name__)
        self.errors.append({"round": rnd, "node_id": node_id, "code": code, "reason": str(exc)})
        log.warning("round %d: rejected reply from node %d (%s): %s", rnd, node_id, code, exc)

    # ------------------------------------------------------------------ aggregation
    def aggregate(self) -> int:
        """Compute next round's shared layers from this round's adapters; returns the number of (client, layer)
        shares."""
        adapters, self.round_adapters = self.round_adapters, {}
        self.shares = {}
        if not adapters or not self.num_layers:
            return 0
        self.shares = average_groups(adapters, self.strategy.aggregate_train(self, adapters),
                                     parts=self.strategy.share_parts)
        return sum(len(s) for s in self.shares.values())

    # ------------------------------------------------------------------ checkpoint and results
    def checkpoint(self) -> Path:
        """Atomically write the whole state to ``checkpoint.pb`` (see :mod:`server.checkpoint`)."""
        from .checkpoint import write_checkpoint

        return write_checkpoint(self)

    @classmethod
    def resume(cls, fed: FedSettings, out_dir: str | Path) -> GlobalState:
        """Rebuild the state from ``out_dir/checkpoint.pb`` (the config must match the checkpoint's)."""
        from .checkpoint import read_checkpoint

        return read_checkpoint(cls, fed, out_dir)

    def results(self) -> dict[str, Any]:
        """Per-client accuracy matrices and metrics, global means, communication accounting, the tree."""
        from .results import build_results

        return build_results(self)


