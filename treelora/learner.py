"""The continual learner: trains a task stream with a named method and reports the accuracy matrix.

One *live* LoRA (and one class-incremental head) is trained through all tasks; at the end of each task its state
is snapshotted as that task's adapter and stored, with the task's signature, in a :class:`TaskTree`. While a
later task trains, a step goes (DESIGN.md §2):

1. the **selector** (:mod:`treelora.selectors`: tree LCB descent, flat LCB, the released softmax sampler, none)
   picks for every layer one stored task, whose signature is the layer's target;
2. the **regulariser** (:mod:`treelora.regularizers`) performs the backward of the task loss plus the
   **method**'s penalty (:mod:`treelora.methods`: EWC's, O-LoRA's), pulling the step toward (or, as released,
   along) the targets;
3. the step's gradients feed the running **signature**, the ``on_step`` callback and the method;
4. the selector observes each layer's distance ξ to its target; then the optimiser steps.

Each of selector, regulariser and method is a class registered under the name the config uses, so the learner
never compares names. Inference is task-free by default: the live adapter and the head's logits over every class
seen so far (while training, logits are masked to the current task's classes). ``task_aware=True`` evaluates each
task with its own snapshot and its own classes: an **oracle** (its BWT and forgetting are 0 by construction), a
reference row only. :meth:`evaluate_views` scores CIL, TIL and task inference from one forward pass
(:mod:`treelora.evaluation`); the ``head`` variant (:mod:`treelora.heads`) decides what scores a class.

The class is also the client-side engine of the federation: ``begin_task`` / ``start_epoch`` / ``train_step`` /
``end_task`` let a caller train a task a few steps at a time, and ``state_dict`` / ``load_state_dict`` swap one
client's state in and out.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .adapters import LayerwiseLoRA
from .config import LearnerConfig
from .data import iterate_batches, steps_per_epoch
from .evaluation import evaluate_views, task_snapshot
from .heads import make_head, reset_head_moments
from .methods import make_method
from .regularizers import REGULARIZER_REGISTRY, StepContext, plain_step
from .selectors import make_selector
from .signatures import SignatureAccumulator
from .stream_run import run_stream
from .task_model import ClassifierModel, make_task_model, set_eager_attention
from .tree import TaskTree

STATE_FORMAT = 2  # of state_dict(); 2: signature and method state through their own state_dict()

__all__ = ["ContinualLearner", "TaskRecord", "ClassifierModel", "STATE_FORMAT"]


@dataclass
class TaskRecord:
    """Book-keeping for one finished task."""

    key: str
    classes: list[int]
    steps: int = 0
    train_time_s: float = 0.0
    search_time_s: float = 0.0
    reg_time_s: float = 0.0
    mean_loss: float = 0.0
    chosen: dict[str, int] = field(default_factory=dict)


class ContinualLearner:
    """TreeLoRA and its baselines on one backbone (see the module docstring)."""

    def __init__(self, backbone: Any, num_classes: int, config: LearnerConfig, stream: Any | None = None) -> None:
        self.cfg = config
        self.stream = stream
        self.backbone_name = getattr(backbone, "name", "custom")
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.regularizer = REGULARIZER_REGISTRY.get(config.regularizer)()
        if self.regularizer.needs_eager_attention:
            set_eager_attention(backbone.model)
        self.tokenizer = backbone.tokenizer
        for p in backbone.model.parameters():
            p.requires_grad_(False)
        self.lora = LayerwiseLoRA(
            backbone.model,
            r=config.lora_r,
            alpha=config.lora_alpha,
            dropout=config.lora_dropout,
            target_modules=config.target_modules,
            lora_depth=config.lora_depth,
            seed=config.seed,
        )
        self.model = make_task_model(backbone, self.lora.model, num_classes, config.lm_mode, stream).to(self.device)
        self.num_classes = num_classes
        self.classifier = make_head(config, self.model)  # what scores a class at inference (treelora.heads)
        lora_groups = [{"params": self.lora.parameters(), "lr": config.lr}]
        if config.freeze_lora_a:  # A keeps its seeded value: the same on every client of a federation
            a, b = ([self.lora.params(layer)[i] for layer in range(self.lora.num_layers)] for i in (0, 1))
            lora_groups = [{"params": a, "lr": 0.0}, {"params": b, "lr": config.lr}]
        self.optimizer = torch.optim.Adam(
            [
                *lora_groups,
                {"params": self._head_params(), "lr": config.head_lr},
            ],
            betas=tuple(config.betas),
            weight_decay=config.weight_decay,
        )
        L = self.lora.num_layers
        self.tree = TaskTree(L, split=config.split, leaf_size=config.leaf_size, max_depth=config.max_depth)
        self.selector = make_selector(config, self.tree)
        self.signature = SignatureAccumulator(
            config.signature, self.lora, scale_by_layers=config.signature_scale_by_layers
        )
        self.method = make_method(config, self.lora)
        self.records: dict[str, TaskRecord] = {}
        self.on_step: Callable[[list[torch.Tensor]], None] | None = None  # per-layer LoRA gradients, every step
        self.seen_classes: list[int] = []
        self.current: TaskRecord | None = None
        self._inserts_since_rebuild = 0
        self._step_in_task = 0
        self._step_in_epoch = 0
        self._epoch_steps = 1
        self._epoch = 0
        self._loss_sum = 0.0

    # ------------------------------------------------------------------ helpers
    def _head_params(self) -> list[nn.Parameter]:
        head = getattr(self.model, "head", None)
        return [] if head is None else list(head.parameters())

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """bf16 when the forward passes run under autocast (``precision``), else None (fp32)."""
        p = self.cfg.precision
        return torch.bfloat16 if p == "bf16" or (p == "auto" and self.device.type == "cuda") else None

    def _autocast(self) -> Any:
        # adapters, head and optimiser state stay fp32; autocast runs matmuls in bf16 (incl. the double backward)
        dtype = self.autocast_dtype
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def encode(self, examples: Iterable[Any]) -> dict[str, torch.Tensor]:
        """Tensors for a list of :class:`treelora.streams.Example`."""
        return self.model.encode(list(examples), self.tokenizer, self.cfg.max_length)

    # ------------------------------------------------------------------ task life cycle
    def begin_task(self, key: str, classes: list[int], warm_start: dict[str, torch.Tensor] | None = None) -> None:
        """Start training task ``key`` over the global ``classes``; optionally warm-start the live adapter."""
        if self.current is not None:
            raise RuntimeError(f"task {self.current.key!r} is still open: call end_task first")
        if key in self.records or key in self.tree:
            raise ValueError(f"task {key!r} was already trained")
        bad = [c for c in classes if not 0 <= int(c) < self.num_classes]
        if not classes or bad:
            raise ValueError(f"task {key!r}: classes {bad or classes} are outside 0..{self.num_classes - 1}")
        self.method.begin_task(len(self.records))
        if warm_start is not None:
            self.load_adapter(warm_start)
        self.selector.begin_task()
        self.current = TaskRecord(key, sorted(int(c) for c in classes))
        for c in self.current.classes:
            if c not in self.seen_classes:
                self.seen_classes.append(c)
        self._step_in_task = 0
        self._epoch = -1
        self._loss_sum = 0.0

    def start_epoch(self, steps: int) -> None:
        """Mark an epoch boundary of ``steps`` steps: signature, selector and method may reset here."""
        self._epoch += 1
        self._epoch_steps = max(1, steps)
        self._step_in_epoch = 0
        self.signature.start_epoch(steps)
        self.selector.start_epoch(steps)
        self.method.start_epoch()

    def train_task(self, key: str, task: Any, *, epochs: int | None = None, progress: Any = None) -> TaskRecord:
        """Train one task (a :class:`treelora.streams.Task`) for ``epochs`` and close it."""
        self.begin_task(key, task.classes)
        encoded = self.encode(task.train)
        n_epochs = epochs or self.cfg.epochs
        steps = steps_per_epoch(encoded, self.cfg.batch_size)
        for epoch in range(n_epochs):
            self.start_epoch(steps)
            seed = hash((self.cfg.seed, len(self.records), epoch)) & 0x7FFFFFFF
            for batch in iterate_batches(encoded, self.cfg.batch_size, shuffle=True, seed=seed):
                self.train_step(batch)
                if progress is not None:
                    progress.update(1)
        return self.end_task(encoded)

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimisation step on the open task; returns the task loss."""
        if self.current is None:
            raise RuntimeError("no open task: call begin_task first")
        cfg, rec = self.cfg, self.current
        t0 = time.perf_counter()
        self._step_in_task += 1
        self._step_in_epoch += 1
        t = self._step_in_task
        batch = self._to_device(batch)
        classes = torch.tensor(rec.classes, device=self.device)

        search_t0 = time.perf_counter()
        choices = self.selector.select_all(t, self._step_in_epoch)
        targets = self._targets(choices)
        search_s = time.perf_counter() - search_t0

        apply_reg = any(x is not None for x in targets) and (t % cfg.reg_every == 0) and cfg.lam > 0
        ctx = StepContext(
            task_loss=self._task_loss(batch, classes),
            lora=self.lora,
            head=self._head_params(),
            targets=targets,
            lam=cfg.lam,
            step_in_epoch=self._step_in_epoch,
            steps_in_epoch=self._epoch_steps,
            reduction=cfg.l1_reduction,
            fd_eps=cfg.fd_eps,
            top_layers=cfg.reg_top_layers,
        )
        self.optimizer.zero_grad(set_to_none=True)
        reg_t0 = time.perf_counter()
        loss, grads = self.regularizer.backward(ctx) if apply_reg else plain_step(ctx)
        reg_s = time.perf_counter() - reg_t0 if apply_reg else 0.0

        self.signature.observe(grads)
        if self.on_step is not None:
            self.on_step(grads)
        self.method.observe(grads)

        search_t0 = time.perf_counter()
        if any(k is not None for k in choices):
            observed = self.selector.observed_distances(targets, self.signature.step_vectors(grads))
            self.selector.update_all(choices, observed, t)
            for k in choices:
                if k is not None:
                    rec.chosen[k] = rec.chosen.get(k, 0) + 1
        search_s += time.perf_counter() - search_t0

        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.lora.parameters() + ctx.head, cfg.grad_clip)
        self.optimizer.step()
        loss_value = float(loss.detach())
        rec.steps += 1
        rec.search_time_s += search_s
        rec.reg_time_s += reg_s
        rec.train_time_s += time.perf_counter() - t0
        if math.isfinite(loss_value):
            self._loss_sum += loss_value
        return loss_value

    def _targets(self, choices: list[str | None]) -> list[torch.Tensor | None]:
        """Each layer's chosen stored signature, on the learner's device (None where nothing was chosen)."""
        targets = [None if k is None else self.tree.entries[k].signature[layer] for layer, k in enumerate(choices)]
        return [None if x is None else x.to(self.device) for x in targets]

    def _task_loss(self, batch: dict[str, torch.Tensor], classes: torch.Tensor) -> Callable[[], torch.Tensor]:
        """The step's loss as a closure that replays the RNG state of now, so every call (a finite-difference
        regulariser calls it twice) sees the same dropout masks."""
        rng_state = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None

        def task_loss() -> torch.Tensor:
            torch.set_rng_state(rng_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state_all(cuda_state)
            with self._autocast():
                loss = self.model.loss(batch, classes)
            return loss.float() + self.method.penalty()

        return task_loss

    def end_task(self, train: dict[str, torch.Tensor] | None = None) -> TaskRecord:
        """Close the open task: let the head see the task's encoded ``train`` split (needed by the ``ncm`` and
        ``slca`` heads), snapshot the adapter, store the signature in the tree, refresh the selector."""
        if self.current is None:
            raise RuntimeError("no open task")
        rec = self.current
        if rec.steps == 0:
            raise RuntimeError(f"task {rec.key!r} ended without a training step")
        if self.cfg.head_moment_reset:
            reset_head_moments(self.optimizer, getattr(self.model, "head", None), rec.classes)
        self.classifier.finish_task(self, train, rec.classes)
        rec.mean_loss = self._loss_sum / rec.steps
        t0 = time.perf_counter()
        signature = self.signature.value()
        snapshot = self.adapter_state()
        self._inserts_since_rebuild += 1
        rebuild = self._inserts_since_rebuild >= self.cfg.rebuild_every
        if rebuild:
            self._inserts_since_rebuild = 0
        self.tree.add(rec.key, signature, payload=snapshot, rebuild=rebuild)
        if self.cfg.tree_budget > 0:
            self.tree.merge_to_budget(self.cfg.tree_budget)
        rec.search_time_s += time.perf_counter() - t0
        self.method.end_task()
        self.records[rec.key] = rec
        self.current = None
        return rec

    # ------------------------------------------------------------------ adapters
    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The live LoRA and head on CPU (what a task snapshot holds)."""
        out = self.lora.snapshot()
        head = getattr(self.model, "head", None)
        for name, p in ([] if head is None else head.named_parameters()):
            out[f"head.{name}"] = p.detach().to("cpu", copy=True)
        return out

    def load_adapter(self, state: dict[str, torch.Tensor], layers: Iterable[int] | None = None) -> None:
        """Load a snapshot into the live adapter (all layers or some) and, when present, the head."""
        self.lora.load_snapshot(state, layers)
        if layers is None and "head.weight" in state:
            with torch.no_grad():
                self.model.head.weight.copy_(state["head.weight"])
                self.model.head.bias.copy_(state["head.bias"])

    def probe_signature(self, examples: list[Any], classes: list[int], *, batches: int, kind: str, seed: int
                        ) -> list[torch.Tensor]:
        """The task's shared-probe signature (:func:`treelora.probe.probe_signature`); live state untouched."""
        from .probe import probe_signature

        return probe_signature(self, examples, classes, batches=batches, kind=kind, seed=seed)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue in a new process: adapter, head, optimiser, tree, selector statistics,
        the running signature, the open task and the method's own state (CPU tensors and plain python)."""
        return {
            "format": STATE_FORMAT,
            "method": self.cfg.method,
            "adapter": self.adapter_state(),
            "optimizer": self.optimizer.state_dict(),
            "tree": self.tree.to_dict(),
            "selector": self.selector.state(),
            "signature": self.signature.state_dict(),
            "records": {k: dataclasses.asdict(r) for k, r in self.records.items()},
            "current": None if self.current is None else dataclasses.asdict(self.current),
            "seen_classes": list(self.seen_classes),
            "counters": [self._inserts_since_rebuild, self._step_in_task, self._step_in_epoch, self._epoch_steps,
                         self._epoch, self._loss_sum],
            "method_state": self.method.state_dict(),
            "head_state": self.classifier.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output into a learner built with the same config and backbone."""
        if state.get("format") != STATE_FORMAT or state.get("method") != self.cfg.method:
            raise ValueError(
                f"learner state is for method {state.get('method')!r} (format {state.get('format')}), "
                f"this learner runs {self.cfg.method!r} (format {STATE_FORMAT})"
            )
        self.method.load_state_dict(state["method_state"])  # first: a method may refuse before anything changed
        self.load_adapter(state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.tree = TaskTree.from_dict(state["tree"])
        self.selector = make_selector(self.cfg, self.tree)
        self.selector.load_state(state["selector"])
        self.signature.load_state_dict(state["signature"], self.device)
        self.records = {k: TaskRecord(**copy.deepcopy(v)) for k, v in state["records"].items()}
        self.current = None if state["current"] is None else TaskRecord(**copy.deepcopy(state["current"]))
        self.seen_classes = list(state["seen_classes"])
        self.classifier.load_state_dict(state.get("head_state", {}))
        (self._inserts_since_rebuild, self._step_in_task, self._step_in_epoch, self._epoch_steps, self._epoch,
         self._loss_sum) = state["counters"]

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(
        self,
        task: Any,
        *,
        key: str | None = None,
        encoded: dict[str, torch.Tensor] | None = None,
        own_classes: bool = False,
    ) -> float:
        """Accuracy on a task's test split: task-free (live adapter, seen classes) or task-aware (its snapshot).

        ``own_classes`` scores the live adapter over the task's own classes only: how forward transfer is
        measured on a task not trained yet (its classes are not among the seen ones)."""
        encoded = encoded if encoded is not None else self.encode(task.test)
        model: Any = contextlib.nullcontext()
        if own_classes:
            allowed = list(task.classes)
        elif self.cfg.task_aware:
            model = task_snapshot(self, key)  # the oracle: the task's own snapshot, the live adapter restored after
            allowed = list(task.classes)
        else:
            allowed = self.seen_classes or list(task.classes)
        classes = torch.tensor(sorted(allowed), device=self.device)
        was_training = self.model.training
        correct = 0
        with model:
            self.model.eval()
            try:
                for batch in iterate_batches(encoded, self.cfg.eval_batch_size, shuffle=False):
                    batch = self._to_device(batch)
                    with self._autocast():
                        pred = self.classifier.predict(batch, classes)
                    correct += int((pred == batch["labels"]).sum())
            finally:
                self.model.train(was_training)
        return correct / max(1, int(encoded["labels"].shape[0]))

    def evaluate_views(self, task: Any, *, key: str | None = None,
                       encoded: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """CIL, TIL and task-inference accuracy on a task's test split from one forward pass (with ``task_aware``
        from the task's own snapshot: the oracle); see :func:`treelora.evaluation.evaluate_views`."""
        return evaluate_views(self, task, key=key, encoded=encoded)

    # ------------------------------------------------------------------ whole stream
    def run_stream(self, stream: Any, *, epochs: list[int] | None = None) -> dict[str, Any]:
        """Train every task of ``stream`` in order, evaluating all seen tasks after each; returns the results
        (see :func:`treelora.stream_run.run_stream`)."""
        return run_stream(self, stream, epochs=epochs)
