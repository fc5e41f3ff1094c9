"""The server's global tree over finished (client, task) leaves, in sketch space, with its rebuild schedule.

A leaf's signature is its final per-layer Cauchy sketch; the split rule is the run config's ``tree-split`` (default
``bisect-linkage``, :mod:`treelora.tree_linkage`); distances are the sketch's estimate of the L1
distance named by ``tree-estimator`` (:class:`treelora.sketch.LinearSketch`: Li's geometric mean by default, with
the median's accuracy and no sort, or Indyk's median). Leaves are inserted as tasks finish; while the tree holds
fewer than ``rebuild-below`` leaves every insert rebuilds it (cheap at that size, and an incremental insert only
re-splits the leaf it reaches, so the clusters above it drift until the next build); beyond that it is rebuilt
after ``max(rebuild-every, rebuild-growth × size at the last build)`` inserts, once it has grown by a fixed
fraction: O(1) builds per insert amortised instead of one O(N) build every few inserts.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import torch

from treelora.fed.settings import FedSettings
from treelora.sketch import LinearSketch
from treelora.tree import Node, TaskTree

from .centre_store import CentreStore

__all__ = ["GlobalTree"]


class GlobalTree:
    """The :class:`~treelora.tree.TaskTree` of a federation (created with the first leaf's layer count)."""

    def __init__(self, fed: FedSettings, centre_dir: str | Path | None = None) -> None:
        self.fed = fed
        # with a directory, checkpoints refer to node centres kept in append-only segments (server.centre_store)
        self.centres = CentreStore(centre_dir) if centre_dir is not None else None
        self.tree: TaskTree | None = None
        self.inserts = 0
        self.since_build = 0  # inserts since the tree was last rebuilt
        self.built_size = 0  # leaves at that rebuild
        self._sketch = LinearSketch(1, fed.sketch_dim, fed.sketch_kind, fed.sketch_seed)

    def distance(self, layer: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Sketch-space L1 estimate (every sketch was validated on arrival; centres are means of those)."""
        return self._sketch.distance(a, b, checked=False, estimator=self.fed.tree_estimator)

    def ensure(self, num_layers: int) -> TaskTree:
        """The tree, created empty on first use."""
        if self.tree is None:
            self.tree = TaskTree(num_layers, split=self.fed.tree_split, leaf_size=self.fed.leaf_size,
                                 distance_fn=self.distance)
            self.tree.layer_free_distance = True  # one sketch matrix for every layer: see distance()
        return self.tree

    def __len__(self) -> int:
        return 0 if self.tree is None else len(self.tree)

    def keys(self) -> AbstractSet[str]:
        """Entry keys (the leaves a pull or a candidate may name): a live view, O(1) membership, no copy (a
        report's every pull is checked against it: a copy per report cost O(leaves))."""
        return frozenset() if self.tree is None else self.tree.entries.keys()

    def add(self, key: str, final: list[torch.Tensor], weight: float) -> None:
        """Insert a finished task's leaf; rebuild when the schedule says so."""
        tree = self.ensure(len(final))
        self.inserts += 1
        self.since_build += 1
        rebuild = (len(tree) < self.fed.rebuild_below
                   or self.since_build >= max(self.fed.rebuild_every, self.fed.rebuild_growth * self.built_size))
        tree.add(key, final, weight=weight, rebuild=rebuild)
        if rebuild:
            self.since_build, self.built_size = 0, len(tree)

    def bulk_load(self, entries: list[tuple[str, list[torch.Tensor], float]], num_layers: int) -> None:
        """Add many leaves and build once, as if that build had been the last rebuild (benchmarks set-up)."""
        self.ensure(num_layers).add_all(entries)
        self.since_build, self.built_size = 0, len(self)

    def locate(self, sketch: list[torch.Tensor]) -> list[Node]:
        """Root-to-leaf path of a running task's sketch ([] for an empty tree)."""
        return [] if self.tree is None else self.tree.locate(sketch)

    def nearest_leaf(self, probe: list[torch.Tensor], where: Callable[[str], bool] | None = None) -> str | None:
        """The entry nearest to ``probe`` among those ``where`` accepts (None when none does): routed down the tree
        (by nearness under the centroid splits), then the nearest of the few entries around the leaf it reaches
        (:meth:`treelora.tree.TaskTree.nearest`)."""
        assert self.tree is not None and len(self.tree) > 0
        return self.tree.nearest(probe, where=where)

    def nearest_leaves(self, probe: list[torch.Tensor], k: int,
                       where: Callable[[str], bool] | None = None) -> list[str]:
        """The ``k`` entries nearest to ``probe`` that ``where`` accepts, nearest first, from one descent
        (:meth:`treelora.tree.TaskTree.nearest_k`)."""
        assert self.tree is not None and len(self.tree) > 0
        return self.tree.nearest_k(probe, k, where=where)

    def render(self) -> dict[str, Any] | None:
        """The tree as a nested dict for plots and results (None before the first leaf)."""
        return None if self.tree is None else self.tree.render()

    # ------------------------------------------------------------------ checkpoint
    def state(self, stored: set[str]) -> tuple[dict[str, Any] | None, dict[str, int]]:
        """(tree dict with the signatures of ``stored`` single-task leaves left out — they live in the leaf files —,
        schedule counters)."""
        tree = None
        if self.tree is not None:
            tree = self.tree.to_dict()
            for entry in tree["entries"]:
                if entry["key"] in stored and entry["members"] == [entry["key"]]:
                    entry["signature"] = None
            if self.centres is not None:
                refs = self.centres.persist(self.tree.nodes())
                for node in _walk(tree["root"]):
                    if node["center"] is not None:
                        node["center"] = refs[node["path"]]
        return tree, {"inserts": self.inserts, "since_build": self.since_build, "built_size": self.built_size}

    def after_checkpoint(self) -> None:
        """The checkpoint from the last :meth:`state` is durable: centre segments it does not use can go."""
        if self.centres is not None:
            self.centres.prune()

    def load(self, tree: dict[str, Any] | None, counters: dict[str, int], sketch_of: Any) -> None:
        """Inverse of :meth:`state`; ``sketch_of(key)`` reads a left-out signature back from its leaf file."""
        if tree is not None:
            for entry in tree["entries"]:
                if entry["signature"] is None:
                    entry["signature"] = sketch_of(entry["key"])
            by_ref = [n for n in _walk(tree["root"]) if isinstance(n["center"], dict)]
            if by_ref:
                if self.centres is None:
                    raise ValueError("resume: the checkpoint refers to centre segments but no centre store is set")
                centres = self.centres.load({n["path"]: n["center"] for n in by_ref})
                for node in by_ref:
                    node["center"] = centres[node["path"]]
            self.tree = TaskTree.from_dict(tree, distance_fn=self.distance)
            self.tree.layer_free_distance = True
        self.inserts = counters["inserts"]
        self.since_build = counters.get("since_build", counters["inserts"] % self.fed.rebuild_every)
        self.built_size = counters.get("built_size", 0)


def _walk(node: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every node dict of a serialized tree, root first."""
    out, stack = [], [node] if node is not None else []
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(n["children"])
    return out
