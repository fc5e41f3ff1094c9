"""Examples → tensors, and seeded mini-batches. Tokenisation happens once per task split, not per step."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


def encode_examples(examples: Sequence, tokenizer: object | None, max_length: int) -> dict[str, torch.Tensor]:
    """Stack a task split into tensors: ``input_ids``/``attention_mask`` (text) or ``pixel_values`` (vision),
    plus ``labels`` (global class ids)."""
    if not examples:
        raise ValueError("cannot encode an empty split")
    labels = torch.tensor([int(e.label) for e in examples], dtype=torch.long)
    if getattr(examples[0], "pixels", None) is not None:
        pixels = torch.from_numpy(np.stack([np.asarray(e.pixels, dtype=np.float32) for e in examples]))
        return {"pixel_values": pixels, "labels": labels}
    if tokenizer is None:
        raise ValueError("text examples need a tokenizer")
    enc = tokenizer(
        [e.text for e in examples],
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def num_examples(encoded: dict[str, torch.Tensor]) -> int:
    """Number of rows in an encoded split."""
    return int(encoded["labels"].shape[0])


def iterate_batches(
    encoded: dict[str, torch.Tensor], batch_size: int, *, shuffle: bool, seed: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield mini-batches; a seeded permutation when ``shuffle`` (the last short batch is kept).

    Text batches are cut to their longest sequence (right padding), so short glosses do not pay for
    ``max_length`` tokens: about half the compute on the WordNet stream.
    """
    n = num_examples(encoded)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        batch = {k: v[idx] for k, v in encoded.items()}
        if "attention_mask" in batch:
            width = max(1, int(batch["attention_mask"].sum(dim=1).max()))
            batch["input_ids"] = batch["input_ids"][:, :width]
            batch["attention_mask"] = batch["attention_mask"][:, :width]
        yield batch


def steps_per_epoch(encoded: dict[str, torch.Tensor], batch_size: int) -> int:
    """Number of mini-batches in one pass."""
    return -(-num_examples(encoded) // batch_size)
