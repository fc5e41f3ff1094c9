"""The client's work, as plain functions over bytes and arrays (the ClientApp is a thin shell around this).

Per ``train`` message the client: loads its state from disk (each deployment message is a new process), finds
its current task from its schedule and the server round, starts the task when it is new (warm-starting the
live adapter from the server's ``reuse`` leaf), loads the group-averaged ``share`` layers, trains
``local_steps`` steps with TreeLoRA over its own earlier tasks, probes the received candidate leaves with a
per-layer LCB in sketch space (ξ = the Cauchy estimate of ‖ĝ − G‖₁ / dim), and replies with its live adapter,
the sketch of this round's signature, the ξ sums per pulled candidate, counts and — when the task ends — the
final sketch and one row of its accuracy matrix. Then it saves its state atomically. A replayed round (the
server restarted after a crash) gets the saved reply again instead of training twice.

What leaves the node is exactly: adapters (``adapter.*``), sketches (``sketch.*``, ``final.*``), counts and
metrics (the ClientReport). Raw data, gradients, full signatures and the head never do.
"""

from __future__ import annotations

import math
import os
import secrets
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protos import SCHEMA_VERSION
from protos import treelora_fed_pb2 as pb
from protos.wire import (
    ProtocolError,
    adapter_name,
    cand_name,
    WARM_HEAD_BIAS,
    WARM_HEAD_WEIGHT,
    encode_tensors,
    expected_assignment_tensors,
    final_name,
    parse_assignment,
    serialize,
    share_name,
    sketch_name,
    validate_tensors,
    warm_name,
)
from treelora.config import make_config
from treelora.data import iterate_batches
from treelora.learner import ContinualLearner
from treelora.privacy import gaussian_release
from treelora.sketch import LayerSketcher

from .schedule import make_schedule, shard
from .settings import FedSettings, NodeSettings

STATE_FILE = "state.pt"


@lru_cache(maxsize=4)
def _stream(name: str, seed: int, train_per_class: int, test_per_class: int) -> Any:
    from treelora.streams import load_stream

    return load_stream(name, seed=seed, train_per_class=train_per_class, test_per_class=test_per_class)


_LEARNERS: dict[tuple, tuple[ContinualLearner, dict[str, Any]]] = {}


def _learner(fed: FedSettings, device: str | None, precision: str = "auto") -> tuple[ContinualLearner, dict[str, Any]]:
    """One learner per process and config; each client's state is swapped in and out of it.

    Building a learner wraps the backbone with peft (seconds for MiniLM); in simulation one process serves
    many clients, so the learner is reused and only the small state (adapter, head, tree, optimiser) changes.
    """
    from treelora.backbones import load_backbone

    key = (fed.backbone, fed.learner_method, fed.regularizer, fed.l1_reduction, fed.lr, fed.head_lr, fed.lam,
           fed.batch_size, fed.max_length, fed.seed, fed.stream, fed.train_per_class, fed.test_per_class, device,
           precision)
    if key not in _LEARNERS:
        if fed.threads:
            torch.set_num_threads(fed.threads)
        stream = _stream(fed.stream, fed.seed, fed.train_per_class, fed.test_per_class)
        overrides: dict[str, Any] = dict(
            batch_size=fed.batch_size, max_length=fed.max_length, lr=fed.lr, head_lr=fed.head_lr, lam=fed.lam,
            seed=fed.seed, progress=False, device=device, precision=precision, rebuild_every=fed.rebuild_every,
        )
        if fed.regularizer:
            overrides["regularizer"] = fed.regularizer
        if fed.l1_reduction:
            overrides["l1_reduction"] = fed.l1_reduction
        cfg = make_config(fed.learner_method, **overrides)
        attn = "eager" if cfg.regularizer == "l1-grad" else "sdpa"
        backbone = load_backbone(fed.backbone, seed=fed.seed, attn_implementation=attn, device=device)
        learner = ContinualLearner(backbone, stream.num_classes(), cfg, stream=stream)
        _LEARNERS[key] = (learner, learner.state_dict())
    return _LEARNERS[key]


