"""Continual-learning methods as hook classes, registered in :data:`METHOD_REGISTRY` under their config names.

A method is a config preset (DESIGN.md §2: which signature, split, selector and regulariser it uses) plus hooks
into the learner's task life cycle for whatever state of its own it keeps:

* ``treelora`` (paper reading) and ``treelora-official`` (the released code's reading, DESIGN.md §8):
  presets only; the tree, selector and regulariser do the work.
* ``seqlora``: sequential LoRA, no regulariser.
* ``head-only``: the LoRA frozen, only the head trains (a reference row: what no adapter earned).
* ``olora``: a fresh LoRA per task, earlier ones merged into the frozen base, orthogonality loss
  ``λ1·Σ|A_prev A_newᵀ|``.
* ``ewc``: EWC on the LoRA parameters with the empirical Fisher of the last epoch's mini-batch gradients,
  accumulated online.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from .adapters import LayerwiseLoRA
from .registry import Registry

if TYPE_CHECKING:
    from .config import LearnerConfig


class ContinualMethod:
    """A method without state of its own (the hooks are no-ops); the base of every method."""

    name: ClassVar[str] = ""
    preset: ClassVar[dict[str, Any]] = {}  # LearnerConfig fields this method sets before user overrides
    task_aware_unavailable: ClassVar[str | None] = None  # why task-aware evaluation is impossible, if it is

    def __init__(self, config: LearnerConfig, lora: LayerwiseLoRA) -> None:
        self.cfg = config
        self.lora = lora

    def begin_task(self, tasks_done: int) -> None:
        """A task starts after ``tasks_done`` finished ones (before any warm start is loaded)."""

    def start_epoch(self) -> None:
        """An epoch starts."""

    def penalty(self) -> torch.Tensor | float:
        """Added to every step's task loss (inside the closure a regulariser may call more than once)."""
        return 0.0

    def observe(self, grads: list[torch.Tensor]) -> None:
        """The step's per-layer LoRA gradients, after the backward."""

    def end_task(self) -> None:
        """The open task closes (after its snapshot and signature are stored in the tree)."""

    def state_dict(self) -> dict[str, Any]:
        """This method's own state (CPU tensors and plain python)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; raise ValueError, changing nothing, when it cannot be restored."""

    def _device(self) -> torch.device:
        return self.lora.params(0)[0].device


METHOD_REGISTRY: Registry[type[ContinualMethod]] = Registry("method")


