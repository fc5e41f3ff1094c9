"""The bridge between ``treelora.sketch.LayerSketcher.spec()`` dicts and the wire's ``SketchSpec`` message.

A sketch spec ``{"kind", "out_dim", "seed", "layer_dims", "version"}`` names a random projection exactly:
two nodes that build a ``LayerSketcher`` from equal specs sketch identically, which is what lets the server
compare sketches from different clients (DESIGN.md §4, repository root). The wire carries the spec as a
``SketchSpec`` message (without ``version``, which is implied: :data:`SKETCH_SPEC_VERSION`).

This package never imports ``treelora``: :data:`SKETCH_SPEC_VERSION` and :data:`SKETCH_KINDS` mirror
``treelora.sketch.SPEC_VERSION`` / ``KINDS`` and a test keeps them equal. Whether an Assignment's spec fits the
receiver is decided in :mod:`protos.validation`; this module only converts, refusing unusable specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protos import treelora_fed_pb2 as pb
from protos.errors import ProtocolError

__all__ = [
    "SKETCH_SPEC_VERSION",
    "SKETCH_KINDS",
    "check_sketch_kind",
    "sketch_spec_to_dict",
    "sketch_spec_from_dict",
]

SKETCH_SPEC_VERSION = 1
"""``treelora.sketch.SPEC_VERSION`` mirrored here so this package does not import ``treelora`` (tested equal)."""

SKETCH_KINDS: tuple[str, ...] = ("cauchy", "gaussian")
"""``treelora.sketch.KINDS`` mirrored (tested equal)."""

_U32 = 2**32
_U64 = 2**64


def check_sketch_kind(kind: Any) -> None:
    """``ProtocolError("bad-value")`` unless ``kind`` is one of :data:`SKETCH_KINDS`."""
    if kind not in SKETCH_KINDS:
        raise ProtocolError("bad-value", f"sketch kind must be one of {list(SKETCH_KINDS)}, got {kind!r}")


def _check_sketch_spec(spec: pb.SketchSpec) -> None:
    check_sketch_kind(spec.kind)
    if spec.out_dim == 0:
        raise ProtocolError("bad-value", "sketch out_dim must be > 0")
    if len(spec.layer_dims) == 0 or any(d == 0 for d in spec.layer_dims):
        raise ProtocolError("bad-value", f"sketch layer_dims must be a non-empty list of positive ints, "
                            f"got {list(spec.layer_dims)}")


def sketch_spec_to_dict(spec: pb.SketchSpec) -> dict:
    """SketchSpec → the ``LayerSketcher.spec()`` dict ``{"kind", "out_dim", "seed", "layer_dims", "version": 1}``
    (feed it to ``LayerSketcher.from_spec``). Raises ``ProtocolError("bad-value")`` for an unusable spec: unknown
    kind, ``out_dim`` 0, or ``layer_dims`` empty or holding a 0."""
    if not isinstance(spec, pb.SketchSpec):
        raise ProtocolError("malformed", f"expected a SketchSpec, got {type(spec).__name__}")
    _check_sketch_spec(spec)
    return {"kind": spec.kind, "out_dim": int(spec.out_dim), "seed": int(spec.seed),
            "layer_dims": [int(d) for d in spec.layer_dims], "version": SKETCH_SPEC_VERSION}


def _uint(d: Mapping, key: str, lo: int, hi: int) -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v < hi:
        raise ProtocolError("bad-value", f"sketch spec {key} must be an int in [{lo}, {hi}), got {v!r}")
    return v


def sketch_spec_from_dict(d: Mapping[str, Any]) -> pb.SketchSpec:
    """``LayerSketcher.spec()`` dict → SketchSpec. The dict must have exactly the five keys, ``version`` 1
    (``bad-version``), a known kind, ``out_dim``/``layer_dims`` in [1, 2^32) and ``seed`` in [0, 2^64)."""
    if not isinstance(d, Mapping):
        raise ProtocolError("malformed", f"sketch spec must be a dict, got {type(d).__name__}")
    want = {"kind", "out_dim", "seed", "layer_dims", "version"}
    missing, unknown = want - set(d), set(d) - want
    if missing or unknown:
        raise ProtocolError("malformed", f"sketch spec keys: missing {sorted(missing)}, "
                            f"unknown {sorted(map(str, unknown))}")
    version = d["version"]
    if isinstance(version, bool) or version != SKETCH_SPEC_VERSION:
        raise ProtocolError("bad-version", f"sketch spec version {version!r}, this build reads "
                            f"{SKETCH_SPEC_VERSION}")
    check_sketch_kind(d["kind"])
    dims = d["layer_dims"]
    if not isinstance(dims, (list, tuple)) or not dims:
        raise ProtocolError("bad-value", f"sketch layer_dims must be a non-empty list, got {dims!r}")
    layer_dims = [_uint({"layer_dims[]": x}, "layer_dims[]", 1, _U32) for x in dims]
    return pb.SketchSpec(kind=d["kind"], out_dim=_uint(d, "out_dim", 1, _U32), seed=_uint(d, "seed", 0, _U64),
                         layer_dims=layer_dims)
