"""The results of a federated run as one dict (written to results.json by :mod:`server.report`).

Per client: the accuracy matrix built from the rows it reported when each task ended (row j = scores on tasks
0..j after task j; class-incremental, the headline), and its metrics when the matrix is complete, with the same
for its task-incremental and task-inference rows (``views``; their means in ``view_metrics``); globally: mean ±
std of the clients' metrics, bytes up and down (total and per client-round, and against a full-model FedAvg),
per-round accounting, rejected messages, the DP report, and the method's own entries (TreeLoRA-Fed: its leaves
and tree).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from treelora.fed.keys import position
from treelora.metrics import mean_std, summarize

if TYPE_CHECKING:
    from .state import GlobalState

__all__ = ["client_matrix", "build_results"]


def client_matrix(rows: list[dict[str, float]]) -> tuple[list[str], np.ndarray]:
    """(task keys, accuracy matrix) from a client's reported rows.

    Row j was written when the j-th *reported* task ended; a task whose last round the client missed has no row,
    so the matrix covers the tasks that have one (each row holds every earlier task)."""
    rows = [r for r in rows if r]
    keys = [max(row, key=position) for row in rows]
    T = len(keys)
    R = np.full((T, T), np.nan)
    for j, row in enumerate(rows):
        for i, k in enumerate(keys[: j + 1]):
            R[j, i] = row.get(k, np.nan)
    return keys, R


def _json_rows(R: np.ndarray) -> list[list[float | None]]:
    """An accuracy matrix as JSON rows (None where a score is missing)."""
    return [[None if math.isnan(x) else x for x in r] for r in R]


def build_results(state: GlobalState) -> dict[str, Any]:
    """Everything results.json holds (see the module docstring)."""
    per_client = {}
    for client, rows in sorted(state.acc_rows.items()):
        try:  # rows are validated on arrival; a client whose rows still cannot be read must not cost the others
            keys, R = client_matrix(rows)
        except (ValueError, IndexError) as exc:
            per_client[client] = {"tasks": [], "accuracy_matrix": [], "metrics": {}, "error": str(exc)}
            continue
        T = len(keys)
        complete = T > 0 and not np.isnan(R[np.tril_indices(T)]).any()
        per_client[client] = {
            "tasks": keys,
            "accuracy_matrix": _json_rows(R),
            "metrics": summarize(R) if complete else {},
        }
        views = {}
        for view, vrows in state.view_rows.get(client, {}).items():
            if len(vrows) != len([r for r in rows if r]):
                continue  # a row without its views (another client version): the view's matrix would misalign
            _, V = client_matrix(vrows)
            views[view] = {"accuracy_matrix": _json_rows(V),
                           "metrics": summarize(V) if complete else {}}
        if views:
            per_client[client]["views"] = views
    global_metrics = {}
    for m in ("acc", "bwt", "bwt_clipped", "forgetting"):
        vals = [c["metrics"][m] for c in per_client.values() if m in c["metrics"]]
        if vals:
            global_metrics[m] = mean_std(vals)
    view_metrics = {}
    for view in ("til", "task_inference"):
        for m in ("acc", "bwt", "forgetting"):
            vals = [c["views"][view]["metrics"][m] for c in per_client.values()
                    if m in c.get("views", {}).get(view, {}).get("metrics", {})]
            if vals:
                view_metrics[f"{view}_{m}"] = mean_std(vals)
    strategy = state.strategy.results()
    if state.strategy.pool is not None:
        strategy = {**strategy, "prototypes": state.strategy.pool.results()}
    up = sum(h["bytes_up"] for h in state.history)
    down = sum(h["bytes_down"] for h in state.history)
    client_rounds = sum(h["replies"] for h in state.history) or 1
    return {
        "method": state.fed.method,
        "config": dict(asdict(state.fed)),
        "rounds": state.round,
        "per_client": per_client,
        "metrics": {k: {"mean": v[0], "std": v[1]} for k, v in global_metrics.items()},
        "view_metrics": {k: {"mean": v[0], "std": v[1]} for k, v in view_metrics.items()},
        "bytes_up_total": up,
        "bytes_down_total": down,
        "bytes_up_per_client_round": up / client_rounds,
        "bytes_down_per_client_round": down / client_rounds,
        "full_model_bytes": state.model_bytes,
        "up_vs_full_model": (up / client_rounds) / state.model_bytes if state.model_bytes else None,
        "history": state.history,
        "errors": state.errors,
        "privacy": state.privacy.report(),
        **strategy,
        "leaf_tasks": state.audit.leaf_tasks(strategy["leaves"]),
        "tree_quality": state.audit.summary(getattr(state.strategy, "tree", None)),
    }
