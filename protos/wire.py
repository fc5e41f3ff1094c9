"""Parsing, validation and the tensor codec for the TreeLoRA-Fed wire schema (DESIGN.md §3-§4).

Control data travels as a protobuf message (``protos/treelora_fed.proto``) serialized to bytes; tensors travel
next to it as numpy arrays (a Flower ``ArrayRecord`` on the Flower side, but this module never imports Flower).
Every message that has tensors next to it carries a *manifest* (one ``TensorInfo`` per tensor), and the receiver
checks the arrays against the manifest *and* against what it expects from its own configuration before anything
touches the tree, the bandit or a model.

Everything a peer sends is rejected with :class:`ProtocolError` (a ``ValueError`` with a machine-readable
``code``), never with another exception: ``parse_*`` and ``validate_*`` are safe to call on arbitrary input, and
:func:`error_reply` turns the exception into the ``ErrorReply`` message sent back.

Tensor names (``<l>`` is a 0-based layer index in decimal, ``<leaf>`` a tree leaf key such as ``"c3/t1"``):

===========================  =========================  =====================================================
name                         travels with               meaning
===========================  =========================  =====================================================
``cand.<leaf>.<l>``          Assignment                 layer-``l`` sketch of candidate leaf ``<leaf>``
``share.<l>.A/B``            Assignment (``shared``)    group-averaged adapter of layer ``l``
``warm.<l>.A/B``             Assignment (warm start)    adapter of ``warm_start_leaf`` for layer ``l``
``warm.head.weight/bias``    Assignment (warm start)    head of ``warm_start_leaf``
``adapter.<l>.A/B``          ClientReport               the client's live adapter, every layer
``sketch.<l>``               ClientReport               sketch of the current task's signature, every layer
``final.<l>``                ClientReport (finished)    final signature sketch of the finished task
===========================  =========================  =====================================================

Wire dtypes are ``"float32"``, ``"float16"`` and ``"bfloat16"``; numpy has no bfloat16, so a bf16 tensor
travels as an ``int16`` array holding its bit patterns. Decoding always yields float32 torch tensors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

from protos import SCHEMA_VERSION
from protos import treelora_fed_pb2 as pb

__all__ = [
    "SCHEMA_VERSION",
    "SKETCH_SPEC_VERSION",
    "SKETCH_KINDS",
    "WIRE_DTYPES",
    "ERROR_CODES",
    "DEFAULT_MAX_TENSOR_BYTES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_CHECKPOINT_BYTES",
    "ProtocolError",
    "error_reply",
    "serialize",
    # tensor names
    "adapter_name",
    "sketch_name",
    "final_name",
    "cand_name",
    "share_name",
    "warm_name",
    "WARM_HEAD_WEIGHT",
    "WARM_HEAD_BIAS",
    # codec
    "encode_tensor",
    "decode_tensor",
    "encode_tensors",
    "validate_tensors",
    # parsing and validation
    "parse_assignment",
    "parse_report",
    "parse_eval",
    "parse_checkpoint",
    "parse_error",
    "validate_report",
    "validate_assignment",
    "expected_report_tensors",
    "expected_assignment_tensors",
    # builders
    "make_tensor_info",
    "make_sketch_spec",
    "make_layer_assignment",
    "make_assignment",
    "make_pull",
    "make_report",
    "make_eval",
    "make_leaf_record",
    "make_checkpoint",
    "make_error",
    # sketch spec bridge
    "sketch_spec_to_dict",
    "sketch_spec_from_dict",
]

SKETCH_SPEC_VERSION = 1
"""``treelora.sketch.SPEC_VERSION`` mirrored here so this package does not import ``treelora`` (tested equal)."""

SKETCH_KINDS: tuple[str, ...] = ("cauchy", "gaussian")
"""``treelora.sketch.KINDS`` mirrored (tested equal)."""

WIRE_DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")

ERROR_CODES: frozenset[str] = frozenset({
    "bad-version",        # version field missing or not SCHEMA_VERSION (or sketch spec version not 1)
    "bad-shape",          # a tensor's shape differs from the manifest or from what the receiver expects
    "bad-dtype",          # unknown wire dtype, or an array whose numpy dtype does not match its manifest dtype
    "non-finite",         # NaN/inf in a tensor or in a numeric field that must be finite
    "unknown-leaf",       # a leaf key the receiver does not know
    "missing-tensor",     # a required tensor (or a manifest entry) without its array
    "unexpected-tensor",  # an array or manifest entry that should not be there
    "too-large",          # message bytes or tensor bytes over the limit
    "malformed",          # undecodable bytes, wrong types, duplicates, inconsistent fields
    "bad-round",          # report for another round than the one expected
    "bad-layer",          # layer index out of range or repeated
    "bad-value",          # a field out of its allowed range (counts, sizes, empty ids, negative xi, ...)
    "internal",           # only in ErrorReply: the receiver failed for a reason that is not the sender's fault
})

DEFAULT_MAX_TENSOR_BYTES = 64 << 20
DEFAULT_MAX_MESSAGE_BYTES = 16 << 20
DEFAULT_MAX_CHECKPOINT_BYTES = 1 << 30
_MAX_NDIM = 16
_U32 = 2**32
_U64 = 2**64

_NP_WIRE: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(np.int16),  # bf16 bit patterns
}
_TORCH_WIRE: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


class ProtocolError(ValueError):
    """A message or tensor from a peer that this node refuses; ``code`` is one of :data:`ERROR_CODES`."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"[{code}] {reason}")

    def __reduce__(self):  # keep code/reason through pickling (Ray, multiprocessing)
        return (type(self), (self.code, self.reason))

    def to_reply(self) -> pb.ErrorReply:
        """The ``ErrorReply`` message describing this error."""
        return make_error(self.code, self.reason)


