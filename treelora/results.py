"""Results on disk: one directory per run (results.json, metrics.csv, heatmap and tree PNGs) and comparisons.

``results.json`` keeps everything a later analysis may need: the whole accuracy matrix, the metrics, timings,
the config and library versions. ``compare_runs`` groups runs by method and reports mean ± std over seeds.
Figures name tasks by their stream names (:mod:`treelora.task_labels`); the tree is drawn (tree.png, tree.txt)
only for methods that select from it: SeqLoRA, O-LoRA and EWC (selector ``none``) store their tasks in a tree
nobody reads, and a picture of it would suggest otherwise.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from .evaluation import flat_view_metrics
from .io import write_json_atomic
from .metrics import mean_std

METRIC_KEYS = ("acc", "bwt", "bwt_clipped", "forgetting")
# the evaluation views' columns (treelora.evaluation), shown when every run of the table has them
VIEW_KEYS = ("cil_acc", "cil_bwt", "til_acc", "til_bwt", "til_forgetting", "task_inference_acc")
VIEW_HEADS = ("CIL ACC %", "CIL BWT %", "TIL ACC %", "TIL BWT %", "TIL forgetting %", "task-inference %")


def write_run(results: dict[str, Any], out: str | Path, *, plots: bool = True) -> Path:
    """Write one run's directory and return it."""
    from .plots import plot_accuracy_matrix, plot_tree, render_tree_text
    from .task_labels import has_tree_selection, task_families, task_labels

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", results)
    views = flat_view_metrics(results)  # cil_acc, til_bwt, task_inference_acc, ... (treelora.evaluation)
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", *results["metrics"].keys(), *views.keys(), "step_time_s", "search_time_s",
                    "wall_time_s"])
        w.writerow(
            [
                results["method"],
                results["config"]["seed"],
                *results["metrics"].values(),
                *views.values(),
                results["step_time_s"],
                sum(results["search_time_per_task_s"]),
                sum(results["time_per_task_s"]),
            ]
        )
    R = np.array([[np.nan if x is None else x for x in row] for row in results["accuracy_matrix"]], dtype=float)
    tree = has_tree_selection(results)
    labels = task_labels(results)
    if tree:
        (out / "tree.txt").write_text(render_tree_text(results["tree"], labels) + "\n")
    if plots:
        title = f"{results['method']} on {results['stream']} ({results['backbone']}, seed {results['config']['seed']})"
        plot_accuracy_matrix(R, results["tasks"], out / "accuracy_matrix.png", title=title)
        if tree:
            plot_tree(results["tree"], out / "tree.png", title=f"{results['method']}: task tree", labels=labels,
                      families=task_families(results))
    return out


def find_results(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Load every results.json under the given files or directories."""
    found = []
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() else sorted(p.rglob("results.json"))
        if not files:
            raise FileNotFoundError(f"no results.json under {p}")
        for f in files:
            with open(f) as fh:
                data = json.load(fh)
            data["_path"] = str(f)
            found.append(data)
    return found


def compare_runs(runs: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """method → metric → (mean, std over seeds), including time per task and time in the similarity search."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_method.setdefault(r.get("label") or r["method"], []).append(r)
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for method, rs in by_method.items():
        row = {k: mean_std([float(r["metrics"][k]) for r in rs]) for k in METRIC_KEYS}
        row["time_per_task_s"] = mean_std([float(np.mean(r["time_per_task_s"])) for r in rs])
        row["search_time_per_task_s"] = mean_std([float(np.mean(r["search_time_per_task_s"])) for r in rs])
        row["step_time_s"] = mean_std([float(r["step_time_s"]) for r in rs])
        views = [flat_view_metrics(r) for r in rs]
        if all(all(k in v for k in VIEW_KEYS) for v in views):
            row.update({k: mean_std([v[k] for v in views]) for k in VIEW_KEYS})
        row["oracle"] = (float(any(r.get("oracle") or r["config"].get("task_aware") for r in rs)), 0.0)
        row["seeds"] = (float(len(rs)), 0.0)
        table[method] = row
    return table


def markdown_table(table: dict[str, dict[str, tuple[float, float]]]) -> str:
    """Markdown: accuracies in %, times in seconds, mean ± std; with the evaluation views (every row has them) a
    CIL / TIL / task-inference column block; a task-aware run is marked as the oracle it is."""
    views = bool(table) and all(all(k in row for k in VIEW_KEYS) for row in table.values())
    heads = ["ACC %", "BWT %", "clipped BWT %", "forgetting %", *(VIEW_HEADS if views else ()),
             "time/task s", "search/task s", "step s"]
    lines = ["| method | seeds | " + " | ".join(heads) + " |", "|" + "---|" * (len(heads) + 2)]
    for method, row in table.items():
        pct = [f"{100 * row[k][0]:.2f} ± {100 * row[k][1]:.2f}" for k in METRIC_KEYS + (VIEW_KEYS if views else ())]
        times = [
            f"{row[k][0]:.3g} ± {row[k][1]:.2g}" for k in ("time_per_task_s", "search_time_per_task_s", "step_time_s")
        ]
        name = f"{method} (task-aware ORACLE: BWT 0 by construction)" if row.get("oracle", (0.0,))[0] else method
        lines.append(f"| {name} | {int(row['seeds'][0])} | " + " | ".join(pct + times) + " |")
    return "\n".join(lines)
