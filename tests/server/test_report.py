"""server.report: a federated run's figures name tasks by their stream names when results.json has leaf_tasks."""

from __future__ import annotations

from server.report import write_results

TREE = {"depth": 0, "tasks": ["c0/t0", "c1/t0"], "children": [
    {"depth": 1, "tasks": ["c0/t0"], "children": []}, {"depth": 1, "tasks": ["c1/t0"], "children": []}]}


def _results(**extra):
    return {"method": "treelora", "metrics": {}, "bytes_up_per_client_round": 10.0, "leaves": ["c0/t0", "c1/t0"],
            "errors": [], "tree": TREE,
            "per_client": {c: {"tasks": [f"{c}/t0"], "accuracy_matrix": [[0.5]], "metrics": {}} for c in ("c0", "c1")},
            **extra}


def test_tree_and_heatmaps_show_task_names(tmp_path):
    leaf_tasks = {"c0/t0": {"task": "noun.animal", "family": "living"}, "c1/t0": {"task": "verb.motion",
                                                                                  "family": "verbs"}}
    write_results(_results(leaf_tasks=leaf_tasks), tmp_path / "named")
    text = (tmp_path / "named" / "tree.txt").read_text()
    assert "noun.animal (c0/t0)" in text and "verb.motion (c1/t0)" in text
    assert (tmp_path / "named" / "tree.png").stat().st_size > 0
    assert (tmp_path / "named" / "accuracy_c0.png").stat().st_size > 0


def test_without_leaf_tasks_the_keys_stay(tmp_path):
    write_results(_results(), tmp_path / "keys")
    text = (tmp_path / "keys" / "tree.txt").read_text()
    assert "leaf d=1: c0/t0" in text and "(c0/t0)" not in text
