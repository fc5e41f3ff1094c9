"""The TreeLoRA regularisers (DESIGN.md §2 "Regulariser").

* ``l1-grad`` (paper Eq. 3): ``λ·Σ_l ‖ĝ_n^t[l] − G_{k_l}[l]‖₁`` where ĝ is the step's LoRA gradient. Its gradient
  is a Hessian-vector product ``λ·H·sign(ĝ − G)``, computed exactly by double backward on the LoRA parameters
  only (needs eager attention: PyTorch's CPU SDPA kernel has no double backward).
* ``l1-grad-fd``: the same term with the Hessian-vector product taken by a forward difference of gradients,
  ``H v ≈ (∇L(θ + h v) − ∇L(θ)) / h`` — one extra forward/backward, any attention kernel. The second pass must
  see the same dropout masks, so the caller's closure replays the RNG state.
* ``l1-grad-top``: ``l1-grad`` on the top k LoRA layers only, differentiated with respect to those layers only: the
  Hessian block ``H_top,top`` instead of the full rows, so the double backward stops at the lowest regularised
  layer (the cost knob ``reg_top_layers``).
* ``official`` (released code): ``R = −Σ_l ⟨A_l, G_{k_l}[l]⟩`` and
  ``loss − λ_t · loss.detach() · R / (R.detach() + ε·sign(R))`` — the denominator keeps R's sign.

Each backward function leaves the total gradient in ``.grad`` and returns the per-layer gradient of the plain
task loss (for the signature and the bandit's observed distance) and the regulariser's value.

The learner picks a regulariser by name from :data:`REGULARIZER_REGISTRY`: each is a :class:`Regularizer` class
whose :meth:`~Regularizer.backward` performs a step's backward from a :class:`StepContext`. A new variant is a new
registered class; the learner needs no change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .adapters import LayerwiseLoRA
from .registry import Registry


def _layer_vectors(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.cat([grads[2 * i].flatten(), grads[2 * i + 1].flatten()]) for i in range(len(grads) // 2)]


L1_SCALES = {"sum": lambda p: 1.0, "mean": lambda p: 1.0 / p, "sqrt": lambda p: 1.0 / math.sqrt(p)}


def _l1(diff: torch.Tensor, reduction: str) -> torch.Tensor:
    """The layer's L1 distance times its reduction's scale: 1 (sum), 1/p (mean) or 1/√p (sqrt)."""
    if reduction == "mean":
        return diff.abs().mean()
    return diff.abs().sum() * L1_SCALES[reduction](diff.numel())


def plain_backward(loss: torch.Tensor, lora: LayerwiseLoRA) -> tuple[list[torch.Tensor], float]:
    """Ordinary backward; returns the per-layer LoRA gradients and a zero regulariser value."""
    loss.backward()
    return lora.grad_vectors(), 0.0


def l1_grad_backward(
    loss: torch.Tensor,
    lora: LayerwiseLoRA,
    other_params: list[nn.Parameter],
    targets: list[torch.Tensor | None],
    lam: float,
    reduction: str = "sum",
    top_layers: int = 0,
) -> tuple[list[torch.Tensor], float]:
    """Exact ``l1-grad``: double backward through the LoRA gradient. ``targets[l]`` is G_{k_l}[l] or None.

    ``top_layers = k > 0`` keeps only the top k layers' terms and differentiates them with respect to those layers'
    parameters only (``l1-grad-top``): autograd then never walks the layers below, which is what makes it cheaper.

    ``reduction="sum"`` is Eq. 3 as written; its gradient ``λ·H·sign(ĝ − G)`` grows with the layer size (the sign
    vector has norm √p), and on MiniLM it outweighs the task gradient ~20× at λ = 0.05. ``"mean"`` divides each
    layer's distance by its size p, the scale of the bandit's ξ; ``"sqrt"`` by √p, which makes the sign vector's
    norm 1, so the regulariser's gradient ``λ·H·sign/√p`` no longer grows with the layer size."""
    params = lora.parameters()
    grads = torch.autograd.grad(loss, params + list(other_params), create_graph=True, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params + list(other_params), grads)]
    layer_g = _layer_vectors(grads[: len(params)])
    first = 0 if top_layers <= 0 else max(0, len(layer_g) - top_layers)
    terms = [_l1(g - t.to(g.device, g.dtype), reduction)
             for i, (g, t) in enumerate(zip(layer_g, targets)) if t is not None and i >= first]
    reg_value = 0.0
    reg_grads: list[torch.Tensor | None] = [None] * len(params)
    if terms and lam > 0:
        reg = lam * torch.stack(terms).sum()
        reg_value = float(reg.detach())
        if reg.requires_grad:
            top = list(torch.autograd.grad(reg, params[2 * first :], allow_unused=True))
            reg_grads = [None] * (2 * first) + top
    for p, g, rg in zip(params, grads, reg_grads):
        p.grad = g.detach() + (rg.detach() if rg is not None else 0.0)
    for p, g in zip(other_params, grads[len(params) :]):
        p.grad = g.detach()
    return [g.detach() for g in layer_g], reg_value


