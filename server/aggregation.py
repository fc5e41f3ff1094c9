"""Layer-wise weighted averaging of client adapters within groups.

A group is (layer, group id): the clients whose strategy put them in the same group for that layer (TreeLoRA-Fed:
the tree node at that layer's depth that holds their current task; FedAvg-LoRA: one group per layer). Layer ``l``
of every member is replaced, next round, by the members' example-weighted mean; a group of one shares nothing.
"""

from __future__ import annotations

import torch

__all__ = ["Adapter", "average_groups"]

Adapter = dict[int, dict[str, torch.Tensor]]  # layer -> {"A": tensor, "B": tensor}


def average_groups(adapters: dict[str, tuple[Adapter, int]], groups: dict[tuple[int, str], list[str]], *,
                   parts: tuple[str, ...] = ("A", "B")) -> dict[str, Adapter]:
    """``{client: {layer: averaged parts}}`` for every group with ≥ 2 members (weights: the reports' examples);
    ``parts`` are the adapter matrices averaged (FedSA-LoRA shares only A, FFA-LoRA only B)."""
    shares: dict[str, Adapter] = {}
    for (layer, _), members in groups.items():
        if len(members) < 2:
            continue
        weights = torch.tensor([float(adapters[c][1]) for c in members])
        weights = weights / weights.sum()
        avg = {p: sum(w * adapters[c][0][layer][p] for w, c in zip(weights, members)) for p in parts}
        for c in members:
            shares.setdefault(c, {})[layer] = avg
    return shares
