"""The federated methods' shared contract: what a client of each method trains and sends.

Both apps read the same :class:`FedMethod` (the client to decide what leaves the node, the server to decide what
it expects and validates), so adding a method is one class here plus its server strategy
(``server/strategies.py``, registered under the same name). A method says:

* ``learner_method``: which continual learner its clients run (``fedavg-lora`` forces sequential LoRA: there is no
  tree to regularise against);
* ``sends_adapters``: whether a report carries the live adapter (``local-only`` sends counts and metrics only);
* ``sends_sketches``: whether a report carries signature sketches (only a method with a global tree uses them).
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
    sends_sketches: ClassVar[bool] = False

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


def fed_method(name: str) -> type[FedMethod]:
    """The method registered under ``name``; ValueError naming the known ones otherwise."""
    return FED_METHOD_REGISTRY.get(name)
