"""The federated prototype baseline's server side (``fedproto``): one counts-weighted global mean per class.

Clients run a frozen encoder (the ``head-only`` learner: the LoRA never moves) and the ``ncm`` head. Every train
report of a task carries, per class of that task, the sum of the client's eval-mode features over its shard and
their count (:class:`server.prototype_pool.PrototypePool`, which the base :class:`~server.strategies.Strategy`
keeps for every method that sends them). The encoder is frozen, so these are the same in every round of the
task: the client computes them once, when the task starts, and sends them with each of the task's reports.
Sending them every round (not only at the task's end) makes the global prototype of the task's classes reach the
client *during* the task, so the accuracy row written at its end is scored with the federation's prototypes, and
a missed round costs nothing. With ``rounds-per-task`` 1 the global prototypes of a task's classes first reach
the client with its next task (its row for that task is scored with its own class means, later rows with the
federation's). The ``evaluate`` round is tensor-free, so a client scores it with the prototypes of its last
``train`` assignment. Every client pools with every other: the global prototype of a class is ``Σ sums / Σ
counts`` over all the clients that reported it. Nothing is averaged between adapters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .strategies import STRATEGY_REGISTRY, Strategy

if TYPE_CHECKING:
    from .state import GlobalState

__all__ = ["FedProto"]


@STRATEGY_REGISTRY.register("fedproto")
class FedProto(Strategy):
    """Federated prototypes: the counts-weighted global mean of every class's features (module docstring)."""

    def prototype_partners(self, state: GlobalState, client: str) -> set[str] | None:
        return None  # everyone