def error_reply(exc: BaseException) -> pb.ErrorReply:
    """``ErrorReply`` for any exception: its code for a :class:`ProtocolError`, ``"internal"`` otherwise."""
    if isinstance(exc, ProtocolError):
        return exc.to_reply()
    return make_error("internal", f"{type(exc).__name__}: {exc}")


def serialize(msg: Any) -> bytes:
    """Deterministic serialization of any message of this schema (stable bytes for equal messages)."""
    return msg.SerializeToString(deterministic=True)


# --------------------------------------------------------------------------------------------------------------
# tensor names

WARM_HEAD_WEIGHT = "warm.head.weight"
WARM_HEAD_BIAS = "warm.head.bias"


def _part(part: str) -> str:
    if part not in ("A", "B"):
        raise ValueError(f"adapter part must be 'A' or 'B', got {part!r}")
    return part


def adapter_name(layer: int, part: str) -> str:
    """``adapter.<layer>.<A|B>``: the client's live adapter (ClientReport)."""
    return f"adapter.{int(layer)}.{_part(part)}"


def sketch_name(layer: int) -> str:
    """``sketch.<layer>``: the current task's signature sketch (ClientReport)."""
    return f"sketch.{int(layer)}"


def final_name(layer: int) -> str:
    """``final.<layer>``: a finished task's final signature sketch (ClientReport, task_finished)."""
    return f"final.{int(layer)}"


def cand_name(leaf: str, layer: int) -> str:
    """``cand.<leaf>.<layer>``: a candidate leaf's layer sketch (Assignment)."""
    return f"cand.{leaf}.{int(layer)}"


def share_name(layer: int, part: str) -> str:
    """``share.<layer>.<A|B>``: the group-averaged adapter of a shared layer (Assignment)."""
    return f"share.{int(layer)}.{_part(part)}"


def warm_name(layer: int, part: str) -> str:
    """``warm.<layer>.<A|B>``: the warm-start leaf's adapter (Assignment); see also WARM_HEAD_WEIGHT/BIAS."""
    return f"warm.{int(layer)}.{_part(part)}"


# --------------------------------------------------------------------------------------------------------------
# tensor codec


def _check_wire_dtype(dtype: Any, where: str = "") -> str:
    if not isinstance(dtype, str) or dtype not in WIRE_DTYPES:
        at = f" for {where}" if where else ""
        raise ProtocolError("bad-dtype", f"wire dtype{at} must be one of {list(WIRE_DTYPES)}, got {dtype!r}")
    return dtype


def make_tensor_info(name: str, shape: Iterable[int], dtype: str) -> pb.TensorInfo:
    return pb.TensorInfo(name=name, shape=[int(d) for d in shape], dtype=_check_wire_dtype(dtype, name))


