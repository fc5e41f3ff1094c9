"""Per-task, per-layer signatures G_k[l] (DESIGN.md §2 "Signature").

* ``grad`` (paper): running mean of the layer's LoRA gradient ``[dL/dA, dL/dB]`` over the task's last epoch,
  taken from the gradients the step already computed (no extra pass).
* ``weights`` (released code): running sum of ``A / T`` per step over the epoch (T = steps in the epoch), reset
  at every epoch start; at the end of an epoch it is the epoch's mean A. The released code adds it L times per
  step (``scale_by_layers``), a uniform scale reproduced behind a flag.

Both reset at every epoch start, so the value after the last epoch is the stored signature.
"""

from __future__ import annotations

from typing import Any

import torch

from .adapters import LayerwiseLoRA


class SignatureAccumulator:
    """Accumulates the running signature of the task being trained."""

    def __init__(self, kind: str, lora: LayerwiseLoRA, *, scale_by_layers: bool = False) -> None:
        if kind not in ("grad", "weights"):
            raise ValueError(f"signature kind must be 'grad' or 'weights', got {kind!r}")
        self.kind = kind
        self.lora = lora
        self.scale = float(lora.num_layers) if scale_by_layers else 1.0
        self.steps_per_epoch = 1
        self.count = 0
        self._acc: list[torch.Tensor] | None = None

    def dims(self) -> list[int]:
        """Length of each layer's signature."""
        return self.lora.layer_dims() if self.kind == "grad" else self.lora.a_dims()

    def start_epoch(self, steps_per_epoch: int) -> None:
        """Reset the running value; T = ``steps_per_epoch`` for the ``weights`` kind."""
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.count = 0
        self._acc = None

    def observe(self, grads: list[torch.Tensor] | None = None) -> None:
        """Fold one step in: ``grads`` are the per-layer flattened loss gradients (``grad`` kind only)."""
        if self.kind == "grad":
            if grads is None:
                raise ValueError("the grad signature needs the step's per-layer gradients")
            values = [g.detach().float() for g in grads]
            self.count += 1
            if self._acc is None:
                self._acc = [v.clone() for v in values]
            else:
                for acc, v in zip(self._acc, values):
                    acc.add_(v - acc, alpha=1.0 / self.count)
        else:
            values = [self.lora.params(layer)[0].detach().float().flatten() for layer in range(self.lora.num_layers)]
            self.count += 1
            w = self.scale / self.steps_per_epoch
            if self._acc is None:
                self._acc = [v * w for v in values]
            else:
                for acc, v in zip(self._acc, values):
                    acc.add_(v, alpha=w)

    def current(self) -> list[torch.Tensor] | None:
        """The running value (``c`` in the released code's distance); None before the first step."""
        return self._acc

    def value(self) -> list[torch.Tensor]:
        """The signature to store (CPU float32 copies)."""
        if self._acc is None:
            raise RuntimeError("no step observed: a signature needs at least one training step")
        return [a.detach().to("cpu", torch.float32, copy=True) for a in self._acc]

    def step_vectors(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """What a step's observed distance ξ compares with a stored signature: the step's gradients (``grad``), or
        the running signature ``c`` (``weights``, as released)."""
        if self.kind == "weights":
            if self._acc is None:
                raise RuntimeError("the weights signature has no running value before its first observed step")
            return self._acc
        return grads

    def probe_vectors(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """What stands for a task not trained yet (a federated warm-start probe): one batch's gradients at the
        live adapter (``grad``), or the live A matrices the running signature would start from (``weights``)."""
        if self.kind == "weights":
            return [self.lora.params(layer)[0].detach().float().flatten() for layer in range(self.lora.num_layers)]
        return grads

    def state_dict(self) -> dict[str, Any]:
        """The running value and counters (CPU tensors and plain python), for checkpoints."""
        acc = None if self._acc is None else [a.detach().to("cpu", copy=True) for a in self._acc]
        return {"acc": acc, "count": self.count, "steps_per_epoch": self.steps_per_epoch}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        """Restore :meth:`state_dict` output, the running value onto ``device``."""
        self._acc = None if state["acc"] is None else [a.to(device, copy=True) for a in state["acc"]]
        self.count, self.steps_per_epoch = int(state["count"]), int(state["steps_per_epoch"])