def _save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _secret_generator() -> torch.Generator:
    """DP noise from OS entropy: a seed the server could guess (run seed, round) would let it subtract the noise."""
    return torch.Generator().manual_seed(secrets.randbits(63))


class CandidateProbe:
    """Per-layer LCB over the received candidate leaves, in sketch space; sums ξ per (layer, leaf)."""

    def __init__(self, candidates: dict[int, dict[str, torch.Tensor]], sketcher: LayerSketcher, dims: list[int],
                 c: float = 2.0) -> None:
        self.candidates = candidates
        self.sketcher = sketcher
        self.dims = dims
        self.c = c
        self.sums: dict[tuple[int, str], float] = {}
        self.counts: dict[tuple[int, str], int] = {}
        self.t = 0

    def __call__(self, grads: list[torch.Tensor]) -> None:
        self.t += 1
        for layer, cands in self.candidates.items():
            if not cands:
                continue
            best, best_key = math.inf, None
            for leaf in cands:
                n = self.counts.get((layer, leaf), 0)
                lcb = -math.inf if n == 0 else self.sums[(layer, leaf)] / n - self.c * math.sqrt(math.log(max(self.t, 2)) / n)
                if lcb < best:
                    best, best_key = lcb, leaf
            assert best_key is not None
            mine = self.sketcher.layer(layer).apply(grads[layer].detach().float().cpu())
            xi = float(self.sketcher.distance(layer, mine, cands[best_key])) / self.dims[layer]
            self.sums[(layer, best_key)] = self.sums.get((layer, best_key), 0.0) + xi
            self.counts[(layer, best_key)] = self.counts.get((layer, best_key), 0) + 1

    def pulls(self) -> list[pb.Pull]:
        return [
            pb.Pull(layer=layer, leaf=leaf, xi_sum=self.sums[(layer, leaf)], count=n)
            for (layer, leaf), n in sorted(self.counts.items())
        ]


