"""The federated methods' shared contract: what a client of each method trains and sends.

Both apps read the same :class:`FedMethod` (the client to decide what leaves the node, the server to decide what
it expects and validates), so adding a method is one class here plus its server strategy
(``server/strategies.py``, registered under the same name). A method says:

* ``learner_method``: which continual learner its clients run (``fedavg-lora`` forces sequential LoRA: there is no
  tree to regularise against);
* ``sends_adapters``: whether a report carries the live adapter (``local-only`` sends counts and metrics only),
  and ``sent_parts``, which of its matrices (FedSA-LoRA sends only A, FFA-LoRA only B);
* ``sends_sketches``: whether a report carries signature sketches (only a method with a global tree uses them);
* ``learner_overrides``: learner settings the method imposes (FFA-LoRA freezes A at its shared seeded value);
* ``sends_prototypes``: whether a report carries per-class feature sums and counts (``fedproto``) and its
  assignments the global class prototypes;
* ``dp_unsupported``: why the DP knobs do not cover what this method sends ("" = covered); a run config that sets
  them is refused with this reason.
"""

from __future__ import annotations

from typing import ClassVar

from ..registry import Registry

__all__ = ["FedMethod", "FED_METHOD_REGISTRY", "fed_method"]

FED_METHOD_REGISTRY: Registry[type[FedMethod]] = Registry("federated method")


class FedMethod:
    """Base: a method whose clients train their own learner and send their adapter every round."""

    name: ClassVar[str] = ""
    sends_adapters: ClassVar[bool] = True
    sent_parts: ClassVar[tuple[str, ...]] = ("A", "B")
    sends_sketches: ClassVar[bool] = False
    learner_overrides: ClassVar[dict[str, object]] = {}
    sends_prototypes: ClassVar[bool] = False
    dp_unsupported: ClassVar[str] = ""

    @classmethod
    def learner_method(cls, local_method: str) -> str:
        """The continual learner a client runs, given the run config's ``local-method``."""
        return local_method


@FED_METHOD_REGISTRY.register("treelora")
class TreeLoRAFed(FedMethod):
    """TreeLoRA-Fed: a global tree over every finished (client, task); candidates, sharing groups and warm starts
    from it. Clients send adapters and the sketches the tree is built from."""

    sends_sketches = True


@FED_METHOD_REGISTRY.register("fedavg-lora")
class FedAvgLoRA(FedMethod):
    """FedAvg-LoRA: one global LoRA averaged over all clients every round; sequential LoRA on each client."""

    @classmethod
    def learner_method(cls, local_method: str) -> str:
        return "seqlora"


@FED_METHOD_REGISTRY.register("local-only")
class LocalOnly(FedMethod):
    """No communication: each client learns alone; only counts and metrics leave a node."""

    sends_adapters = False


@FED_METHOD_REGISTRY.register("fedsa-lora")
class FedSALoRA(FedMethod):
    """FedSA-LoRA (Guo et al., 2025): A learns what is general and is averaged over all clients; B stays local.
    Clients send A only."""

    sent_parts = ("A",)

    @classmethod
    def learner_method(cls, local_method: str) -> str:
        return "seqlora"


@FED_METHOD_REGISTRY.register("ffa-lora")
class FFALoRA(FedMethod):
    """FFA-LoRA (Sun et al., 2024): A frozen at its seeded initialisation (identical on every client), B averaged
    over all clients. Clients send B only."""

    sent_parts = ("B",)
    learner_overrides = {"freeze_lora_a": True}

    @classmethod
    def learner_method(cls, local_method: str) -> str:
        return "seqlora"


@FED_METHOD_REGISTRY.register("clustered-fl")
class ClusteredFL(FedMethod):
    """Clustered FL over the clients' adapters (IFCA/CFL family): the server clusters clients by the cosine of their
    adapters every round and averages every layer within a cluster. Sequential LoRA on each client."""

    @classmethod
    def learner_method(cls, local_method: str) -> str:
        return "seqlora"


@FED_METHOD_REGISTRY.register("oracle-sharing")
class OracleSharing(FedMethod):
    """The upper bound of what a tree can add: every layer averaged exactly among the clients whose current tasks
    are the same stream task (the server reads the scenario's ground truth). The client's own learner runs as
    configured (``local-method``)."""


@FED_METHOD_REGISTRY.register("fedproto")
class FedProto(FedMethod):
    """Federated prototypes (FedProto/FedNCM family on a frozen encoder): the LoRA stays frozen (``head-only``
    learner) and the ``ncm`` head scores; each client sends, per class of its current task, the sum of its
    eval-mode features over its shard and their count; the server's counts-weighted global mean of every class
    comes back as that class's prototype. No adapter and no sketch leaves a client."""

    sends_adapters = False
    sends_prototypes = True
    learner_overrides = {"head": "ncm", "lr": 0.0}
    dp_unsupported = ("fedproto releases per-class feature sums and counts, which dp-clip/dp-noise and "
                      "dp-adapter-clip/dp-adapter-noise do not clip or noise; run fedproto without DP")

    @classmethod
    def learner_method(cls, local_method: str) -> str:
        return "head-only"


def fed_method(name: str) -> type[FedMethod]:
    """The method registered under ``name``; ValueError naming the known ones otherwise."""
    return FED_METHOD_REGISTRY.get(name)
