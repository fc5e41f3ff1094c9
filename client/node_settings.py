"""Node-config keys of a TreeLoRA-Fed client: who it is, where its state lives, which device it trains on.

``flower-supernode --node-config 'partition-id=0 num-partitions=3 state-dir=/var/lib/treelora device=cuda:0'`` in
deployment; the simulation engine fills ``partition-id`` and ``num-partitions``. ``max-local-steps`` caps what a
server may ask of this node (a hostile or buggy server cannot make it train for hours). The run config (shared by every
node) is :class:`treelora.fed.settings.FedSettings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from treelora.config import PRECISIONS
from treelora.fed.keys import client_id
from treelora.fed.settings import FedSettings

__all__ = ["NodeSettings"]


@dataclass(frozen=True)
class NodeSettings:
    """Who this client is and where its state lives."""

    partition_id: int
    num_partitions: int
    state_dir: Path  # this client's own directory (<state-dir root>/c<partition id>)
    device: str | None = None  # cpu | cuda | cuda:1 ... (None = cuda when available)
    precision: str = "auto"  # auto (bf16 autocast on CUDA) | bf16 | fp32
    max_local_steps: int = 0  # the most steps one train message may ask for (0 = 4 x the run config's local-steps)

    @property
    def client_id(self) -> str:
        return client_id(self.partition_id)

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any], fed: FedSettings) -> NodeSettings:
        """Parse the node config; a missing or out-of-range partition or an unknown precision is a ValueError."""
        try:
            pid, num = int(node_config["partition-id"]), int(node_config["num-partitions"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                "node config needs integer 'partition-id' and 'num-partitions' "
                "(flower-supernode --node-config 'partition-id=0 num-partitions=3 state-dir=...')"
            ) from exc
        if not 0 <= pid < num:
            raise ValueError(f"partition-id {pid} is outside 0..{num - 1}")
        root = node_config.get("state-dir") or fed.state_dir or os.path.join(fed.out_dir, "clients")
        device = node_config.get("device") or None
        precision = str(node_config.get("precision") or "auto")
        if precision not in PRECISIONS:
            raise ValueError(f"node config precision={precision!r} is not one of {', '.join(PRECISIONS)}")
        try:
            max_steps = int(node_config.get("max-local-steps") or 4 * fed.local_steps)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"node config max-local-steps must be an integer, got "
                             f"{node_config.get('max-local-steps')!r}") from exc
        if max_steps < 1:
            raise ValueError(f"node config max-local-steps must be >= 1, got {max_steps}")
        return cls(pid, num, Path(str(root)) / client_id(pid), None if device is None else str(device), precision,
                   max_steps)
