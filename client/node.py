"""One client's work, as plain methods over bytes and arrays (the ClientApp is a thin shell around this).

Per ``train`` message the client (DESIGN.md §3, "a round"):

1. validates the assignment completely against its model and config before anything changes;
2. loads its state from disk (each deployment message is a new process); a replayed round (the server restarted
   after a crash) gets the saved reply again instead of training twice;
3. finds its current task from its schedule and the round, starts it when it is new (warm-starting the live
   adapter from the server's ``reuse`` leaf), and loads the group-averaged ``share`` layers;
4. trains ``local-steps`` steps of its continual learner while a :class:`~client.candidate_probe.CandidateProbe`
   measures ξ against the received candidate leaves in sketch space;
5. releases what the method sends (:class:`~client.outbox.Outbox`: adapter, sketches, DP; ``fedproto``: the task's
   class feature sums and counts, :mod:`client.prototypes`, after loading the global prototypes it received), and
   when the task ends closes it, adds its final sketch and one accuracy-matrix row;
6. replies with a ClientReport and saves its state durably.

``query`` (:meth:`ClientNode.probe`) returns the sketch of the upcoming task's one-batch gradient, so the server
can pick a warm-start leaf; ``evaluate`` scores every finished task with the live adapter.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from protos import treelora_fed_pb2 as pb
from protos.wire import (
    ProtocolError,
    cand_name,
    encode_tensors,
    make_eval,
    make_report,
    parse_assignment,
    parse_proto_name,
    serialize,
    share_name,
    shared_parts,
    sketch_name,
    validate_assignment,
    warm_name,
)
from treelora.data import iterate_batches
from treelora.fed.keys import local_key, task_key
from treelora.fed.scenarios import holders, make_schedule, shard
from treelora.fed.settings import FedSettings
from treelora.learner import ContinualLearner
from treelora.probe import normalise_layers
from treelora.sketch import LayerSketcher

from .candidate_probe import CandidateProbe
from .learner_cache import learner_for, stream_for
from .node_settings import NodeSettings
from .outbox import Outbox, layer_vectors
from .prototypes import class_sums, load_prototypes
from .state_store import ClientStore

Reply = tuple[bytes, dict[str, np.ndarray]]


class ClientNode:
    """One client: its settings, schedule, data shard and on-disk state."""

    def __init__(self, fed: FedSettings, node: NodeSettings) -> None:
        self.fed, self.node = fed, node
        self.stream = stream_for(fed)
        self.schedule = make_schedule(
            fed.scenario, node.partition_id, node.num_partitions, len(self.stream.tasks), fed.tasks_per_client,
            fed.rounds_per_task, families=fed.families,
        )
        self.store = ClientStore(node.state_dir)

    # ------------------------------------------------------------------ helpers
    def _learner(self) -> tuple[ContinualLearner, dict[str, Any]]:
        return learner_for(self.fed, self.node.device, self.node.precision)

    def _sketcher(self, dims: list[int]) -> LayerSketcher:
        return LayerSketcher(dims, out_dim=self.fed.sketch_dim, kind=self.fed.sketch_kind, seed=self.fed.sketch_seed)

    def _shard(self, examples: list, stream_task: int) -> list:
        """This client's share of a task's training split, among the clients whose schedules hold that task."""
        owners = holders(stream_task, self.fed.scenario, self.node.num_partitions, len(self.stream.tasks),
                         self.fed.tasks_per_client, self.fed.rounds_per_task, families=self.fed.families)
        part = shard(examples, owners.index(self.node.partition_id), len(owners), self.fed.seed)
        if not part:
            raise ValueError(f"client {self.node.client_id} gets no training example of stream task {stream_task}: "
                             f"{len(examples)} examples over {len(owners)} clients; raise train-per-class")
        return part

    def _task(self, pos: int) -> Any:
        return self.stream.tasks[self.schedule.tasks[pos]]

    def task_key(self, pos: int) -> str:
        """Global leaf key of this client's pos-th task."""
        return task_key(self.node.client_id, pos)

    def _done(self, rnd: int, run_id: str = "") -> Reply:
        return serialize(make_report(round=rnd, run_id=run_id, client_id=self.node.client_id,
                                     metrics={"stream_done": 1.0})), {}

    # ------------------------------------------------------------------ train
    def train(self, control: bytes, arrays: dict[str, np.ndarray]) -> Reply:
        """Handle a ``train`` message; returns (ClientReport bytes, arrays). Raises ProtocolError on bad input."""
        assignment = parse_assignment(control)
        if assignment.client_id and assignment.client_id != self.node.client_id:
            raise ProtocolError("malformed", f"assignment for {assignment.client_id!r} sent to {self.node.client_id!r}")
        learner, initial = self._learner()
        tensors = self._validate(assignment, arrays, learner)
        state = self.store.load(learner, initial, run_id=assignment.run_id)
        rnd = int(assignment.round)
        if rnd == state["last_round"] and state["last_reply"] is not None:
            return state["last_reply"]
        if rnd < state["last_round"]:
            raise ProtocolError(
                "stale-round", f"round {rnd} is older than this client's last round {state['last_round']}"
            )
        position = self.schedule.position(rnd)
        if position is None:
            return self._done(rnd, assignment.run_id)
        pos, last_round_of_task = position
        self._enter_task(learner, pos, assignment, tensors)
        for la in assignment.layers:
            if la.shared:
                learner.lora.load_layer_state(la.layer, {p: tensors[share_name(la.layer, p)] for p in shared_parts(la)})
        received = {p[0]: t for name, t in tensors.items() if (p := parse_proto_name(name)) is not None}
        load_prototypes(learner, received)

        sketcher = self._sketcher(learner.signature.dims())
        start = [v.cpu() for v in layer_vectors(learner.lora)]
        candidates = {
            la.layer: {leaf: tensors[cand_name(leaf, la.layer)] for leaf in la.candidates} for la in assignment.layers
        }
        outbox = Outbox(self.fed, sketcher)
        shared_probe = self._task_probe(learner, state, pos) if self.fed.tree_signature != "live" else None
        probe = CandidateProbe(candidates, sketcher, learner.signature.dims(), c=self.fed.lcb_c,
                               vectors=learner.signature.step_vectors, mine=shared_probe)
        steps = max(1, int(assignment.local_steps) or self.fed.local_steps)
        losses, train_s = self._train_steps(learner, pos, rnd, steps, probe)

        outbox.add_adapter(learner.lora, start)
        if self.fed.sends_prototypes:
            outbox.add_prototypes(self._task_sums(learner, state, pos))
        if shared_probe is None:
            outbox.add_sketch(learner.signature.value())
        else:
            outbox.add_released(shared_probe)
        metrics: dict[str, float] = {
            "train_s": train_s,
            "loss": float(np.mean(losses)),
            "model_bytes": float(sum(p.numel() * 4 for p in learner.model.parameters())),
        }
        if last_round_of_task:
            self._end_task(learner, pos)
            load_prototypes(learner, received)  # the federation's prototypes over the head's local ones
            if shared_probe is None:
                outbox.add_final(learner.tree.entries[local_key(pos)].signature)
            else:
                outbox.add_released(shared_probe, final=True)
            # one forward pass per seen task gives the accuracy row (CIL; TIL from the task's own snapshot under
            # task_aware, as evaluate() scores it) and the TIL and task-inference views (treelora.evaluation)
            views = [learner.evaluate_views(self._task(i), key=local_key(i)) for i in range(pos + 1)]
            row = {self.task_key(i): v["til" if learner.cfg.task_aware else "cil"] for i, v in enumerate(views)}
            state["eval_rows"].append(row)
            metrics.update({f"acc/{k}": v for k, v in row.items()})
            for i, v in enumerate(views):
                metrics[f"til/{self.task_key(i)}"] = v["til"]
                metrics[f"ti/{self.task_key(i)}"] = v["task_inference"]
        arrays_out, manifest = outbox.encode()
        examples = len(losses) * self.fed.batch_size
        report = make_report(
            round=rnd,
            run_id=assignment.run_id,
            client_id=self.node.client_id,
            task_key=self.task_key(pos),
            task_index=pos,
            task_finished=last_round_of_task,
            num_examples=examples,
            steps=len(losses),
            loss=float(np.mean(losses)),
            pulls=probe.pulls(),
            manifest=manifest,
            metrics=metrics,
        )
        reply = (serialize(report), arrays_out)
        state["last_round"], state["last_reply"] = rnd, reply
        state["examples_seen"] += examples
        self.store.save(learner, state)
        return reply

    def _enter_task(
        self, learner: ContinualLearner, pos: int, assignment: pb.Assignment, tensors: dict[str, torch.Tensor]
    ) -> None:
        """Make task ``pos`` the open one: close a task whose last round this client missed (its leaf is not
        reported), start a new one (warm-started when the server sent a leaf)."""
        if learner.current is not None and learner.current.key != local_key(pos):
            self._end_task(learner, int(learner.current.key[1:]))
        if learner.current is None:
            warm = None
            if assignment.warm_start_leaf:
                L = learner.lora.num_layers
                warm = {f"{l}.{p}": tensors[warm_name(l, p)] for l in range(L) for p in ("A", "B")}
            learner.begin_task(local_key(pos), self._task(pos).classes, warm_start=warm)

    def _end_task(self, learner: ContinualLearner, pos: int) -> None:
        """Close task ``pos``, handing the head the task's encoded shard when it needs features (``ncm``)."""
        task = self._task(pos)
        train = learner.encode(self._shard(task.train, self.schedule.tasks[pos])) \
            if learner.classifier.needs_features else None
        learner.end_task(train)

    def _task_sums(self, learner: ContinualLearner, state: dict[str, Any], pos: int
                   ) -> dict[int, tuple[torch.Tensor, int]]:
        """Task ``pos``'s per-class feature sums and counts over this client's shard, sent with every report: with
        a frozen encoder (``fedproto``) computed once per task and kept in the client's state; with a training one
        (``share-prototypes``) recomputed after each round's steps, at the adapter the report carries."""
        cached = state.get("prototype_sums")
        if cached is None or cached["task"] != pos or learner.cfg.lr > 0:
            task = self._task(pos)
            encoded = learner.encode(self._shard(task.train, self.schedule.tasks[pos]))
            cached = state["prototype_sums"] = {"task": pos, "sums": class_sums(learner, encoded, task.classes)}
        return cached["sums"]

    def _train_steps(
        self, learner: ContinualLearner, pos: int, rnd: int, steps: int, probe: CandidateProbe
    ) -> tuple[list[float], float]:
        """``steps`` optimisation steps over this client's shard, cycling through it; (losses, seconds)."""
        learner.on_step = probe
        t0 = time.perf_counter()
        encoded = learner.encode(self._shard(self._task(pos).train, self.schedule.tasks[pos]))
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
        return losses, time.perf_counter() - t0

    def _shared_probe(self, learner: ContinualLearner, pos: int) -> list[torch.Tensor]:
        """Task ``pos``'s shared-probe signature over this client's shard (the same before and after training: it is
        taken at the shared reference adapter and head, not at the live one), its layers scaled as ``probe-norm``
        says."""
        task = self._task(pos)
        signature = learner.probe_signature(self._shard(task.train, self.schedule.tasks[pos]), task.classes,
                                            batches=self.fed.probe_batches, kind=self.fed.tree_signature,
                                            seed=self.fed.seed)
        return normalise_layers(signature, self.fed.probe_norm)

    def _release_probe(self, learner: ContinualLearner, pos: int) -> list[torch.Tensor]:
        """Task ``pos``'s shared-probe signature, released (DP when on) and sketched at its own layer widths (the LoRA
        layers' ``[A, B]`` lengths for a gradient probe, their input widths for ``probe-input``, both for
        ``probe-input-grad``)."""
        signature = self._shared_probe(learner, pos)
        return Outbox(self.fed, self._sketcher([v.numel() for v in signature])).release(signature)

    def _task_probe(self, learner: ContinualLearner, state: dict[str, Any], pos: int) -> list[torch.Tensor]:
        """The released sketch of task ``pos``'s shared-probe signature: released (DP) once per task, when the task
        first trains, kept in the client's state and sent again with every report of the task."""
        cached = state.get("shared_probe")
        if cached is None or cached["task"] != pos:
            cached = state["shared_probe"] = {"task": pos, "sketch": self._release_probe(learner, pos)}
        return cached["sketch"]

    # ------------------------------------------------------------------ query and evaluate
    def probe(self, control: bytes) -> Reply:
        """``query`` action: the sketch of the upcoming task's gradient at the live adapter (one batch), so the
        server can pick a warm-start leaf before the task trains. Nothing is changed on disk."""
        assignment = parse_assignment(control)
        learner, initial = self._learner()
        state = self.store.load(learner, initial)
        position = self.schedule.position(int(assignment.round))
        if position is None:
            return self._done(int(assignment.round))
        pos, _ = position
        if self.fed.tree_signature != "live":
            return self._shared_probe_reply(learner, state, assignment, pos)
        task = self._task(pos)
        train = self._shard(task.train, self.schedule.tasks[pos])
        batch = next(iterate_batches(learner.encode(train), self.fed.batch_size, shuffle=True, seed=pos))
        learner.model.train()
        learner.optimizer.zero_grad(set_to_none=True)
        classes = torch.tensor(task.classes, device=learner.device)
        batch = {k: v.to(learner.device) for k, v in batch.items()}
        learner.model.loss(batch, classes).backward()
        vectors = learner.signature.probe_vectors(learner.lora.grad_vectors())
        learner.optimizer.zero_grad(set_to_none=True)
        sketches = Outbox(self.fed, self._sketcher(learner.signature.dims())).release(vectors)  # DP when on
        arrays_out, manifest = encode_tensors({sketch_name(l): s for l, s in enumerate(sketches)}, "float32")
        report = make_report(
            round=assignment.round,
            client_id=self.node.client_id,
            task_key=self.task_key(pos),
            task_index=pos,
            num_examples=len(batch["labels"]),
            manifest=manifest,
            metrics={"probe": 1.0, "last_round": float(state["last_round"])},
        )
        return serialize(report), arrays_out

    def _shared_probe_reply(self, learner: ContinualLearner, state: dict[str, Any], assignment: pb.Assignment,
                            pos: int) -> Reply:
        """The query reply when leaves are placed by a shared-probe signature: the new task's probe, released."""
        sketches = self._release_probe(learner, pos)
        arrays_out, manifest = encode_tensors({sketch_name(l): s for l, s in enumerate(sketches)}, "float32")
        shard = len(self._shard(self._task(pos).train, self.schedule.tasks[pos]))
        report = make_report(round=assignment.round, client_id=self.node.client_id, task_key=self.task_key(pos),
                             task_index=pos, num_examples=min(shard, self.fed.probe_batches * self.fed.batch_size),
                             manifest=manifest, metrics={"probe": 1.0, "last_round": float(state["last_round"])})
        return serialize(report), arrays_out

    def evaluate(self, control: bytes) -> bytes:
        """``evaluate`` action: score every task this client has finished with its live adapter."""
        assignment = parse_assignment(control)
        learner, initial = self._learner()
        self.store.load(learner, initial)
        keys, accs = [], []
        for key in sorted(learner.records, key=lambda k: int(k[1:])):
            pos = int(key[1:])
            keys.append(self.task_key(pos))
            accs.append(learner.evaluate(self._task(pos), key=key))
        return serialize(make_eval(round=assignment.round, client_id=self.node.client_id, task_keys=keys,
                                   accuracies=accs))

    # ------------------------------------------------------------------ validation
    def _validate(
        self, assignment: pb.Assignment, arrays: dict[str, np.ndarray], learner: ContinualLearner
    ) -> dict[str, torch.Tensor]:
        """Check an assignment completely against this client's model and config before anything changes (the
        contract's one assignment validator, :func:`protos.validation.validate_assignment`)."""
        L = learner.lora.num_layers
        proto_classes, feature_dim = None, 0
        if self.fed.sends_prototypes:
            position = self.schedule.position(int(assignment.round)) if assignment.round >= 1 else None
            last = position[0] if position is not None else -1
            proto_classes = {c for i in range(last + 1) for c in self._task(i).classes}
            feature_dim = int(learner.model.head.weight.shape[1])
        return validate_assignment(
            assignment,
            arrays,
            num_layers=L,
            adapter_shapes=[tuple(tuple(p.shape) for p in learner.lora.params(l)) for l in range(L)],
            sketch_dim=self.fed.sketch_dim,
            sketch_kind=self.fed.sketch_kind,
            sketch_seed=self.fed.sketch_seed,
            max_local_steps=self.node.max_local_steps,
            max_candidates=self.fed.candidates_per_layer,
            proto_classes=proto_classes,
            feature_dim=feature_dim,
        )
