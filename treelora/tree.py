"""The hierarchical similarity tree over finished tasks (DESIGN.md §2 "Tree").

A binary tree over stored task entries whose split rule is a registered class (:mod:`treelora.tree_splits`):
``l1-median`` (paper: level ``d`` splits on layer ``d``), ``dot-consecutive`` (released code), ``bisect``
(signal-weighted 2-means over all layers, the federation's default) and ``average-linkage``. An inserted task is
routed down by the rule and only the leaf it reaches is re-split (or, for a non-incremental rule, the whole tree
is rebuilt); a full rebuild every ``rebuild_every`` inserts re-fits the splits. :meth:`TaskTree.nearest` finds the
stored entry nearest to a query in O(depth): route down, then compare the few entries under the lowest ancestor
holding at least ``among`` of them.

The median is ``torch.median`` (the lower middle value for an even count). Distances go through ``distance_fn``
so that the same tree works on exact signatures (exact L1) and on Cauchy sketches (median or geometric-mean
estimator). Node ids are their paths from the root ("" root, "0" its left child, "01" ...), stable across serialization.

A storage budget merges the two closest entries (summed per-layer distance) until the count fits: signatures and
payloads (adapter tensors) are averaged weighted by how many tasks each holds, and the merged entry keeps its
members so every original task stays reachable through :meth:`TaskTree.entry_of`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import torch

from .tree_node import DistanceFn, Node, Signature, TreeEntry, l1_distance
from .tree_splits import SPLIT_REGISTRY, CentroidRule, stacked, weighted

__all__ = ["TaskTree", "Node", "TreeEntry", "Signature", "DistanceFn", "l1_distance", "TREE_FORMAT_VERSION"]

TREE_FORMAT_VERSION = 1
NEAREST_AMONG = 8  # entries compared at the end of a nearest-leaf descent (the reached leaf and its near siblings)


class TaskTree:
    """Hierarchical similarity tree over task entries keyed by string (e.g. ``"t3"`` or ``"client2/t1"``)."""

    def __init__(
        self,
        num_layers: int,
        *,
        split: str = "l1-median",
        leaf_size: int = 1,
        max_depth: int = 0,
        distance_fn: DistanceFn = l1_distance,
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if split not in SPLIT_REGISTRY:
            raise ValueError(f"split must be one of {', '.join(SPLIT_REGISTRY)}, got {split!r}")
        if leaf_size < 1:
            raise ValueError(f"leaf_size must be >= 1, got {leaf_size}")
        self.num_layers = num_layers
        self.split = split
        self.rule = SPLIT_REGISTRY.get(split)()
        self.leaf_size = leaf_size
        self.max_depth = min(max_depth or num_layers, num_layers)
        self.distance_fn = distance_fn
        # True when distance_fn ignores its layer argument and broadcasts over leading dimensions (exact L1, the
        # server's one sketch for every layer): the centroid splits then measure all layers in one call
        self.layer_free_distance = distance_fn is l1_distance
        self.entries: dict[str, TreeEntry] = {}
        self.root: Node | None = None
        self._member_index: dict[str, str] = {}
        self._leaf_index: dict[str, Node] = {}
        self.version = 0  # bumped on every structural change, so a bandit knows to refresh

    # ------------------------------------------------------------------ building
    def _check_signature(self, key: str, signature: Signature) -> Signature:
        if len(signature) != self.num_layers:
            raise ValueError(f"signature of {key!r} has {len(signature)} layers, the tree has {self.num_layers}")
        out = []
        for layer, vec in enumerate(signature):
            vec = torch.as_tensor(vec).detach().to("cpu", torch.float32).flatten()
            if not torch.isfinite(vec).all():
                raise ValueError(f"signature of {key!r} has non-finite values in layer {layer}")
            if self.entries:
                ref = next(iter(self.entries.values())).signature[layer]
                if ref.numel() != vec.numel():
                    raise ValueError(
                        f"signature of {key!r} layer {layer} has {vec.numel()} values, the tree stores {ref.numel()}"
                    )
            out.append(vec)
        return out

    def add(
        self,
        key: str,
        signature: Signature,
        *,
        payload: dict[str, torch.Tensor] | None = None,
        weight: float = 1.0,
        rebuild: bool = False,
    ) -> None:
        """Add a finished task. Incremental insert unless ``rebuild``, or the rule is not incremental
        (``dot-consecutive``: always a rebuild, as released). Validation happens before any change, so a bad
        signature leaves the tree as it was."""
        if not key or "+" in key:
            raise ValueError(f"task key {key!r} must be non-empty and must not contain '+' (used for merges)")
        if key in self.entries or key in self._member_index:
            raise ValueError(f"task {key!r} is already in the tree")
        signature = self._check_signature(key, signature)
        self.entries[key] = TreeEntry(key, signature, [key], float(weight), payload)
        self._member_index[key] = key
        if rebuild or self.root is None or not self.rule.incremental:
            self.build()
        else:
            self._insert(key)

    def add_all(self, entries: list[tuple[str, Signature, float]]) -> None:
        """Add many ``(key, signature, weight)`` entries and build once. Unlike :meth:`add`, the signatures are
        taken as they are (float32, flat, finite, one width per layer: the caller has validated them)."""
        for key, signature, weight in entries:
            if key in self.entries or key in self._member_index:
                raise ValueError(f"task {key!r} is already in the tree")
            self.entries[key] = TreeEntry(key, list(signature), [key], float(weight), None)
            self._member_index[key] = key
        self.build()

    def build(self) -> None:
        """Rebuild the whole tree from the stored entries."""
        keys = list(self.entries)
        self.root = self.rule.build(self, keys, 0, "") if keys else None
        self._reindex()

    def _is_leaf_set(self, keys: list[str], depth: int) -> bool:
        return len(keys) <= self.leaf_size or depth >= self.max_depth

    def _insert(self, key: str) -> None:
        assert self.root is not None
        signature = self.entries[key].signature
        node = self.root
        while True:
            node.keys.append(key)
            if node.is_leaf:
                break
            node = node.children[self.rule.route(self, node, signature)]
        if not self._is_leaf_set(node.keys, node.depth):
            rebuilt = self.rule.build(self, node.keys, node.depth, node.path)
            node.children, node.center, node.threshold = rebuilt.children, rebuilt.center, rebuilt.threshold
            node.metric = rebuilt.metric
        self._index(node)  # only the reached leaf (now perhaps a small subtree) changed: O(leaf size), not O(tree)
        self.version += 1

    def _index(self, subtree: Node) -> None:
        for node in subtree.walk():
            if node.is_leaf:
                for k in node.keys:
                    self._leaf_index[k] = node

    def _reindex(self) -> None:
        self._leaf_index = {}
        if self.root is not None:
            self._index(self.root)
        self.version += 1

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self._member_index

    def entry_of(self, task_key: str) -> TreeEntry:
        """The entry holding an original task (itself, or the merge that absorbed it)."""
        if task_key not in self._member_index:
            raise KeyError(f"task {task_key!r} is not in the tree")
        return self.entries[self._member_index[task_key]]

    def leaves(self) -> list[Node]:
        """All leaves, left to right."""
        return [] if self.root is None else [n for n in self.root.walk() if n.is_leaf]

    def nodes(self) -> list[Node]:
        """All nodes in pre-order."""
        return [] if self.root is None else list(self.root.walk())

    def depth(self) -> int:
        """Depth of the deepest leaf (0 for a single leaf)."""
        return max((n.depth for n in self.leaves()), default=0)

    def path_to(self, task_key: str) -> list[Node]:
        """Nodes from the root to the leaf holding ``task_key``: an entry key, or an original task (then the
        entry that absorbed it)."""
        leaf = self._leaf_index[task_key if task_key in self.entries else self.entry_of(task_key).key]
        out, node = [], self.root
        assert node is not None
        for step in leaf.path:
            out.append(node)
            node = node.children[int(step)]
        out.append(node)
        return out

    def node_at(self, path: str) -> Node:
        """The node with the given path id."""
        if self.root is None:
            raise KeyError("the tree is empty")
        node = self.root
        for step in path:
            if node.is_leaf or step not in "01":
                raise KeyError(f"no node at path {path!r}")
            node = node.children[int(step)]
        return node

    def group(self, task_key: str, depth: int) -> list[str]:
        """Entry keys sharing ``task_key``'s node at ``depth`` (the whole leaf if the leaf is shallower)."""
        path = self.path_to(task_key)
        return list(path[min(depth, len(path) - 1)].keys)

    def locate(self, signature: Signature) -> list[Node]:
        """Root-to-leaf path a new (not stored) signature would take; used to place a running task."""
        if self.root is None:
            return []
        signature = stacked(self, [torch.as_tensor(s, dtype=torch.float32).flatten() for s in signature])
        out, node = [self.root], self.root
        while not node.is_leaf:
            node = node.children[self.rule.route(self, node, signature)]
            out.append(node)
        return out

    def nearest(self, signature: Signature, *, among: int = NEAREST_AMONG,
                where: Callable[[str], bool] | None = None) -> str | None:
        """The stored entry nearest to a query (None for an empty tree or when ``where`` accepts none): the first
        of :meth:`nearest_k` with ``k = 1``."""
        best = self.nearest_k(signature, 1, among=among, where=where)
        return best[0] if best else None

    def nearest_k(self, signature: Signature, k: int, *, among: int = NEAREST_AMONG,
                  where: Callable[[str], bool] | None = None) -> list[str]:
        """The ``k`` stored entries nearest to a query, nearest first (fewer when fewer pass ``where``), among
        ``among + k - 1`` entries found by routing: one descent for all ``k``, gathering a superset of what ``k``
        one-at-a-time :meth:`nearest` calls (each excluding the picks before it) would compare.
        Centroid splits (``bisect``, ``average-linkage``): best-first descent by the distance to the children's
        centres under the root's layer weights (one scale for the whole tree, so the priorities compare), taking
        leaves until enough entries are gathered (the reached leaf and its nearest siblings: O(among · depth)),
        compared by the plain summed per-layer distance. Median splits: the split rule's route to a leaf, then the
        lowest ancestor holding enough entries, compared the same way."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if self.root is None:
            return []
        ok = where or (lambda key: True)
        want = among + k - 1
        signature = stacked(self, [torch.as_tensor(s, dtype=torch.float32).flatten() for s in signature])
        metric = self.root.metric if self.root.metric is not None else torch.ones(self.num_layers)
        if isinstance(self.rule, CentroidRule):
            keys: list[str] = []
            heap: list[tuple[float, int, Node]] = [(0.0, 0, self.root)]
            tick = 1
            while heap and len(keys) < want:
                _, _, node = heapq.heappop(heap)
                if node.is_leaf:
                    keys += [key for key in node.keys if ok(key)]
                    continue
                assert node.center is not None
                d = weighted(self, metric, node.center, signature).tolist()  # both children's centres at once
                for i, child in enumerate(node.children):
                    heapq.heappush(heap, (d[i], tick, child))
                    tick += 1
        else:
            path = self.locate(signature)
            at = len(path) - 1
            while at > 0 and sum(map(ok, path[at].keys)) < want:
                at -= 1
            keys = [key for key in path[at].keys if ok(key)]
        if not keys:
            return []
        xs = stacked(self, [torch.stack([self.entries[key].signature[l] for key in keys])
                            for l in range(self.num_layers)])
        d = weighted(self, torch.ones(self.num_layers), torch.cat(list(signature)), xs)  # plain summed distance
        order = torch.argsort(d, stable=True)[:k].tolist()
        return [keys[i] for i in order]

    # ------------------------------------------------------------------ budget
    def merge_to_budget(self, budget: int) -> list[tuple[str, str, str]]:
        """Merge the two closest entries until at most ``budget`` remain; returns ``(a, b, merged)`` triples."""
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        merges = []
        while len(self.entries) > budget:
            keys = list(self.entries)
            best: tuple[float, str, str] | None = None
            for i, a in enumerate(keys):
                sa = self.entries[a].signature
                for b in keys[i + 1 :]:
                    sb = self.entries[b].signature
                    d = sum(float(self.distance_fn(layer, sa[layer], sb[layer])) for layer in range(self.num_layers))
                    if best is None or d < best[0]:
                        best = (d, a, b)
            assert best is not None
            _, a, b = best
            merges.append((a, b, self._merge(a, b)))
        if merges:
            self.build()
        return merges

    def _merge(self, a: str, b: str) -> str:
        ea, eb = self.entries[a], self.entries[b]
        wa, wb = ea.weight / (ea.weight + eb.weight), eb.weight / (ea.weight + eb.weight)
        payload = None
        if ea.payload is not None and eb.payload is not None:
            payload = {name: wa * ea.payload[name] + wb * eb.payload[name] for name in ea.payload}
        merged = TreeEntry(
            key=f"{a}+{b}",
            signature=[wa * x + wb * y for x, y in zip(ea.signature, eb.signature)],
            members=ea.members + eb.members,
            weight=ea.weight + eb.weight,
            payload=payload,
        )
        rebuilt: dict[str, TreeEntry] = {}
        for k, e in self.entries.items():
            if k == a:
                rebuilt[merged.key] = merged
            elif k != b:
                rebuilt[k] = e
        self.entries = rebuilt
        for member in merged.members:
            self._member_index[member] = merged.key
        return merged.key

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of python scalars, lists and CPU tensors (``torch.save``-able, exact round trip)."""

        def node_dict(n: Node) -> dict[str, Any]:
            return {
                "path": n.path,
                "depth": n.depth,
                "keys": list(n.keys),
                "center": n.center,
                "threshold": n.threshold,
                "metric": n.metric,
                "children": [node_dict(c) for c in n.children],
            }

        return {
            "version": TREE_FORMAT_VERSION,
            "num_layers": self.num_layers,
            "split": self.split,
            "leaf_size": self.leaf_size,
            "max_depth": self.max_depth,
            "entries": [
                {"key": e.key, "signature": e.signature, "members": e.members, "weight": e.weight, "payload": e.payload}
                for e in self.entries.values()
            ],
            "root": None if self.root is None else node_dict(self.root),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, distance_fn: DistanceFn = l1_distance) -> TaskTree:
        """Inverse of :meth:`to_dict`; raises ValueError on a wrong version or inconsistent content."""
        if data.get("version") != TREE_FORMAT_VERSION:
            raise ValueError(f"tree format version {data.get('version')!r} is not {TREE_FORMAT_VERSION}")
        tree = cls(
            data["num_layers"],
            split=data["split"],
            leaf_size=data["leaf_size"],
            max_depth=data["max_depth"],
            distance_fn=distance_fn,
        )
        for e in data["entries"]:
            tree.entries[e["key"]] = TreeEntry(
                e["key"], list(e["signature"]), list(e["members"]), e["weight"], e["payload"]
            )
            for m in e["members"]:
                tree._member_index[m] = e["key"]

        def node_from(d: dict[str, Any]) -> Node:
            return Node(
                d["path"],
                d["depth"],
                list(d["keys"]),
                [node_from(c) for c in d["children"]],
                d["center"],
                d["threshold"],
                d.get("metric"),
            )

        tree.root = None if data["root"] is None else node_from(data["root"])
        if tree.root is not None and sorted(tree.root.keys) != sorted(tree.entries):
            raise ValueError("serialized tree: root keys do not match the stored entries")
        tree._reindex()
        return tree

    def render(self) -> dict[str, Any]:
        """``{"depth", "tasks", "children"}`` nested dict for plotting (tasks = original member names)."""

        def walk(n: Node) -> dict[str, Any]:
            tasks = [m for k in n.keys for m in self.entries[k].members]
            return {"depth": n.depth, "tasks": tasks, "children": [walk(c) for c in n.children]}

        return {"depth": 0, "tasks": [], "children": []} if self.root is None else walk(self.root)
