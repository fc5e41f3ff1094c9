"""treelora.tree_quality: the tree-purity figures by hand on trees whose shape is set by hand."""

from __future__ import annotations

import pytest
import torch

from treelora.tree import TREE_FORMAT_VERSION, TaskTree
from treelora.tree_quality import (
    adjusted_rand_index,
    candidate_hit_rate,
    group_precision_recall,
    hit_rate,
    normalized_mutual_info,
    tree_quality,
)

TASK = {"c0/t0": "a", "c1/t0": "a", "c0/t1": "b", "c1/t1": "b"}
FAMILY = {"c0/t0": "x", "c1/t0": "x", "c0/t1": "y", "c1/t1": "y"}
SIG = {"c0/t0": [0.0, 0.0], "c1/t0": [0.1, 5.0], "c0/t1": [10.0, 5.0], "c1/t1": [10.1, 0.0]}


def _node(path: str, keys: list[str], children: list[dict] | None = None) -> dict:
    return {"path": path, "depth": len(path), "keys": keys, "center": None, "threshold": None,
            "children": children or []}


def _tree(pairs: list[list[str]]) -> TaskTree:
    """A depth-2 tree: the root splits into the two given pairs, each pair into its two leaves."""
    children = [_node(str(i), pair, [_node(f"{i}{j}", [k]) for j, k in enumerate(pair)])
                for i, pair in enumerate(pairs)]
    data = {
        "version": TREE_FORMAT_VERSION, "num_layers": 2, "split": "l1-median", "leaf_size": 1, "max_depth": 2,
        "entries": [{"key": k, "signature": [torch.tensor([v]) for v in s], "members": [k], "weight": 1.0,
                     "payload": None} for k, s in SIG.items()],
        "root": _node("", list(SIG), children),
    }
    return TaskTree.from_dict(data)


def test_a_tree_that_follows_the_tasks_scores_full_marks():
    q = tree_quality(_tree([["c0/t0", "c1/t0"], ["c0/t1", "c1/t1"]]), TASK, FAMILY)
    assert q["clade_purity"] == {"rate": 1.0, "hits": 2, "total": 2}
    assert q["sibling_rate"]["rate"] == 1.0
    assert q["lca_depth"]["same_task"] == 1.0 and q["lca_depth"]["different_task"] == 0.0
    assert q["levels"]["1"]["ari_task"] == pytest.approx(1.0) and q["levels"]["1"]["nmi_family"] == pytest.approx(1.0)
    assert q["top_levels_ari_family"] == pytest.approx(1.0) and q["spread_cut_ari_family"] == pytest.approx(1.0)
    # nearest other-client key by summed L1: layer 0 alone separates the tasks, layer 1 alone mixes them
    assert q["nn_purity"]["overall"]["rate"] == 1.0
    assert q["nn_purity"]["per_layer"]["0"]["rate"] == 1.0 and q["nn_purity"]["per_layer"]["1"]["rate"] == 0.0
    assert q["nn_purity"]["tree_weighted"] is None  # a median tree has no layer weights


@pytest.mark.parametrize("weights, expected", [([1.0, 0.0], 1.0), ([0.0, 1.0], 0.0)])
def test_nn_purity_under_the_trees_layer_weights(weights, expected):
    tree = _tree([["c0/t0", "c1/t0"], ["c0/t1", "c1/t1"]])
    tree.root.metric = torch.tensor(weights)
    q = tree_quality(tree, TASK, FAMILY)
    assert q["nn_purity"]["tree_weighted"]["rate"] == expected and q["nn_purity"]["overall"]["rate"] == 1.0


def test_a_tree_that_groups_by_client_scores_zero():
    q = tree_quality(_tree([["c0/t0", "c0/t1"], ["c1/t0", "c1/t1"]]), TASK, FAMILY)
    assert q["clade_purity"]["rate"] == 0.0 and q["sibling_rate"]["rate"] == 0.0
    assert q["lca_depth"]["same_task"] == 0.0
    assert q["levels"]["1"]["ari_task"] < 0 and q["top_levels_ari_family"] < 0


