"""How a :class:`~treelora.tree.TaskTree` splits its tasks and routes a query: one registered class per rule.

A rule builds a subtree over some entry keys (:meth:`SplitRule.build`) and says which child a signature goes to
(:meth:`SplitRule.route`); every distance goes through the tree's ``distance_fn``, so a rule works on exact
signatures (exact L1) and on Cauchy sketches (the median estimator, :mod:`treelora.sketch`) alike. Centres are
means, and the mean of sketches is the sketch of the mean (sketches are linear), so a centre means the same in
both spaces.

* ``l1-median`` (paper): level ``d`` splits on layer ``d``: at a node take its tasks' layer-d signatures, the group
  mean ``m`` and each task's distance ``‖G_i[d] − m‖₁``; tasks at or below the median distance go left (ties left).
  If a side is empty the tasks are split in half by distance. A query goes left iff its distance to the stored
  ``m`` is at most the stored threshold. It separates "near the group mean" from "far from it": not a clustering.
* ``dot-consecutive`` (released code): built from consecutive differences ``Δ_0 = G_0, Δ_i = G_i − G_{i−1}``;
  score ``s_i = ⟨Δ_i[d], mean Δ[d]⟩``; ``s ≥ median`` goes left; an empty side halves the task list. Rebuilt after
  every task, as released.
* ``bisect`` (the federation's default): recursive 2-means bisection over *all* layers. The distance of a task to
  a centre is ``Σ_l w_l ‖G[l] − c[l]‖₁``; the weights first normalise every layer (``w_l = 1 / s_l``, ``s_l`` the
  mean distance of the node's tasks to their layer-l mean), then, after the 2-means converged, are set by how
  much signal the layer carries about this split — ``w_l ∝ (b_l / i_l)² / i_l``, ``b_l`` the distance between the
  two centres on layer l, ``i_l`` the mean within-side distance — and 2-means runs again from its centres
  (``reweights`` times). Farthest-point start (deterministic); above ``fit_sample`` tasks the centres are fitted on
  an evenly spaced sample and every task is then assigned once, so a build stays O(N · L · depth). A query goes
  to the nearer centre under the node's weights (``Node.metric``).
* ``average-linkage``: agglomerative UPGMA over the per-layer-normalised summed distance (``w_l = 1 / mean pairwise
  layer-l distance``), read top-down as a binary tree; it routes like ``bisect`` (children's centres, the same
  weights). O(N² L) distances and O(N³) merging: for central streams and benchmarks, not a server at 10^4 leaves.

**Level ↔ layer.** The sharing rule (``server/strategies.py``) averages layer d among the clients whose tasks sit
in the same depth-d node. Under ``l1-median`` that node was defined by layers 0..d−1; under the clustering rules
depth is *granularity*: the depth-d node is the cluster of similar tasks at the d-th refinement, decided by every
layer that carries signal. Layer d is still shared in broader groups the nearer it is to the input (the paper's
premise that shallow layers hold shared knowledge, deep ones task-specific), but the groups are now clusters, not
"near/far from the mean of one early layer", which on 18 leaves only ever looked at the weakest layers 0–4.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import torch

from .registry import Registry
from .tree_node import Node, Signature

if TYPE_CHECKING:
    from .tree import TaskTree

__all__ = ["SPLIT_REGISTRY", "SplitRule", "L1Median", "DotConsecutive", "Bisect", "AverageLinkage", "weighted"]

SPLIT_REGISTRY: Registry[type[SplitRule]] = Registry("tree split")


class SplitRule:
    """Base of a split rule. ``incremental``: a new entry is routed to a leaf and only that leaf is re-split
    (else every insert rebuilds the tree)."""

    name: ClassVar[str] = ""
    incremental: ClassVar[bool] = True

    def build(self, tree: TaskTree, keys: list[str], depth: int, path: str) -> Node:  # pragma: no cover - abstract
        """The subtree over ``keys`` rooted at ``depth`` with id ``path``."""
        raise NotImplementedError

    def route(self, tree: TaskTree, node: Node, signature: Signature) -> int:  # pragma: no cover - abstract
        """Index of the child of internal ``node`` that ``signature`` goes to."""
        raise NotImplementedError


@SPLIT_REGISTRY.register("l1-median")
class L1Median(SplitRule):
    """The paper's split (module docstring)."""

    def build(self, tree: TaskTree, keys: list[str], depth: int, path: str) -> Node:
        node = Node(path, depth, list(keys))
        if tree._is_leaf_set(keys, depth):
            return node
        x = torch.stack([tree.entries[k].signature[depth] for k in keys])
        center = x.mean(dim=0)
        dist = tree.distance_fn(depth, center, x)
        threshold = float(torch.median(dist))
        left = [k for k, d in zip(keys, dist.tolist()) if d <= threshold]
        right = [k for k, d in zip(keys, dist.tolist()) if d > threshold]
        if not left or not right:
            order = torch.argsort(dist, stable=True).tolist()
            half = (len(keys) + 1) // 2
            left = [keys[i] for i in sorted(order[:half])]
            right = [keys[i] for i in sorted(order[half:])]
            threshold = float(dist[order[half - 1]])
        node.center, node.threshold = center, threshold
        node.children = [self.build(tree, left, depth + 1, path + "0"), self.build(tree, right, depth + 1, path + "1")]
        return node

    def route(self, tree: TaskTree, node: Node, signature: Signature) -> int:
        assert node.center is not None and node.threshold is not None
        dist = float(tree.distance_fn(node.depth, node.center, signature[node.depth]))
        return 0 if dist <= node.threshold else 1


