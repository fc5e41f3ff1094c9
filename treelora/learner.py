"""The continual learner: trains a task stream with a named method and reports the accuracy matrix.

One *live* LoRA (and one class-incremental head) is trained through all tasks; at the end of each task its state
is snapshotted as that task's adapter and stored, with the task's signature, in a :class:`TaskTree`. While a
later task trains, a selector (tree LCB descent, flat LCB, or the released softmax sampler) picks for every layer
one earlier task per step, and the regulariser pulls the step toward (or, as released, along) that task's
signature. Baselines share the loop: ``seqlora`` (no regulariser), ``olora`` (fresh LoRA per task, earlier ones
merged into the frozen base, orthogonality loss ``λ1·Σ|A_prev A_newᵀ|``), ``ewc`` (EWC on LoRA parameters with
the empirical Fisher of the last epoch's mini-batch gradients, accumulated online).

Inference is task-free by default: the live adapter and the head's logits over every class seen so far (while
training, logits are masked to the current task's classes). ``task_aware=True`` evaluates each task with its own
snapshot and its own classes: an upper bound.

The class is also the client-side engine of the federation: ``begin_task`` / ``train_steps`` / ``end_task`` let a
caller train a task a few steps at a time, and ``extra_candidates`` holds tasks received from elsewhere.
"""

from __future__ import annotations

import math
import platform
import resource
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from .adapters import LayerwiseLoRA
from .bandit import FlatLCBBandit, OfficialSoftmaxSampler, TreeLCBBandit
from .config import LearnerConfig
from .data import encode_examples, iterate_batches, steps_per_epoch
from .regularizers import l1_grad_backward, l1_grad_fd_backward, official_loss, plain_backward
from .signatures import SignatureAccumulator
from .tree import TaskTree


def _set_eager_attention(model: nn.Module) -> None:
    """Double backward needs the eager attention kernel (PyTorch's CPU SDPA has no double backward)."""
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
            return
        except Exception:  # noqa: BLE001 - some configs refuse; fall through to the config flag
            pass
    if hasattr(model, "config"):
        model.config._attn_implementation = "eager"


class ClassifierModel(nn.Module):
    """Backbone with LoRA + a linear class-incremental head over every class of the stream."""

    def __init__(self, encoder: nn.Module, kind: str, hidden_size: int, num_classes: int) -> None:
        super().__init__()
        if kind not in ("encoder", "vision", "causal-lm"):
            raise ValueError(f"unsupported backbone kind {kind!r}")
        self.encoder = encoder
        self.kind = kind
        self.head = nn.Linear(hidden_size, num_classes)

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled representation: masked mean of the last hidden state (text) or token mean (vision)."""
        if "pixel_values" in batch:
            hidden = self.encoder(pixel_values=batch["pixel_values"]).last_hidden_state
            return hidden.mean(dim=1)
        mask = batch["attention_mask"]
        if self.kind == "causal-lm":
            out = self.encoder(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=True)
            hidden = out.hidden_states[-1]
        else:
            hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feats = self.features(batch)
        return self.head(feats.to(self.head.weight.dtype))

    def encode(self, examples: list[Any], tokenizer: Any, max_length: int) -> dict[str, torch.Tensor]:
        """Tensors for a split (the task-model interface shared with :class:`treelora.lm.InstructionLM`)."""
        return encode_examples(examples, tokenizer, max_length)

    def loss(self, batch: dict[str, torch.Tensor], classes: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with logits restricted to ``classes`` (class-incremental training)."""
        return nn.functional.cross_entropy(_masked_logits(self(batch).float(), classes), batch["labels"])

    def predict(self, batch: dict[str, torch.Tensor], classes: torch.Tensor) -> torch.Tensor:
        """Predicted global class ids, argmax over ``classes``."""
        return _masked_logits(self(batch).float(), classes).argmax(dim=-1)


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


