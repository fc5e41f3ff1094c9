"""How a :class:`~treelora.tree.TaskTree` splits its tasks and routes a query: one registered class per rule.

A rule builds a subtree over some entry keys (:meth:`SplitRule.build`) and says which child a signature goes to
(:meth:`SplitRule.route`); every distance goes through the tree's ``distance_fn``, so a rule works on exact
signatures (exact L1) and on Cauchy sketches (the median or geometric-mean estimator, :mod:`treelora.sketch`)
alike. Centres are means, and the mean of sketches is the sketch of the mean (sketches are linear), so a centre
means the same in both spaces.

* ``l1-median`` (paper): level ``d`` splits on layer ``d``: at a node take its tasks' layer-d signatures, the group
  mean ``m`` and each task's distance ``‖G_i[d] − m‖₁``; tasks at or below the median distance go left (ties left).
  If a side is empty the tasks are split in half by distance. A query goes left iff its distance to the stored
  ``m`` is at most the stored threshold. It separates "near the group mean" from "far from it": not a clustering.
* ``dot-consecutive`` (released code): built from consecutive differences ``Δ_0 = G_0, Δ_i = G_i − G_{i−1}``;
  score ``s_i = ⟨Δ_i[d], mean Δ[d]⟩``; ``s ≥ median`` goes left; an empty side halves the task list. Rebuilt after
  every task, as released.
* ``bisect`` (the federation's default): recursive 2-means bisection over *all* layers. The distance of a task to
  a centre is ``Σ_l w_l ‖G[l] − c[l]‖₁``. The layer weights normalise every layer and weight it by how much
  cluster signal it carries: ``w_l = (m_l / n_l)² / m_l``, ``m_l`` the mean pairwise layer-l distance and ``n_l``
  the mean distance to the nearest other task (tight neighbours relative to the spread = signal), measured once per
  build on ≤ ``weight_sample`` tasks. Measured on the WordNet federation: the value-projection layers carry the
  task (nearest-neighbour purity 10–16 of 16 per layer), the query projections little (4–9), and a split-local
  between/within ratio rewarded layers where one outlier stood apart. Each node runs ``starts`` deterministic
  2-means starts (the task farthest from the mean, then evenly spaced tasks; the second centre the task farthest
  from the first) and keeps the lowest objective; above ``fit_sample`` tasks it is fitted on an evenly spaced
  sample and every task is then assigned once, so a build stays O(N · L · depth). A query goes to the nearer centre
  under the weights (``Node.metric``).
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

from typing import TYPE_CHECKING, ClassVar

import torch

from .registry import Registry
from .tree_node import Node, Signature

if TYPE_CHECKING:
    from .tree import TaskTree

__all__ = ["SPLIT_REGISTRY", "SplitRule", "L1Median", "DotConsecutive", "Bisect", "CentroidRule", "weighted",
           "pairwise", "stacked"]

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


def stacked(tree: TaskTree, xs: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
    """Per-layer ``xs`` (each ``(p,)`` or ``(N, p)``) as one ``(L, p)`` / ``(N, L, p)`` tensor when the tree's
    distance is layer-free and every layer has one width (what :func:`weighted` then measures in one call), else
    unchanged. A stacked signature still indexes by layer (``x[l]``), so rules that read one layer accept it."""
    if isinstance(xs, torch.Tensor) or not tree.layer_free_distance or len({x.shape[-1] for x in xs}) != 1:
        return xs
    return torch.stack(xs, dim=-2)


def weighted(tree: TaskTree, metric: torch.Tensor, center: torch.Tensor,
             xs: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """``Σ_l metric[l] · d_l(center[l], x[l])`` for a concatenated centre ``(D,)`` and per-layer ``xs`` (each
    ``(p_l,)`` or ``(N, p_l)``, or pre-:func:`stacked`): the distance the centroid rules route and compare by.
    Under a layer-free distance the centre may also be ``(k, D)`` against one signature: ``(k,)`` distances."""
    xs = stacked(tree, xs)
    if isinstance(xs, torch.Tensor):  # one call over all layers: (..., L, p) centre against (N, L, p) rows
        L, width = xs.shape[-2:]
        d = tree.distance_fn(0, center.view(*center.shape[:-1], L, width), xs)
        m = metric if metric.dtype == torch.float64 else metric.double()
        return torch.matmul(d.double(), m)  # Σ_l metric[l] · d_l
    off = _offsets([x[0] if x.dim() > 1 else x for x in xs])
    if center.dim() > 1:
        return torch.stack([weighted(tree, metric, c, xs) for c in center])
    total = None
    for l, x in enumerate(xs):
        if float(metric[l]) == 0.0:
            continue
        d = tree.distance_fn(l, center[off[l]:off[l + 1]], x).to(torch.float64) * float(metric[l])
        total = d if total is None else total + d
    if total is None:
        return torch.zeros(xs[0].shape[0] if xs[0].dim() > 1 else (), dtype=torch.float64)
    return total


def pairwise(tree: TaskTree, xs: list[torch.Tensor], *, chunk_floats: int = 1 << 22) -> torch.Tensor:
    """``(L, n, n)`` float64 per-layer distances between the rows of per-layer ``xs`` (each ``(n, p_l)``): under a
    layer-free distance a few row blocks against all rows over every layer at once (≤ ``chunk_floats`` floats of
    differences per call), else one call per row and layer."""
    n, L = xs[0].shape[0], len(xs)
    rows_all = stacked(tree, xs)
    if isinstance(rows_all, torch.Tensor):  # (n, L, p)
        rows = max(1, chunk_floats // max(1, rows_all.numel()))
        blocks = [tree.distance_fn(0, rows_all[i:i + rows, None], rows_all[None]).to(torch.float64)
                  for i in range(0, n, rows)]  # each (rows, n, L)
        return torch.cat(blocks).permute(2, 0, 1).contiguous()
    return torch.stack([torch.stack([tree.distance_fn(l, xs[l][i], xs[l]).to(torch.float64) for i in range(n)])
                        for l in range(L)])


class CentroidRule(SplitRule):
    """Shared by the clustering rules: a node stores its two children's centres (concatenated over layers, shape
    ``(2, D)``) and the per-layer weights; a query goes to the nearer centre (ties to the left)."""

    def route(self, tree: TaskTree, node: Node, signature: Signature) -> int:
        assert node.center is not None and node.metric is not None
        if tree.layer_free_distance:
            d = weighted(tree, node.metric, node.center, signature)  # both centres in one call
            return 0 if float(d[0]) <= float(d[1]) else 1
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

    iterations: ClassVar[int] = 10
    starts: ClassVar[int] = 8  # 2-means starts per node of <= small_node tasks (the best objective wins); 2 above
    small_node: ClassVar[int] = 64
    focus: ClassVar[float] = 2.0  # exponent of a layer's neighbour ratio in its weight
    fit_sample: ClassVar[int] = 512  # tasks a node's 2-means is fitted on (then every task is assigned once)
    weight_sample: ClassVar[int] = 128  # tasks the layer weights are measured on (pairwise: O(sample² L))

    def build(self, tree: TaskTree, keys: list[str], depth: int, path: str) -> Node:
        root = tree.root
        metric = root.metric if depth > 0 and root is not None and root.metric is not None else \
            self.layer_weights(tree, keys)
        return self._build(tree, keys, depth, path, metric)

    def _build(self, tree: TaskTree, keys: list[str], depth: int, path: str, metric: torch.Tensor) -> Node:
        node = Node(path, depth, list(keys))
        if tree._is_leaf_set(keys, depth):
            return node
        left, right = self.bisect(tree, keys, metric)
        node = self._internal(tree, node, left, right, metric)
        node.children = [self._build(tree, left, depth + 1, path + "0", metric),
                         self._build(tree, right, depth + 1, path + "1", metric)]
        return node

    def layer_weights(self, tree: TaskTree, keys: list[str]) -> torch.Tensor:
        """``w_l = (m_l / n_l)^focus / m_l``: ``m_l`` the mean pairwise layer-l distance, ``n_l`` the mean distance to
        the nearest other task; a layer whose tasks have close neighbours relative to the spread carries cluster
        signal. Measured once per build on an evenly spaced sample."""
        sample = keys[:: max(1, -(-len(keys) // self.weight_sample))]
        xs = self._layers(tree, sample)
        n = len(sample)
        out = torch.zeros(tree.num_layers, dtype=torch.float64)
        per_layer = pairwise(tree, xs)
        for l in range(tree.num_layers):
            d = per_layer[l]
            if n < 2:
                continue
            mean = float(d.sum()) / (n * (n - 1))
            if mean <= 0:
                continue
            d.fill_diagonal_(float("inf"))
            nn = float(d.min(dim=1).values.mean())
            ratio = mean / nn if nn > 0 else 1e3
            out[l] = (1.0 if n < 3 else ratio ** self.focus) / mean
        return out if float(out.sum()) > 0 else torch.ones(tree.num_layers, dtype=torch.float64)

    def bisect(self, tree: TaskTree, keys: list[str], metric: torch.Tensor) -> tuple[list[str], list[str]]:
        """(left keys, right keys) of the best of ``starts`` 2-means runs under the layer weights ``metric``."""
        step = max(1, -(-len(keys) // self.fit_sample))
        xs = stacked(tree, self._layers(tree, keys[::step]))
        cat = xs.flatten(1) if isinstance(xs, torch.Tensor) else torch.cat(xs, dim=1)
        n = cat.shape[0]
        firsts = [int(torch.argmax(weighted(tree, metric, cat.mean(0), xs)))]
        firsts += [i for i in range(0, n, max(1, n // max(1, self.starts - 1))) if i not in firsts]
        best: tuple[float, torch.Tensor] | None = None
        for first in firsts[: self.starts if len(keys) <= self.small_node else 2]:
            second = int(torch.argmax(weighted(tree, metric, cat[first], xs)))
            if second == first:
                continue
            centres = torch.stack([cat[first], cat[second]])
            labels = torch.zeros(n, dtype=torch.bool)
            for it in range(self.iterations):
                d0, d1 = weighted(tree, metric, centres[0], xs), weighted(tree, metric, centres[1], xs)
                new = d1 < d0
                if bool(new.all()) or not bool(new.any()) or (it > 0 and torch.equal(new, labels)):
                    break
                labels = new
                centres = torch.stack([cat[~labels].mean(0), cat[labels].mean(0)])
            objective = float(torch.minimum(weighted(tree, metric, centres[0], xs),
                                            weighted(tree, metric, centres[1], xs)).sum())
            if bool(labels.any()) and not bool(labels.all()) and (best is None or objective < best[0]):
                best = (objective, centres)
        if best is None:  # no start splits (identical tasks): halve the list
            half = (len(keys) + 1) // 2
            return keys[:half], keys[half:]
        centres = best[1]
        every = stacked(tree, self._layers(tree, keys)) if step > 1 else xs
        d0, d1 = weighted(tree, metric, centres[0], every), weighted(tree, metric, centres[1], every)
        go_right = (d1 < d0).tolist()
        left = [k for k, r in zip(keys, go_right) if not r]
        right = [k for k, r in zip(keys, go_right) if r]
        if not left or not right:  # degenerate: halve by distance to the first centre
            order = torch.argsort(d0, stable=True).tolist()
            half = (len(keys) + 1) // 2
            left = [keys[i] for i in sorted(order[:half])]
            right = [keys[i] for i in sorted(order[half:])]
        return left, right

    @staticmethod
    def _layers(tree: TaskTree, keys: list[str]) -> list[torch.Tensor]:
        return [torch.stack([tree.entries[k].signature[l] for k in keys]) for l in range(tree.num_layers)]


def make_split(name: str) -> SplitRule:
    """The split rule registered under ``name``."""
    return SPLIT_REGISTRY.get(name)()


from . import tree_linkage as _tree_linkage  # noqa: E402,F401  (registers average-linkage and bisect-linkage)
