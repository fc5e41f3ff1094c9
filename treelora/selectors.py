"""Selectors as hook classes: which earlier task each layer looks at this step, and what the step observed.

Each :class:`Selector` wraps one algorithm of :mod:`treelora.bandit` (the algorithms' home) and is registered in
:data:`SELECTOR_REGISTRY` under the name a config uses. The hooks are the learner's whole view of a selector:
reset at a task's start, epoch start, ``select_all``, the observed distance ξ of the pulled arms, ``update_all``
and checkpoint state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from .bandit import FlatLCBBandit, OfficialSoftmaxSampler, TreeLCBBandit, UniformRandomSelector
from .registry import Registry
from .tree import TaskTree

if TYPE_CHECKING:
    from .config import LearnerConfig


class Selector:
    """The ``none`` selector (no earlier task is ever chosen) and the base of the others."""

    name: ClassVar[str] = ""
    # ξ per layer = ‖step vector − G‖₁, divided by the layer's size (paper, DESIGN.md §2 "LCB bandit") or not
    normalize_distance: ClassVar[bool] = True

    def __init__(self, config: LearnerConfig, tree: TaskTree) -> None:
        self.tree = tree
        self.algorithm: Any = self.make_algorithm(config, tree)

    def make_algorithm(self, config: LearnerConfig, tree: TaskTree) -> Any:
        """The :mod:`treelora.bandit` object doing the work (None: this selector chooses nothing)."""
        return None

    def begin_task(self) -> None:
        """A task starts."""

    def start_epoch(self, steps: int) -> None:
        """An epoch of ``steps`` steps starts."""

    def select_all(self, step_in_task: int, step_in_epoch: int) -> list[str | None]:
        """One stored task key per layer, or None per layer while nothing can be chosen (steps are 1-based)."""
        if self.algorithm is None or len(self.tree) == 0:
            return [None] * self.tree.num_layers
        return self.algorithm.select_all(self.select_time(step_in_task, step_in_epoch))

    def select_time(self, step_in_task: int, step_in_epoch: int) -> int:
        """The ``t`` the algorithm's confidence radius is computed at."""
        return step_in_task

    def observed_distances(
        self, targets: list[torch.Tensor | None], step_vectors: list[torch.Tensor]
    ) -> list[float]:
        """ξ per layer between this step's vectors and the chosen targets (NaN where no target was chosen)."""
        out = []
        for layer, target in enumerate(targets):
            if target is None:
                out.append(float("nan"))
                continue
            vec = step_vectors[layer].to(target.device, target.dtype)
            d = float((vec - target).abs().sum())
            out.append(d / target.numel() if self.normalize_distance else d)
        return out

    def update_all(self, choices: list[str | None], observed: list[float], step_in_task: int) -> None:
        """Record the observed ξ of each layer's chosen arm."""
        if self.algorithm is not None:
            self.algorithm.update_all(choices, observed, step_in_task)

    def state(self) -> dict[str, Any] | None:
        """JSON-able statistics for checkpoints (None when there are none)."""
        return None if self.algorithm is None else self.algorithm.state()

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state` output."""
        if self.algorithm is not None and state is not None:
            self.algorithm.load_state(state)


SELECTOR_REGISTRY: Registry[type[Selector]] = Registry("selector")


class _LCBSelector(Selector):
    """LCB selectors: ξ is distance to the task being trained, so statistics restart with every task."""

    def begin_task(self) -> None:
        self.algorithm.reset()


@SELECTOR_REGISTRY.register("tree-lcb")
class TreeLCBSelector(_LCBSelector):
    """Paper: argmin-LCB descent of the tree (:class:`treelora.bandit.TreeLCBBandit`)."""

    def make_algorithm(self, config: LearnerConfig, tree: TaskTree) -> TreeLCBBandit:
        return TreeLCBBandit(
            tree, c=config.lcb_c, delta=config.tree_delta, delta_decay=config.tree_delta_decay, seed=config.seed
        )


@SELECTOR_REGISTRY.register("flat-lcb")
class FlatLCBSelector(_LCBSelector):
    """Argmin-LCB over every stored task (:class:`treelora.bandit.FlatLCBBandit`)."""

    def make_algorithm(self, config: LearnerConfig, tree: TaskTree) -> FlatLCBBandit:
        return FlatLCBBandit(tree, c=config.lcb_c, seed=config.seed)


@SELECTOR_REGISTRY.register("official-softmax")
class OfficialSoftmaxSelector(Selector):
    """Released code: per-module softmax sampling (:class:`treelora.bandit.OfficialSoftmaxSampler`), statistics
    reset every epoch, the step counted within the epoch, ξ the un-normalised L1 distance."""

    normalize_distance = False

    def make_algorithm(self, config: LearnerConfig, tree: TaskTree) -> OfficialSoftmaxSampler:
        return OfficialSoftmaxSampler(tree, seed=config.seed)

    def start_epoch(self, steps: int) -> None:
        self.algorithm.start_epoch(steps)

    def select_time(self, step_in_task: int, step_in_epoch: int) -> int:
        return step_in_epoch


@SELECTOR_REGISTRY.register("random")
class RandomSelector(Selector):
    """Ablation: every layer takes a stored task uniformly at random each step
    (:class:`treelora.bandit.UniformRandomSelector`)."""

    def make_algorithm(self, config: LearnerConfig, tree: TaskTree) -> UniformRandomSelector:
        return UniformRandomSelector(tree, seed=config.seed)


@SELECTOR_REGISTRY.register("none")
class NoSelector(Selector):
    """No selection: no regulariser target, no bandit statistics."""


def make_selector(config: LearnerConfig, tree: TaskTree) -> Selector:
    """The selector named by ``config.selector`` over ``tree``."""
    return SELECTOR_REGISTRY.get(config.selector)(config, tree)


__all__ = ["Selector", "SELECTOR_REGISTRY", "make_selector"]
