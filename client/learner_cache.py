"""One continual learner (and one task stream) per client process and config, reused across clients.

Building a learner wraps the backbone with peft (seconds for MiniLM); in simulation one process serves many
clients, so the learner is built once and each client's small state (adapter, head, tree, optimiser) is swapped in
and out of it (:mod:`client.state_store`). The cache key is everything the learner is built from.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import torch

from treelora.fed.settings import FedSettings
from treelora.learner import ContinualLearner

__all__ = ["stream_for", "learner_for"]

_LEARNERS: dict[str, tuple[ContinualLearner, dict[str, Any]]] = {}


@lru_cache(maxsize=4)
def _stream(fed: FedSettings) -> Any:
    return fed.load_stream()


def stream_for(fed: FedSettings) -> Any:
    """The run's task stream as its scenario widens it (the same on every node: a function of the run config)."""
    return _stream(FedSettings(stream=fed.stream, seed=fed.seed, train_per_class=fed.train_per_class,
                               test_per_class=fed.test_per_class, scenario=fed.scenario, families=fed.families))


def learner_for(
    fed: FedSettings, device: str | None, precision: str = "auto"
) -> tuple[ContinualLearner, dict[str, Any]]:
    """(the learner, its freshly built state) for this run config on this device; built on first use."""
    from treelora.backbones import load_backbone

    cfg = fed.learner_config(device=device, precision=precision)
    key = json.dumps(
        [fed.backbone, fed.stream, fed.train_per_class, fed.test_per_class, fed.scenario, fed.families,
         cfg.to_dict()], sort_keys=True, default=str
    )
    if key not in _LEARNERS:
        if fed.threads:
            torch.set_num_threads(fed.threads)
        stream = stream_for(fed)
        backbone = load_backbone(
            fed.backbone, seed=fed.seed, attn_implementation=cfg.attn_implementation, device=device
        )
        learner = ContinualLearner(backbone, stream.num_classes(), cfg, stream=stream)
        _LEARNERS[key] = (learner, learner.state_dict())
    return _LEARNERS[key]
