"""The tree's data: stored entries, nodes, and the distance a tree measures with (DESIGN.md §2 "Tree").

A node's ``center``/``threshold``/``metric`` are whatever its split rule (:mod:`treelora.tree_splits`) stores to
route a query: the layer-d mean and median threshold (``l1-median``), the mean difference and median score
(``dot-consecutive``), or the two children's centres over all layers and the per-layer weights of the distance
(``bisect``, ``average-linkage``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

__all__ = ["Signature", "DistanceFn", "l1_distance", "TreeEntry", "Node"]

Signature = list[torch.Tensor]
DistanceFn = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def l1_distance(layer: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact L1 distance along the last dimension (broadcasts: ``b`` may be ``(k, p)``)."""
    return (a - b).abs().sum(dim=-1)


@dataclass
class TreeEntry:
    """A stored task (or a merge of several): its per-layer signature and optional adapter payload."""

    key: str
    signature: Signature
    members: list[str]
    weight: float = 1.0
    payload: dict[str, torch.Tensor] | None = None


@dataclass
class Node:
    """A tree node. ``keys`` are the entry keys below it; a leaf has no children."""

    path: str
    depth: int
    keys: list[str]
    children: list[Node] = field(default_factory=list)
    center: torch.Tensor | None = None  # what the split measured against (see the module docstring)
    threshold: float | None = None  # split value (median distance or median score); None for centroid splits
    metric: torch.Tensor | None = None  # centroid splits: per-layer weight of the routing distance, shape (L,)

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def walk(self) -> Iterator[Node]:
        """Pre-order traversal."""
        yield self
        for child in self.children:
            yield from child.walk()
