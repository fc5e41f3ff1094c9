"""Readable names for the keys that trees, heatmaps and reports show: a task's stream name next to its key.

Keys are what the code uses: a centralized run trains task ``j`` of its stream as ``t<j>``; a federated leaf is
``c<k>/t<j>`` (client k's j-th task). A person wants the task's name (``noun.animal+...``, ``sentiment``):

- centralized ``results.json`` lists the stream's task names in order (``tasks``) and, written by ``treelora train``,
  their families (``task_families``);
- federated ``results.json`` carries ``leaf_tasks``: ``{leaf key: {"task": stream task name, "family": family}}``
  (the server knows it from the run config, :func:`treelora.fed.scenarios.leaf_truth`). An older file without it
  falls back to the keys.

A label is ``"<name> (<key>)"``; where the name is unknown it is the key alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["label", "task_names", "task_labels", "task_families", "client_task_labels", "is_federated",
           "has_tree_selection"]


def label(key: str, name: str | None) -> str:
    """``"name (key)"``, or ``key`` when there is no name (or the name is the key)."""
    return f"{name} ({key})" if name and name != key else key


def is_federated(results: Mapping[str, Any]) -> bool:
    """A federated run's results (per-client matrices) rather than a centralized one's."""
    return "per_client" in results


def task_names(results: Mapping[str, Any]) -> dict[str, str]:
    """Key → stream task name, for every key the run's results name (empty where unknown)."""
    if is_federated(results):
        leaf_tasks = results.get("leaf_tasks") or {}
        return {k: str(v.get("task", "")) for k, v in leaf_tasks.items() if isinstance(v, Mapping)}
    return {f"t{j}": str(name) for j, name in enumerate(results.get("tasks") or [])}


def task_labels(results: Mapping[str, Any]) -> dict[str, str]:
    """Key → readable label (:func:`label`) for every key with a known name."""
    return {k: label(k, name) for k, name in task_names(results).items()}


def task_families(results: Mapping[str, Any]) -> dict[str, str]:
    """Key → task family (for colouring a tree): ``leaf_tasks``' family (federated), ``task_families`` (centralized,
    written by ``treelora train``), else the task's own name; empty where nothing is known."""
    if is_federated(results):
        leaf_tasks = results.get("leaf_tasks") or {}
        return {k: str(v.get("family") or v.get("task") or "") for k, v in leaf_tasks.items()
                if isinstance(v, Mapping)}
    names = list(results.get("tasks") or [])
    families = list(results.get("task_families") or [])
    return {f"t{j}": str(families[j] if j < len(families) and families[j] else name) for j, name in enumerate(names)}


def client_task_labels(keys: Iterable[str], results: Mapping[str, Any]) -> list[str]:
    """Labels of one client's task keys (``c1/t0`` ...) for its heatmap: the stream task name with the local key
    (``"sentiment (t0)"``); the full key where the name is unknown."""
    names = task_names(results)
    out = []
    for key in keys:
        name = names.get(key)
        out.append(label(key.split("/", 1)[-1], name) if name else key)
    return out


def has_tree_selection(results: Mapping[str, Any]) -> bool:
    """Whether the run's method selects from its tree (centralized: its selector is not ``none``; SeqLoRA, O-LoRA
    and EWC store tasks in a tree nobody selects from, so it is not drawn). Federated runs have a tree exactly when
    their strategy keeps one (``tree`` is set)."""
    if is_federated(results):
        tree = results.get("tree")
        return bool(tree and tree.get("tasks"))
    return (results.get("config") or {}).get("selector", "none") != "none"
