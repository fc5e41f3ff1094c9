"""How well a similarity tree puts alike tasks together, against known ground truth (issue 12's figures).

Inputs are a :class:`~treelora.tree.TaskTree` and, per entry key, its true stream task and family. Keys such as
``"c1/t0"`` have an owner (the client before the ``/``); keys without one are their own owner. Figures:

* ``clade_purity``: of the stream tasks with ≥ 2 leaves in the tree, the share whose lowest common ancestor (LCA)
  holds no other task's leaf (each task forms its own subtree);
* ``sibling_rate``: of the tasks with exactly two leaves, the share whose two leaves sit in one tree leaf or in two
  tree leaves with the same parent;
* ``lca_depth``: the mean depth of the LCA of same-task pairs and of different-task pairs (deeper = closer);
* ``nn_purity``: of the keys whose task another owner also holds, the share whose nearest key of another owner
  (summed per-layer distance with the tree's own ``distance_fn``: exact L1 or the sketch estimator) is the same
  task, overall, per layer, and under the tree's own layer weights (``tree_weighted``: the root's ``metric`` the
  centroid splits route by; None without);
* ``levels``: per tree depth d, the adjusted Rand index and NMI of the partition "which depth-d node holds the key"
  against tasks and against families;
* ``top_levels_ari_family``: the ARI against families of the tree cut into as many groups as there are families
  (the frontier grown breadth-first from the root: the shallowest, then the largest node split first) — how well
  the top of the tree separates families whatever the number of families;
* ``spread_cut_ari_family``: the same, but the cut splits the node whose two children are farthest apart first
  (average distance between their members, the tree's own ``distance_fn`` summed over layers) — the usual way to cut
  a dendrogram into k groups; a linkage tree is unbalanced, so a family can sit deeper than a smaller, nearer
  one and the breadth-first frontier cuts the wrong nodes.

Rates are ``{"rate", "hits", "total"}`` (rate None when total is 0). :func:`hit_rate`,
:func:`candidate_hit_rate` and :func:`group_precision_recall` score the choices a server made with the tree
(``server/tree_audit.py`` records them).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import combinations
from typing import Any

import torch

from .tree import Node, TaskTree

__all__ = [
    "adjusted_rand_index", "candidate_hit_rate", "group_precision_recall", "hit_rate", "normalized_mutual_info",
    "rate", "tree_quality",
]


def rate(hits: int, total: int) -> dict[str, Any]:
    """``{"rate", "hits", "total"}`` (rate None for an empty total)."""
    return {"rate": hits / total if total else None, "hits": int(hits), "total": int(total)}


def _owner(key: str) -> str:
    return key.split("/", 1)[0] if "/" in key else key


# ---------------------------------------------------------------------------------------------- partitions
def _contingency(a: Sequence[Any], b: Sequence[Any]) -> tuple[Counter, Counter, Counter]:
    return Counter(zip(a, b)), Counter(a), Counter(b)


def adjusted_rand_index(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Hubert–Arabie adjusted Rand index of two labelings of the same items (1 identical, ≈ 0 chance)."""
    n = len(a)
    if n != len(b):
        raise ValueError(f"labelings differ in length: {n} != {len(b)}")
    if n < 2:
        return 1.0
    joint, ca, cb = _contingency(a, b)
    sum_ij = sum(math.comb(v, 2) for v in joint.values())
    sum_a = sum(math.comb(v, 2) for v in ca.values())
    sum_b = sum(math.comb(v, 2) for v in cb.values())
    expected = sum_a * sum_b / math.comb(n, 2)
    top = 0.5 * (sum_a + sum_b)
    if top == expected:  # both labelings trivial in the same way
        return 1.0 if sum_ij == expected else 0.0
    return (sum_ij - expected) / (top - expected)


