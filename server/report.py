"""Results of a federated run on disk: results.json, a summary line, per-client heatmaps and the global tree.

Figures name tasks by their stream names where results.json carries ``leaf_tasks`` (leaf key → stream task and
family; :mod:`treelora.task_labels`), and colour the tree's leaves by family; without it they show the keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from treelora.results import write_json_atomic


def summary_line(results: dict[str, Any]) -> str:
    """One human line: method, ACC/BWT mean ± std over clients, bytes per client-round."""
    m = results["metrics"]
    acc = m.get("acc", {"mean": float("nan"), "std": 0.0})
    bwt = m.get("bwt", {"mean": float("nan"), "std": 0.0})
    ratio = results.get("up_vs_full_model")
    ratio_s = f" ({100 * ratio:.3f}% of the full model)" if ratio else ""
    return (
        f"{results['method']}: ACC {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}%  "
        f"BWT {100 * bwt['mean']:.2f} ± {100 * bwt['std']:.2f}%  "
        f"up {results['bytes_up_per_client_round'] / 1024:.1f} KiB/client-round{ratio_s}  "
        f"leaves {len(results['leaves'])}  rejected {len(results['errors'])}"
    )


def write_results(results: dict[str, Any], out_dir: str | Path, *, plots: bool = True) -> Path:
    """Write results.json, summary.txt and (optionally) PNGs; returns the results.json path."""
    from treelora.plots import plot_accuracy_matrix, plot_tree, render_tree_text
    from treelora.task_labels import client_task_labels, task_families, task_labels

    out = Path(out_dir)
    path = write_json_atomic(out / "results.json", results)
    (out / "summary.txt").write_text(summary_line(results) + "\n")
    labels = task_labels(results)
    if results.get("tree"):
        (out / "tree.txt").write_text(render_tree_text(results["tree"], labels) + "\n")
    if plots:
        for client, data in results["per_client"].items():
            if data["tasks"]:
                R = np.array([[np.nan if x is None else x for x in row] for row in data["accuracy_matrix"]])
                plot_accuracy_matrix(R, client_task_labels(data["tasks"], results), out / f"accuracy_{client}.png",
                                     title=f"{results['method']}: client {client}")
        if results.get("tree") and results["tree"]["tasks"]:
            plot_tree(results["tree"], out / "tree.png", title="global task tree", labels=labels,
                      families=task_families(results))
    return path