def _masked_logits(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    mask = torch.full_like(logits, float("-inf"))
    mask[:, classes] = 0.0
    return logits + mask


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
        if config.regularizer == "l1-grad":
            _set_eager_attention(backbone.model)
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
        self.model = self._make_model(backbone, num_classes).to(self.device)
        self.num_classes = num_classes
        self.optimizer = torch.optim.Adam(
            [
                {"params": self.lora.parameters(), "lr": config.lr},
                {"params": self._head_params(), "lr": config.head_lr},
            ],
            betas=tuple(config.betas),
            weight_decay=config.weight_decay,
        )
        L = self.lora.num_layers
        self.tree = TaskTree(L, split=config.split, leaf_size=config.leaf_size, max_depth=config.max_depth)
        self.selector = self._make_selector()
        self.signature = SignatureAccumulator(
            config.signature, self.lora, scale_by_layers=config.signature_scale_by_layers
        )
        self.records: dict[str, TaskRecord] = {}
        self.on_step: Any = None  # optional callback(per-layer LoRA gradients) after every step
        self.seen_classes: list[int] = []
        self.current: TaskRecord | None = None
        self._inserts_since_rebuild = 0
        self._step_in_task = 0
        self._step_in_epoch = 0
        self._epoch_steps = 1
        self._epoch = 0
        self._loss_sum = 0.0
        # baselines' state
        self._ewc_fisher: list[torch.Tensor] | None = None
        self._ewc_anchor: list[torch.Tensor] | None = None
        self._ewc_sq: list[torch.Tensor] | None = None
        self._ewc_count = 0
        self._olora_prev: list[list[torch.Tensor]] = [[] for _ in range(L)]

    # ------------------------------------------------------------------ setup helpers
    def _make_model(self, backbone: Any, num_classes: int) -> nn.Module:
        """Causal LMs on instruction streams generate the answer; everything else gets a class head."""
        if backbone.kind == "causal-lm" and self.cfg.lm_mode == "generate":
            from .lm import InstructionLM

            if self.stream is None:
                raise ValueError("a causal-LM learner in generate mode needs the stream (prompts and answers)")
            return InstructionLM(self.lora.model, backbone.tokenizer, self.stream)
        return ClassifierModel(self.lora.model, backbone.kind, backbone.hidden_size, num_classes)

    def _head_params(self) -> list[nn.Parameter]:
        head = getattr(self.model, "head", None)
        return [] if head is None else list(head.parameters())

    def _make_selector(self) -> Any:
        cfg = self.cfg
        if cfg.selector == "tree-lcb":
            return TreeLCBBandit(
                self.tree, c=cfg.lcb_c, delta=cfg.tree_delta, delta_decay=cfg.tree_delta_decay, seed=cfg.seed
            )
        if cfg.selector == "flat-lcb":
            return FlatLCBBandit(self.tree, c=cfg.lcb_c, seed=cfg.seed)
        if cfg.selector == "official-softmax":
            return OfficialSoftmaxSampler(self.tree, seed=cfg.seed)
        return None

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
        if self.cfg.method == "olora" and self.records:
            for layer in range(self.lora.num_layers):
                self._olora_prev[layer].append(self.lora.params(layer)[0].detach().clone())
            self.lora.merge_into_base()
            self.lora.reset(self.cfg.seed + len(self.records))
        if warm_start is not None:
            self.load_adapter(warm_start)
        if isinstance(self.selector, (TreeLCBBandit, FlatLCBBandit)):
            self.selector.reset()
        self.current = TaskRecord(key, sorted(int(c) for c in classes))
        for c in self.current.classes:
            if c not in self.seen_classes:
                self.seen_classes.append(c)
        self._step_in_task = 0
        self._epoch = -1
        self._loss_sum = 0.0

    def start_epoch(self, steps: int) -> None:
        """Mark an epoch boundary: signatures and the released sampler's statistics reset here."""
        self._epoch += 1
        self._epoch_steps = max(1, steps)
        self._step_in_epoch = 0
        self.signature.start_epoch(steps)
        if isinstance(self.selector, OfficialSoftmaxSampler):
            self.selector.start_epoch(steps)
        if self.cfg.method == "ewc":
            self._ewc_sq, self._ewc_count = None, 0

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
        return self.end_task()

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
        choices: list[str | None] = [None] * self.lora.num_layers
        if self.selector is not None and len(self.tree) > 0:
            choices = self.selector.select_all(self._step_in_epoch if cfg.selector == "official-softmax" else t)
        targets = [None if k is None else self.tree.entries[k].signature[layer] for layer, k in enumerate(choices)]
        targets = [None if x is None else x.to(self.device) for x in targets]
        search_s = time.perf_counter() - search_t0

        apply_reg = any(x is not None for x in targets) and (t % cfg.reg_every == 0) and cfg.lam > 0
        rng_state = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None

        def task_loss() -> torch.Tensor:
            torch.set_rng_state(rng_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state_all(cuda_state)
            with self._autocast():
                loss = self.model.loss(batch, classes)
            return loss.float() + self._baseline_penalty()

        self.optimizer.zero_grad(set_to_none=True)
        reg_t0 = time.perf_counter()
        head = self._head_params()
        if apply_reg and cfg.regularizer == "l1-grad":
            loss = task_loss()
            grads, _ = l1_grad_backward(loss, self.lora, head, targets, cfg.lam, cfg.l1_reduction)
        elif apply_reg and cfg.regularizer == "l1-grad-fd":
            first: list[torch.Tensor] = []

            def recorded_loss() -> torch.Tensor:
                value = task_loss()
                first.append(value.detach())
                return value

            grads, _ = l1_grad_fd_backward(recorded_loss, self.lora, head, targets, cfg.lam, cfg.fd_eps,
                                           cfg.l1_reduction)
            loss = first[0]
        elif apply_reg and cfg.regularizer == "official":
            loss = task_loss()
            lam_t = cfg.lam * (self._step_in_epoch - 1) / self._epoch_steps
            total, _ = official_loss(loss, self.lora, targets, lam_t)
            grads, _ = plain_backward(total, self.lora)
        else:
            loss = task_loss()
            grads, _ = plain_backward(loss, self.lora)
        reg_s = time.perf_counter() - reg_t0 if apply_reg else 0.0

        self.signature.observe(grads)
        if self.on_step is not None:
            self.on_step(grads)
        if cfg.method == "ewc":
            self._ewc_observe(grads)

        search_t0 = time.perf_counter()
        if self.selector is not None and any(k is not None for k in choices):
            observed = self._observed_distances(choices, targets, grads)
            self.selector.update_all(choices, observed, t)
            for k in choices:
                if k is not None:
                    rec.chosen[k] = rec.chosen.get(k, 0) + 1
        search_s += time.perf_counter() - search_t0

        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.lora.parameters() + head, cfg.grad_clip)
        self.optimizer.step()
        loss_value = float(loss.detach())
        rec.steps += 1
        rec.search_time_s += search_s
        rec.reg_time_s += reg_s
        rec.train_time_s += time.perf_counter() - t0
        if math.isfinite(loss_value):
            self._loss_sum += loss_value
        return loss_value

    def _observed_distances(
        self, choices: list[str | None], targets: list[torch.Tensor | None], grads: list[torch.Tensor]
    ) -> list[float]:
        """ξ per layer: paper ``‖ĝ − G‖₁/dim``; released ``‖c − G‖₁`` with ``c`` the running weight signature."""
        out = []
        current = self.signature.current() if self.cfg.signature == "weights" else grads
        for layer, target in enumerate(targets):
            if target is None:
                out.append(float("nan"))
                continue
            vec = current[layer].to(target.device, target.dtype)
            d = float((vec - target).abs().sum())
            out.append(d if self.cfg.selector == "official-softmax" else d / target.numel())
        return out

    def _baseline_penalty(self) -> torch.Tensor | float:
        cfg = self.cfg
        if cfg.method == "ewc" and self._ewc_fisher is not None and cfg.ewc_lambda > 0:
            total = 0.0
            for layer, (f, anchor) in enumerate(zip(self._ewc_fisher, self._ewc_anchor or [])):
                a, b = self.lora.params(layer)
                theta = torch.cat([a.flatten(), b.flatten()])
                total = total + (f.to(theta.device) * (theta - anchor.to(theta.device)) ** 2).sum()
            return 0.5 * cfg.ewc_lambda * total
        if cfg.method == "olora" and cfg.olora_lambda > 0 and self._olora_prev[0]:
            total = 0.0
            for layer, prev in enumerate(self._olora_prev):
                a = self.lora.params(layer)[0]
                for a_prev in prev:
                    total = total + (a_prev.to(a.device) @ a.T).abs().sum()
            return cfg.olora_lambda * total
        return 0.0

    def _ewc_observe(self, grads: list[torch.Tensor]) -> None:
        sq = [g.detach().float() ** 2 for g in grads]
        if self._ewc_sq is None:
            self._ewc_sq = sq
        else:
            for acc, s in zip(self._ewc_sq, sq):
                acc.add_(s)
        self._ewc_count += 1

    def end_task(self) -> TaskRecord:
        """Close the open task: snapshot the adapter, store the signature in the tree, refresh the selector."""
        if self.current is None:
            raise RuntimeError("no open task")
        rec = self.current
        if rec.steps == 0:
            raise RuntimeError(f"task {rec.key!r} ended without a training step")
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
        if self.cfg.method == "ewc" and self._ewc_sq is not None:
            fisher = [s / max(self._ewc_count, 1) for s in self._ewc_sq]
            self._ewc_fisher = fisher if self._ewc_fisher is None else [a + b for a, b in zip(self._ewc_fisher, fisher)]
            self._ewc_anchor = [
                torch.cat([p.detach().flatten() for p in self.lora.params(layer)]).clone()
                for layer in range(self.lora.num_layers)
            ]
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

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue in a new process: adapter, head, optimiser, tree, selector statistics,
        the running signature, the open task and the baselines' state (CPU tensors and plain python)."""
        sig = self.signature
        return {
            "format": 1,
            "method": self.cfg.method,
            "adapter": self.adapter_state(),
            "optimizer": self.optimizer.state_dict(),
            "tree": self.tree.to_dict(),
            "selector": None if self.selector is None else self.selector.state(),
            "signature": {
                "acc": None if sig._acc is None else [a.cpu() for a in sig._acc],
                "count": sig.count,
                "steps_per_epoch": sig.steps_per_epoch,
            },
            "records": {k: vars(r) for k, r in self.records.items()},
            "current": None if self.current is None else vars(self.current),
            "seen_classes": list(self.seen_classes),
            "counters": [self._inserts_since_rebuild, self._step_in_task, self._step_in_epoch, self._epoch_steps,
                         self._epoch, self._loss_sum],
            "ewc": [self._ewc_fisher, self._ewc_anchor, self._ewc_sq, self._ewc_count],
            "olora_prev": self._olora_prev,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output into a learner built with the same config and backbone."""
        if state.get("format") != 1 or state.get("method") != self.cfg.method:
            raise ValueError(
                f"learner state is for method {state.get('method')!r} (format {state.get('format')}), "
                f"this learner runs {self.cfg.method!r}"
            )
        if self.cfg.method == "olora" and any(state["olora_prev"]):
            raise ValueError("olora state cannot be restored: earlier adapters were merged into the base weights")
        self.load_adapter(state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.tree = TaskTree.from_dict(state["tree"])
        self.selector = self._make_selector()
        if self.selector is not None and state["selector"] is not None:
            self.selector.load_state(state["selector"])
        sig = state["signature"]
        self.signature._acc = None if sig["acc"] is None else [a.to(self.device) for a in sig["acc"]]
        self.signature.count, self.signature.steps_per_epoch = sig["count"], sig["steps_per_epoch"]
        self.records = {k: TaskRecord(**v) for k, v in state["records"].items()}
        self.current = None if state["current"] is None else TaskRecord(**state["current"])
        self.seen_classes = list(state["seen_classes"])
        (self._inserts_since_rebuild, self._step_in_task, self._step_in_epoch, self._epoch_steps, self._epoch,
         self._loss_sum) = state["counters"]
        self._ewc_fisher, self._ewc_anchor, self._ewc_sq, self._ewc_count = state["ewc"]

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
        live = None
        if own_classes:
            allowed = list(task.classes)
        elif self.cfg.task_aware:
            if self.cfg.method == "olora":
                raise ValueError("task-aware inference is not available for olora (earlier LoRAs are merged)")
            if key is None or key not in self.tree:
                raise ValueError(f"task-aware evaluation needs the key of a finished task, got {key!r}")
            live = self.adapter_state()
            self.load_adapter(self.tree.entry_of(key).payload)
            allowed = list(task.classes)
        else:
            allowed = self.seen_classes or list(task.classes)
        classes = torch.tensor(sorted(allowed), device=self.device)
        was_training = self.model.training
        self.model.eval()
        correct = 0
        try:
            for batch in iterate_batches(encoded, self.cfg.eval_batch_size, shuffle=False):
                batch = self._to_device(batch)
                with self._autocast():
                    pred = self.model.predict(batch, classes)
                correct += int((pred == batch["labels"]).sum())
        finally:
            self.model.train(was_training)
            if live is not None:
                self.load_adapter(live)
        return correct / max(1, int(encoded["labels"].shape[0]))

    # ------------------------------------------------------------------ whole stream
    def run_stream(self, stream: Any, *, epochs: list[int] | None = None) -> dict[str, Any]:
        """Train every task of ``stream`` in order, evaluating all seen tasks after each; returns the results."""
        from tqdm.auto import tqdm

        from .metrics import summarize

        tasks = stream.tasks
        T = len(tasks)
        if epochs is not None and len(epochs) != T:
            raise ValueError(f"epochs has {len(epochs)} entries for {T} tasks")
        tests = [self.encode(task.test) for task in tasks]
        R = np.full((T, T), np.nan)
        initial = None
        if self.cfg.fwt:
            initial = np.array([self.evaluate(t, encoded=e, own_classes=True) for t, e in zip(tasks, tests)])
        total_steps = sum(
            -(-len(task.train) // self.cfg.batch_size) * (epochs[i] if epochs else self.cfg.epochs)
            for i, task in enumerate(tasks)
        )
        self.model.train()
        wall = []
        bar = tqdm(total=total_steps, desc=f"{self.cfg.method}", unit="step", disable=not self.cfg.progress)
        for j, task in enumerate(tasks):
            t0 = time.perf_counter()
            bar.set_postfix_str(f"task {j + 1}/{T} {task.name}")
            self.train_task(f"t{j}", task, epochs=epochs[j] if epochs else None, progress=bar)
            wall.append(time.perf_counter() - t0)
            for i in range(j + 1):
                R[j, i] = self.evaluate(tasks[i], key=f"t{i}", encoded=tests[i], own_classes=self.cfg.task_incremental)
            if self.cfg.fwt and j + 1 < T:
                R[j, j + 1] = self.evaluate(tasks[j + 1], encoded=tests[j + 1], own_classes=True)
        bar.close()
        recs = [self.records[f"t{j}"] for j in range(T)]
        steps = sum(r.steps for r in recs)
        return {
            "method": self.cfg.method,
            "config": self.cfg.to_dict(),
            "stream": getattr(stream, "name", "custom"),
            "backbone": self.backbone_name,
            "tasks": [t.name for t in tasks],
            "task_classes": [list(t.classes) for t in tasks],
            "accuracy_matrix": [[None if math.isnan(x) else float(x) for x in row] for row in R],
            "metrics": summarize(R, initial),
            "initial_accuracy": None if initial is None else initial.tolist(),
            "time_per_task_s": wall,
            "train_time_per_task_s": [r.train_time_s for r in recs],
            "search_time_per_task_s": [r.search_time_s for r in recs],
            "reg_time_per_task_s": [r.reg_time_s for r in recs],
            "steps_per_task": [r.steps for r in recs],
            "step_time_s": sum(r.train_time_s for r in recs) / max(steps, 1),
            "mean_loss_per_task": [r.mean_loss for r in recs],
            "chosen_per_task": [r.chosen for r in recs],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "cuda_peak_mb": (torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
            "device": str(self.device),
            "tree": self.tree.render(),
            "num_layers": self.lora.num_layers,
            "versions": versions(),
        }


def versions() -> dict[str, str]:
    """Library versions for the results file."""
    import peft
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "numpy": np.__version__,
    }