def l1_grad_fd_backward(
    closure: Callable[[], torch.Tensor],
    lora: LayerwiseLoRA,
    other_params: list[nn.Parameter],
    targets: list[torch.Tensor | None],
    lam: float,
    eps: float = 1e-3,
    reduction: str = "sum",
) -> tuple[list[torch.Tensor], float]:
    """``l1-grad`` with a finite-difference Hessian-vector product. ``closure`` computes the task loss and must
    replay the same randomness (dropout) on every call."""
    params = lora.parameters()
    for p in params + list(other_params):
        p.grad = None
    closure().backward()
    base = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    layer_g = _layer_vectors(base)
    if lam <= 0 or all(t is None for t in targets):
        return layer_g, 0.0
    direction: list[torch.Tensor] = []
    reg_value = 0.0
    for layer, (g, t) in enumerate(zip(layer_g, targets)):
        a, b = lora.params(layer)
        if t is None:
            v = torch.zeros_like(g)
        else:
            diff = g - t.to(g.device, g.dtype)
            reg_value += float(_l1(diff, reduction))
            v = torch.sign(diff) * L1_SCALES[reduction](diff.numel())
        direction += [v[: a.numel()].view_as(a), v[a.numel() :].view_as(b)]
    v_norm = torch.sqrt(sum((v.float() ** 2).sum() for v in direction))
    if float(v_norm) == 0.0:
        return layer_g, lam * reg_value
    theta_norm = torch.sqrt(sum((p.detach().float() ** 2).sum() for p in params))
    h = eps * max(float(theta_norm), 1.0) / float(v_norm)
    head_grads = [p.grad.detach().clone() if p.grad is not None else None for p in other_params]
    with torch.no_grad():
        for p, v in zip(params, direction):
            p.add_(v, alpha=h)
    for p in params:
        p.grad = None
    try:
        closure().backward()
        shifted = [p.grad.detach() if p.grad is not None else torch.zeros_like(p) for p in params]
    finally:
        with torch.no_grad():
            for p, v in zip(params, direction):
                p.sub_(v, alpha=h)
    for p, g0, g1 in zip(params, base, shifted):
        p.grad = g0 + lam * (g1 - g0) / h
    for p, g in zip(other_params, head_grads):
        p.grad = g
    return layer_g, lam * reg_value


def official_loss(
    loss: torch.Tensor,
    lora: LayerwiseLoRA,
    targets: list[torch.Tensor | None],
    lam_t: float,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, float]:
    """The released regulariser on the live A matrices; returns ``(total_loss, R)``."""
    terms = []
    for layer, t in enumerate(targets):
        if t is None:
            continue
        a = lora.params(layer)[0]
        terms.append((a.flatten() * t.to(a.device, a.dtype)).sum())
    if not terms or lam_t == 0:
        return loss, 0.0
    r = -torch.stack(terms).sum()
    sign = 1.0 if float(r.detach()) >= 0 else -1.0
    total = loss - lam_t * loss.detach() * r / (r.detach() + eps * sign)
    return total, float(r.detach())


