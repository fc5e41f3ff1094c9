"""The evaluation protocol: three views of one forward pass per test set (issue 13, DESIGN.md §2 "Metrics").

For a test example of task *i* the head's scores over every class are computed once; then

* ``cil`` (class-incremental): argmax over every class seen so far — the task-free score;
* ``til`` (task-incremental): argmax over task *i*'s own classes, same adapter — the task identity given;
* ``task_inference``: the share of the examples whose ``cil`` prediction falls among task *i*'s classes — how
  often the one head picks the right task at all.

``cil`` − ``til`` separates the two ways to fail a class-incremental test: an example can lose its task (the
head's bias toward other tasks' classes: ``task_inference`` < 1) or lose its class inside its task (adapter or
head forgetting: ``til`` drops after the task). Each view gets its own accuracy matrix and its own
:func:`treelora.metrics.summarize` (ACC, BWT, forgetting).

With ``task_aware=True`` every test set is scored with **its own task's stored snapshot** (adapter and head):
an **oracle** that knows the task and keeps a copy of each task's model. Its ``til`` rows repeat the diagonal,
so its TIL BWT and forgetting are **0 by construction**, not by resisting forgetting; it is a reference row
(the upper bound of a task-identity-given learner), never a competitor.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .data import iterate_batches
from .task_model import masked_logits

if TYPE_CHECKING:
    from .learner import ContinualLearner

VIEWS: tuple[str, ...] = ("cil", "til", "task_inference")
VIEW_TITLES = {"cil": "CIL", "til": "TIL", "task_inference": "task inference"}

__all__ = ["VIEWS", "view_scores", "evaluate_views", "main_view", "views_block", "flat_view_metrics"]


def view_scores(logits: torch.Tensor, labels: torch.Tensor, seen: list[int], own: list[int]) -> dict[str, float]:
    """The three views from one ``(N, C)`` score matrix: ``seen`` = classes seen so far, ``own`` = the task's."""
    n = max(1, int(labels.shape[0]))
    dev = logits.device
    cil = masked_logits(logits, torch.tensor(sorted(seen), device=dev)).argmax(dim=-1)
    own_t = torch.tensor(sorted(own), device=dev)
    til = masked_logits(logits, own_t).argmax(dim=-1)
    labels = labels.to(dev)
    return {
        "cil": int((cil == labels).sum()) / n,
        "til": int((til == labels).sum()) / n,
        "task_inference": int(torch.isin(cil, own_t).sum()) / n,
    }


@contextlib.contextmanager
def task_snapshot(learner: ContinualLearner, key: str | None) -> Iterator[None]:
    """The oracle's model: task ``key``'s stored snapshot loaded for the block, the live adapter restored after."""
    if learner.method.task_aware_unavailable:
        raise ValueError(f"task-aware inference is not available for {learner.cfg.method} "
                         f"({learner.method.task_aware_unavailable})")
    if key is None or key not in learner.tree:
        raise ValueError(f"task-aware evaluation needs the key of a finished task, got {key!r}")
    live = learner.adapter_state()
    learner.load_adapter(learner.tree.entry_of(key).payload)
    try:
        yield
    finally:
        learner.load_adapter(live)


@torch.no_grad()
def evaluate_views(learner: ContinualLearner, task: Any, *, key: str | None = None,
                   encoded: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """``cil``/``til``/``task_inference`` of ``learner`` on ``task``'s test split from one forward pass (the
    task's snapshot with ``task_aware``: the oracle). A model that generates its answers (no class scores) is
    scored from one decoding pass instead, matched over the seen classes and over the task's own."""
    encoded = encoded if encoded is not None else learner.encode(task.test)
    own = list(task.classes)
    seen = list(learner.seen_classes) or own
    ctx = task_snapshot(learner, key) if learner.cfg.task_aware else contextlib.nullcontext()
    was_training = learner.model.training
    learner.model.eval()
    scored = hasattr(learner.model, "features")
    logits, labels, preds = [], [], []
    try:
        with ctx:
            for batch in iterate_batches(encoded, learner.cfg.eval_batch_size, shuffle=False):
                batch = learner._to_device(batch)
                with learner._autocast():
                    if scored:
                        logits.append(learner.classifier.logits(batch).float())
                    else:
                        preds.append(learner.model.predict_sets(
                            batch, [torch.tensor(sorted(c), device=learner.device) for c in (seen, own)]))
                labels.append(batch["labels"])
    finally:
        learner.model.train(was_training)
    y = torch.cat(labels)
    if scored:
        return view_scores(torch.cat(logits), y, seen, own)
    cil, til = (torch.cat([p[i] for p in preds]) for i in (0, 1))
    n = max(1, int(y.shape[0]))
    own_t = torch.tensor(own, device=cil.device)
    return {"cil": int((cil == y).sum()) / n, "til": int((til == y).sum()) / n,
            "task_inference": int(torch.isin(cil, own_t).sum()) / n}


def main_view(config: Any) -> str:
    """The view the run's headline ``accuracy_matrix`` holds: ``til`` with ``task_incremental`` or the oracle
    (``task_aware``), else ``cil`` (the task-free score, what :meth:`ContinualLearner.evaluate` returns)."""
    return "til" if (config.task_incremental or config.task_aware) else "cil"


def views_block(matrices: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """``{view: {"accuracy_matrix": rows (None = not scored), "metrics": summarize(R)}}`` for results.json."""
    from .metrics import summarize

    out = {}
    for view, R in matrices.items():
        out[view] = {
            "accuracy_matrix": [[None if math.isnan(x) else float(x) for x in row] for row in R],
            "metrics": summarize(R),
        }
    return out


def flat_view_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``{"cil_acc": .., "til_bwt": .., "task_inference_acc": .., ...}`` from a results dict's ``views`` (empty for
    results written before the views existed)."""
    return {f"{view}_{k}": float(v) for view, block in (results.get("views") or {}).items()
            for k, v in block["metrics"].items()}
