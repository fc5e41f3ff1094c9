"""The named learner variants every centralized benchmark runs: one registry for step time and accuracy.

A variant is a method preset with config overrides on top (of the benchmark's preset, for ``bench_central``), the
role it plays in a comparison table (``method``: a TreeLoRA reading under test; ``baseline``: what a user would
pick instead; ``ablation``; ``head``: a class-incremental head on a baseline; ``reference``: a row that cannot
win or cannot lose), and the attention kernel to load the backbone with ("" = the config's own choice: eager
only where the regulariser differentiates through attention twice). ``bench_step`` times them side by side,
``bench_central`` scores them with paired seeds, so a name means the same learner in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Variant", "VARIANTS", "STEP_DEFAULT", "attention_of"]

ROLES = ("method", "baseline", "ablation", "head", "reference")


@dataclass(frozen=True)
class Variant:
    """One named learner: ``method`` preset + ``overrides``, its ``role``, and its attention kernel."""

    method: str
    overrides: dict[str, Any] = field(default_factory=dict)
    role: str = "method"
    attention: str = ""  # "" = make_config(method, **overrides).attn_implementation

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"variant role must be one of {', '.join(ROLES)}, got {self.role!r}")


_SQRT = {"l1_reduction": "sqrt", "lam": 0.25}  # λ = 0.25: the regulariser's gradient ≈ 1× the task gradient's norm
# (simulations/results/reg_scale.json)

VARIANTS: dict[str, Variant] = {
    "seqlora": Variant("seqlora", role="baseline"),
    "seqlora-eager": Variant("seqlora", role="baseline", attention="eager"),  # the kernel TreeLoRA's l1-grad needs
    "treelora-sum": Variant("treelora"),  # the paper's sum-reduced l1-grad at the preset's λ
    "treelora-sqrt": Variant("treelora", dict(_SQRT)),
    "treelora-sqrt-lam1": Variant("treelora", {"l1_reduction": "sqrt", "lam": 1.0}),  # ≈ 4× the task gradient
    # the step-time knobs: the regulariser on 1 step in k (at k× λ for the same mean pull) ...
    "treelora-every4": Variant("treelora", {"reg_every": 4}),
    "treelora-every5": Variant("treelora", {"reg_every": 5}),
    "treelora-sqrt-every5": Variant("treelora", {"l1_reduction": "sqrt", "lam": 1.25, "reg_every": 5}),
    # ... or l1-grad on the top k layers with their Hessian block only, every step
    "treelora-top2": Variant("treelora", {"regularizer": "l1-grad-top", "reg_top_layers": 2}),
    "treelora-top3": Variant("treelora", {"regularizer": "l1-grad-top", "reg_top_layers": 3}),
    "treelora-top4": Variant("treelora", {"regularizer": "l1-grad-top", "reg_top_layers": 4}),
    "treelora-sqrt-top2": Variant("treelora", {**_SQRT, "regularizer": "l1-grad-top", "reg_top_layers": 2}),
    "treelora-fd": Variant("treelora", {"regularizer": "l1-grad-fd"}),  # finite differences: SDPA, no 2nd backward
    "treelora-mean16": Variant("treelora", {"l1_reduction": "mean", "lam": 16.0}),
    "treelora-official": Variant("treelora-official"),
    "treelora-sqrt-random": Variant("treelora", {**_SQRT, "selector": "random"}, role="ablation"),
    "treelora-sqrt-flat": Variant("treelora", {**_SQRT, "selector": "flat-lcb"}, role="ablation"),
    "ewc": Variant("ewc", role="baseline"),
    "olora": Variant("olora", role="baseline"),
    "seqlora-ncm": Variant("seqlora", {"head": "ncm"}, role="head"),
    "seqlora-slca": Variant("seqlora", {"head": "slca"}, role="head"),
    "treelora-sqrt-slca": Variant("treelora", {**_SQRT, "head": "slca"}),
    "seqlora-no-moment-reset": Variant("seqlora", {"head_moment_reset": False}, role="ablation"),
    "head-only": Variant("head-only", role="reference"),
    "oracle": Variant("seqlora", {"task_aware": True}, role="reference"),
}
VARIANTS["treelora"] = VARIANTS["treelora-sum"]  # bench_step's name for it since its first table (step_*.json)

#: what ``bench_step`` times when no ``--variants`` are given
STEP_DEFAULT = ["seqlora", "seqlora-eager", "treelora", "treelora-fd", "treelora-every4", "treelora-every5",
                "treelora-top2", "treelora-top3", "treelora-top4", "treelora-official", "olora", "ewc"]


def attention_of(variant: Variant) -> str:
    """The attention kernel ``variant`` loads its backbone with."""
    if variant.attention:
        return variant.attention
    from treelora.config import make_config

    return make_config(variant.method, **variant.overrides).attn_implementation
