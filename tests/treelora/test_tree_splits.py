"""Split rules (treelora/tree_splits.py): each builds, inserts and serializes; the clustering rules find
well-separated clusters where the paper's L1-median split does not, on exact and on sketched distances; nearness
routing finds the same cluster's entry."""

import pytest
import torch

from treelora.sketch import LinearSketch
from treelora.tree import TaskTree
from treelora.tree_quality import tree_quality
from treelora.tree_splits import SPLIT_REGISTRY

RULES = SPLIT_REGISTRY.names()


def clusters(k=4, per=2, layers=6, p=32, noise=0.05, signal_layers=(3, 4), seed=0):
    """``k`` clusters of ``per`` entries ("c<j>/t<i>" of cluster i); only ``signal_layers`` carry the cluster, the
    other layers are large independent noise (what the early layers look like in the measured federation)."""
    g = torch.Generator().manual_seed(seed)
    centres = [[torch.randn(p, generator=g) for _ in range(layers)] for _ in range(k)]
    sigs, task = {}, {}
    for i in range(k):
        for j in range(per):
            key = f"c{j + per * i}/t{i}"
            sigs[key] = [centres[i][l] + noise * torch.randn(p, generator=g) if l in signal_layers
                         else 3.0 * torch.randn(p, generator=g) for l in range(layers)]
            task[key] = f"task{i}"
    return sigs, task


def build(sigs, split, distance_fn=None, **kw):
    tree = TaskTree(len(next(iter(sigs.values()))), split=split,
                    **({} if distance_fn is None else {"distance_fn": distance_fn}), **kw)
    for k, s in sigs.items():
        tree.add(k, s)
    tree.build()
    return tree


@pytest.mark.parametrize("split", RULES)
def test_each_rule_builds_inserts_and_serializes(split):
    sigs, _ = clusters(k=5, per=3)
    tree = TaskTree(6, split=split, leaf_size=1)
    for i, (k, s) in enumerate(sigs.items()):
        tree.add(k, s, rebuild=i % 4 == 3)
        assert sorted(k for n in tree.leaves() for k in n.keys) == sorted(tree.entries)
        assert tree.depth() <= tree.max_depth
    back = TaskTree.from_dict(tree.to_dict())
    assert [n.path for n in back.nodes()] == [n.path for n in tree.nodes()]
    q = [s + 0.01 for s in sigs["c0/t0"]]
    assert [n.path for n in back.locate(q)] == [n.path for n in tree.locate(q)]
    assert back.nearest(q) == tree.nearest(q) is not None


@pytest.mark.parametrize("split", ["bisect", "average-linkage"])
def test_clustering_rules_separate_well_separated_clusters(split):
    sigs, task = clusters()
    family = {k: t for k, t in task.items()}
    q = tree_quality(build(sigs, split), task, family)
    assert q["clade_purity"]["rate"] == 1.0 and q["sibling_rate"]["rate"] == 1.0
    paper = tree_quality(build(sigs, "l1-median"), task, family)
    assert paper["clade_purity"]["rate"] < 1.0  # it splits on the noisy layers 0, 1, 2 first


@pytest.mark.parametrize("split", ["bisect", "average-linkage"])
def test_clustering_works_on_cauchy_sketches(split):
    sigs, task = clusters(p=64)
    sk = LinearSketch(64, 256, "cauchy", seed=3)
    sketched = {k: [sk.apply(x) for x in s] for k, s in sigs.items()}
    tree = build(sketched, split, distance_fn=lambda layer, a, b: sk.l1_distance(a, b, checked=False))
    q = tree_quality(tree, task, task)
    assert q["clade_purity"]["rate"] == 1.0


@pytest.mark.parametrize("split", ["bisect", "average-linkage"])
def test_nearness_routing_finds_the_same_cluster(split):
    sigs, task = clusters(k=4, per=3)
    g = torch.Generator().manual_seed(9)
    hits = 0
    for key in sigs:
        others = {k: s for k, s in sigs.items() if k != key}
        tree = build(others, split)
        query = [x + 0.05 * torch.randn(x.shape, generator=g) for x in sigs[key]]
        hits += task[tree.nearest(query)] == task[key]
        assert tree.nearest(query, among=1) in tree.entries
    assert hits == len(sigs)


