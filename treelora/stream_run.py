"""One whole stream through a learner: train every task in order, score every seen task after each, and report
the accuracy matrix with the metrics, timings, chosen arms and machine record as the run's results dict (what
``results.json`` holds; :mod:`treelora.results` writes and compares them)."""

from __future__ import annotations

import math
import platform
import resource
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .evaluation import VIEWS, main_view, views_block

if TYPE_CHECKING:
    from .learner import ContinualLearner, TaskRecord


def run_stream(learner: ContinualLearner, stream: Any, *, epochs: list[int] | None = None) -> dict[str, Any]:
    """Train every task of ``stream`` in order, evaluating all seen tasks after each; returns the results.

    ``epochs`` gives each task its own number of epochs (default: ``config.epochs`` for all). Task ``j`` is
    trained under the key ``t{j}``. Row ``j`` of the accuracy matrix is scored after task ``j``; with ``fwt``
    the next task is scored too (its own classes) and every task once before any training."""
    from tqdm.auto import tqdm

    cfg = learner.cfg
    tasks = stream.tasks
    T = len(tasks)
    if epochs is not None and len(epochs) != T:
        raise ValueError(f"epochs has {len(epochs)} entries for {T} tasks")
    tests = [learner.encode(task.test) for task in tasks]
    R = np.full((T, T), np.nan)
    views = {v: np.full((T, T), np.nan) for v in VIEWS}
    main = main_view(cfg)
    initial = None
    if cfg.fwt:
        initial = np.array([learner.evaluate(t, encoded=e, own_classes=True) for t, e in zip(tasks, tests)])
    total_steps = sum(
        -(-len(task.train) // cfg.batch_size) * (epochs[i] if epochs else cfg.epochs) for i, task in enumerate(tasks)
    )
    learner.model.train()
    wall = []
    bar = tqdm(total=total_steps, desc=f"{cfg.method}", unit="step", disable=not cfg.progress)
    for j, task in enumerate(tasks):
        t0 = time.perf_counter()
        bar.set_postfix_str(f"task {j + 1}/{T} {task.name}")
        learner.train_task(f"t{j}", task, epochs=epochs[j] if epochs else None, progress=bar)
        wall.append(time.perf_counter() - t0)
        for i in range(j + 1):  # one forward pass per test set gives every view (treelora.evaluation)
            scores = learner.evaluate_views(tasks[i], key=f"t{i}", encoded=tests[i])
            for v in VIEWS:
                views[v][j, i] = scores[v]
            R[j, i] = scores[main]
        if cfg.fwt and j + 1 < T:
            R[j, j + 1] = learner.evaluate(tasks[j + 1], encoded=tests[j + 1], own_classes=True)
    bar.close()
    results = results_dict(learner, stream, R, initial, wall, [learner.records[f"t{j}"] for j in range(T)])
    results["views"] = views_block(views)
    return results


def results_dict(
    learner: ContinualLearner,
    stream: Any,
    R: np.ndarray,
    initial: np.ndarray | None,
    wall: list[float],
    recs: list[TaskRecord],
) -> dict[str, Any]:
    """The results of a finished stream: accuracy matrix ``R`` (NaN = not scored), the initial accuracies (FWT),
    wall time per task and the tasks' records, with config, stream, backbone, tree and versions. ``run_stream`` adds
``views``: the CIL, TIL and task-inference matrices and metrics (:mod:`treelora.evaluation`)."""
    from .metrics import summarize

    tasks = stream.tasks
    steps = sum(r.steps for r in recs)
    return {
        "method": learner.cfg.method,
        "config": learner.cfg.to_dict(),
        "stream": getattr(stream, "name", "custom"),
        "backbone": learner.backbone_name,
        "tasks": [t.name for t in tasks],
        "task_families": [getattr(t, "family_name", t.name) for t in tasks],
        "task_classes": [list(t.classes) for t in tasks],
        "accuracy_matrix": [[None if math.isnan(x) else float(x) for x in row] for row in R],
        "metrics": summarize(R, initial),
        "oracle": bool(learner.cfg.task_aware),  # task-aware: each task's own snapshot, BWT 0 by construction
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
        "device": str(learner.device),
        "tree": learner.tree.render(),
        "tree_quality": _family_quality(learner, tasks),
        "num_layers": learner.lora.num_layers,
        "versions": versions(),
    }


def _family_quality(learner: ContinualLearner, tasks: list[Any]) -> dict[str, Any] | None:
    """The tree's figures against the tasks' families (a centralized tree has one leaf per task, so only the
    family-level figures — nearest-neighbour family purity, level ARI/NMI against families — say something)."""
    from .tree_quality import tree_quality

    if len(learner.tree) < 2:
        return None
    family = {f"t{j}": getattr(t, "family_name", t.name) for j, t in enumerate(tasks)}
    family = {k: v for k, v in family.items() if k in learner.tree}
    return {"by": "family", **tree_quality(learner.tree, family, family)}


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
