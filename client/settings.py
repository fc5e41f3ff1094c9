"""Run-config and node-config keys of a TreeLoRA-Fed client, with units and defaults, in one place.

Run-config keys are kebab-case (``flwr run . --run-config 'local-steps=8 lam=0.5'``); node-config keys
(``--node-config`` in deployment, filled by the simulation engine) give the client its identity and state path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from treelora.config import L1_REDUCTIONS, PRECISIONS

FED_METHODS = ("treelora", "fedavg-lora", "local-only")


@dataclass(frozen=True)
class FedSettings:
    """Everything a client or the server reads from the run config (units in comments)."""

    method: str = "treelora"  # federated method: treelora | fedavg-lora | local-only
    local_method: str = "treelora"  # the learner each client runs (fedavg-lora forces seqlora)
    num_rounds: int = 0  # 0 = as many rounds as the longest client schedule
    scenario: str = "staggered"  # staggered | families | identical
    families: int = 2
    stream: str = "wordnet"
    backbone: str = "minilm"
    tasks_per_client: int = 3
    rounds_per_task: int = 2
    local_steps: int = 8  # optimisation steps per client per round
    batch_size: int = 16
    max_length: int = 32  # tokens
    lr: float = 1e-3
    head_lr: float = 1e-2
    lam: float = 0.5
    regularizer: str = ""  # "" = the local method's default
    l1_reduction: str = ""  # l1-grad's L1 over a layer: "" = the learner's default (sum, as in the paper) | sum | mean
    train_per_class: int = 64
    test_per_class: int = 16
    seed: int = 0
    sketch_dim: int = 256
    sketch_kind: str = "cauchy"
    sketch_seed: int = 1234
    wire_dtype: str = "bfloat16"  # adapters on the wire; sketches always float32
    candidates_per_layer: int = 1
    share_layers: bool = True  # treelora: layer-wise aggregation among clients sharing a tree node
    warm_start: bool = True  # treelora: warm-start a new task from the nearest leaf's adapter
    leaf_size: int = 1
    rebuild_every: int = 4  # inserts between tree rebuilds (clients; the server's minimum)
    rebuild_growth: float = 0.25  # server: also wait until the tree grew by this fraction since its last rebuild
    eval_every: int = 0  # rounds between global evaluations (0 = only at the end)
    out_dir: str = "runs/federated"
    state_dir: str = ""  # client state root ("" = <out-dir>/clients)
    resume: bool = False
    timeout_s: float = 0.0  # per-round reply timeout (0 = wait for all)
    dp_clip: float = 0.0  # L2 clip of a signature release before sketching (0 = no DP on sketches)
    dp_noise: float = 0.0  # Gaussian noise multiplier σ/clip of a sketch release
    dp_adapter_clip: float = 0.0  # L2 clip of a round's adapter update (0 = no DP on adapters)
    dp_adapter_noise: float = 0.0  # Gaussian noise multiplier of an adapter-update release
    dp_delta: float = 1e-5  # δ at which ε is reported
    threads: int = 0  # torch threads per client process (0 = leave)

    def __post_init__(self) -> None:
        if self.method not in FED_METHODS:
            raise ValueError(f"method={self.method!r} is not one of {', '.join(FED_METHODS)}")
        for name in ("tasks_per_client", "rounds_per_task", "local_steps", "batch_size", "sketch_dim",
                     "candidates_per_layer", "leaf_size", "rebuild_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("dp_clip", "dp_noise", "dp_adapter_clip", "dp_adapter_noise", "rebuild_growth"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if (self.dp_clip > 0) != (self.dp_noise > 0) or (self.dp_adapter_clip > 0) != (self.dp_adapter_noise > 0):
            raise ValueError("differential privacy needs both a clip and a noise multiplier (or neither)")
        if not 0 < self.dp_delta < 1:
            raise ValueError(f"dp-delta must be in (0, 1), got {self.dp_delta}")
        if self.l1_reduction and self.l1_reduction not in L1_REDUCTIONS:
            raise ValueError(f"l1-reduction must be {' or '.join(L1_REDUCTIONS)} (or empty), got {self.l1_reduction!r}")
        if self.sketch_kind not in ("cauchy", "gaussian"):
            raise ValueError(f"sketch-kind must be cauchy or gaussian, got {self.sketch_kind!r}")
        if self.wire_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"wire-dtype must be float32, float16 or bfloat16, got {self.wire_dtype!r}")

    @property
    def uses_sketches(self) -> bool:
        """Whether clients send gradient sketches: only ``treelora`` has a global tree to put them in."""
        return self.method == "treelora"

    @property
    def learner_method(self) -> str:
        return "seqlora" if self.method == "fedavg-lora" else self.local_method

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> "FedSettings":
        """Parse kebab-case keys; unknown keys are an error naming the known ones."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise ValueError(
                    f"unknown run-config key {key!r}; known: {', '.join(k.replace('_', '-') for k in known)}"
                )
            default = known[name].default
            try:
                if isinstance(default, bool):
                    value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
                elif isinstance(default, int):
                    value = int(value)
                elif isinstance(default, float):
                    value = float(value)
                else:
                    value = str(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"run-config {key}={value!r}: expected {type(default).__name__}") from exc
            values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class NodeSettings:
    """Who this client is and where its state lives."""

    partition_id: int
    num_partitions: int
    state_dir: Path
    device: str | None = None  # cpu | cuda | cuda:1 ... (None = cuda when available)
    precision: str = "auto"  # auto (bf16 autocast on CUDA) | bf16 | fp32

    @property
    def client_id(self) -> str:
        return f"c{self.partition_id}"

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any], fed: FedSettings) -> "NodeSettings":
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
        return cls(pid, num, Path(str(root)) / f"c{pid}", None if device is None else str(device), precision)