@pytest.mark.parametrize("split", RULES)
def test_nearest_k_is_one_descent_for_k_picks(split):
    """``nearest_k``: nearest first, its head is ``nearest``; with every entry gathered it is the exact top k;
    and its k picks are never farther than k one-at-a-time ``nearest`` calls excluding the picks before them."""
    sigs, _ = clusters(k=6, per=4)
    tree = build(sigs, split, leaf_size=1)
    g = torch.Generator().manual_seed(4)

    def dist(key, q):
        return sum(float((a - b).abs().sum()) for a, b in zip(tree.entries[key].signature, q))

    for key in list(sigs)[::3]:
        q = [x + 0.3 * torch.randn(x.shape, generator=g) for x in sigs[key]]
        picks = tree.nearest_k(q, 4, where=lambda k: k != key)
        assert len(picks) == 4 == len(set(picks)) and key not in picks
        assert [dist(k, q) for k in picks] == sorted(dist(k, q) for k in picks)
        assert picks[0] == tree.nearest(q, among=tree_among(4), where=lambda k: k != key)
        seq: list[str] = []
        for _ in range(4):
            seq.append(tree.nearest(q, where=lambda k: k != key and k not in seq))
        assert sum(dist(k, q) for k in picks) <= sum(dist(k, q) for k in seq) + 1e-6
        exact = sorted(tree.entries, key=lambda k: dist(k, q))[:3]
        assert tree.nearest_k(q, 3, among=len(sigs)) == exact
    assert tree.nearest_k(q, 2, where=lambda k: False) == []
    with pytest.raises(ValueError, match="k must be"):
        tree.nearest_k(q, 0)


def tree_among(k, among=8):
    """The ``among`` a ``nearest`` call needs to gather what ``nearest_k(k)`` gathers."""
    return among + k - 1


def test_bisect_inserts_route_to_their_cluster():
    sigs, task = clusters(k=4, per=4)
    tree = TaskTree(6, split="bisect")
    keys = list(sigs)
    for k in keys[::2]:
        tree.add(k, sigs[k])
    tree.build()
    for k in keys[1::2]:
        tree.add(k, sigs[k])  # incremental: routed by the stored centres, only the reached leaf re-split
    assert tree_quality(tree, task, task)["clade_purity"]["rate"] == 1.0


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="split must be one of"):
        TaskTree(3, split="kd")


def test_one_call_forms_match_the_per_layer_forms():
    """The batched distances (pre-stacked signatures, both centres at once, the blocked pairwise matrix) give what
    the per-layer loops give, so a layer-free distance changes speed only."""
    from treelora.tree_splits import pairwise, stacked, weighted

    sigs, _ = clusters(k=3, per=3, p=16)
    tree = build(sigs, "bisect")
    keys = list(sigs)
    xs = [torch.stack([sigs[k][l] for k in keys]) for l in range(6)]
    assert tree.layer_free_distance
    metric = torch.rand(6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    centre = torch.cat(sigs[keys[0]])
    per_layer = sum(metric[l] * (centre[16 * l:16 * (l + 1)] - xs[l]).abs().sum(-1) for l in range(6))
    torch.testing.assert_close(weighted(tree, metric, centre, stacked(tree, xs)), per_layer.to(torch.float64))
    two = torch.stack([centre, torch.cat(sigs[keys[4]])])
    torch.testing.assert_close(weighted(tree, metric, two, sigs[keys[2]]),
                               torch.stack([weighted(tree, metric, c, sigs[keys[2]]) for c in two]))
    full = pairwise(tree, xs)
    tree.layer_free_distance = False  # the per-row loop
    torch.testing.assert_close(pairwise(tree, xs), full)
    torch.testing.assert_close(pairwise(tree, xs, chunk_floats=1), full)
    tree.layer_free_distance = True
    torch.testing.assert_close(pairwise(tree, xs, chunk_floats=1), full)  # one row per block