# ---------------------------------------------------------------------------------------------- hook classes
@dataclass
class StepContext:
    """What a regulariser sees of one training step."""

    task_loss: Callable[[], torch.Tensor]  # the step's task loss; every call replays the step's RNG (dropout)
    lora: LayerwiseLoRA
    head: list[nn.Parameter]  # other trainable parameters (the class head); their gradient is the task loss's
    targets: list[torch.Tensor | None]  # per layer: the chosen earlier task's signature G_{k_l}[l], or None
    lam: float  # λ
    step_in_epoch: int  # 1-based; with steps_in_epoch the position of the released regulariser's λ ramp
    steps_in_epoch: int
    reduction: str  # l1-grad distance per layer: "sum" | "mean" | "sqrt"
    fd_eps: float  # l1-grad-fd's finite-difference step
    top_layers: int = 0  # l1-grad-top: how many top LoRA layers are regularised (0 = all)


def plain_step(ctx: StepContext) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The unregularised step: task loss, ordinary backward; returns (task loss, per-layer LoRA gradients)."""
    loss = ctx.task_loss()
    grads, _ = plain_backward(loss, ctx.lora)
    return loss, grads


class Regularizer:
    """One regulariser: performs a step's backward, leaving the total gradient in ``.grad``.

    The learner calls :meth:`backward` on steps where a target exists, ``reg_every`` divides the step and λ > 0;
    on every other step it calls :func:`plain_step`."""

    name: ClassVar[str] = ""
    needs_eager_attention: ClassVar[bool] = False  # differentiates through attention twice (double backward)

    def backward(self, ctx: StepContext) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns the plain task loss (the reported loss) and the per-layer gradients of that loss."""
        return plain_step(ctx)


REGULARIZER_REGISTRY: Registry[type[Regularizer]] = Registry("regularizer")


@REGULARIZER_REGISTRY.register("l1-grad")
class L1Grad(Regularizer):
    """Paper Eq. 3, exact: double backward through the LoRA gradient."""

    needs_eager_attention = True

    def backward(self, ctx: StepContext) -> tuple[torch.Tensor, list[torch.Tensor]]:
        loss = ctx.task_loss()
        grads, _ = l1_grad_backward(loss, ctx.lora, ctx.head, ctx.targets, ctx.lam, ctx.reduction)
        return loss, grads


@REGULARIZER_REGISTRY.register("l1-grad-top")
class L1GradTop(Regularizer):
    """``l1-grad`` on the top ``reg_top_layers`` layers, with the Hessian block of those layers only (cheaper)."""

    needs_eager_attention = True

    def backward(self, ctx: StepContext) -> tuple[torch.Tensor, list[torch.Tensor]]:
        loss = ctx.task_loss()
        grads, _ = l1_grad_backward(loss, ctx.lora, ctx.head, ctx.targets, ctx.lam, ctx.reduction,
                                    top_layers=max(1, ctx.top_layers))
        return loss, grads


@REGULARIZER_REGISTRY.register("l1-grad-fd")
class L1GradFD(Regularizer):
    """Paper Eq. 3 with a finite-difference Hessian-vector product (any attention kernel)."""

    def backward(self, ctx: StepContext) -> tuple[torch.Tensor, list[torch.Tensor]]:
        first: list[torch.Tensor] = []

        def recorded_loss() -> torch.Tensor:
            value = ctx.task_loss()
            first.append(value.detach())
            return value

        grads, _ = l1_grad_fd_backward(recorded_loss, ctx.lora, ctx.head, ctx.targets, ctx.lam, ctx.fd_eps,
                                       ctx.reduction)
        return first[0], grads


@REGULARIZER_REGISTRY.register("official")
class Official(Regularizer):
    """The released code's regulariser with its λ ramp ``λ_t = λ·(step_in_epoch − 1)/steps_in_epoch``."""

    def backward(self, ctx: StepContext) -> tuple[torch.Tensor, list[torch.Tensor]]:
        loss = ctx.task_loss()
        lam_t = ctx.lam * (ctx.step_in_epoch - 1) / ctx.steps_in_epoch
        total, _ = official_loss(loss, ctx.lora, ctx.targets, lam_t)
        grads, _ = plain_backward(total, ctx.lora)
        return loss, grads


@REGULARIZER_REGISTRY.register("none")
class NoRegularizer(Regularizer):
    """No regulariser: every step is :func:`plain_step`."""
