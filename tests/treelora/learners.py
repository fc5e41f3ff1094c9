"""Shared fixtures' builders: a two-task synthetic text stream and learners on the tiny random BERT."""

from __future__ import annotations

from typing import Any

from treelora.backbones import load_backbone
from treelora.config import make_config
from treelora.learner import ContinualLearner
from treelora.streams import load_stream


def tiny_stream() -> Any:
    """Two tasks of the synthetic text stream, 24 training and 8 test examples per class."""
    s = load_stream("synthetic-text", train_per_class=24, test_per_class=8)
    s.tasks = s.tasks[:2]
    return s


def make_learner(method: str, stream: Any, **kw: Any) -> ContinualLearner:
    """A learner of ``method`` on tiny-bert (2 epochs, batch 8, 12 tokens), ``kw`` overriding its config."""
    cfg = make_config(method, **{"epochs": 2, "batch_size": 8, "max_length": 12, "progress": False, "lr": 5e-3, **kw})
    backbone = load_backbone("tiny-bert", seed=0, attn_implementation=cfg.attn_implementation)
    return ContinualLearner(backbone, stream.num_classes(), cfg)


def assert_same(a: Any, b: Any, where: str = "state") -> None:
    """Nested dicts/lists/tuples of tensors and plain values are equal, tensors exactly (NaN equals NaN)."""
    import math

    import torch

    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def round_trip(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` through torch.save / torch.load, as a client's state file goes."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)
