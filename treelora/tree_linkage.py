"""Agglomerative split rules: ``average-linkage`` (UPGMA) and ``bisect-linkage`` (2-means on top, UPGMA below).

* ``average-linkage``: UPGMA over the per-layer-normalised summed distance (``w_l = 1 / mean pairwise layer-l
  distance`` of the node's tasks), read top-down as a binary tree; a query routes to the nearer of a node's two
  children's centres, as under ``bisect`` (:class:`treelora.tree_splits.CentroidRule`). The pairwise matrix is
  O(N² L) distances and the merging O(N³) (vectorised: one argmin over the matrix per merge), so it suits trees up
  to a few hundred tasks.
* ``bisect-linkage`` (the federation's default): ``bisect``'s signal-weighted 2-means splits a node while it holds
  more than ``linkage_below`` tasks, and UPGMA over the plain summed per-layer distance (no layer normalisation:
  on the federation's shared-probe sketches it kept at least as many task clades as the normalised sum, BENCHMARKS.md
  "Tree purity") builds every subtree below that size. 2-means is a greedy top-down
  cut: on a few dozen leaves it can separate two leaves of one task that UPGMA, which joins mutual nearest
  neighbours first, keeps together; at 10^4 leaves UPGMA alone is too slow. The top of a large tree stays O(N · L ·
  depth) and the bottom O(linkage_below² · L) per subtree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from .tree_node import Node
from .tree_splits import SPLIT_REGISTRY, Bisect, CentroidRule, pairwise

if TYPE_CHECKING:
    from .tree import TaskTree

__all__ = ["AverageLinkage", "BisectLinkage", "upgma"]


def upgma(dist: np.ndarray) -> tuple[dict[int, list[int]], dict[int, tuple[int, int]], int]:
    """Average-linkage merges of a symmetric ``(n, n)`` distance matrix: (cluster id → member indices, merged id →
    (its two cluster ids), root id). Leaves are ids 0..n−1, merges n, n+1, ...; ties go to the first pair in
    row-major order."""
    n = int(dist.shape[0])
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    children: dict[int, tuple[int, int]] = {}
    if n == 0:
        raise ValueError("upgma needs at least one item")
    d = np.array(dist, dtype=np.float64, copy=True)
    np.fill_diagonal(d, np.inf)
    ids = list(range(n))
    size = np.ones(n)
    root = 0
    for nxt in range(n, 2 * n - 1):
        a, b = divmod(int(np.argmin(d)), n)
        ia, ib = ids[a], ids[b]
        members[nxt] = sorted(members[ia] + members[ib])
        children[nxt] = (ia, ib)
        merged = (size[a] * d[a] + size[b] * d[b]) / (size[a] + size[b])
        d[a, :] = merged
        d[:, a] = merged
        d[a, a] = np.inf
        d[b, :] = np.inf
        d[:, b] = np.inf
        size[a] += size[b]
        ids[a] = root = nxt
    return members, children, root


@SPLIT_REGISTRY.register("average-linkage")
class AverageLinkage(CentroidRule):
    """UPGMA over the per-layer-normalised summed distance (module docstring)."""

    normalise_layers: ClassVar[bool] = True  # weight layer l by 1 / its mean pairwise distance (else all 1)

    def build(self, tree: TaskTree, keys: list[str], depth: int, path: str) -> Node:
        L = tree.num_layers
        xs = Bisect._layers(tree, keys)
        n = len(keys)
        per_layer = pairwise(tree, xs)  # (L, n, n)
        mean = per_layer.sum(dim=(1, 2)) / max(1, n * (n - 1))
        metric = torch.where(mean > 0, 1.0 / mean.clamp_min(1e-300), torch.zeros_like(mean)) \
            if self.normalise_layers else torch.ones_like(mean)
        dist = (per_layer * metric.view(L, 1, 1)).sum(0)
        dist = 0.5 * (dist + dist.T)  # the sketch estimator is symmetric up to rounding
        members, children, root = upgma(dist.numpy())
        return self._node(tree, keys, root, members, children, metric, depth, path)

    def _node(self, tree: TaskTree, keys: list[str], cid: int, members: dict[int, list[int]],
              children: dict[int, tuple[int, int]], metric: torch.Tensor, depth: int, path: str) -> Node:
        mine = [keys[i] for i in members[cid]]
        node = Node(path, depth, mine)
        if tree._is_leaf_set(mine, depth) or cid not in children:
            return node
        a, b = children[cid]
        if min(members[a]) > min(members[b]):  # left child holds the earliest entry: a stable layout
            a, b = b, a
        node = self._internal(tree, node, [keys[i] for i in members[a]], [keys[i] for i in members[b]], metric)
        node.children = [self._node(tree, keys, a, members, children, metric, depth + 1, path + "0"),
                         self._node(tree, keys, b, members, children, metric, depth + 1, path + "1")]
        return node


class _SummedLinkage(AverageLinkage):
    """UPGMA over the plain summed per-layer distance (the server's sketches have one width per layer)."""

    normalise_layers = False


@SPLIT_REGISTRY.register("bisect-linkage")
class BisectLinkage(CentroidRule):
    """``bisect`` above ``linkage_below`` tasks per node, ``average-linkage`` below (module docstring)."""

    linkage_below: ClassVar[int] = 64  # tasks: a node with at most this many is built by UPGMA

    def build(self, tree: TaskTree, keys: list[str], depth: int, path: str) -> Node:
        if len(keys) <= self.linkage_below:
            return _SummedLinkage().build(tree, keys, depth, path)
        bisect = Bisect()
        root = tree.root
        metric = root.metric if depth > 0 and root is not None and root.metric is not None else \
            bisect.layer_weights(tree, keys)
        return self._build(tree, bisect, keys, depth, path, metric)

    def _build(self, tree: TaskTree, bisect: Bisect, keys: list[str], depth: int, path: str,
               metric: torch.Tensor) -> Node:
        if len(keys) <= self.linkage_below:
            return _SummedLinkage().build(tree, keys, depth, path)
        node = Node(path, depth, list(keys))
        if tree._is_leaf_set(keys, depth):
            return node
        left, right = bisect.bisect(tree, keys, metric)
        node = self._internal(tree, node, left, right, metric)
        node.children = [self._build(tree, bisect, left, depth + 1, path + "0", metric),
                         self._build(tree, bisect, right, depth + 1, path + "1", metric)]
        return node