@SPLIT_REGISTRY.register("dot-consecutive")
class DotConsecutive(SplitRule):
    """The released code's split (module docstring); ``keys`` in insertion order."""

    incremental = False

    def build(self, tree: TaskTree, keys: list[str], depth: int, path: str) -> Node:
        deltas: dict[str, Signature] = {}
        prev: Signature | None = None
        for k in keys:
            sig = tree.entries[k].signature
            deltas[k] = list(sig) if prev is None else [a - b for a, b in zip(sig, prev)]
            prev = sig
        return self._build(tree, keys, deltas, depth, path)

    def _build(self, tree: TaskTree, keys: list[str], deltas: dict[str, Signature], depth: int, path: str) -> Node:
        node = Node(path, depth, list(keys))
        if depth >= tree.max_depth or len(keys) <= 1:
            return node
        x = torch.stack([deltas[k][depth] for k in keys])
        center = x.mean(dim=0)
        score = x @ center
        threshold = float(torch.median(score))
        left = [k for k, s in zip(keys, score.tolist()) if s >= threshold]
        right = [k for k, s in zip(keys, score.tolist()) if s < threshold]
        if not left or not right:
            half = len(keys) // 2
            left, right = keys[:half], keys[half:]
        node.center, node.threshold = center, threshold
        node.children = [self._build(tree, left, deltas, depth + 1, path + "0"),
                         self._build(tree, right, deltas, depth + 1, path + "1")]
        return node

    def route(self, tree: TaskTree, node: Node, signature: Signature) -> int:
        assert node.center is not None and node.threshold is not None
        last = tree.entries[list(tree.entries)[-1]].signature[node.depth]
        score = float((signature[node.depth] - last) @ node.center)
        return 0 if score >= node.threshold else 1


def _offsets(signature: Signature) -> list[int]:
    out = [0]
    for s in signature:
        out.append(out[-1] + s.numel())
    return out


def weighted(tree: TaskTree, metric: torch.Tensor, center: torch.Tensor, xs: list[torch.Tensor]) -> torch.Tensor:
    """``Σ_l metric[l] · d_l(center[l], x[l])`` for a concatenated centre ``(D,)`` and per-layer ``xs`` (each
    ``(p_l,)`` or ``(N, p_l)``): the distance the centroid rules route and compare by."""
    off = _offsets([x[0] if x.dim() > 1 else x for x in xs])
    total = None
    for l, x in enumerate(xs):
        if float(metric[l]) == 0.0:
            continue
        d = tree.distance_fn(l, center[off[l]:off[l + 1]], x).to(torch.float64) * float(metric[l])
        total = d if total is None else total + d
    if total is None:
        return torch.zeros(xs[0].shape[0] if xs[0].dim() > 1 else (), dtype=torch.float64)
    return total


