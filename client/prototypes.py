"""``fedproto`` on the client: a task's per-class feature sums and counts, and the global prototypes in the head.

The encoder is frozen (the ``head-only`` learner never moves the LoRA), so a task's sums are computed once, when
the task starts, in eval mode over the client's shard (the features the ``ncm`` head's own prototypes are taken
from), and sent with every report of the task. The server's global prototypes are written into the ``ncm`` head's
prototype rows (its public ``prototypes`` attribute); a class the server has none of yet keeps the client's own.
"""

from __future__ import annotations

from typing import Any

import torch

from treelora.data import iterate_batches
from treelora.heads import collect_features

__all__ = ["class_sums", "load_prototypes"]


@torch.no_grad()
def class_sums(learner: Any, encoded: dict[str, torch.Tensor], classes: list[int]
               ) -> dict[int, tuple[torch.Tensor, int]]:
    """``{class: (sum of its features, count)}`` over an encoded split (eval mode; float64 sums, float32 out)."""
    model = learner.model
    was_training = model.training
    model.eval()
    try:
        with learner._autocast():
            batches = (learner._to_device(b) for b in iterate_batches(encoded, learner.cfg.eval_batch_size,
                                                                      shuffle=False))
            feats, labels = collect_features(model.features, batches)
    finally:
        model.train(was_training)
    out: dict[int, tuple[torch.Tensor, int]] = {}
    for c in classes:
        mask = labels == c
        if bool(mask.any()):
            out[int(c)] = (feats[mask].double().sum(dim=0).float().cpu(), int(mask.sum()))
    return out


@torch.no_grad()
def load_prototypes(learner: Any, prototypes: dict[int, torch.Tensor]) -> None:
    """Write the global ``prototypes`` (class → mean feature) into the learner's ``ncm`` head."""
    if not prototypes:
        return
    head = learner.classifier
    if head.prototypes is None:
        weight = learner.model.head.weight
        head.prototypes = torch.zeros(weight.shape[0], weight.shape[1], device=weight.device)
    for c, mean in prototypes.items():
        head.prototypes[int(c)] = mean.to(head.prototypes.device, head.prototypes.dtype)
