"""The control messages as bytes: deterministic serialization, safe parsing, and builders.

Control data travels as a protobuf message of ``protos/treelora_fed.proto`` serialized to bytes (DESIGN.md §3,
repository root). This module is the only place that turns bytes into messages and back:

- :func:`serialize` writes deterministic bytes (equal messages → equal bytes, map order included);
- ``parse_*`` decode untrusted bytes — size limit first, then decoding, then ``version == SCHEMA_VERSION`` — and
  raise nothing but :class:`~protos.errors.ProtocolError` (``too-large``, ``malformed``, ``bad-version``).
  :func:`parse_eval` and :func:`parse_checkpoint` also check the fields that need no receiver state (an
  EvalReport or a Checkpoint has no tensors and is not validated further); an Assignment or a ClientReport is
  checked against the receiver's configuration by :mod:`protos.validation`;
- ``make_*`` build messages with ``version`` filled in, from messages or plain Python values
  (``make_error`` lives with the error vocabulary, in :mod:`protos.errors`).

:func:`check_version` and :func:`check_finite` are the two field checks shared by the parsers here and the
validators of :mod:`protos.validation` (which builds on this module, not the other way round).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from protos import SCHEMA_VERSION
from protos import treelora_fed_pb2 as pb
from protos.codec import check_wire_dtype
from protos.errors import ProtocolError
from protos.sketch_spec import sketch_spec_from_dict

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_CHECKPOINT_BYTES",
    "serialize",
    "check_version",
    "check_finite",
    "parse_assignment",
    "parse_report",
    "parse_eval",
    "parse_checkpoint",
    "parse_error",
    "make_tensor_info",
    "make_sketch_spec",
    "make_layer_assignment",
    "make_assignment",
    "make_pull",
    "make_report",
    "make_eval",
    "make_leaf_record",
    "make_checkpoint",
]

DEFAULT_MAX_MESSAGE_BYTES = 16 << 20
"""Default limit on the serialized bytes of one control message (``parse_*`` other than checkpoints)."""

DEFAULT_MAX_CHECKPOINT_BYTES = 1 << 30
"""Default limit on the bytes of a checkpoint file (:func:`parse_checkpoint`)."""


def serialize(msg: Any) -> bytes:
    """Deterministic serialization of any message of this schema (stable bytes for equal messages)."""
    return msg.SerializeToString(deterministic=True)


# --------------------------------------------------------------------------------------------------------------
# shared field checks


def check_version(msg: Any) -> None:
    """``ProtocolError("bad-version")`` unless ``msg.version == SCHEMA_VERSION`` (0 means "no version": most
    likely another message type parsed as this one, since every top-level message has ``version`` as field 1)."""
    what = msg.DESCRIPTOR.name
    if msg.version != SCHEMA_VERSION:
        if msg.version == 0:
            raise ProtocolError("bad-version", f"{what} has no version (expected {SCHEMA_VERSION}): "
                                "wrong message type or a peer built from another schema")
        raise ProtocolError("bad-version", f"{what} has schema version {msg.version}, this node speaks "
                            f"version {SCHEMA_VERSION}")


def check_finite(value: float, what: str) -> None:
    """``ProtocolError("non-finite")`` when a numeric field is NaN or infinite."""
    if not math.isfinite(value):
        raise ProtocolError("non-finite", f"{what} is {value}")


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
    check_version(msg)
    return msg


def parse_assignment(data: bytes, *, max_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES) -> pb.Assignment:
    """Decode an Assignment; ``malformed`` / ``bad-version`` / ``too-large`` on failure.

    Only decoding and version are checked here; :func:`protos.validation.validate_assignment` checks it against
    the client's model.
    """
    return _parse(pb.Assignment, data, max_bytes)


def parse_report(data: bytes, *, max_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES) -> pb.ClientReport:
    """Decode a ClientReport; ``malformed`` / ``bad-version`` / ``too-large`` on failure.

    Only decoding and version are checked here; :func:`protos.validation.validate_report` checks it against the
    server's state.
    """
    return _parse(pb.ClientReport, data, max_bytes)


def parse_eval(data: bytes, *, max_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES) -> pb.EvalReport:
    """Decode and check an EvalReport: one finite accuracy in [0, 1] per distinct, non-empty task key."""
    msg = _parse(pb.EvalReport, data, max_bytes)
    if not msg.client_id:
        raise ProtocolError("bad-value", "EvalReport has an empty client_id")
    if len(msg.task_keys) != len(msg.accuracies):
        raise ProtocolError("malformed", f"EvalReport has {len(msg.task_keys)} task keys but "
                            f"{len(msg.accuracies)} accuracies")
    if len(set(msg.task_keys)) != len(msg.task_keys) or not all(msg.task_keys):
        raise ProtocolError("malformed", "EvalReport task keys must be non-empty and distinct")
    for key, acc in zip(msg.task_keys, msg.accuracies):
        check_finite(acc, f"accuracy on task {key!r}")
        if not 0 <= acc <= 1:
            raise ProtocolError("bad-value", f"accuracy on task {key!r} is {acc}, outside [0, 1]")
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
    check_finite(msg.created_unix, "Checkpoint created_unix")
    return msg


def parse_error(data: bytes, *, max_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES) -> pb.ErrorReply:
    """Decode an ErrorReply; ``malformed`` / ``bad-version`` / ``too-large`` on failure."""
    return _parse(pb.ErrorReply, data, max_bytes)


# --------------------------------------------------------------------------------------------------------------
# builders


def make_tensor_info(name: str, shape: Iterable[int], dtype: str) -> pb.TensorInfo:
    """One manifest entry; ``ProtocolError("bad-dtype")`` for a dtype that is not a wire dtype."""
    return pb.TensorInfo(name=name, shape=[int(d) for d in shape], dtype=check_wire_dtype(dtype, name))


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


def make_assignment(*, round: int, client_id: str = "", local_steps: int = 0, lam: float = 0.0,
                    sketch: pb.SketchSpec | Mapping[str, Any] | None = None, layers: Iterable[Any] = (),
                    run_id: str = "", warm_start_leaf: str = "", manifest: Iterable[Any] = (),
                    evaluate_only: bool = False) -> pb.Assignment:
    """Build an Assignment with ``version`` filled in (the server's ``train``, ``query`` and ``evaluate`` messages).

    ``sketch`` is a SketchSpec, a ``LayerSketcher.spec()`` dict, or None for the tensor-free ``query``/``evaluate``
    messages; ``layers`` holds LayerAssignment messages or dicts of :func:`make_layer_assignment` arguments;
    ``manifest`` holds TensorInfo or ``(name, shape, dtype)``.
    """
    if sketch is None:
        spec = pb.SketchSpec()
    else:
        spec = sketch if isinstance(sketch, pb.SketchSpec) else sketch_spec_from_dict(dict(sketch))
    las = [la if isinstance(la, pb.LayerAssignment) else make_layer_assignment(**la) for la in layers]
    return pb.Assignment(version=SCHEMA_VERSION, round=round, run_id=run_id, client_id=client_id,
                         local_steps=local_steps, lam=lam, sketch=spec, layers=las,
                         warm_start_leaf=warm_start_leaf, manifest=_infos(manifest), evaluate_only=evaluate_only)


def make_pull(layer: int, leaf: str, xi_sum: float, count: int) -> pb.Pull:
    return pb.Pull(layer=layer, leaf=leaf, xi_sum=xi_sum, count=count)


def make_report(*, round: int, client_id: str, task_key: str = "", num_examples: int = 0, steps: int = 0,
                loss: float = 0.0, task_index: int = 0, task_finished: bool = False, run_id: str = "",
                pulls: Iterable[Any] = (), manifest: Iterable[Any] = (),
                metrics: Mapping[str, float] | None = None) -> pb.ClientReport:
    """Build a ClientReport with ``version`` filled in (a client's ``train`` or ``query`` reply; a reply after the
    end of its stream has only ``metrics={"stream_done": 1}``); ``pulls`` holds Pull messages or ``(layer, leaf,
    xi_sum, count)`` tuples / dicts; ``manifest`` holds TensorInfo or ``(name, shape, dtype)`` (see
    :func:`protos.codec.encode_tensors`).
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
