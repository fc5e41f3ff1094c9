"""The figures of the HTML report (:mod:`treelora.report_html`), each an inline SVG string made from results.json.

Each function takes loaded results (centralized runs of ``treelora train``, federated runs of the ServerApp) and
returns ``(caption, svg)`` pairs; the drawing is :mod:`treelora.plots`' (one look for PNGs and the report).
Accuracy matrices: the mean over a method's seeds (centralized), or one per client (federated). Bars: ACC and
BWT per method, ± std over seeds or clients. Over rounds (federated): bytes up and down per client-round from
``history``, the leaves in the global tree, and the mean accuracy of every recorded evaluation (``history``
entries with ``mean_accuracy``, and ``final_evaluation``). Trees: labelled with the stream task names and coloured
by task family (:mod:`treelora.task_labels`).
"""

from __future__ import annotations

import itertools
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import mean_std
from .task_labels import client_task_labels, has_tree_selection, task_families, task_labels

__all__ = ["svg", "accuracy_figures", "metric_figures", "round_figures", "tree_figures", "run_name"]

Figure = tuple[str, str]
_COUNTER = itertools.count()  # a distinct file stem per figure: the SVG ids (clip paths) stay distinct in one page


def svg(draw: Callable[..., Path], *args: Any, **kwargs: Any) -> str:
    """The SVG text a :mod:`treelora.plots` function draws (``draw(*args, path, **kwargs)``), without the XML
    prologue, ready to inline in HTML."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fig{next(_COUNTER)}.svg"
        text = draw(*args, path, **kwargs).read_text()
    return text[text.index("<svg"):]


def run_name(results: dict[str, Any]) -> str:
    """What a run is called in the report: its label (``treelora train --label``) or method."""
    return str(results.get("label") or results["method"])


def _matrix(rows: list[list[Any]]) -> np.ndarray:
    return np.array([[np.nan if x is None else float(x) for x in row] for row in rows], dtype=float)


def _by_name(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        out.setdefault(run_name(r), []).append(r)
    return out


def accuracy_figures(central: list[dict[str, Any]], federated: list[dict[str, Any]]) -> list[Figure]:
    """Accuracy matrices in %: per centralized method the mean over its seeds, per federated run one per client."""
    from .plots import plot_accuracy_matrix

    figs = []
    for name, rs in _by_name(central).items():
        shapes = {len(r["accuracy_matrix"]) for r in rs}
        same = [r for r in rs if len(r["accuracy_matrix"]) == max(shapes)]
        if not same:
            continue
        stack = np.stack([_matrix(r["accuracy_matrix"]) for r in same])
        count = np.isfinite(stack).sum(axis=0)
        R = np.where(count > 0, 100 * np.nansum(stack, axis=0) / np.maximum(count, 1), np.nan)  # NaN: not scored
        seeds = f"mean over {len(same)} seeds" if len(same) > 1 else f"seed {same[0]['config'].get('seed', 0)}"
        figs.append((f"{name}: accuracy % after each task ({seeds})",
                     svg(plot_accuracy_matrix, R, list(same[0]["tasks"]), title=f"{name} ({seeds})")))
    for r in federated:
        for client, data in sorted(r["per_client"].items()):
            if data.get("tasks"):
                figs.append((f"{run_name(r)}: client {client}, accuracy % after each of its tasks",
                             svg(plot_accuracy_matrix, 100 * _matrix(data["accuracy_matrix"]),
                                 client_task_labels(data["tasks"], r), title=f"{run_name(r)}: {client}")))
    return figs


def federated_table(federated: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """method → metric → (mean, std over clients), with the client count as ``seeds`` (for the bar charts)."""
    table = {}
    for r in federated:
        clients = [c["metrics"] for c in r["per_client"].values() if c.get("metrics")]
        row: dict[str, tuple[float, float]] = {"seeds": (float(len(clients)), 0.0)}
        for k in ("acc", "bwt", "forgetting"):
            vals = [float(m[k]) for m in clients if k in m and math.isfinite(float(m[k]))]
            if vals:
                row[k] = mean_std(vals)
        table[run_name(r)] = row
    return table


def metric_figures(central_table: dict[str, Any], federated: list[dict[str, Any]]) -> list[Figure]:
    """ACC and BWT bars per method (centralized: ± std over seeds; federated: ± std over clients)."""
    from .plots import plot_metric_bars

    figs = []
    for table, over, kind in ((central_table, "seeds", "centralized"), (federated_table(federated), "clients",
                                                                         "federated")):
        for metric, name in (("acc", "ACC"), ("bwt", "BWT")):
            if any(metric in row for row in table.values()):
                figs.append((f"{kind}: {name} per method (%; mean ± std over {over})",
                             svg(plot_metric_bars, table, metric, percent=True, label=name, over=over)))
    return figs


def _evaluations(r: dict[str, Any]) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for h in r.get("history") or []:
        if h.get("mean_accuracy") is not None:
            xs.append(float(h["round"]))
            ys.append(100 * float(h["mean_accuracy"]))
    final = r.get("final_evaluation") or {}
    if final.get("mean_accuracy") is not None and float(final.get("round", 0)) not in xs:
        xs.append(float(final.get("round", r.get("rounds", 0))))
        ys.append(100 * float(final["mean_accuracy"]))
    return xs, ys


def round_figures(federated: list[dict[str, Any]]) -> list[Figure]:
    """Over rounds: KiB up and down per client-round, leaves in the tree, mean accuracy of each evaluation."""
    from .plots import plot_lines

    runs = [r for r in federated if r.get("history")]
    if not runs:
        return []

    def per_client_round(r: dict[str, Any], key: str) -> tuple[list[float], list[float]]:
        h = r["history"]
        return [float(x["round"]) for x in h], [x[key] / max(1, x["replies"]) / 1024 for x in h]

    figs = [
        ("bytes up per client-round (KiB): adapters, sketches, counts", svg(
            plot_lines, {run_name(r): per_client_round(r, "bytes_up") for r in runs}, xlabel="round",
            ylabel="KiB up / client-round", title="upload per client-round")),
        ("bytes down per client-round (KiB): assignments, shared layers, candidates, warm starts", svg(
            plot_lines, {run_name(r): per_client_round(r, "bytes_down") for r in runs}, xlabel="round",
            ylabel="KiB down / client-round", title="download per client-round")),
    ]
    leaves = {run_name(r): ([float(x["round"]) for x in r["history"]], [float(x.get("leaves", 0))
                                                                        for x in r["history"]])
              for r in runs if any(x.get("leaves") for x in r["history"])}
    if leaves:
        figs.append(("leaves in the global tree after each round", svg(
            plot_lines, leaves, xlabel="round", ylabel="leaves", title="global tree size")))
    evals = {run_name(r): _evaluations(r) for r in runs}
    evals = {k: v for k, v in evals.items() if v[0]}
    if evals:
        points = max(len(v[0]) for v in evals.values())
        note = "" if points > 1 else " (only the final evaluation is recorded)"
        last = max(max(v[0]) for v in evals.values())
        figs.append((f"mean accuracy over the clients' finished tasks, at each recorded evaluation (%){note}", svg(
            plot_lines, evals, xlabel="round", ylabel="mean accuracy %", title="accuracy over rounds",
            xlim=(0.5, last + 0.5))))
    return figs


def tree_figures(central: list[dict[str, Any]], federated: list[dict[str, Any]]) -> list[Figure]:
    """Each tree a method selects from (centralized: its first seed's), leaves coloured by task family."""
    from .plots import plot_tree

    figs = []
    firsts = [rs[0] for rs in _by_name(central).values()]
    for r in firsts + list(federated):
        if not has_tree_selection(r) or not r.get("tree") or not r["tree"].get("tasks"):
            continue
        fams = task_families(r)
        where = "global tree" if "per_client" in r else f"tree of seed {r['config'].get('seed', 0)}"
        figs.append((f"{run_name(r)}: {where}, leaves coloured by task family" if fams else
                     f"{run_name(r)}: {where} (no task families in this results.json)",
                     svg(plot_tree, r["tree"], title=f"{run_name(r)}: {where}", labels=task_labels(r),
                         families=fams or None)))
    return figs
