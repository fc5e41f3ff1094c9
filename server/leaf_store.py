"""The server's leaf store: one safetensors file per finished (client, task) leaf, holding its adapter and its final
per-layer sketch (its signature in the global tree), plus the record the checkpoint lists.

A leaf file is written once, durably (:func:`treelora.io.write_bytes_atomic`), before any checkpoint refers to
it; the checkpoint then stores only the record, so its size does not grow with the sketches. Reading a missing or
garbled file is an error that names the leaf and the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.numpy import save as save_numpy
from safetensors.torch import load_file, save

from treelora.io import write_bytes_atomic

__all__ = ["LeafStore"]


def _safetensors_bytes(flat: dict[str, torch.Tensor]) -> bytes:
    """The safetensors file of ``flat``: through numpy when every tensor is a plain CPU float32 one (the same
    bytes, 4x faster than the torch writer on a leaf's ~36 small tensors), else the torch writer."""
    if all(t.device.type == "cpu" and t.dtype == torch.float32 and not t.requires_grad for t in flat.values()):
        return save_numpy({k: t.numpy() for k, t in flat.items()})
    return save(flat)


class LeafStore:
    """Leaf files under ``leaf_dir`` and their records (key → record dict, in insertion order)."""

    def __init__(self, leaf_dir: str | Path) -> None:
        self.leaf_dir = Path(leaf_dir)
        self.records: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, key: object) -> bool:
        return key in self.records

    def __iter__(self):
        return iter(self.records)

    def write(self, key: str, client: str, task_index: int, num_examples: int,
              adapter: dict[int, dict[str, torch.Tensor]], final: list[torch.Tensor]) -> dict[str, Any]:
        """Store a new leaf's adapter (``{layer: {"A", "B"}}``) and final sketch; returns its record."""
        fname = key.replace("/", "__") + ".safetensors"
        flat = {f"{l}.{p}": t.contiguous() for l, ab in adapter.items() for p, t in ab.items()}
        flat.update({f"sketch.{l}": t.contiguous() for l, t in enumerate(final)})
        write_bytes_atomic(self.leaf_dir / fname, _safetensors_bytes(flat))
        rec = {"key": key, "client_id": client, "task_key": key, "task_index": int(task_index),
               "adapter_file": fname, "num_examples": int(num_examples)}
        self.records[key] = rec
        return rec

    def _file(self, key: str) -> dict[str, torch.Tensor]:
        rec = self.records.get(key)
        if rec is None:
            raise KeyError(f"unknown leaf {key!r}")
        path = self.leaf_dir / rec["adapter_file"]
        if not path.exists():
            raise FileNotFoundError(f"leaf {key!r}: its file {path} is missing (the leaf store was moved or deleted)")
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types on a truncated or garbled file
            raise ValueError(f"leaf {key!r}: its file {path} cannot be read ({exc})") from exc

    def adapter(self, key: str) -> dict[str, torch.Tensor]:
        """A stored leaf's adapter (``{"<l>.A": ..., "<l>.B": ...}``)."""
        return {k: v for k, v in self._file(key).items() if not k.startswith("sketch.")}

    def sketch(self, key: str, num_layers: int) -> list[torch.Tensor]:
        """A stored leaf's final per-layer sketch."""
        flat = self._file(key)
        names = [f"sketch.{l}" for l in range(num_layers)]
        if any(n not in flat for n in names):
            raise ValueError(f"leaf {key!r}: its file has no sketch for every one of {num_layers} layers")
        return [flat[n] for n in names]