def _cpu(tensors: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
    return None if tensors is None else [t.detach().to("cpu", copy=True) for t in tensors]


def _on(tensors: list[torch.Tensor] | None, device: torch.device) -> list[torch.Tensor] | None:
    return None if tensors is None else [t.to(device, copy=True) for t in tensors]


@METHOD_REGISTRY.register("treelora")
class TreeLoRA(ContinualMethod):
    """The paper's reading: gradient signatures, L1-median tree, argmin-LCB descent, ``l1-grad``."""

    preset = dict(signature="grad", split="l1-median", selector="tree-lcb", regularizer="l1-grad")


@METHOD_REGISTRY.register("treelora-official")
class TreeLoRAOfficial(ContinualMethod):
    """The released code's reading: weight signatures, dot-product tree, softmax sampling, ``official``."""

    preset = dict(
        signature="weights",
        split="dot-consecutive",
        selector="official-softmax",
        regularizer="official",
        signature_scale_by_layers=False,
    )


@METHOD_REGISTRY.register("seqlora")
class SeqLoRA(ContinualMethod):
    """Sequential LoRA: one adapter trained through all tasks, nothing against forgetting."""

    preset = dict(signature="grad", selector="none", regularizer="none")


@METHOD_REGISTRY.register("head-only")
class HeadOnly(ContinualMethod):
    """Reference row: the LoRA stays frozen at its initialisation (B = 0: the bare backbone), only the head trains.

    Its preset sets ``lr = 0``; the LoRA gradients are also dropped after every backward (Adam skips a parameter
    without a gradient), so an ``lr`` override (a regime preset's) cannot unfreeze it. What head-only scores is what
    the backbone's features and the head alone give: the part of any method's score no adapter earned."""

    preset = dict(signature="grad", selector="none", regularizer="none", lr=0.0)

    def observe(self, grads: list[torch.Tensor]) -> None:
        for p in self.lora.parameters():
            p.grad = None


@METHOD_REGISTRY.register("olora")
class OLoRA(ContinualMethod):
    """O-LoRA: earlier LoRAs merged into the base, the new A kept orthogonal to the earlier A's."""

    preset = dict(signature="grad", selector="none", regularizer="none")
    task_aware_unavailable = "earlier LoRAs are merged"

    def __init__(self, config: LearnerConfig, lora: LayerwiseLoRA) -> None:
        super().__init__(config, lora)
        self.prev: list[list[torch.Tensor]] = [[] for _ in range(lora.num_layers)]  # per layer: earlier A's

    def begin_task(self, tasks_done: int) -> None:
        if tasks_done:
            for layer in range(self.lora.num_layers):
                self.prev[layer].append(self.lora.params(layer)[0].detach().clone())
            self.lora.merge_into_base()
            self.lora.reset(self.cfg.seed + tasks_done)

    def penalty(self) -> torch.Tensor | float:
        if self.cfg.olora_lambda > 0 and self.prev[0]:
            total = 0.0
            for layer, prev in enumerate(self.prev):
                a = self.lora.params(layer)[0]
                for a_prev in prev:
                    total = total + (a_prev.to(a.device) @ a.T).abs().sum()
            return self.cfg.olora_lambda * total
        return 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"prev": [_cpu(prev) for prev in self.prev]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if any(state["prev"]):
            raise ValueError("olora state cannot be restored: earlier adapters were merged into the base weights")
        self.prev = [[] for _ in range(self.lora.num_layers)]


@METHOD_REGISTRY.register("ewc")
class EWC(ContinualMethod):
    """EWC on the LoRA parameters: ``½·λ·Σ F·(θ − θ*)²`` with F the empirical Fisher of the last epoch's
    mini-batch gradients, summed over tasks, and θ* the adapter at the end of the last task.

    The Fisher is the task loss's alone: the step's gradient includes EWC's own penalty, whose gradient
    ``λ·F·(θ − θ*)`` is known in closed form and taken out before squaring (squaring it in would feed the penalty
    back into the next task's Fisher and grow it without bound)."""

    preset = dict(signature="grad", selector="none", regularizer="none")

    def __init__(self, config: LearnerConfig, lora: LayerwiseLoRA) -> None:
        super().__init__(config, lora)
        self.fisher: list[torch.Tensor] | None = None  # per layer, over [A, B] flattened
        self.anchor: list[torch.Tensor] | None = None
        self.sq: list[torch.Tensor] | None = None  # this epoch's sum of squared gradients
        self.count = 0

    def start_epoch(self) -> None:
        self.sq, self.count = None, 0

    def penalty(self) -> torch.Tensor | float:
        if self.fisher is not None and self.cfg.ewc_lambda > 0:
            total = 0.0
            for layer, (f, anchor) in enumerate(zip(self.fisher, self.anchor or [])):
                a, b = self.lora.params(layer)
                theta = torch.cat([a.flatten(), b.flatten()])
                total = total + (f.to(theta.device) * (theta - anchor.to(theta.device)) ** 2).sum()
            return 0.5 * self.cfg.ewc_lambda * total
        return 0.0

    def _task_gradient(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """The step's per-layer gradient minus the penalty's ``λ·F·(θ − θ*)``."""
        if self.fisher is None or self.cfg.ewc_lambda <= 0:
            return [g.detach().float() for g in grads]
        out = []
        for layer, (g, f, anchor) in enumerate(zip(grads, self.fisher, self.anchor or [])):
            theta = torch.cat([p.detach().flatten() for p in self.lora.params(layer)]).float()
            penalty_grad = self.cfg.ewc_lambda * f.to(theta.device) * (theta - anchor.to(theta.device))
            out.append(g.detach().float() - penalty_grad.to(g.device))
        return out

    def observe(self, grads: list[torch.Tensor]) -> None:
        sq = [g**2 for g in self._task_gradient(grads)]
        if self.sq is None:
            self.sq = sq
        else:
            for acc, s in zip(self.sq, sq):
                acc.add_(s)
        self.count += 1

    def end_task(self) -> None:
        if self.sq is None:
            return
        fisher = [s / max(self.count, 1) for s in self.sq]
        self.fisher = fisher if self.fisher is None else [a + b for a, b in zip(self.fisher, fisher)]
        self.anchor = [
            torch.cat([p.detach().flatten() for p in self.lora.params(layer)]).clone()
            for layer in range(self.lora.num_layers)
        ]

    def state_dict(self) -> dict[str, Any]:
        return {"fisher": _cpu(self.fisher), "anchor": _cpu(self.anchor), "sq": _cpu(self.sq), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self._device()
        self.fisher, self.anchor, self.sq = (_on(state[k], device) for k in ("fisher", "anchor", "sq"))
        self.count = int(state["count"])


def make_method(config: LearnerConfig, lora: LayerwiseLoRA) -> ContinualMethod:
    """The method named by ``config.method`` on ``lora``."""
    return METHOD_REGISTRY.get(config.method)(config, lora)


__all__ = ["ContinualMethod", "METHOD_REGISTRY", "make_method"]
