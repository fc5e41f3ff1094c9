"""Tests for treelora.plots: every figure is a real PNG, the text tree lists every task once."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from treelora.plots import plot_accuracy_matrix, plot_metric_bars, plot_tree, render_tree_text

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return len(data) > 100 and data[:8] == PNG_MAGIC


TREE = {
    "depth": 0, "tasks": ["nouns", "verbs", "adj", "adv", "misc"], "children": [
        {"depth": 1, "tasks": ["nouns", "verbs", "adj"], "children": [
            {"depth": 2, "tasks": ["nouns", "verbs"], "children": []},
            {"depth": 2, "tasks": ["adj"], "children": []},
        ]},
        {"depth": 1, "tasks": ["adv", "misc"], "children": []},
    ],
}


def test_accuracy_matrix_png(tmp_path: Path) -> None:
    R = np.array([[0.9, math.nan, math.nan], [0.7, 0.8, math.nan], [0.6, 0.85, 0.7]])
    out = plot_accuracy_matrix(R, ["t0", "t1", "t2"], tmp_path / "sub" / "acc.png", title="R")
    assert out == tmp_path / "sub" / "acc.png"
    assert _is_png(out)


def test_accuracy_matrix_checks_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task names"):
        plot_accuracy_matrix(np.eye(3), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="square"):
        plot_accuracy_matrix(np.zeros((2, 3)), ["a", "b"], tmp_path / "x.png")


def test_metric_bars_png(tmp_path: Path) -> None:
    table = {
        "treelora": {"acc": (0.71, 0.02), "bwt": (-0.05, 0.01)},
        "seqlora": {"acc": (0.62, 0.03), "bwt": (-0.15, 0.02)},
        "ewc": {"acc": (0.64, 0.0)},  # no bwt: left out of the bwt chart
    }
    assert _is_png(plot_metric_bars(table, "acc", tmp_path / "acc.png"))
    assert _is_png(plot_metric_bars(table, "bwt", str(tmp_path / "bwt.png")))
    with pytest.raises(ValueError, match="fwt"):
        plot_metric_bars(table, "fwt", tmp_path / "fwt.png")
    with pytest.raises(ValueError, match="finite"):
        plot_metric_bars({"m": {"acc": (math.nan, 0.1)}}, "acc", tmp_path / "nan.png")
    with pytest.raises(ValueError, match="pair"):
        plot_metric_bars({"m": {"acc": 0.5}}, "acc", tmp_path / "bad.png")


def test_tree_png(tmp_path: Path) -> None:
    assert _is_png(plot_tree(TREE, tmp_path / "tree.png", title="task tree"))
    single_leaf = {"depth": 0, "tasks": ["only"], "children": []}
    assert _is_png(plot_tree(single_leaf, tmp_path / "leaf.png"))


def test_render_tree_text_lists_every_task_once() -> None:
    text = render_tree_text(TREE)
    for task in ["nouns", "verbs", "adj", "adv", "misc"]:
        assert text.count(task) == 1, text
    assert "layer 0" in text and "layer 1" in text
    assert text.splitlines()[0].startswith("layer 0")


def test_bad_tree_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing 'children'"):
        render_tree_text({"depth": 0, "tasks": []})
    with pytest.raises(ValueError, match="root/0"):
        plot_tree({"depth": 0, "tasks": [], "children": [{"depth": "1", "tasks": [], "children": []}]},
                  tmp_path / "t.png")


def test_importing_treelora_plots_does_not_import_matplotlib() -> None:
    code = "import sys, treelora.plots, treelora.metrics; print('matplotlib' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_metric_bars_in_percent_with_error_bars_only_over_two_seeds(tmp_path: Path) -> None:
    from matplotlib.container import ErrorbarContainer

    from treelora.plots import metric_bars_figure

    table = {"treelora": {"acc": (0.71, 0.02), "seeds": (3.0, 0.0)},
             "seqlora": {"acc": (0.62, 0.0), "seeds": (1.0, 0.0)}}
    ax = metric_bars_figure(table, "acc", percent=True).axes[0]
    assert [round(p.get_height(), 6) for p in ax.patches] == [71.0, 62.0]
    assert ax.get_ylabel() == "ACC %"
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1 and len(bars[0].lines[2][0].get_segments()) == 1  # treelora's bar only
    assert bars[0].lines[2][0].get_segments()[0][:, 1].tolist() == pytest.approx([69.0, 73.0])
    single = {"a": {"acc": (0.5, 0.0), "seeds": (1.0, 0.0)}}
    ax = metric_bars_figure(single, "acc", percent=True).axes[0]
    assert not [c for c in ax.containers if isinstance(c, ErrorbarContainer)] and "one seed" in ax.get_title()
    assert _is_png(plot_metric_bars(table, "acc", tmp_path / "acc.png", percent=True))
    assert (plot_metric_bars(table, "acc", tmp_path / "acc.svg")).read_text().lstrip().startswith("<?xml")


def test_tree_labels_and_family_colours(tmp_path: Path) -> None:
    labels = {"nouns": "noun.animal (t0)", "adv": "adv.all (t3)"}
    text = render_tree_text(TREE, labels)
    assert "noun.animal (t0)" in text and "adv.all (t3)" in text and "verbs" in text
    families = {"nouns": "living", "verbs": "living", "adj": "abstract", "adv": "abstract", "misc": "abstract"}
    svg = plot_tree(TREE, tmp_path / "tree.svg", labels=labels, families=families).read_text()
    assert "task family" in svg and "living" in svg and "abstract" in svg


def test_write_run_draws_no_tree_for_methods_without_selection(tmp_path: Path) -> None:
    from treelora.results import write_run

    base = {
        "method": "seqlora", "stream": "synthetic-text", "backbone": "tiny-bert", "tasks": ["fruit", "tools"],
        "accuracy_matrix": [[0.9, None], [0.5, 0.8]], "metrics": {"acc": 0.65}, "step_time_s": 0.1,
        "search_time_per_task_s": [0.0, 0.0], "time_per_task_s": [1.0, 1.0],
        "tree": {"depth": 0, "tasks": ["t0", "t1"], "children": [
            {"depth": 1, "tasks": ["t0"], "children": []}, {"depth": 1, "tasks": ["t1"], "children": []}]},
    }
    none = write_run(dict(base, config={"seed": 0, "selector": "none"}), tmp_path / "seqlora")
    assert not (none / "tree.png").exists() and not (none / "tree.txt").exists()
    assert _is_png(none / "accuracy_matrix.png")
    tree = write_run(dict(base, method="treelora", config={"seed": 0, "selector": "tree-lcb"}), tmp_path / "tl")
    assert _is_png(tree / "tree.png")
    assert "fruit (t0)" in (tree / "tree.txt").read_text() and "tools (t1)" in (tree / "tree.txt").read_text()
