"""TreeLoRA-Fed's sharing groups from a tree of the round's running tasks (``share-groups=running``, the default).

The server builds a tree, with its own split rule and sketch distance, over the current sketches of the clients
that reported this round. Layer ``l`` of a client maps to its depth-``l`` node, or to its deepest node holding
another client when that is shallower; the clients mapped to one node at one layer average that layer. So layer 0
is shared by everyone (the root), deeper layers (and, with ``share-prototypes``, the head's class means: the last
layer's group) only with the nearest running tasks; a client alone on its side of the root split keeps its deeper
layers to itself.

Why not the global tree: it holds *finished* tasks, and the clients that train alike now are usually on tasks
nobody has finished, so routing their sketches into it (``share-groups=route``, the reading of the paper's
"layer l within its depth-l subtree") separates true partners wherever they fall on either side of an old split
and joins unrelated tasks that fall on the same side (sharing-group precision 0.2–0.5 on the conflicting preset
while the global tree itself had every task's two leaves as siblings; BENCHMARKS.md). A tree over the running
sketches is the same clustering applied to what is being shared.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from treelora.tree import TaskTree
from treelora.tree_linkage import BisectLinkage

__all__ = ["running_groups", "LINKAGE_UP_TO"]

#: clients per round up to which ``bisect-linkage`` builds the running tree by average linkage alone (one O(n² L)
#: distance matrix; the 2-means top it adds for the global tree is what a 10^4-leaf build needs, not a round's)
LINKAGE_UP_TO = 256


def running_groups(sketches: dict[str, list[torch.Tensor]], num_layers: int, *, split: str,
                   distance_fn: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor],
                   layer_free_distance: bool = True) -> dict[tuple[int, str], list[str]]:
    """``{(layer, node path): clients}`` for every layer of every client in ``sketches`` (client → its current
    per-layer sketch), from a tree over them built by ``split``: layer ``l`` is the client's depth-``l`` node, or
    its deepest node holding another client when that is shallower. A lone client gets groups of one."""
    if not sketches:
        return {}
    tree = TaskTree(num_layers, split=split, leaf_size=1, distance_fn=distance_fn)
    tree.layer_free_distance = layer_free_distance
    if isinstance(tree.rule, BisectLinkage):  # one round's clients: UPGMA over all of them, one distance matrix
        tree.rule.linkage_below = max(BisectLinkage.linkage_below, LINKAGE_UP_TO)
    tree.add_all([(client, sketches[client], 1.0) for client in sorted(sketches)])
    groups: dict[tuple[int, str], list[str]] = {}
    for client in sorted(sketches):
        path = tree.path_to(client)
        shared = [i for i, node in enumerate(path) if len(node.keys) > 1]
        deepest = shared[-1] if shared else 0
        for layer in range(num_layers):
            node = path[min(layer, deepest)]
            groups.setdefault((layer, node.path), []).append(client)
    return groups
