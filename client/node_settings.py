"""Node-config keys of a TreeLoRA-Fed client: who it is, where its state lives, which device it trains on.

``flower-supernode --node-config 'partition-id=0 num-partitions=3 state-dir=/var/lib/treelora device=cuda:0'`` in
deployment; the simulation engine fills ``partition-id`` and ``num-partitions``. The run config (shared by every
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
        return cls(pid, num, Path(str(root)) / client_id(pid), None if device is None else str(device), precision)
