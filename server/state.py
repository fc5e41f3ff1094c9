"""The server's federated state as plain, tested code: global tree, per-client bandits, leaf store, sharing.

* **Global tree** over finished (client, task) leaves, in sketch space: a leaf's signature is its final
  per-layer Cauchy sketch, and distances are the median estimator of the L1 distance. Inserted as tasks finish,
  rebuilt after ``max(rebuild-every, rebuild-growth × size at the last build)`` inserts: a small tree is rebuilt
  as often as a client's, a large one once it has grown by a fixed fraction, so rebuilding costs O(1) builds per
  insert amortised instead of one O(N) build every 4 inserts.
* **Bandits**: one :class:`treelora.bandit.TreeLCBBandit` per client, over the global tree, reset when the
  client starts a task (ξ measures distance to the task being trained). Each round the server descends it per
  layer to choose that layer's candidate leaves (never the client's own), and the ξ the client observed for them
  update μ̂ and n along the pulled paths.
* **Sharing**: a client's current task is placed in the tree by its latest sketch; layer d's adapters are
  averaged (weighted by examples) among the clients whose current tasks share the tree node at depth d. Deeper
  layers than a client's path stay personal; before any leaf exists every client sits in the root, so only layer 0
  is shared. ``fedavg-lora`` averages every layer over every client; ``local-only`` shares nothing.
* **Reuse**: when a client starts a task, its probe sketch (one batch's gradient) is located in the tree and the
  nearest leaf's adapter warm-starts the task.

Trust on first use: the adapter shapes and layer count are learned from the first valid report and every later
report must match them. A report is validated completely before anything changes, so a bad report never
corrupts the tree, the statistics or the leaf store; the rejection is recorded in ``errors``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from client.settings import FedSettings
from protos import SCHEMA_VERSION
from protos import treelora_fed_pb2 as pb
from protos.wire import (
    ProtocolError,
    adapter_name,
    cand_name,
    encode_tensors,
    final_name,
    parse_checkpoint,
    parse_report,
    serialize,
    share_name,
    sketch_name,
    validate_report,
    validate_tensors,
    warm_name,
)
from treelora.bandit import TreeLCBBandit

from .privacy import ClientPrivacy
from treelora.sketch import LinearSketch
from treelora.tree import TaskTree

log = logging.getLogger("treelora.server")
CHECKPOINT = "checkpoint.pb"


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


@dataclass
class RoundLog:
    """Per-round accounting, written to the results."""

    round: int
    bytes_down: int = 0
    bytes_up: int = 0
    replies: int = 0
    rejected: int = 0
    server_s: float = 0.0
    leaves: int = 0
    shared_layers: int = 0


class GlobalState:
    """Global tree, bandits, leaf store and sharing plan of a TreeLoRA-Fed run."""

    def __init__(self, fed: FedSettings, out_dir: str | Path, run_id: str = "") -> None:
        self.fed = fed
        self.out_dir = Path(out_dir)
        self.leaf_dir = self.out_dir / "leaves"
        self.run_id = run_id
        self.round = 0
        self.num_layers = 0
        self.adapter_shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        self.tree: TaskTree | None = None
        self.bandits: dict[str, TreeLCBBandit] = {}
        self.clients: dict[str, ClientInfo] = {}
        self.leaves: dict[str, dict[str, Any]] = {}
        self.sketches: dict[str, list[torch.Tensor]] = {}  # client → latest current-task sketch
        self.shares: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
        self.warm: dict[str, str] = {}
        self.acc_rows: dict[str, list[dict[str, float]]] = {}
        self.history: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.model_bytes = 0
        self._inserts = 0
        self._since_build = 0  # inserts since the tree was last rebuilt
        self._built_size = 0  # leaves at that rebuild
        self._round_adapters: dict[str, tuple[dict[int, dict[str, torch.Tensor]], int]] = {}
        self._sketch = LinearSketch(1, fed.sketch_dim, fed.sketch_kind, fed.sketch_seed)
        self.privacy = ClientPrivacy(fed)

    # ------------------------------------------------------------------ tree
    def _distance(self, layer: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # every sketch was validated (width, finiteness) when its report arrived; centres are means of those
        return self._sketch.distance(a, b, checked=False)

    def _ensure_tree(self) -> TaskTree:
        if self.tree is None:
            self.tree = TaskTree(self.num_layers, split="l1-median", leaf_size=self.fed.leaf_size,
                                 distance_fn=self._distance)
        return self.tree

    def _bandit(self, client: str) -> TreeLCBBandit:
        if client not in self.bandits:
            self.bandits[client] = TreeLCBBandit(self._ensure_tree(), c=2.0, seed=self.fed.seed)
        return self.bandits[client]

    @property
    def uses_tree(self) -> bool:
        return self.fed.method == "treelora"

    def max_rounds(self) -> int:
        return self.fed.num_rounds or self.fed.tasks_per_client * self.fed.rounds_per_task

    # ------------------------------------------------------------------ outgoing
    def assignment(self, client: str, rnd: int) -> tuple[pb.Assignment, dict[str, np.ndarray]]:
        """The ``train`` message for one client: candidates, shared layers and warm start, with tensors."""
        info = self.clients.get(client)
        layers: list[pb.LayerAssignment] = []
        tensors: dict[str, torch.Tensor] = {}
        if info is not None and self.uses_tree and self.tree is not None and len(self.tree) > 0:
            if info.finished_last:
                self.bandits.pop(client, None)  # a new task: statistics start afresh
            bandit = self._bandit(client)
            info.bandit_t += 1
            own = f"{client}/"
            path = self.tree.locate(self.sketches[client]) if client in self.sketches else []
            for layer in range(self.num_layers):
                chosen: list[str] = []
                for _ in range(self.fed.candidates_per_layer):
                    leaf = bandit.select(layer, info.bandit_t, lambda k: not k.startswith(own) and k not in chosen)
                    if leaf is None:
                        break
                    chosen.append(leaf)
                    tensors[cand_name(leaf, layer)] = self.tree.entries[leaf].signature[layer]
                node = path[min(layer, len(path) - 1)] if path else None
                layers.append(pb.LayerAssignment(layer=layer, candidates=chosen, group_node=node.path if node else "",
                                                 group_size=len(node.keys) if node else 0))
        shares = self.shares.get(client, {})
        by_layer = {la.layer: la for la in layers}
        for layer, ab in sorted(shares.items()):
            la = by_layer.get(layer)
            if la is None:
                la = pb.LayerAssignment(layer=layer)
                layers.append(la)
                by_layer[layer] = la
            la.shared = True
            tensors[share_name(layer, "A")], tensors[share_name(layer, "B")] = ab["A"], ab["B"]
        warm_leaf = self.warm.pop(client, "") if info is not None and info.finished_last else ""
        if warm_leaf:
            adapter = self.load_leaf_adapter(warm_leaf)
            for layer in range(self.num_layers):
                for p in ("A", "B"):
                    tensors[warm_name(layer, p)] = adapter[f"{layer}.{p}"]
        arrays, manifest = encode_tensors(
            tensors, lambda n: "float32" if n.startswith("cand.") else self.fed.wire_dtype
        )
        layers.sort(key=lambda la: la.layer)
        msg = pb.Assignment(
            version=SCHEMA_VERSION, round=rnd, run_id=self.run_id, client_id=client if info else "",
            local_steps=self.fed.local_steps, lam=self.fed.lam, layers=layers, warm_start_leaf=warm_leaf,
            manifest=manifest,
            sketch=pb.SketchSpec(kind=self.fed.sketch_kind, out_dim=self.fed.sketch_dim, seed=self.fed.sketch_seed),
        )
        return msg, arrays

    def control(self, client: str, rnd: int) -> pb.Assignment:
        """A tensor-free assignment (for ``query`` and ``evaluate`` messages)."""
        return pb.Assignment(version=SCHEMA_VERSION, round=rnd, run_id=self.run_id,
                             client_id=client if client in self.clients else "")

    def wants_probe(self, client: str) -> bool:
        """Probe before a task starts, when there is a leaf to reuse."""
        info = self.clients.get(client)
        return (self.uses_tree and self.fed.warm_start and info is not None and info.finished_last
                and not info.done and self.tree is not None and len(self.tree) > 0)

    # ------------------------------------------------------------------ incoming
    def _shapes_of(self, report: pb.ClientReport) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """Per-layer (A, B) shapes declared by a report's manifest (trust on first use: learned, once it is valid)."""
        shapes: dict[int, dict[str, tuple[int, ...]]] = {}
        for info in report.manifest:
            parts = info.name.split(".")
            if len(parts) == 3 and parts[0] == "adapter" and parts[1].isdigit() and parts[2] in ("A", "B"):
                shapes.setdefault(int(parts[1]), {})[parts[2]] = tuple(int(d) for d in info.shape)
        n = len(shapes)
        if n == 0 or sorted(shapes) != list(range(n)) or any(len(v) != 2 for v in shapes.values()):
            raise ProtocolError("missing-tensor", "first report must carry adapter.<l>.A/B for every layer")
        return [(shapes[l]["A"], shapes[l]["B"]) for l in range(n)]

    def ingest(self, client_hint: str | None, node_id: int, rnd: int, control: bytes,
               arrays: dict[str, np.ndarray]) -> pb.ClientReport:
        """Validate a train reply completely, then apply it. Raises ProtocolError and changes nothing on bad input."""
        report = parse_report(control)
        if client_hint is not None and report.client_id != client_hint:
            raise ProtocolError("malformed", f"node {node_id} is {client_hint!r} but reported as {report.client_id!r}")
        if not report.client_id or "/" in report.client_id:
            raise ProtocolError("malformed", f"bad client id {report.client_id!r}")
        if report.metrics.get("stream_done"):
            info = self.clients.setdefault(report.client_id, ClientInfo(report.client_id, node_id))
            info.done = True
            return report
        if not report.task_key.startswith(f"{report.client_id}/"):
            raise ProtocolError("malformed", f"task key {report.task_key!r} does not belong to {report.client_id!r}")
        if self.fed.method == "local-only":
            return self._ingest_metrics_only(report, node_id, rnd, arrays)
        adapter_shapes = self.adapter_shapes if self.num_layers else self._shapes_of(report)
        known = set(self.tree.entries) if self.tree is not None else set()
        tensors = validate_report(
            report, arrays, num_layers=len(adapter_shapes), adapter_shapes=adapter_shapes,
            sketch_dim=self.fed.sketch_dim, known_leaves=known, expected_round=rnd,
            with_sketches=self.fed.uses_sketches,
        )
        if report.task_finished and (report.task_key in known):
            raise ProtocolError("malformed", f"leaf {report.task_key!r} already exists")
        # --- everything validated: apply
        self.num_layers, self.adapter_shapes = len(adapter_shapes), adapter_shapes
        info = self._record_progress(report, node_id)
        if report.pulls and self.tree is not None:
            bandit = self._bandit(report.client_id)
            for pull in report.pulls:
                bandit.update(pull.layer, pull.leaf, pull.xi_sum / pull.count, max(info.bandit_t, 1), pull.count)
        sketches = (1 + int(report.task_finished)) if self.fed.uses_sketches else 0
        self.privacy.record(report.client_id, sketches=sketches, adapters=1)
        adapter = {l: {p: tensors[adapter_name(l, p)] for p in ("A", "B")} for l in range(self.num_layers)}
        self._round_adapters[report.client_id] = (adapter, int(report.num_examples))
        if not self.fed.uses_sketches:  # fedavg-lora: adapters only, no tree
            return report
        self.sketches[report.client_id] = [tensors[sketch_name(l)] for l in range(self.num_layers)]
        if report.task_finished:
            self._add_leaf(report, adapter, [tensors[final_name(l)] for l in range(self.num_layers)])
            self.sketches.pop(report.client_id, None)
        return report

    def _record_progress(self, report: pb.ClientReport, node_id: int) -> ClientInfo:
        """What every accepted report updates: the client's task, counts, the model size and, at a task's end,
        its accuracy row."""
        info = self.clients.setdefault(report.client_id, ClientInfo(report.client_id, node_id))
        info.node_id, info.task_key, info.task_index = node_id, report.task_key, int(report.task_index)
        info.finished_last = bool(report.task_finished)
        info.examples += int(report.num_examples)
        if "model_bytes" in report.metrics:
            self.model_bytes = int(report.metrics["model_bytes"])
        if report.task_finished:
            row = {k[4:]: float(v) for k, v in report.metrics.items() if k.startswith("acc/")}
            self.acc_rows.setdefault(report.client_id, []).append(row)
        return info

    def _ingest_metrics_only(self, report: pb.ClientReport, node_id: int, rnd: int,
                             arrays: dict[str, np.ndarray]) -> pb.ClientReport:
        """``local-only``: a report of counts and metrics, no tensors at all."""
        validate_tensors(arrays, report.manifest, expected={})
        if report.round != rnd:
            raise ProtocolError("bad-round", f"report for round {report.round}, expected {rnd}")
        for key, value in report.metrics.items():
            if not math.isfinite(value):
                raise ProtocolError("non-finite", f"metric {key!r} is not finite")
        self._record_progress(report, node_id)
        return report

    def _add_leaf(self, report: pb.ClientReport, adapter: dict[int, dict[str, torch.Tensor]],
                  final: list[torch.Tensor]) -> None:
        self.leaf_dir.mkdir(parents=True, exist_ok=True)
        fname = report.task_key.replace("/", "__") + ".safetensors"
        flat = {f"{l}.{p}": t.contiguous() for l, ab in adapter.items() for p, t in ab.items()}
        # the leaf's sketch is written once, here, and the checkpoint refers to it instead of rewriting it
        flat.update({f"sketch.{l}": t.contiguous() for l, t in enumerate(final)})
        tmp = self.leaf_dir / f".{fname}.tmp"
        save_file(flat, str(tmp))
        with open(tmp, "rb+") as f:  # durable before any checkpoint refers to it
            os.fsync(f.fileno())
        os.replace(tmp, self.leaf_dir / fname)
        tree = self._ensure_tree()
        self._inserts += 1
        self._since_build += 1
        rebuild = self._since_build >= max(self.fed.rebuild_every, self.fed.rebuild_growth * self._built_size)
        tree.add(report.task_key, final, weight=float(report.num_examples), rebuild=rebuild)
        if rebuild:
            self._since_build, self._built_size = 0, len(tree)
        self.leaves[report.task_key] = {
            "key": report.task_key, "client_id": report.client_id, "task_key": report.task_key,
            "task_index": int(report.task_index), "adapter_file": fname, "num_examples": int(report.num_examples),
        }

    def _leaf_file(self, key: str) -> dict[str, torch.Tensor]:
        rec = self.leaves.get(key)
        if rec is None:
            raise KeyError(f"unknown leaf {key!r}")
        path = self.leaf_dir / rec["adapter_file"]
        if not path.exists():
            raise FileNotFoundError(f"leaf {key!r}: its file {path} is missing (the leaf store was moved or deleted)")
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types on a truncated or garbled file
            raise ValueError(f"leaf {key!r}: its file {path} cannot be read ({exc})") from exc

    def load_leaf_adapter(self, key: str) -> dict[str, torch.Tensor]:
        """A stored leaf's adapter ({"<l>.A": ..., "<l>.B": ...})."""
        return {k: v for k, v in self._leaf_file(key).items() if not k.startswith("sketch.")}

    def load_leaf_sketch(self, key: str) -> list[torch.Tensor]:
        """A stored leaf's final per-layer sketch (its signature in the global tree)."""
        flat = self._leaf_file(key)
        names = [f"sketch.{l}" for l in range(self.num_layers)]
        if any(n not in flat for n in names):
            raise ValueError(f"leaf {key!r}: its file has no sketch for every one of {self.num_layers} layers")
        return [flat[n] for n in names]

    def ingest_probe(self, client: str, control: bytes, arrays: dict[str, np.ndarray]) -> str:
        """Pick the warm-start leaf for a client about to start a task: its probe sketch located in the tree."""
        report = parse_report(control)
        if report.client_id != client:
            raise ProtocolError("malformed", f"probe from {report.client_id!r}, expected {client!r}")
        if report.metrics.get("stream_done") or self.tree is None or len(self.tree) == 0:
            return ""
        expected = {sketch_name(l): (self.fed.sketch_dim,) for l in range(self.num_layers)}
        tensors = validate_tensors(arrays, report.manifest, expected=expected)
        probe = [tensors[sketch_name(l)] for l in range(self.num_layers)]
        leaf = self.tree.locate(probe)[-1]
        best = min(leaf.keys, key=lambda k: sum(
            float(self._distance(l, probe[l], self.tree.entries[k].signature[l])) for l in range(self.num_layers)))
        self.warm[client] = best
        return best

    def record_error(self, rnd: int, node_id: int, exc: Exception) -> None:
        code = getattr(exc, "code", type(exc).__name__)
        self.errors.append({"round": rnd, "node_id": node_id, "code": code, "reason": str(exc)})
        log.warning("round %d: rejected reply from node %d (%s): %s", rnd, node_id, code, exc)

    # ------------------------------------------------------------------ aggregation
    def aggregate(self) -> int:
        """Compute next round's shared layers from this round's adapters; returns the number of (client, layer)
        shares."""
        adapters, self._round_adapters = self._round_adapters, {}
        self.shares = {}
        if self.fed.method == "local-only" or not adapters or not self.num_layers:
            return 0
        groups: dict[tuple[int, str], list[str]] = {}
        for client in adapters:
            if self.fed.method == "fedavg-lora":
                path_ids = ["*"] * self.num_layers
            elif not self.fed.share_layers:
                path_ids = []
            else:
                sketch = self.sketches.get(client)
                if self.tree is None or len(self.tree) == 0 or sketch is None:
                    path_ids = [""]
                else:
                    path_ids = [n.path for n in self.tree.locate(sketch)]
            for layer, gid in enumerate(path_ids[: self.num_layers]):
                groups.setdefault((layer, gid), []).append(client)
        count = 0
        for (layer, _), members in groups.items():
            if len(members) < 2:
                continue
            weights = torch.tensor([float(adapters[c][1]) for c in members])
            weights = weights / weights.sum()
            avg = {p: sum(w * adapters[c][0][layer][p] for w, c in zip(weights, members)) for p in ("A", "B")}
            for c in members:
                self.shares.setdefault(c, {})[layer] = avg
                count += 1
        return count

    # ------------------------------------------------------------------ checkpoint
    def checkpoint(self) -> Path:
        """Atomically write the whole state (tree, bandits, leaves, shares, accounting) to checkpoint.pb."""
        blob = io.BytesIO()
        tree = None
        if self.tree is not None:
            tree = self.tree.to_dict()
            for entry in tree["entries"]:  # stored once in the leaf's file: refer to it, do not rewrite it
                if entry["key"] in self.leaves and entry["members"] == [entry["key"]]:
                    entry["signature"] = None
        torch.save({"tree": tree, "shares": self.shares, "sketches": self.sketches}, blob)
        meta = {
            "num_layers": self.num_layers, "adapter_shapes": self.adapter_shapes,
            "bandits": {c: b.state() for c, b in self.bandits.items()},
            "clients": {c: asdict(i) for c, i in self.clients.items()},
            "warm": self.warm, "acc_rows": self.acc_rows, "history": self.history, "errors": self.errors,
            "inserts": self._inserts, "since_build": self._since_build, "built_size": self._built_size,
            "model_bytes": self.model_bytes, "privacy": self.privacy.state_dict(),
        }
        msg = pb.Checkpoint(
            version=SCHEMA_VERSION, round=self.round, run_id=self.run_id, tree=blob.getvalue(),
            bandit=json.dumps(meta).encode(), created_unix=time.time(),
            leaves=[pb.LeafRecord(**rec) for rec in self.leaves.values()],
            config={k: str(v) for k, v in asdict(self.fed).items()},
        )
        path = self.out_dir / CHECKPOINT
        self.out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.out_dir, prefix=".checkpoint.")
        with os.fdopen(fd, "wb") as f:
            f.write(serialize(msg))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def resume(cls, fed: FedSettings, out_dir: str | Path) -> "GlobalState":
        """Rebuild the state from ``out_dir/checkpoint.pb`` (the config must match the checkpoint's)."""
        path = Path(out_dir) / CHECKPOINT
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}; start without resume")
        msg = parse_checkpoint(path.read_bytes())
        saved = dict(msg.config)
        for key, value in asdict(fed).items():
            if key in ("resume", "num_rounds", "out_dir", "timeout_s", "eval_every", "threads"):
                continue
            if key in saved and saved[key] != str(value):
                raise ValueError(f"resume: run-config {key.replace('_', '-')}={value!r} differs from the "
                                 f"checkpoint's {saved[key]!r}")
        state = cls(fed, out_dir, run_id=msg.run_id)
        state.round = int(msg.round)
        meta = json.loads(msg.bandit.decode())
        state.num_layers = meta["num_layers"]
        state.adapter_shapes = [tuple(tuple(s) for s in pair) for pair in meta["adapter_shapes"]]
        blob = torch.load(io.BytesIO(msg.tree), weights_only=False)
        state.leaves = {r.key: {f.name: getattr(r, f.name) for f in pb.LeafRecord.DESCRIPTOR.fields} for r in msg.leaves}
        if blob["tree"] is not None:
            for entry in blob["tree"]["entries"]:
                if entry["signature"] is None:
                    entry["signature"] = state.load_leaf_sketch(entry["key"])
            state.tree = TaskTree.from_dict(blob["tree"], distance_fn=state._distance)
        state.shares, state.sketches = blob["shares"], blob["sketches"]
        for c, b in meta["bandits"].items():
            state._bandit(c).load_state(b)
        state.clients = {c: ClientInfo(**i) for c, i in meta["clients"].items()}
        state.warm, state.acc_rows = meta["warm"], meta["acc_rows"]
        state.history, state.errors = meta["history"], meta["errors"]
        state._inserts, state.model_bytes = meta["inserts"], meta["model_bytes"]
        state._since_build = meta.get("since_build", meta["inserts"] % fed.rebuild_every)
        state._built_size = meta.get("built_size", 0)
        state.privacy.load_state_dict(meta.get("privacy", {}))
        return state

    # ------------------------------------------------------------------ results
    def results(self) -> dict[str, Any]:
        """Per-client accuracy matrices and metrics, global means, communication accounting, the tree."""
        from treelora.metrics import mean_std, summarize

        per_client = {}
        for client, rows in sorted(self.acc_rows.items()):
            # row j was written when the j-th *reported* task ended; a task whose last round the client missed
            # has no row, so the matrix covers the tasks that have one (each row holds every earlier task)
            index = lambda k: int(k.rsplit("/t", 1)[1])  # noqa: E731
            keys = [max(row, key=index) for row in rows if row]
            T = len(keys)
            R = np.full((T, T), np.nan)
            for j, row in enumerate(r for r in rows if r):
                for i, k in enumerate(keys[: j + 1]):
                    R[j, i] = row.get(k, np.nan)
            complete = T > 0 and not np.isnan(R[np.tril_indices(T)]).any()
            per_client[client] = {
                "tasks": keys,
                "accuracy_matrix": [[None if math.isnan(x) else x for x in r] for r in R],
                "metrics": summarize(R) if complete else {},
            }
        global_metrics = {}
        for m in ("acc", "bwt", "bwt_clipped", "forgetting"):
            vals = [c["metrics"][m] for c in per_client.values() if m in c["metrics"]]
            if vals:
                global_metrics[m] = mean_std(vals)
        up = sum(h["bytes_up"] for h in self.history)
        down = sum(h["bytes_down"] for h in self.history)
        client_rounds = sum(h["replies"] for h in self.history) or 1
        return {
            "method": self.fed.method,
            "config": {k: v for k, v in asdict(self.fed).items()},
            "rounds": self.round,
            "per_client": per_client,
            "metrics": {k: {"mean": v[0], "std": v[1]} for k, v in global_metrics.items()},
            "bytes_up_total": up,
            "bytes_down_total": down,
            "bytes_up_per_client_round": up / client_rounds,
            "bytes_down_per_client_round": down / client_rounds,
            "full_model_bytes": self.model_bytes,
            "up_vs_full_model": (up / client_rounds) / self.model_bytes if self.model_bytes else None,
            "history": self.history,
            "errors": self.errors,
            "privacy": self.privacy.report(),
            "leaves": list(self.leaves),
            "tree": None if self.tree is None else self.tree.render(),
        }