def encode_tensor(t: torch.Tensor, wire_dtype: str = "bfloat16", *,
                  name: str = "") -> tuple[np.ndarray, pb.TensorInfo]:
    """Cast ``t`` to ``wire_dtype`` and return ``(array, TensorInfo)``; the array never aliases ``t``.

    bf16 becomes an int16 array of bit patterns (``t.to(bfloat16).view(int16).numpy()``). Raises
    ``ProtocolError("bad-dtype")`` for an unknown wire dtype or a non-real-floating input and
    ``ProtocolError("non-finite")`` when the tensor, or its cast (float16 overflows above 65504), is not finite.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"encode_tensor needs a torch.Tensor, got {type(t).__name__}")
    _check_wire_dtype(wire_dtype, name or "tensor")
    if not t.is_floating_point():
        raise ProtocolError("bad-dtype", f"tensor {name!r} must be real floating point, got {t.dtype}")
    label = name or "tensor"
    x = t.detach().to(device="cpu", dtype=_TORCH_WIRE[wire_dtype], copy=True).contiguous()
    if not bool(torch.isfinite(x).all()):
        if bool(torch.isfinite(t.detach()).all()):
            raise ProtocolError("non-finite", f"{label} overflows {wire_dtype} (max |x| = "
                                f"{float(t.detach().abs().max()):.4g})")
        raise ProtocolError("non-finite", f"{label} contains NaN or inf")
    if wire_dtype == "bfloat16":
        x = x.view(torch.int16)
    arr = x.numpy()
    return arr, pb.TensorInfo(name=name, shape=list(arr.shape), dtype=wire_dtype)


def encode_tensors(tensors: Mapping[str, torch.Tensor],
                   wire_dtype: str | Callable[[str], str] = "bfloat16",
                   ) -> tuple[dict[str, np.ndarray], list[pb.TensorInfo]]:
    """Encode named tensors: ``(arrays, manifest)``, ready for an ArrayRecord and a message's ``manifest``.

    ``wire_dtype`` is one dtype for all, or a function of the name (e.g. float32 for ``sketch.*``).
    """
    arrays: dict[str, np.ndarray] = {}
    manifest: list[pb.TensorInfo] = []
    for name, t in tensors.items():
        dt = wire_dtype(name) if callable(wire_dtype) else wire_dtype
        arr, info = encode_tensor(t, dt, name=name)
        arrays[name] = arr
        manifest.append(info)
    return arrays, manifest


def _as_array(name: str, value: Any) -> np.ndarray:
    """Accept a numpy array, or anything with a ``numpy()`` method (a Flower ``Array``, a CPU tensor)."""
    if isinstance(value, np.ndarray):
        return value
    to_numpy = getattr(value, "numpy", None)
    if callable(to_numpy):
        try:
            arr = to_numpy()
        except Exception as exc:  # noqa: BLE001 - any failure of a foreign object is the peer's problem
            raise ProtocolError("malformed", f"tensor {name!r}: cannot read it as a numpy array ({exc})") from None
        if isinstance(arr, np.ndarray):
            return arr
    raise ProtocolError("malformed", f"tensor {name!r} must be a numpy array, got {type(value).__name__}")


def _check_array(name: str, arr: np.ndarray, dtype: str, shape: tuple[int, ...]) -> None:
    want = _NP_WIRE[dtype]
    got = arr.dtype
    if got.fields is not None or got.subdtype is not None or got.kind != want.kind or got.itemsize != want.itemsize:
        raise ProtocolError("bad-dtype", f"tensor {name!r} is declared {dtype} (numpy {want.name}) "
                            f"but arrived as numpy {got}")
    if tuple(arr.shape) != shape:
        raise ProtocolError("bad-shape", f"tensor {name!r} is declared with shape {list(shape)} "
                            f"but arrived with shape {list(arr.shape)}")


def _decode_checked(name: str, arr: np.ndarray, dtype: str, check_finite: bool) -> torch.Tensor:
    native = np.array(arr, dtype=_NP_WIRE[dtype].newbyteorder("="), copy=True, order="C")
    t = torch.from_numpy(native)
    if dtype == "bfloat16":
        t = t.view(torch.bfloat16)
    t = t.to(torch.float32)
    if check_finite and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ProtocolError("non-finite", f"tensor {name!r} has {bad} NaN/inf value(s)")
    return t


def decode_tensor(arr: np.ndarray, info: pb.TensorInfo, *, check_finite: bool = True) -> torch.Tensor:
    """Decode one array against its ``TensorInfo`` into a fresh float32 tensor.

    Raises ``ProtocolError``: ``bad-dtype`` (unknown wire dtype, or the numpy dtype does not match it),
    ``bad-shape`` (shape differs from ``info.shape``), ``non-finite`` (NaN/inf after decoding, unless
    ``check_finite=False``), ``malformed`` (not an array / not a TensorInfo).
    """
    if not isinstance(info, pb.TensorInfo):
        raise ProtocolError("malformed", f"expected a TensorInfo, got {type(info).__name__}")
    name = info.name
    dtype = _check_wire_dtype(info.dtype, repr(name))
    shape = tuple(int(d) for d in info.shape)
    arr = _as_array(name, arr)
    _check_array(name, arr, dtype, shape)
    return _decode_checked(name, arr, dtype, check_finite)


def _declared_nbytes(shape: tuple[int, ...], itemsize: int, cap: int) -> int:
    n = itemsize
    for d in shape:
        n *= d
        if n > cap:  # stop early: the product of adversarial int64 dims is astronomically large
            return cap + 1
    return n


def validate_tensors(arrays: Mapping[str, Any], manifest: Iterable[pb.TensorInfo], *,
                     expected: Mapping[str, tuple[int, ...] | None] | None = None,
                     max_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> dict[str, torch.Tensor]:
    """Check ``arrays`` against ``manifest`` (and ``expected``) and decode them to float32 tensors.

    - the manifest is well formed: unique non-empty names (``malformed``), known dtypes (``bad-dtype``),
      non-negative dims (``bad-shape``), declared total bytes ≤ ``max_bytes`` (``too-large``);
    - when ``expected`` (name → shape, or ``None`` for "any shape") is given, the manifest names exactly its
      names (``missing-tensor`` / ``unexpected-tensor``) with those shapes (``bad-shape``);
    - every manifest entry has its array (``missing-tensor``) and there are no other arrays
      (``unexpected-tensor``), each with the declared numpy dtype (``bad-dtype``) and shape (``bad-shape``);
    - every decoded value is finite (``non-finite``).

    Returns ``{name: float32 tensor}`` in manifest order. Raises only :class:`ProtocolError`.
    """
    if not isinstance(arrays, Mapping):
        raise ProtocolError("malformed", f"tensors must be a mapping name -> array, got {type(arrays).__name__}")
    try:
        infos = list(manifest)
    except TypeError:
        raise ProtocolError("malformed", f"manifest must be a list of TensorInfo, got {type(manifest).__name__}") \
            from None
    declared: dict[str, tuple[str, tuple[int, ...]]] = {}
    total = 0
    for info in infos:
        if not isinstance(info, pb.TensorInfo):
            raise ProtocolError("malformed", f"manifest entries must be TensorInfo, got {type(info).__name__}")
        name = info.name
        if not name:
            raise ProtocolError("malformed", "manifest has an entry with an empty name")
        if name in declared:
            raise ProtocolError("malformed", f"manifest names tensor {name!r} twice")
        dtype = _check_wire_dtype(info.dtype, repr(name))
        shape = tuple(int(d) for d in info.shape)
        if len(shape) > _MAX_NDIM or any(d < 0 for d in shape):
            raise ProtocolError("bad-shape", f"manifest declares tensor {name!r} with invalid shape {list(shape)}")
        total += _declared_nbytes(shape, _NP_WIRE[dtype].itemsize, max_bytes)
        if total > max_bytes:
            raise ProtocolError("too-large", f"tensors declared in the manifest exceed {max_bytes} bytes "
                                f"(at {name!r})")
        declared[name] = (dtype, shape)

    if expected is not None:
        for name in declared:
            if name not in expected:
                raise ProtocolError("unexpected-tensor", f"manifest declares tensor {name!r}, which is not "
                                    f"expected here")
        for name, want in expected.items():
            if name not in declared:
                raise ProtocolError("missing-tensor", f"required tensor {name!r} is not in the manifest")
            if want is not None and declared[name][1] != tuple(want):
                raise ProtocolError("bad-shape", f"tensor {name!r} must have shape {list(want)}, "
                                    f"the manifest declares {list(declared[name][1])}")

    for key in arrays:
        if not isinstance(key, str) or key not in declared:
            raise ProtocolError("unexpected-tensor", f"array {key!r} is not declared in the manifest")
    checked: dict[str, np.ndarray] = {}
    for name, (dtype, shape) in declared.items():
        if name not in arrays:
            raise ProtocolError("missing-tensor", f"tensor {name!r} is declared in the manifest but did not arrive")
        arr = _as_array(name, arrays[name])
        _check_array(name, arr, dtype, shape)
        checked[name] = arr
    return {name: _decode_checked(name, arr, declared[name][0], True) for name, arr in checked.items()}


# --------------------------------------------------------------------------------------------------------------
# parsing


def _parse(cls: type, data: Any, max_bytes: int | None) -> Any:
    what = cls.DESCRIPTOR.name
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("malformed", f"{what} must arrive as bytes, got {type(data).__name__}")
    try:
        raw = bytes(data)
    except Exception as exc:  # noqa: BLE001 - e.g. a non-contiguous memoryview
        raise ProtocolError("malformed", f"{what}: unreadable buffer ({exc})") from None
    if max_bytes is not None and len(raw) > max_bytes:
        raise ProtocolError("too-large", f"{what} is {len(raw)} bytes, the limit is {max_bytes}")
    msg = cls()
    try:
        msg.ParseFromString(raw)
    except Exception as exc:  # noqa: BLE001 - DecodeError, RecursionError, ...: all mean undecodable
        raise ProtocolError("malformed", f"cannot decode {what} ({len(raw)} bytes): {exc}") from None
    _check_version(msg)
    return msg


def _check_version(msg: Any) -> None:
    what = msg.DESCRIPTOR.name
    if msg.version != SCHEMA_VERSION:
        if msg.version == 0:
            raise ProtocolError("bad-version", f"{what} has no version (expected {SCHEMA_VERSION}): "
                                "wrong message type or a peer built from another schema")
        raise ProtocolError("bad-version", f"{what} has schema version {msg.version}, this node speaks "
                            f"version {SCHEMA_VERSION}")


def _finite(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise ProtocolError("non-finite", f"{what} is {value}")


def parse_assignment(data: bytes, *, max_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES) -> pb.Assignment:
    """Decode an Assignment; ``malformed`` / ``bad-version`` / ``too-large`` on failure.

    Only decoding and version are checked here; :func:`validate_assignment` checks it against the client's model.
    """
    return _parse(pb.Assignment, data, max_bytes)


def parse_report(data: bytes, *, max_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES) -> pb.ClientReport:
    """Decode a ClientReport; ``malformed`` / ``bad-version`` / ``too-large`` on failure.

    Only decoding and version are checked here; :func:`validate_report` checks it against the server's state.
    """
    return _parse(pb.ClientReport, data, max_bytes)


def parse_eval(data: bytes, *, max_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES) -> pb.EvalReport:
    """Decode and check an EvalReport: one finite, non-negative accuracy per distinct, non-empty task key."""
    msg = _parse(pb.EvalReport, data, max_bytes)
    if not msg.client_id:
        raise ProtocolError("bad-value", "EvalReport has an empty client_id")
    if len(msg.task_keys) != len(msg.accuracies):
        raise ProtocolError("malformed", f"EvalReport has {len(msg.task_keys)} task keys but "
                            f"{len(msg.accuracies)} accuracies")
    if len(set(msg.task_keys)) != len(msg.task_keys) or not all(msg.task_keys):
        raise ProtocolError("malformed", "EvalReport task keys must be non-empty and distinct")
    for key, acc in zip(msg.task_keys, msg.accuracies):
        _finite(acc, f"accuracy on task {key!r}")
        if acc < 0:
            raise ProtocolError("bad-value", f"accuracy on task {key!r} is negative ({acc})")
    return msg


def parse_checkpoint(data: bytes, *, max_bytes: int | None = DEFAULT_MAX_CHECKPOINT_BYTES) -> pb.Checkpoint:
    """Decode and check a Checkpoint: distinct non-empty leaf keys, JSON bandit bytes, finite timestamp.

    ``tree`` stays opaque bytes (torch-serialized by the server; load it with ``weights_only=True``).
    """
    msg = _parse(pb.Checkpoint, data, max_bytes)
    keys = [leaf.key for leaf in msg.leaves]
    if not all(keys):
        raise ProtocolError("malformed", "Checkpoint has a leaf with an empty key")
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ProtocolError("malformed", f"Checkpoint lists leaf {dup!r} twice")
    if msg.bandit:
        try:
            json.loads(msg.bandit.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ProtocolError("malformed", f"Checkpoint bandit statistics are not JSON: {exc}") from None
    _finite(msg.created_unix, "Checkpoint created_unix")
    return msg


def parse_error(data: bytes, *, max_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES) -> pb.ErrorReply:
    """Decode an ErrorReply; ``malformed`` / ``bad-version`` / ``too-large`` on failure."""
    return _parse(pb.ErrorReply, data, max_bytes)


# --------------------------------------------------------------------------------------------------------------
# validation against the receiver's state


def _check_config(num_layers: Any, adapter_shapes: Any, sketch_dim: Any) -> list[tuple[tuple[int, ...], ...]]:
    # Caller configuration, not peer input: a plain ValueError/TypeError here is a bug on this node.
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers <= 0:
        raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
    if isinstance(sketch_dim, bool) or not isinstance(sketch_dim, int) or sketch_dim <= 0:
        raise ValueError(f"sketch_dim must be a positive int, got {sketch_dim!r}")
    shapes = [(tuple(int(d) for d in a), tuple(int(d) for d in b)) for a, b in adapter_shapes]
    if len(shapes) != num_layers:
        raise ValueError(f"adapter_shapes has {len(shapes)} entries, expected one (A, B) pair per layer "
                         f"({num_layers})")
    return shapes


def expected_report_tensors(*, num_layers: int, adapter_shapes: list[tuple[tuple, tuple]], sketch_dim: int,
                            task_finished: bool, with_sketches: bool = True) -> dict[str, tuple[int, ...]]:
    """The exact tensors a ClientReport carries: adapter.<l>.A/B, sketch.<l> and (finished) final.<l>; no
    sketches when ``with_sketches`` is false (``fedavg-lora``: the server has no tree to use them in)."""
    shapes = _check_config(num_layers, adapter_shapes, sketch_dim)
    out: dict[str, tuple[int, ...]] = {}
    for l, (a, b) in enumerate(shapes):
        out[adapter_name(l, "A")] = a
        out[adapter_name(l, "B")] = b
        if with_sketches:
            out[sketch_name(l)] = (sketch_dim,)
        if with_sketches and task_finished:
            out[final_name(l)] = (sketch_dim,)
    return out


def validate_report(report: pb.ClientReport | bytes, arrays: Mapping[str, Any], *, num_layers: int,
                    adapter_shapes: list[tuple[tuple, tuple]], sketch_dim: int, known_leaves: Any,
                    expected_round: int | None = None, expected_client: str | None = None,
                    max_bytes: int = DEFAULT_MAX_TENSOR_BYTES, with_sketches: bool = True) -> dict[str, torch.Tensor]:
    """Check a ClientReport (message or bytes) and its arrays; return the decoded float32 tensors.

    Checks, in order: version; ``round == expected_round`` (``bad-round``) and ``client_id == expected_client``
    (``bad-value``) when given; non-empty client_id/task_key and ``num_examples > 0`` (``bad-value``); finite
    loss and metrics (``non-finite``); every Pull: layer in ``[0, num_layers)`` (``bad-layer``), leaf in
    ``known_leaves`` (``unknown-leaf``), ``xi_sum`` finite (``non-finite``) and ≥ 0, ``count > 0``
    (``bad-value``), at most one Pull per (layer, leaf) (``malformed``); then the tensors, exactly
    ``adapter.<l>.A/B`` with ``adapter_shapes[l]``, ``sketch.<l>`` of shape ``(sketch_dim,)`` and, iff
    ``task_finished``, ``final.<l>`` of shape ``(sketch_dim,)`` (see :func:`validate_tensors`); without the
    two sketch kinds when ``with_sketches`` is false.

    ``num_layers``/``adapter_shapes``/``sketch_dim`` are this node's configuration (a bad value there raises
    ValueError/TypeError at once); for any ``report``/``arrays`` only :class:`ProtocolError` is raised.
    """
    _check_config(num_layers, adapter_shapes, sketch_dim)
    if isinstance(report, (bytes, bytearray, memoryview)):
        report = parse_report(report)
    if not isinstance(report, pb.ClientReport):
        raise ProtocolError("malformed", f"expected a ClientReport, got {type(report).__name__}")
    _check_version(report)
    if expected_round is not None and report.round != expected_round:
        raise ProtocolError("bad-round", f"report is for round {report.round}, this is round {expected_round}")
    if not report.client_id:
        raise ProtocolError("bad-value", "report has an empty client_id")
    if expected_client is not None and report.client_id != expected_client:
        raise ProtocolError("bad-value", f"report is from client {report.client_id!r}, expected "
                            f"{expected_client!r}")
    if not report.task_key:
        raise ProtocolError("bad-value", "report has an empty task_key")
    if report.num_examples == 0:
        raise ProtocolError("bad-value", "report has num_examples = 0 (must be > 0)")
    _finite(report.loss, "report loss")
    for key, value in report.metrics.items():
        _finite(value, f"metric {key!r}")
    seen: set[tuple[int, str]] = set()
    for i, pull in enumerate(report.pulls):
        where = f"pull #{i} (layer {pull.layer}, leaf {pull.leaf!r})"
        if pull.layer >= num_layers:
            raise ProtocolError("bad-layer", f"{where}: layer out of range [0, {num_layers})")
        try:
            known = pull.leaf in known_leaves
        except Exception:  # noqa: BLE001 - an odd container on this node must not crash on peer input
            known = False
        if not known:
            raise ProtocolError("unknown-leaf", f"{where}: leaf is not in the tree")
        _finite(pull.xi_sum, f"{where} xi_sum")
        if pull.xi_sum < 0:
            raise ProtocolError("bad-value", f"{where}: xi_sum is negative ({pull.xi_sum})")
        if pull.count == 0:
            raise ProtocolError("bad-value", f"{where}: count is 0 (must be > 0)")
        if (pull.layer, pull.leaf) in seen:
            raise ProtocolError("malformed", f"{where}: repeated (layer, leaf); sum the steps into one Pull")
        seen.add((pull.layer, pull.leaf))
    expected = expected_report_tensors(num_layers=num_layers, adapter_shapes=adapter_shapes,
                                       sketch_dim=sketch_dim, task_finished=report.task_finished,
                                       with_sketches=with_sketches)
    return validate_tensors(arrays, report.manifest, expected=expected, max_bytes=max_bytes)


def expected_assignment_tensors(assignment: pb.Assignment, *, adapter_shapes: list[tuple[tuple, tuple]],
                                sketch_dim: int,
                                head_shapes: tuple[tuple, tuple] | None = None) -> dict[str, tuple | None]:
    """The exact tensors an Assignment carries (``None`` shape: not checked, for the head without head_shapes)."""
    shapes = _check_config(len(adapter_shapes), adapter_shapes, sketch_dim)
    out: dict[str, tuple | None] = {}
    for la in assignment.layers:
        for leaf in la.candidates:
            out[cand_name(leaf, la.layer)] = (sketch_dim,)
        if la.shared:
            out[share_name(la.layer, "A")], out[share_name(la.layer, "B")] = shapes[la.layer]
    if assignment.warm_start_leaf:
        for l, (a, b) in enumerate(shapes):
            out[warm_name(l, "A")], out[warm_name(l, "B")] = a, b
        hw, hb = (None, None) if head_shapes is None else (tuple(head_shapes[0]), tuple(head_shapes[1]))
        out[WARM_HEAD_WEIGHT], out[WARM_HEAD_BIAS] = hw, hb
    return out


def validate_assignment(assignment: pb.Assignment | bytes, arrays: Mapping[str, Any], *, num_layers: int,
                        adapter_shapes: list[tuple[tuple, tuple]], sketch_dim: int | None = None,
                        head_shapes: tuple[tuple, tuple] | None = None, expected_client: str | None = None,
                        max_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> dict[str, torch.Tensor]:
    """Client side: check an Assignment (message or bytes) and its arrays; return the decoded tensors.

    Checks: version; ``client_id == expected_client`` when given (``bad-value``); the sketch spec (kind,
    ``out_dim == sketch_dim`` when given, one layer dim per layer: ``bad-value``); ``lam`` finite and ≥ 0;
    ``local_steps > 0`` unless ``evaluate_only``; each LayerAssignment's layer in range and not repeated
    (``bad-layer``), candidates non-empty and distinct, ``group_size ≥ 1`` when shared (``bad-value``); then
    exactly the tensors ``cand.<leaf>.<l>`` ``(sketch_dim,)``, ``share.<l>.A/B`` for shared layers and, with a
    warm start, ``warm.<l>.A/B`` for every layer plus ``warm.head.weight/bias`` (shapes ``head_shapes`` when
    given). Raises only :class:`ProtocolError` for any ``assignment``/``arrays``.
    """
    if isinstance(assignment, (bytes, bytearray, memoryview)):
        assignment = parse_assignment(assignment)
    if not isinstance(assignment, pb.Assignment):
        raise ProtocolError("malformed", f"expected an Assignment, got {type(assignment).__name__}")
    _check_version(assignment)
    spec = assignment.sketch
    if sketch_dim is None:
        sketch_dim = spec.out_dim
        if sketch_dim == 0:
            raise ProtocolError("bad-value", "assignment sketch spec has out_dim = 0")
    _check_config(num_layers, adapter_shapes, sketch_dim)
    if expected_client is not None and assignment.client_id != expected_client:
        raise ProtocolError("bad-value", f"assignment is for client {assignment.client_id!r}, this is "
                            f"{expected_client!r}")
    _check_sketch_spec(spec)
    if spec.out_dim != sketch_dim:
        raise ProtocolError("bad-value", f"sketch out_dim is {spec.out_dim}, this client uses {sketch_dim}")
    if len(spec.layer_dims) != num_layers:
        raise ProtocolError("bad-value", f"sketch spec has {len(spec.layer_dims)} layer dims, the model has "
                            f"{num_layers} layers")
    _finite(assignment.lam, "assignment lam")
    if assignment.lam < 0:
        raise ProtocolError("bad-value", f"assignment lam is negative ({assignment.lam})")
    if not assignment.evaluate_only and assignment.local_steps == 0:
        raise ProtocolError("bad-value", "assignment asks for 0 local steps without evaluate_only")
    layers_seen: set[int] = set()
    for la in assignment.layers:
        if la.layer >= num_layers:
            raise ProtocolError("bad-layer", f"layer assignment for layer {la.layer}, the model has {num_layers}")
        if la.layer in layers_seen:
            raise ProtocolError("bad-layer", f"layer {la.layer} is assigned twice")
        layers_seen.add(la.layer)
        if not all(la.candidates) or len(set(la.candidates)) != len(la.candidates):
            raise ProtocolError("bad-value", f"layer {la.layer}: candidates must be non-empty, distinct leaf keys")
        if la.shared and la.group_size == 0:
            raise ProtocolError("bad-value", f"layer {la.layer} is shared with group_size 0")
    expected = expected_assignment_tensors(assignment, adapter_shapes=adapter_shapes, sketch_dim=sketch_dim,
                                           head_shapes=head_shapes)
    return validate_tensors(arrays, assignment.manifest, expected=expected, max_bytes=max_bytes)


# --------------------------------------------------------------------------------------------------------------
# builders


def _infos(manifest: Iterable[Any]) -> list[pb.TensorInfo]:
    out = []
    for m in manifest:
        if isinstance(m, pb.TensorInfo):
            out.append(m)
        elif isinstance(m, Mapping):
            out.append(make_tensor_info(m["name"], m["shape"], m["dtype"]))
        else:
            out.append(make_tensor_info(*m))
    return out


def make_sketch_spec(kind: str, out_dim: int, seed: int, layer_dims: Iterable[int]) -> pb.SketchSpec:
    return pb.SketchSpec(kind=kind, out_dim=out_dim, seed=seed, layer_dims=list(layer_dims))


def make_layer_assignment(layer: int, candidates: Iterable[str] = (), group_node: str = "", group_size: int = 0,
                          shared: bool = False) -> pb.LayerAssignment:
    return pb.LayerAssignment(layer=layer, candidates=list(candidates), group_node=group_node,
                              group_size=group_size, shared=shared)


def make_assignment(*, round: int, client_id: str, local_steps: int, lam: float,
                    sketch: pb.SketchSpec | Mapping[str, Any], layers: Iterable[Any] = (), run_id: str = "",
                    warm_start_leaf: str = "", manifest: Iterable[Any] = (),
                    evaluate_only: bool = False) -> pb.Assignment:
    """Build an Assignment with ``version`` filled in.

    ``sketch`` is a SketchSpec or a ``LayerSketcher.spec()`` dict; ``layers`` holds LayerAssignment messages or
    dicts of :func:`make_layer_assignment` arguments; ``manifest`` holds TensorInfo or ``(name, shape, dtype)``.
    """
    spec = sketch if isinstance(sketch, pb.SketchSpec) else sketch_spec_from_dict(dict(sketch))
    las = [la if isinstance(la, pb.LayerAssignment) else make_layer_assignment(**la) for la in layers]
    return pb.Assignment(version=SCHEMA_VERSION, round=round, run_id=run_id, client_id=client_id,
                         local_steps=local_steps, lam=lam, sketch=spec, layers=las,
                         warm_start_leaf=warm_start_leaf, manifest=_infos(manifest), evaluate_only=evaluate_only)


def make_pull(layer: int, leaf: str, xi_sum: float, count: int) -> pb.Pull:
    return pb.Pull(layer=layer, leaf=leaf, xi_sum=xi_sum, count=count)


def make_report(*, round: int, client_id: str, task_key: str, num_examples: int, steps: int, loss: float,
                task_index: int = 0, task_finished: bool = False, run_id: str = "", pulls: Iterable[Any] = (),
                manifest: Iterable[Any] = (), metrics: Mapping[str, float] | None = None) -> pb.ClientReport:
    """Build a ClientReport with ``version`` filled in; ``pulls`` holds Pull messages or ``(layer, leaf, xi_sum,
    count)`` tuples / dicts; ``manifest`` holds TensorInfo or ``(name, shape, dtype)`` (see :func:`encode_tensors`).
    """
    ps = []
    for p in pulls:
        if isinstance(p, pb.Pull):
            ps.append(p)
        elif isinstance(p, Mapping):
            ps.append(make_pull(**p))
        else:
            ps.append(make_pull(*p))
    return pb.ClientReport(version=SCHEMA_VERSION, round=round, run_id=run_id, client_id=client_id,
                           task_key=task_key, task_index=task_index, task_finished=task_finished,
                           num_examples=num_examples, steps=steps, loss=loss, pulls=ps, manifest=_infos(manifest),
                           metrics=dict(metrics or {}))


def make_eval(*, round: int, client_id: str, task_keys: Iterable[str], accuracies: Iterable[float],
              tasks_seen: int | None = None) -> pb.EvalReport:
    """Build an EvalReport (one accuracy-matrix row); ``tasks_seen`` defaults to the number of task keys."""
    keys = list(task_keys)
    return pb.EvalReport(version=SCHEMA_VERSION, round=round, client_id=client_id, task_keys=keys,
                         accuracies=[float(a) for a in accuracies],
                         tasks_seen=len(keys) if tasks_seen is None else tasks_seen)


def make_leaf_record(key: str, client_id: str, task_key: str, task_index: int = 0, adapter_file: str = "",
                     num_examples: int = 0) -> pb.LeafRecord:
    return pb.LeafRecord(key=key, client_id=client_id, task_key=task_key, task_index=task_index,
                         adapter_file=adapter_file, num_examples=num_examples)


def make_checkpoint(*, round: int, run_id: str = "", tree: bytes = b"", bandit: bytes | str | Mapping = b"",
                    leaves: Iterable[Any] = (), config: Mapping[str, str] | None = None,
                    created_unix: float = 0.0) -> pb.Checkpoint:
    """Build a Checkpoint; ``bandit`` may be bytes, a JSON string, or a JSON-able mapping (dumped sorted)."""
    if isinstance(bandit, Mapping):
        bandit = json.dumps(bandit, sort_keys=True, allow_nan=False)
    if isinstance(bandit, str):
        bandit = bandit.encode("utf-8")
    recs = [r if isinstance(r, pb.LeafRecord) else make_leaf_record(**r) for r in leaves]
    return pb.Checkpoint(version=SCHEMA_VERSION, round=round, run_id=run_id, tree=tree, bandit=bandit,
                         leaves=recs, config={str(k): str(v) for k, v in (config or {}).items()},
                         created_unix=created_unix)


def make_error(code: str, reason: str) -> pb.ErrorReply:
    return pb.ErrorReply(version=SCHEMA_VERSION, code=code, reason=reason)


# --------------------------------------------------------------------------------------------------------------
# sketch spec bridge (treelora.sketch.LayerSketcher.spec() <-> SketchSpec)


def _check_sketch_spec(spec: pb.SketchSpec) -> None:
    if spec.kind not in SKETCH_KINDS:
        raise ProtocolError("bad-value", f"sketch kind must be one of {list(SKETCH_KINDS)}, got {spec.kind!r}")
    if spec.out_dim == 0:
        raise ProtocolError("bad-value", "sketch out_dim must be > 0")
    if len(spec.layer_dims) == 0 or any(d == 0 for d in spec.layer_dims):
        raise ProtocolError("bad-value", f"sketch layer_dims must be a non-empty list of positive ints, "
                            f"got {list(spec.layer_dims)}")


def sketch_spec_to_dict(spec: pb.SketchSpec) -> dict:
    """SketchSpec → the ``LayerSketcher.spec()`` dict ``{"kind", "out_dim", "seed", "layer_dims", "version": 1}``
    (feed it to ``LayerSketcher.from_spec``). Raises ``ProtocolError("bad-value")`` for an unusable spec."""
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
    if d["kind"] not in SKETCH_KINDS:
        raise ProtocolError("bad-value", f"sketch kind must be one of {list(SKETCH_KINDS)}, got {d['kind']!r}")
    dims = d["layer_dims"]
    if not isinstance(dims, (list, tuple)) or not dims:
        raise ProtocolError("bad-value", f"sketch layer_dims must be a non-empty list, got {dims!r}")
    layer_dims = [_uint({"layer_dims[]": x}, "layer_dims[]", 1, _U32) for x in dims]
    return pb.SketchSpec(kind=d["kind"], out_dim=_uint(d, "out_dim", 1, _U32), seed=_uint(d, "seed", 0, _U64),
                         layer_dims=layer_dims)