class CentroidRule(SplitRule):
    """Shared by the clustering rules: a node stores its two children's centres (concatenated over layers, shape
    ``(2, D)``) and the per-layer weights; a query goes to the nearer centre (ties to the left)."""

    def route(self, tree: TaskTree, node: Node, signature: Signature) -> int:
        assert node.center is not None and node.metric is not None
        off = _offsets(signature)
        total = torch.zeros(2, dtype=torch.float64)
        for l, w in enumerate(node.metric.tolist()):
            if w != 0.0:
                total += w * tree.distance_fn(l, signature[l], node.center[:, off[l]:off[l + 1]]).to(torch.float64)
        return 0 if float(total[0]) <= float(total[1]) else 1

    @staticmethod
    def _centre(tree: TaskTree, keys: list[str]) -> torch.Tensor:
        return torch.stack([torch.cat(tree.entries[k].signature) for k in keys]).mean(dim=0)

    def _internal(self, tree: TaskTree, node: Node, left: list[str], right: list[str], metric: torch.Tensor) -> Node:
        node.center = torch.stack([self._centre(tree, left), self._centre(tree, right)])
        node.metric = metric.to(torch.float32)
        return node


@SPLIT_REGISTRY.register("bisect")
class Bisect(CentroidRule):
    """Signal-weighted 2-means bisection over all layers (module docstring)."""

    iterations: ClassVar[int] = 20
    screen_iterations: ClassVar[int] = 5
    reweights: ClassVar[int] = 2
    focus: ClassVar[float] = 2.0  # exponent of the separation ratio in a layer's weight
    fit_sample: ClassVar[int] = 512

    def build(self, tree: TaskTree, keys: list[str], depth: int, path: str) -> Node:
        node = Node(path, depth, list(keys))
        if tree._is_leaf_set(keys, depth):
            return node
        left, right, metric = self.bisect(tree, keys)
        node = self._internal(tree, node, left, right, metric)
        node.children = [self.build(tree, left, depth + 1, path + "0"), self.build(tree, right, depth + 1, path + "1")]
        return node

    def bisect(self, tree: TaskTree, keys: list[str]) -> tuple[list[str], list[str], torch.Tensor]:
        """(left keys, right keys, per-layer weights) of one 2-means bisection."""
        L = tree.num_layers
        step = max(1, -(-len(keys) // self.fit_sample))
        fit = keys[::step]
        xs = self._layers(tree, fit)
        cat = torch.cat(xs, dim=1)
        # screening: each layer's own 2-means says how much cluster signal it carries
        metric = torch.zeros(L, dtype=torch.float64)
        best, start = -1.0, None
        for l in range(L):
            labels = self._two_means(tree, xs[l], lambda c, x, l=l: tree.distance_fn(l, c, x).to(torch.float64))
            if labels is None:
                continue
            centres = torch.stack([xs[l][~labels].mean(0), xs[l][labels].mean(0)])
            metric[l], ratio = self._layer_weight(tree, l, xs[l], centres, labels)
            if ratio > best:
                best, start = ratio, labels
        if start is None or float(metric.sum()) == 0.0:  # no layer splits (identical tasks): halve the list
            half = (len(keys) + 1) // 2
            return keys[:half], keys[half:], torch.ones(L)
        labels = start
        for round_ in range(self.reweights + 1):
            centres = torch.stack([cat[~labels].mean(0), cat[labels].mean(0)])
            for _ in range(self.iterations):
                new = weighted(tree, metric, centres[1], xs) < weighted(tree, metric, centres[0], xs)
                if bool(new.all()) or not bool(new.any()) or torch.equal(new, labels):
                    break
                labels = new
                centres = torch.stack([cat[~labels].mean(0), cat[labels].mean(0)])
            if round_ < self.reweights:
                metric = self._signal_weights(tree, xs, centres, labels, metric)
        every = self._layers(tree, keys) if step > 1 else xs
        d0, d1 = weighted(tree, metric, centres[0], every), weighted(tree, metric, centres[1], every)
        go_right = (d1 < d0).tolist()
        left = [k for k, r in zip(keys, go_right) if not r]
        right = [k for k, r in zip(keys, go_right) if r]
        if not left or not right:  # degenerate: halve by distance to the first centre
            order = torch.argsort(d0, stable=True).tolist()
            half = (len(keys) + 1) // 2
            left = [keys[i] for i in sorted(order[:half])]
            right = [keys[i] for i in sorted(order[half:])]
        return left, right, metric

    def _two_means(self, tree: TaskTree, x: torch.Tensor, dist: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                   ) -> torch.Tensor | None:
        """Labels (True = right) of a farthest-point-started 2-means on rows ``x``; None when it cannot split."""
        first = int(torch.argmax(dist(x.mean(0), x)))
        second = int(torch.argmax(dist(x[first], x)))
        if first == second:
            return None
        labels = dist(x[second], x) < dist(x[first], x)
        for _ in range(self.screen_iterations):
            if bool(labels.all()) or not bool(labels.any()):
                return None
            c0, c1 = x[~labels].mean(0), x[labels].mean(0)
            new = dist(c1, x) < dist(c0, x)
            if torch.equal(new, labels):
                break
            labels = new
        return None if bool(labels.all()) or not bool(labels.any()) else labels

    @staticmethod
    def _layer_weight(tree: TaskTree, l: int, x: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor
                      ) -> tuple[float, float]:
        """(weight ``(b / i)^focus / i``, separation ratio ``b / i``) of layer ``l`` for a split of rows ``x``."""
        between = float(tree.distance_fn(l, centres[0], centres[1]))
        within = torch.cat([tree.distance_fn(l, centres[0], x[~labels]), tree.distance_fn(l, centres[1], x[labels])])
        inside = float(within.to(torch.float64).mean())
        if inside <= 0:
            return (0.0, 0.0) if between <= 0 else (1e300, 1e300)
        return (between / inside) ** Bisect.focus / inside, between / inside

    @staticmethod
    def _layers(tree: TaskTree, keys: list[str]) -> list[torch.Tensor]:
        return [torch.stack([tree.entries[k].signature[l] for k in keys]) for l in range(tree.num_layers)]

    def _signal_weights(self, tree: TaskTree, xs: list[torch.Tensor], centres: torch.Tensor, labels: torch.Tensor,
                        metric: torch.Tensor) -> torch.Tensor:
        """Each layer's weight ``(b_l / i_l)^focus / i_l`` for the current split (module docstring)."""
        off = _offsets([x[0] for x in xs])
        out = torch.zeros_like(metric)
        for l, x in enumerate(xs):
            c = centres[:, off[l]:off[l + 1]]
            out[l] = self._layer_weight(tree, l, x, c, labels)[0]
        return out if float(out.sum()) > 0 else metric


@SPLIT_REGISTRY.register("average-linkage")
class AverageLinkage(CentroidRule):
    """UPGMA over the per-layer-normalised summed distance (module docstring)."""

    def build(self, tree: TaskTree, keys: list[str], depth: int, path: str) -> Node:
        L = tree.num_layers
        xs = Bisect._layers(tree, keys)
        n = len(keys)
        per_layer = torch.stack([torch.stack([tree.distance_fn(l, xs[l][i], xs[l]).to(torch.float64)
                                              for i in range(n)]) for l in range(L)])  # (L, n, n)
        mean = per_layer.sum(dim=(1, 2)) / max(1, n * (n - 1))
        metric = torch.where(mean > 0, 1.0 / mean.clamp_min(1e-300), torch.zeros_like(mean))
        dist = (per_layer * metric.view(L, 1, 1)).sum(0)
        # clusters: id -> member indices; merges recorded as id -> (left id, right id)
        members: dict[int, list[int]] = {i: [i] for i in range(n)}
        children: dict[int, tuple[int, int]] = {}
        active = list(range(n))
        d = {(i, j): float(dist[i, j]) for i in range(n) for j in range(i + 1, n)}
        nxt = n
        while len(active) > 1:
            (a, b), _ = min(((p, v) for p, v in d.items()), key=lambda pv: (pv[1], pv[0]))
            members[nxt] = sorted(members[a] + members[b])
            children[nxt] = (a, b)
            active = [c for c in active if c not in (a, b)]
            na, nb = len(members[a]), len(members[b])
            for c in active:
                da = d.pop((min(a, c), max(a, c)))
                db = d.pop((min(b, c), max(b, c)))
                d[(c, nxt)] = (na * da + nb * db) / (na + nb)
            d.pop((a, b))
            active.append(nxt)
            nxt += 1
        root = active[0]
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


def make_split(name: str) -> SplitRule:
    """The split rule registered under ``name``."""
    return SPLIT_REGISTRY.get(name)()