def test_the_spread_cut_splits_the_farthest_node_where_the_breadth_first_frontier_splits_the_shallowest():
    # families x = {a1, a2, a3} (close), y = {b1, b2}, z = {c} (far from y); the root splits x | (y, z) and the two
    # depth-1 nodes tie on size, so the breadth-first frontier splits x (the first path) and leaves y, z together
    sig = {"c0/a1": 0.0, "c1/a2": 0.1, "c2/a3": 0.2, "c3/b1": 5.0, "c4/b2": 5.1, "c5/c": 50.0}
    task = {k: k.split("/")[1] for k in sig}
    family = {k: task[k][0] for k in sig}
    x, yz = ["c0/a1", "c1/a2", "c2/a3"], ["c3/b1", "c4/b2", "c5/c"]
    root = _node("", list(sig), [
        _node("0", x, [_node("00", x[:1]), _node("01", x[1:], [_node("010", x[1:2]), _node("011", x[2:])])]),
        _node("1", yz, [_node("10", yz[:2], [_node("100", yz[:1]), _node("101", yz[1:2])]), _node("11", yz[2:])]),
    ])
    tree = TaskTree.from_dict({
        "version": TREE_FORMAT_VERSION, "num_layers": 1, "split": "l1-median", "leaf_size": 1, "max_depth": 3,
        "entries": [{"key": k, "signature": [torch.tensor([v])], "members": [k], "weight": 1.0, "payload": None}
                    for k, v in sig.items()],
        "root": root,
    })
    q = tree_quality(tree, task, family)
    assert q["spread_cut_ari_family"] == pytest.approx(1.0)
    assert q["top_levels_ari_family"] < 0.5


def test_ari_and_nmi_against_known_values():
    assert adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    # classic example: ARI of these two labelings is 0.2424... (by the contingency formula)
    assert adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(0.24242424, abs=1e-6)
    assert normalized_mutual_info([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="length"):
        adjusted_rand_index([0], [0, 1])


def test_hit_rates_count_only_where_a_same_task_leaf_existed():
    leaf = {"c1/t0": "a", "c2/t0": "b"}
    h = hit_rate([("a", "c1/t0", True), ("a", "c2/t0", True), ("b", "c1/t0", False)], leaf)
    assert h == {"rate": 0.5, "hits": 1, "total": 2, "events": 3}
    c = candidate_hit_rate([("a", ["c2/t0", "c1/t0"], True), ("b", ["c1/t0"], True), ("a", ["c1/t0"], False)], leaf)
    assert c["any"]["rate"] == 0.5 and c["each"] == {"rate": pytest.approx(1 / 3), "hits": 1, "total": 3}


def test_group_precision_recall_by_hand():
    active = [("c0", "a"), ("c1", "a"), ("c2", "b"), ("c3", "b"), ("c4", None)]
    pr = group_precision_recall([[("c0", "a"), ("c1", "a"), ("c2", "b")], [("c3", "b")]], active)
    assert pr["predicted_pairs"] == 3 and pr["correct_pairs"] == 1 and pr["true_pairs"] == 2
    assert pr["precision"] == pytest.approx(1 / 3) and pr["recall"] == 0.5
    assert group_precision_recall([], active)["precision"] is None


def test_nn_purity_counts_only_keys_whose_task_another_owner_holds():
    """A task only one client holds (c1/t1 below) has no right nearest neighbour: it is left out, not a miss."""
    task = {**TASK, "c1/t1": "only-c1"}
    q = tree_quality(_tree([["c0/t0", "c1/t0"], ["c0/t1", "c1/t1"]]), task, FAMILY)
    # c0/t1's task "b" is now held by c0 alone too, so two keys are left out and both "a" keys are right
    assert q["nn_purity"]["overall"] == {"rate": 1.0, "hits": 2, "total": 2}
    none_shared = {k: k for k in TASK}  # every key its own task: nothing can be right, nothing is counted
    assert tree_quality(_tree([["c0/t0", "c1/t0"], ["c0/t1", "c1/t1"]]), none_shared, FAMILY)["nn_purity"][
        "overall"]["total"] == 0
