"""Sharing groups from a tree of the round's running tasks (server.sharing_groups)."""

from __future__ import annotations

import torch

from server.sharing_groups import running_groups
from treelora.tree import l1_distance


def _sketch(centre: float, jitter: float, layers: int = 4, width: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(int(1000 * centre + 10 * jitter))
    return [torch.full((width,), centre) + jitter * torch.randn(width, generator=g) for _ in range(layers)]


def _members(groups: dict, layer: int, client: str) -> set[str]:
    return next(set(m) for (lay, _), m in groups.items() if lay == layer and client in m)


def test_deep_layers_share_with_the_nearest_running_task_only():
    sketches = {"c0": _sketch(0.0, 0.01), "c3": _sketch(0.0, 0.02), "c1": _sketch(5.0, 0.01),
                "c4": _sketch(5.0, 0.02), "c2": _sketch(20.0, 0.01), "c5": _sketch(20.0, 0.02)}
    groups = running_groups(sketches, 4, split="bisect-linkage", distance_fn=l1_distance, layer_free_distance=True)
    assert _members(groups, 0, "c0") == set(sketches)  # the root: layer 0 is shared by everyone
    for a, b in (("c0", "c3"), ("c1", "c4"), ("c2", "c5")):
        assert _members(groups, 3, a) == {a, b}  # the deepest layer: exactly the partner
        assert _members(groups, 3, b) == {a, b}
    # every client is in exactly one group per layer, and groups only narrow with depth
    for layer in range(4):
        assert sorted(c for (lay, _), m in groups.items() if lay == layer for c in m) == sorted(sketches)
    for c in sketches:
        assert all(_members(groups, l + 1, c) <= _members(groups, l, c) for l in range(3))


def test_lone_and_no_clients():
    assert running_groups({}, 3, split="bisect-linkage", distance_fn=l1_distance) == {}
    groups = running_groups({"c0": _sketch(1.0, 0.1, layers=3)}, 3, split="bisect-linkage", distance_fn=l1_distance)
    assert sorted(groups.values()) == [["c0"]] * 3
