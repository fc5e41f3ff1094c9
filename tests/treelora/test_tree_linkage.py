"""treelora/tree_linkage.py: UPGMA by hand, the bisect-linkage hybrid (2-means above the size limit, UPGMA below)
keeps every cluster a clade, and nearest-entry search with a filter."""

import numpy as np
import pytest

from treelora.tree_linkage import BisectLinkage, upgma
from treelora.tree_quality import tree_quality

from .test_tree_splits import build, clusters


def test_upgma_merges_the_closest_pair_first_and_averages_distances():
    d = np.array([[0, 1, 5, 6], [1, 0, 5, 6], [5, 5, 0, 2], [6, 6, 2, 0]], dtype=float)
    members, children, root = upgma(d)
    assert children[4] == (0, 1) and children[5] == (2, 3) and children[root] == (4, 5)
    assert members[root] == [0, 1, 2, 3]
    one_members, one_children, one_root = upgma(np.zeros((1, 1)))
    assert one_root == 0 and not one_children and one_members == {0: [0]}


@pytest.mark.parametrize("limit", [64, 4])  # all UPGMA; 2-means on top of UPGMA subtrees of <= 4 tasks
def test_bisect_linkage_keeps_every_cluster_a_clade(monkeypatch, limit):
    monkeypatch.setattr(BisectLinkage, "linkage_below", limit)
    sigs, task = clusters(k=6, per=2)
    q = tree_quality(build(sigs, "bisect-linkage"), task, task)
    assert q["clade_purity"]["rate"] == 1.0 and q["sibling_rate"]["rate"] == 1.0


def test_nearest_with_a_filter_skips_what_it_rejects():
    sigs, _ = clusters(k=3, per=2)
    tree = build(sigs, "bisect-linkage")
    probe = sigs["c0/t0"]
    assert tree.nearest(probe) == "c0/t0"
    assert tree.nearest(probe, where=lambda k: k != "c0/t0") == "c1/t0"  # the same cluster's other entry
    assert tree.nearest(probe, where=lambda k: False) is None