def normalized_mutual_info(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Mutual information over the arithmetic mean of the two entropies (1 identical, 0 independent)."""
    n = len(a)
    if n == 0:
        return 1.0
    joint, ca, cb = _contingency(a, b)
    mi = sum(v / n * math.log(v * n / (ca[i] * cb[j])) for (i, j), v in joint.items())
    ha = -sum(v / n * math.log(v / n) for v in ca.values())
    hb = -sum(v / n * math.log(v / n) for v in cb.values())
    if ha + hb == 0:
        return 1.0
    return max(0.0, 2 * mi / (ha + hb))


# ---------------------------------------------------------------------------------------------- the tree
def _leaf_of(tree: TaskTree, keys: Iterable[str]) -> dict[str, list[Node]]:
    """Each key's root-to-leaf path."""
    return {k: tree.path_to(k) for k in keys}


def _lca_depth(pa: list[Node], pb: list[Node]) -> int:
    depth = 0
    for x, y in zip(pa, pb):
        if x is not y:
            break
        depth = x.depth
    return depth


def _members(tree: TaskTree, node: Node) -> list[str]:
    """The original task keys below ``node`` (a merged entry stands for all its members)."""
    return [m for k in node.keys for m in tree.entries[k].members]


def _frontier(tree: TaskTree, k: int) -> list[Node]:
    """The tree cut into ``k`` groups: split the shallowest (then largest) splittable node until there are k."""
    assert tree.root is not None
    cut = [tree.root]
    while len(cut) < k:
        inner = [n for n in cut if not n.is_leaf]
        if not inner:
            break
        node = min(inner, key=lambda n: (n.depth, -len(n.keys), n.path))
        cut.remove(node)
        cut.extend(node.children)
    return cut


def _spread(tree: TaskTree, node: Node, cap: int = 64) -> float:
    """The mean summed-over-layers distance between the members of ``node``'s first two children (at most ``cap``
    of each, evenly spaced): how far apart the split put them."""
    sides = []
    for child in node.children[:2]:
        keys = child.keys[:: max(1, len(child.keys) // cap)][:cap]
        sides.append([tree.entries[k].signature for k in keys])
    if len(sides) < 2:
        return 0.0
    total = 0.0
    for layer in range(tree.num_layers):
        b = torch.stack([sig[layer] for sig in sides[1]])
        total += sum(float(tree.distance_fn(layer, a[layer], b).double().sum()) for a in sides[0])
    return total / (len(sides[0]) * len(sides[1]))


def _spread_cut(tree: TaskTree, k: int) -> list[Node]:
    """The tree cut into ``k`` groups by splitting the node of the largest :func:`_spread` first."""
    assert tree.root is not None
    cut = [tree.root]
    spread: dict[str, float] = {}
    while len(cut) < k:
        inner = [n for n in cut if not n.is_leaf]
        if not inner:
            break
        for n in inner:
            if n.path not in spread:
                spread[n.path] = _spread(tree, n)
        node = max(inner, key=lambda n: (spread[n.path], n.path))
        cut.remove(node)
        cut.extend(node.children)
    return cut


def _nearest(tree: TaskTree, keys: list[str], layers: Sequence[int],
             weights: Sequence[float] | None = None) -> dict[str, str | None]:
    """Each key's nearest key of another owner by the summed distance over ``layers`` (each times
    ``weights[layer]`` when given)."""
    sig = {k: tree.entry_of(k).signature for k in keys}
    out: dict[str, str | None] = {}
    for k in keys:
        others = [o for o in keys if _owner(o) != _owner(k)]
        if not others:
            out[k] = None
            continue
        total = torch.zeros(len(others), dtype=torch.float64)
        for layer in layers:
            stacked = torch.stack([sig[o][layer] for o in others])
            d = tree.distance_fn(layer, sig[k][layer], stacked).double()
            total += d if weights is None else float(weights[layer]) * d
        out[k] = others[int(torch.argmin(total))]
    return out


def _nn_purity(tree: TaskTree, keys: list[str], truth: dict[str, str]) -> dict[str, Any]:
    def score(layers: Sequence[int], weights: Sequence[float] | None = None) -> dict[str, Any]:
        nearest = _nearest(tree, keys, layers, weights)
        hits = sum(1 for k, o in nearest.items() if k in eligible and o is not None and truth[o] == truth[k])
        return rate(hits, len(eligible))

    # a key whose task no other owner holds cannot have a right nearest neighbour: it is not counted (as a warm
    # start counts only when a same-task leaf existed)
    eligible = {k for k in keys if any(truth[o] == truth[k] and _owner(o) != _owner(k) for o in keys)}

    metric = tree.root.metric if tree.root is not None else None
    return {"overall": score(range(tree.num_layers)),
            "tree_weighted": None if metric is None else score(range(tree.num_layers), metric.tolist()),
            "per_layer": {str(layer): score([layer]) for layer in range(tree.num_layers)}}


def tree_quality(tree: TaskTree, leaf_task: dict[str, str], leaf_family: dict[str, str]) -> dict[str, Any]:
    """Every tree figure of the module docstring for the keys of ``tree`` that ``leaf_task`` knows."""
    keys = sorted(k for k in leaf_task if k in tree)
    if tree.root is None or len(keys) < 2:
        return {"leaves": len(keys)}
    paths = _leaf_of(tree, keys)
    by_task: dict[str, list[str]] = {}
    for k in keys:
        by_task.setdefault(leaf_task[k], []).append(k)

    clade_hits = clade_total = sib_hits = sib_total = 0
    for task, ks in by_task.items():
        if len(ks) < 2:
            continue
        clade_total += 1
        # the LCA of all of the task's keys is the deepest node on every path
        common = [n for n in paths[ks[0]] if all(n in paths[o] for o in ks[1:])]
        lca = common[-1]
        clade_hits += all(leaf_task[m] == task for m in _members(tree, lca) if m in leaf_task)
        if len(ks) == 2:
            sib_total += 1
            pa, pb = paths[ks[0]], paths[ks[1]]
            sib_hits += pa[-1] is pb[-1] or (len(pa) > 1 and len(pb) > 1 and pa[-2] is pb[-2]
                                             and pa[-1].depth == pb[-1].depth == pa[-2].depth + 1)

    same: list[int] = []
    diff: list[int] = []
    for a, b in combinations(keys, 2):
        if _owner(a) == _owner(b):
            continue
        (same if leaf_task[a] == leaf_task[b] else diff).append(_lca_depth(paths[a], paths[b]))

    levels = {}
    for d in range(1, tree.depth() + 1):
        part = [paths[k][min(d, len(paths[k]) - 1)].path for k in keys]
        levels[str(d)] = {
            "groups": len(set(part)),
            "ari_task": adjusted_rand_index(part, [leaf_task[k] for k in keys]),
            "nmi_task": normalized_mutual_info(part, [leaf_task[k] for k in keys]),
            "ari_family": adjusted_rand_index(part, [leaf_family.get(k, leaf_task[k]) for k in keys]),
            "nmi_family": normalized_mutual_info(part, [leaf_family.get(k, leaf_task[k]) for k in keys]),
        }
    families = [leaf_family.get(k, leaf_task[k]) for k in keys]
    where = {m: n.path for n in _frontier(tree, len(set(families))) for m in _members(tree, n)}
    return {
        "leaves": len(keys),
        "tasks": len(by_task),
        "depth": tree.depth(),
        "clade_purity": rate(clade_hits, clade_total),
        "sibling_rate": rate(sib_hits, sib_total),
        "lca_depth": {"same_task": sum(same) / len(same) if same else None,
                      "different_task": sum(diff) / len(diff) if diff else None,
                      "same_pairs": len(same), "different_pairs": len(diff)},
        "nn_purity": _nn_purity(tree, keys, leaf_task),
        "levels": levels,
        "top_levels_ari_family": adjusted_rand_index([where[k] for k in keys], families),
        "spread_cut_ari_family": spread_cut_ari(tree, dict(zip(keys, families))),
    }


def spread_cut_ari(tree: TaskTree, groups: dict[str, str]) -> float:
    """The ARI against ``groups`` (key -> group, for the keys of ``tree`` it names) of the tree cut into as many
    parts as there are groups, splitting the node whose children are farthest apart first (``spread_cut_ari_family``
    for any grouping)."""
    keys = sorted(k for k in groups if k in tree)
    labels = [groups[k] for k in keys]
    by_spread = {m: n.path for n in _spread_cut(tree, len(set(labels))) for m in _members(tree, n)}
    return adjusted_rand_index([by_spread[k] for k in keys], labels)


# ---------------------------------------------------------------------------------------------- choices
def hit_rate(events: Iterable[Sequence[Any]], leaf_task: dict[str, str]) -> dict[str, Any]:
    """Warm starts ``(query's task, chosen leaf, a same-task leaf existed)``: the share of those where one existed
    whose chosen leaf is the same task (``events`` counts all of them)."""
    events = list(events)
    eligible = [(t, c) for t, c, existed in events if existed]
    out = rate(sum(1 for t, c in eligible if leaf_task.get(c) == t), len(eligible))
    out["events"] = len(events)
    return out


def candidate_hit_rate(events: Iterable[Sequence[Any]], leaf_task: dict[str, str]) -> dict[str, Any]:
    """Candidate lists ``(client's task, one layer's candidates, a same-task leaf existed)``: ``any`` = the share of
    lists (where one existed) holding a same-task leaf, ``each`` = the share of single candidates that are one."""
    eligible = [(t, list(cs)) for t, cs, existed in events if existed]
    any_hits = sum(1 for t, cs in eligible if any(leaf_task.get(c) == t for c in cs))
    picks = [(t, c) for t, cs in eligible for c in cs]
    return {"any": rate(any_hits, len(eligible)),
            "each": rate(sum(1 for t, c in picks if leaf_task.get(c) == t), len(picks))}


def group_precision_recall(groups: Iterable[Sequence[tuple[str, str | None]]],
                           active: Sequence[tuple[str, str | None]]) -> dict[str, Any]:
    """Sharing groups (lists of ``(client, true task)``) against the true co-task pairs among ``active``:
    precision = grouped pairs that share a task / grouped pairs; recall = those / all same-task pairs."""
    predicted = correct = 0
    for members in groups:
        for (_, ta), (_, tb) in combinations(members, 2):
            predicted += 1
            correct += ta is not None and ta == tb
    true = sum(1 for (_, ta), (_, tb) in combinations(active, 2) if ta is not None and ta == tb)
    return {"predicted_pairs": predicted, "true_pairs": true, "correct_pairs": correct,
            "precision": correct / predicted if predicted else None, "recall": correct / true if true else None}