class ClientNode:
    """One client: its settings, schedule, data shard and on-disk state."""

    def __init__(self, fed: FedSettings, node: NodeSettings) -> None:
        self.fed, self.node = fed, node
        self.stream = _stream(fed.stream, fed.seed, fed.train_per_class, fed.test_per_class)
        self.schedule = make_schedule(
            fed.scenario, node.partition_id, node.num_partitions, len(self.stream.tasks), fed.tasks_per_client,
            fed.rounds_per_task, families=fed.families,
        )
        self.path = node.state_dir / STATE_FILE

    # ------------------------------------------------------------------ state
    def _load(self, learner: ContinualLearner, initial: dict[str, Any], run_id: str = "") -> dict[str, Any]:
        """This client's state; a state left by another run (another ``run_id``) is archived, not reused."""
        if self.path.exists() and run_id:
            previous = torch.load(self.path, weights_only=False).get("run_id", "")
            if previous and previous != run_id:
                os.replace(self.path, self.path.with_name(f"state.run-{previous}.pt"))
        if self.path.exists():
            try:
                state = torch.load(self.path, weights_only=False)
            except Exception as exc:  # noqa: BLE001 - a corrupt file must not be silently replaced
                raise RuntimeError(f"client state {self.path} is unreadable ({exc}); move it away to restart") from exc
            learner.load_state_dict(state["learner"])
            return state
        learner.load_state_dict(initial)
        return {"last_round": 0, "last_reply": None, "eval_rows": [], "examples_seen": 0, "run_id": run_id}

    def _save(self, learner: ContinualLearner, state: dict[str, Any]) -> None:
        state["learner"] = learner.state_dict()
        _save_atomic(state, self.path)

    def _shard(self, examples: list, stream_task: int) -> list:
        """This client's share of a task's training split, among the clients whose schedules hold that task."""
        holders = [
            c for c in range(self.node.num_partitions)
            if stream_task in make_schedule(self.fed.scenario, c, self.node.num_partitions, len(self.stream.tasks),
                                            self.fed.tasks_per_client, self.fed.rounds_per_task,
                                            families=self.fed.families).tasks
        ]
        part = shard(examples, holders.index(self.node.partition_id), len(holders), self.fed.seed)
        if not part:
            raise ValueError(f"client {self.node.client_id} gets no training example of stream task {stream_task}: "
                             f"{len(examples)} examples over {len(holders)} clients; raise train-per-class")
        return part

    def task_key(self, pos: int) -> str:
        """Global leaf key of this client's pos-th task."""
        return f"{self.node.client_id}/t{pos}"

    # ------------------------------------------------------------------ actions
    def train(self, control: bytes, arrays: dict[str, np.ndarray]) -> tuple[bytes, dict[str, np.ndarray]]:
        """Handle a ``train`` message; returns (ClientReport bytes, arrays). Raises ProtocolError on bad input."""
        assignment = parse_assignment(control)
        if assignment.client_id and assignment.client_id != self.node.client_id:
            raise ProtocolError("malformed", f"assignment for {assignment.client_id!r} sent to {self.node.client_id!r}")
        learner, initial = _learner(self.fed, self.node.device, self.node.precision)
        tensors = self._validate(assignment, arrays, learner)
        state = self._load(learner, initial, run_id=assignment.run_id)
        rnd = int(assignment.round)
        if rnd == state["last_round"] and state["last_reply"] is not None:
            return state["last_reply"]
        if rnd < state["last_round"]:
            raise ProtocolError("stale-round", f"round {rnd} is older than this client's last round {state['last_round']}")
        position = self.schedule.position(rnd)
        if position is None:
            report = pb.ClientReport(version=SCHEMA_VERSION, round=rnd, run_id=assignment.run_id,
                                     client_id=self.node.client_id, metrics={"stream_done": 1.0})
            return serialize(report), {}
        pos, last_round_of_task = position
        task = self.stream.tasks[self.schedule.tasks[pos]]
        key = self.task_key(pos)
        L = learner.lora.num_layers

        if learner.current is not None and learner.current.key != f"t{pos}":
            # this client missed the last round of its previous task: close it locally (its leaf is not reported)
            learner.end_task()
        if learner.current is None:
            warm = None
            if assignment.warm_start_leaf:
                warm = {f"{l}.{p}": tensors[warm_name(l, p)] for l in range(L) for p in ("A", "B")}
            learner.begin_task(f"t{pos}", task.classes, warm_start=warm)
        for la in assignment.layers:
            if la.shared:
                learner.lora.load_layer_state(la.layer, {p: tensors[share_name(la.layer, p)] for p in ("A", "B")})

        sketcher = LayerSketcher(learner.signature.dims(), out_dim=self.fed.sketch_dim, kind=self.fed.sketch_kind,
                                 seed=self.fed.sketch_seed)
        start = [torch.cat([p.detach().flatten() for p in learner.lora.params(l)]).cpu() for l in range(L)]
        candidates = {
            la.layer: {leaf: tensors[cand_name(leaf, la.layer)] for leaf in la.candidates} for la in assignment.layers
        }
        probe = CandidateProbe(candidates, sketcher, learner.signature.dims())
        learner.on_step = probe
        t0 = time.perf_counter()
        train = self._shard(task.train, self.schedule.tasks[pos])
        encoded = learner.encode(train)
        steps = max(1, int(assignment.local_steps) or self.fed.local_steps)
        learner.start_epoch(steps)
        losses: list[float] = []
        epoch = 0
        while len(losses) < steps:
            for batch in iterate_batches(encoded, self.fed.batch_size, shuffle=True, seed=hash((rnd, epoch)) & 0xFFFF):
                losses.append(learner.train_step(batch))
                if len(losses) >= steps:
                    break
            epoch += 1
        learner.on_step = None
        train_s = time.perf_counter() - t0

        out: dict[str, torch.Tensor] = {}
        live = [torch.cat([p.detach().flatten() for p in learner.lora.params(layer)]) for layer in range(L)]
        if self.fed.dp_adapter_noise > 0:
            update = [x.cpu() - y for x, y in zip(live, start)]
            noisy = gaussian_release(update, clip=self.fed.dp_adapter_clip, noise_multiplier=self.fed.dp_adapter_noise,
                                     generator=_secret_generator())
            live = [y + u for y, u in zip(start, noisy)]
        for layer in range(L):
            a, b = learner.lora.params(layer)
            out[adapter_name(layer, "A")] = live[layer][: a.numel()].view_as(a).cpu()
            out[adapter_name(layer, "B")] = live[layer][a.numel() :].view_as(b).cpu()
        dp_rng = _secret_generator()
        if self.fed.uses_sketches:
            current = sketcher.sketch(self._private(learner.signature.value(), dp_rng))
            for layer in range(L):
                out[sketch_name(layer)] = current[layer]
        metrics: dict[str, float] = {
            "train_s": train_s,
            "loss": float(np.mean(losses)),
            "model_bytes": float(sum(p.numel() * 4 for p in learner.model.parameters())),
        }
        if last_round_of_task:
            learner.end_task()
            if self.fed.uses_sketches:
                final = self._private(learner.tree.entries[f"t{pos}"].signature, dp_rng)
                for layer, s in enumerate(sketcher.sketch(final)):
                    out[final_name(layer)] = s
            row = {}
            for i in range(pos + 1):
                done_task = self.stream.tasks[self.schedule.tasks[i]]
                row[self.task_key(i)] = learner.evaluate(done_task, key=f"t{i}")
            state["eval_rows"].append(row)
            metrics.update({f"acc/{k}": v for k, v in row.items()})
        if self.fed.method == "local-only":
            out = {}  # no communication: only counts and metrics leave the node
        arrays_out, manifest = encode_tensors(
            out, lambda name: "float32" if name.startswith(("sketch.", "final.")) else self.fed.wire_dtype
        )
        examples = len(losses) * self.fed.batch_size
        report = pb.ClientReport(
            version=SCHEMA_VERSION, round=rnd, run_id=assignment.run_id, client_id=self.node.client_id,
            task_key=key, task_index=pos, task_finished=last_round_of_task, num_examples=examples,
            steps=len(losses), loss=float(np.mean(losses)), pulls=probe.pulls(), manifest=manifest, metrics=metrics,
        )
        reply = (serialize(report), arrays_out)
        state["last_round"], state["last_reply"] = rnd, reply
        state["examples_seen"] += examples
        self._save(learner, state)
        return reply

    def probe(self, control: bytes) -> tuple[bytes, dict[str, np.ndarray]]:
        """``query`` action: the sketch of the upcoming task's gradient at the live adapter (one batch), so the
        server can pick a warm-start leaf before the task trains. Nothing is changed on disk."""
        assignment = parse_assignment(control)
        learner, initial = _learner(self.fed, self.node.device, self.node.precision)
        state = self._load(learner, initial)
        position = self.schedule.position(int(assignment.round))
        if position is None:
            return serialize(pb.ClientReport(version=SCHEMA_VERSION, round=assignment.round,
                                             client_id=self.node.client_id, metrics={"stream_done": 1.0})), {}
        pos, _ = position
        task = self.stream.tasks[self.schedule.tasks[pos]]
        train = self._shard(task.train, self.schedule.tasks[pos])
        batch = next(iterate_batches(learner.encode(train), self.fed.batch_size, shuffle=True, seed=pos))
        learner.model.train()
        learner.optimizer.zero_grad(set_to_none=True)
        classes = torch.tensor(task.classes, device=learner.device)
        batch = {k: v.to(learner.device) for k, v in batch.items()}
        learner.model.loss(batch, classes).backward()
        grads = learner.lora.grad_vectors()
        learner.optimizer.zero_grad(set_to_none=True)
        sketcher = LayerSketcher(learner.lora.layer_dims(), out_dim=self.fed.sketch_dim, kind=self.fed.sketch_kind,
                                 seed=self.fed.sketch_seed)
        out = {sketch_name(l): s for l, s in enumerate(sketcher.sketch(grads))}
        arrays_out, manifest = encode_tensors(out, "float32")
        report = pb.ClientReport(version=SCHEMA_VERSION, round=assignment.round, client_id=self.node.client_id,
                                 task_key=self.task_key(pos), task_index=pos, num_examples=len(batch["labels"]),
                                 manifest=manifest, metrics={"probe": 1.0, "last_round": float(state["last_round"])})
        return serialize(report), arrays_out

    def evaluate(self, control: bytes) -> bytes:
        """``evaluate`` action: score every task this client has finished with its live adapter."""
        assignment = parse_assignment(control)
        learner, initial = _learner(self.fed, self.node.device, self.node.precision)
        state = self._load(learner, initial)
        keys, accs = [], []
        for local_key in sorted(learner.records, key=lambda k: int(k[1:])):
            pos = int(local_key[1:])
            keys.append(self.task_key(pos))
            accs.append(learner.evaluate(self.stream.tasks[self.schedule.tasks[pos]], key=local_key))
        report = pb.EvalReport(version=SCHEMA_VERSION, round=assignment.round, client_id=self.node.client_id,
                               task_keys=keys, accuracies=accs, tasks_seen=len(keys))
        return serialize(report)

    def _private(self, signature: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        """The signature as released: clipped and noised before sketching when DP is on, else unchanged."""
        if self.fed.dp_noise <= 0:
            return signature
        return gaussian_release(signature, clip=self.fed.dp_clip, noise_multiplier=self.fed.dp_noise,
                                generator=generator)

    def _validate(self, assignment: pb.Assignment, arrays: dict[str, np.ndarray],
                  learner: ContinualLearner) -> dict[str, torch.Tensor]:
        """Check an assignment completely against this client's model and config before anything changes."""
        num_layers = learner.lora.num_layers
        seen: set[int] = set()
        for la in assignment.layers:
            if not 0 <= la.layer < num_layers or la.layer in seen:
                raise ProtocolError("bad-layer", f"assignment names layer {la.layer} (again?); the model has {num_layers}")
            seen.add(la.layer)
        spec = assignment.sketch
        if spec.out_dim and (spec.kind, spec.out_dim, spec.seed) != (self.fed.sketch_kind, self.fed.sketch_dim,
                                                                    self.fed.sketch_seed):
            raise ProtocolError("bad-value", f"sketch spec {spec.kind}/{spec.out_dim}/{spec.seed} differs from this "
                                f"client's {self.fed.sketch_kind}/{self.fed.sketch_dim}/{self.fed.sketch_seed}")
        if not math.isfinite(assignment.lam) or assignment.lam < 0:
            raise ProtocolError("bad-value", f"lam must be a finite number >= 0, got {assignment.lam}")
        shapes = [tuple(tuple(p.shape) for p in learner.lora.params(l)) for l in range(num_layers)]
        expected = expected_assignment_tensors(assignment, adapter_shapes=shapes, sketch_dim=self.fed.sketch_dim)
        declared = {info.name for info in assignment.manifest}
        for optional in (WARM_HEAD_WEIGHT, WARM_HEAD_BIAS):  # the server never sends heads; tolerate none
            if optional not in declared:
                expected.pop(optional, None)
        return validate_tensors(arrays, assignment.manifest, expected=expected)
