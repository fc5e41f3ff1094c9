"""treelora.task_labels: stream task names next to keys, from leaf_tasks (federated) or tasks (centralized)."""

from __future__ import annotations

from treelora.task_labels import client_task_labels, has_tree_selection, task_families, task_labels

FED = {"per_client": {}, "tree": {"depth": 0, "tasks": ["c0/t0"], "children": []},
       "leaf_tasks": {"c0/t0": {"task": "noun.animal", "family": "living"},
                      "c0/t1": {"task": "verb.motion", "family": "verbs"}}}


def test_federated_labels_use_leaf_tasks_and_fall_back_to_keys():
    assert task_labels(FED) == {"c0/t0": "noun.animal (c0/t0)", "c0/t1": "verb.motion (c0/t1)"}
    assert task_families(FED) == {"c0/t0": "living", "c0/t1": "verbs"}
    assert client_task_labels(["c0/t0", "c0/t1", "c0/t2"], FED) == ["noun.animal (t0)", "verb.motion (t1)", "c0/t2"]
    old = {k: v for k, v in FED.items() if k != "leaf_tasks"}
    assert task_labels(old) == {} and client_task_labels(["c0/t0"], old) == ["c0/t0"]
    assert has_tree_selection(FED) and not has_tree_selection(dict(FED, tree=None))


def test_centralized_labels_and_tree_selection():
    res = {"tasks": ["fruit", "tools"], "task_families": ["food", ""], "config": {"selector": "tree-lcb"}}
    assert task_labels(res) == {"t0": "fruit (t0)", "t1": "tools (t1)"}
    assert task_families(res) == {"t0": "food", "t1": "tools"}
    assert has_tree_selection(res)
    assert not has_tree_selection({"tasks": [], "config": {"selector": "none"}})
