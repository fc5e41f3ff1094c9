"""Every knob of the continual learner in one place, with its unit and default.

A method name (``treelora``, ``treelora-official``, ``seqlora``, ``olora``, ``ewc``: the names registered in
:data:`treelora.methods.METHOD_REGISTRY`) selects that method's preset; any field can then be overridden. The
presets encode DESIGN.md §2: the paper's reading (``treelora``) and the released code's reading
(``treelora-official``, DESIGN.md §8) differ in signature kind, tree split, selection rule,
regulariser and BWT form. Method, selector and regulariser names are checked against their registries, so a
variant registered later (a test's, a plug-in's) is accepted without editing this file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .heads import HEAD_REGISTRY
from .methods import METHOD_REGISTRY
from .registry import Registry
from .regularizers import REGULARIZER_REGISTRY
from .selectors import SELECTOR_REGISTRY
from .tree_splits import SPLIT_REGISTRY

SIGNATURES = ("grad", "weights")
SPLITS = SPLIT_REGISTRY.names()  # l1-median (paper) | dot-consecutive (released) | bisect | average-linkage
PRECISIONS = ("auto", "bf16", "fp32")
L1_REDUCTIONS = ("sum", "mean", "sqrt")


@dataclass
class LearnerConfig:
    """Hyper-parameters of one continual-learning run (units in the comments)."""

    method: str = "treelora"  # a name in treelora.methods.METHOD_REGISTRY (its preset fills the fields below)
    # --- adapter ---
    lora_r: int = 8  # rank
    lora_alpha: float = 32.0  # LoRA scale numerator (scale = alpha / r)
    lora_dropout: float = 0.1  # probability
    lora_depth: int = 0  # 0 = every matched module; D > 0 = only the first D modules
    target_modules: tuple[str, ...] | None = None  # None = query/value projections found per architecture
    # --- optimisation ---
    epochs: int = 2  # epochs per task
    batch_size: int = 32  # examples
    max_length: int = 32  # tokens per example
    lr: float = 1e-3  # Adam learning rate for LoRA parameters; 0 = LoRA frozen (what head-only sets)
    head_lr: float = 1e-2  # Adam learning rate for the classification head; 0 = head frozen
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global L2 norm; 0 disables
    freeze_lora_a: bool = False  # keep every A at its seeded initialisation (FFA-LoRA: lr 0 on A)
    # --- TreeLoRA ---
    signature: str = "grad"  # "grad" (paper) | "weights" (released code)
    signature_scale_by_layers: bool = False  # released code adds A/T L times per step (a uniform scale)
    split: str = "l1-median"  # a name in treelora.tree_splits.SPLIT_REGISTRY: "l1-median" (paper) | "dot-consecutive"
    # (released code) | "bisect" (signal-weighted 2-means over all layers) | "average-linkage"
    selector: str = "tree-lcb"  # a name in treelora.selectors.SELECTOR_REGISTRY
    regularizer: str = "l1-grad"  # a name in treelora.regularizers.REGULARIZER_REGISTRY
    lam: float = 0.5  # regulariser weight λ (0.1 vision / 0.5 language in the paper)
    lcb_c: float = 2.0  # exploration constant c of the LCB
    tree_delta: float = 0.1  # smoothness slack δ_0 of an internal node (in units of the layer's mean loss)
    tree_delta_decay: float = 0.5  # δ_depth = δ_0 · decay^depth
    leaf_size: int = 1  # tasks per leaf
    max_depth: int = 0  # 0 = number of layers L
    rebuild_every: int = 4  # rebuild the tree from scratch after this many inserts (paper preset)
    tree_budget: int = 0  # max stored task adapters; 0 = unlimited (merge closest leaves when over)
    reg_every: int = 1  # apply the regulariser every k steps (cost knob)
    reg_top_layers: int = 2  # l1-grad-top: regularise (and differentiate) only the top k LoRA layers (cost knob)
    l1_reduction: str = "sum"  # l1-grad distance per layer: "sum" (Eq. 3) | "mean" (/ p) | "sqrt" (/ √p)
    fd_eps: float = 1e-3  # finite-difference step of l1-grad-fd (relative to parameter norm)
    # --- baselines ---
    olora_lambda: float = 0.5  # λ1 of O-LoRA's orthogonality loss
    ewc_lambda: float = 5e3  # EWC penalty weight
    lm_mode: str = "generate"  # causal LMs: "generate" (instruction answer, greedy decoding) | "head" (class head)
    # --- head (treelora.heads) ---
    head: str = "linear"  # a name in treelora.heads.HEAD_REGISTRY: "linear" | "ncm" (prototypes) | "slca" (refit)
    head_samples: int = 256  # slca: sampled features per class for each refit
    head_refit_epochs: int = 5  # slca: SGD epochs over the sampled features per refit
    head_refit_lr: float = 1e-2  # slca: SGD learning rate of the refit (momentum 0.9)
    head_moment_reset: bool = True  # zero Adam's moments of a finished task's head rows at its end (False: drift)
    # --- evaluation ---
    task_aware: bool = False  # ORACLE when True: each task scored with its own stored snapshot (BWT = 0 by
    # construction); False = task-free inference (live adapter, logits over seen classes)
    task_incremental: bool = False  # score with the live adapter over each task's own classes (task-IL)
    eval_batch_size: int = 128
    fwt: bool = False  # also score each task before training it (its own classes) for forward transfer
    # --- run ---
    seed: int = 0
    device: str | None = None  # None = cuda if available else cpu
    precision: str = "auto"  # autocast: "auto" (bf16 on CUDA, fp32 on CPU) | "bf16" (on any device) | "fp32"
    threads: int = 0  # torch intra-op threads; 0 = leave as is
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field whose value is out of range."""
        choices: dict[str, tuple[str, ...] | Registry] = {
            "method": METHOD_REGISTRY,
            "signature": SIGNATURES,
            "split": SPLIT_REGISTRY,
            "selector": SELECTOR_REGISTRY,
            "regularizer": REGULARIZER_REGISTRY,
            "head": HEAD_REGISTRY,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.l1_reduction not in L1_REDUCTIONS:
            raise ValueError(f"l1_reduction={self.l1_reduction!r} is not one of {', '.join(L1_REDUCTIONS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.lm_mode not in ("generate", "head"):
            raise ValueError(f"lm_mode={self.lm_mode!r} is not one of generate, head")
        positive = ("lora_r", "epochs", "batch_size", "max_length", "leaf_size", "rebuild_every", "reg_every",
                    "reg_top_layers", "head_samples", "head_refit_epochs")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lora_depth", "max_depth", "tree_budget", "lam", "lcb_c", "ewc_lambda", "olora_lambda"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        for name in ("lr", "head_lr", "head_refit_lr"):  # 0 = frozen (head-only sets lr = 0)
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 (0 = frozen), got {getattr(self, name)}")

    @property
    def attn_implementation(self) -> str:
        """The attention kernel to load the backbone with: ``eager`` when the regulariser differentiates through
        attention twice (PyTorch's CPU SDPA has no double backward), else ``sdpa``."""
        return "eager" if REGULARIZER_REGISTRY.get(self.regularizer).needs_eager_attention else "sdpa"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


# the methods registered when this module loads (the built-ins); make_config and validate ask the registry itself
METHODS: tuple[str, ...] = METHOD_REGISTRY.names()
PRESETS: dict[str, dict[str, Any]] = {name: dict(METHOD_REGISTRY.get(name).preset) for name in METHODS}


def make_config(method: str = "treelora", **overrides: Any) -> LearnerConfig:
    """Config of the named method's preset, with ``overrides`` applied on top (unknown keys are an error)."""
    preset = METHOD_REGISTRY.get(method).preset
    known = {f.name for f in dataclasses.fields(LearnerConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join(unknown)}")
    values = {**preset, **{k: v for k, v in overrides.items() if v is not None}, "method": method}
    for key in ("betas", "target_modules"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    return LearnerConfig(**values)


def config_fields() -> list[dataclasses.Field]:
    """The dataclass fields, for CLIs and run-config parsers."""
    return list(dataclasses.fields(LearnerConfig))


__all__ = ["LearnerConfig", "PRESETS", "METHODS", "make_config", "config_fields"]
