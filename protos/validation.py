"""Receiver-side validation: one validator per message that carries tensors, against the receiver's own config.

A message that parses (:mod:`protos.messages`) may still be wrong *for this receiver*: a layer its model does
not have, a tensor of the wrong shape, a sketch spec it does not use. Each validator here checks a message and
its arrays completely — every field, then exactly the expected tensors — before anything touches the tree, the
bandit or a model, and returns the decoded tensors. Production code and tests call the same validator:

- :func:`validate_assignment`: the client's check of an Assignment (``train``, ``query`` and ``evaluate``
  messages) against its model and sketch configuration.

The server's validators of what clients send live in :mod:`protos.report_validation`.
``expected_assignment_tensors`` says which tensors (names from
:mod:`protos.names`) a message must carry. The keyword arguments describing the receiver's configuration
(``num_layers``, ``adapter_shapes``, ``sketch_dim``, ...) are trusted: a bad value there raises
``ValueError``/``TypeError`` at once (a bug on this node), while anything about the message or its arrays raises
only :class:`~protos.errors.ProtocolError`. See DESIGN.md §3-§4 (repository root).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch

from protos import treelora_fed_pb2 as pb
from protos.codec import DEFAULT_MAX_TENSOR_BYTES, validate_tensors
from protos.errors import ProtocolError
from protos.messages import check_finite, check_version, parse_assignment
from protos.names import (
    WARM_HEAD_BIAS,
    WARM_HEAD_WEIGHT,
    cand_name,
    parse_proto_name,
    proto_name,
    share_name,
    warm_name,
)
from protos.sketch_spec import SKETCH_KINDS, check_sketch_kind

__all__ = [
    "shared_parts",
    "expected_assignment_tensors",
    "validate_assignment",
]

Shapes = list[tuple[tuple[int, ...], tuple[int, ...]]]


# --------------------------------------------------------------------------------------------------------------
# shared checks


def _check_config(num_layers: Any, adapter_shapes: Any, sketch_dim: Any) -> Shapes:
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


def _as_message(msg: Any, cls: type, what: str, parse: Any) -> Any:
    """``msg`` as a ``cls`` message of this schema's version, parsed first when it arrived as bytes."""
    if isinstance(msg, (bytes, bytearray, memoryview)):
        msg = parse(msg)
    if not isinstance(msg, cls):
        raise ProtocolError("malformed", f"expected {what}, got {type(msg).__name__}")
    check_version(msg)
    return msg


# --------------------------------------------------------------------------------------------------------------
# Assignment (client side)


def shared_parts(la: pb.LayerAssignment) -> tuple[str, ...]:
    """The adapter parts a shared layer carries: its ``share_parts``, or both when the list is empty."""
    return tuple(la.share_parts) or ("A", "B")


def expected_assignment_tensors(assignment: pb.Assignment, *, adapter_shapes: Shapes, sketch_dim: int,
                                head_shapes: tuple[tuple, tuple] | None = None,
                                prototypes: Collection[int] = (), feature_dim: int = 0) -> dict[str, tuple | None]:
    """The tensors an Assignment carries (``None`` shape: not checked, for the head without head_shapes):
    ``cand.<leaf>.<l>`` ``(sketch_dim,)`` per candidate, ``share.<l>.A/B`` per shared layer and, with a warm
    start, ``warm.<l>.A/B`` for every layer plus ``warm.head.weight/bias``; ``proto.<c>.mean`` ``(feature_dim,)``
    for each class of ``prototypes`` (the global prototypes it declares, of classes the client may receive). The
    head is optional on the wire (the server does not send it); :func:`validate_assignment` drops it when the
    manifest does not declare it."""
    shapes = _check_config(len(adapter_shapes), adapter_shapes, sketch_dim)
    out: dict[str, tuple | None] = {proto_name(c, "mean"): (int(feature_dim),) for c in prototypes}
    for la in assignment.layers:
        for leaf in la.candidates:
            out[cand_name(leaf, la.layer)] = (sketch_dim,)
        if la.shared:
            for part, shape in zip(("A", "B"), shapes[la.layer]):
                if part in shared_parts(la):
                    out[share_name(la.layer, part)] = shape
    if assignment.warm_start_leaf:
        for l, (a, b) in enumerate(shapes):
            out[warm_name(l, "A")], out[warm_name(l, "B")] = a, b
        hw, hb = (None, None) if head_shapes is None else (tuple(head_shapes[0]), tuple(head_shapes[1]))
        out[WARM_HEAD_WEIGHT], out[WARM_HEAD_BIAS] = hw, hb
    return out


def _check_receiver_sketch(sketch_kind: Any, sketch_seed: Any) -> None:
    # Caller configuration, like _check_config.
    if sketch_kind is not None and sketch_kind not in SKETCH_KINDS:
        raise ValueError(f"sketch_kind must be one of {list(SKETCH_KINDS)} or None, got {sketch_kind!r}")
    if sketch_seed is not None and (isinstance(sketch_seed, bool) or not isinstance(sketch_seed, int)
                                    or sketch_seed < 0):
        raise ValueError(f"sketch_seed must be a non-negative int or None, got {sketch_seed!r}")


def validate_assignment(assignment: pb.Assignment | bytes, arrays: Mapping[str, Any], *, num_layers: int,
                        adapter_shapes: Shapes, sketch_dim: int | None = None, sketch_kind: str | None = None,
                        sketch_seed: int | None = None, head_shapes: tuple[tuple, tuple] | None = None,
                        expected_client: str | None = None, max_local_steps: int | None = None,
                        max_candidates: int | None = None, proto_classes: Collection[int] | None = None,
                        feature_dim: int = 0,
                        max_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> dict[str, torch.Tensor]:
    """Client side: check an Assignment (message or bytes) and its arrays; return the decoded float32 tensors.

    The receiver describes itself with (all trusted configuration; a bad value raises ValueError/TypeError):

    - ``num_layers``: its model's adapter layer count; ``adapter_shapes``: ``[(A shape, B shape)]`` per layer;
    - ``sketch_dim`` / ``sketch_kind`` / ``sketch_seed``: its sketch configuration. ``sketch_dim`` is the width
      of every ``cand.*`` tensor; ``None`` takes the assignment's ``sketch.out_dim`` (then a spec with
      ``out_dim`` 0 is refused, ``bad-value``). ``sketch_kind`` / ``sketch_seed`` ``None``: not compared;
    - ``head_shapes``: ``(weight shape, bias shape)`` of its head, to check ``warm.head.*`` when they come;
    - ``expected_client``: its client id, or ``None`` to leave the id to the caller;
    - ``max_local_steps`` / ``max_candidates``: the most steps it trains for one message and the most candidates
      per layer it probes (``too-large``): what a server may ask of it;
    - ``proto_classes`` / ``feature_dim``: the classes whose global prototypes it may receive (``fedproto``: the
      classes of its tasks up to this round's) and its feature width; ``None``: it receives none;
    - ``max_bytes``: limit on the declared tensor bytes (``too-large``).

    Checks, in order (each a :class:`ProtocolError` with the code in brackets):

    1. decoding and ``version`` (``malformed``, ``too-large``, ``bad-version``);
    2. ``client_id == expected_client`` when both are set (``bad-value``); an empty ``client_id`` is accepted:
       the server sends it to a node it does not know yet;
    3. each LayerAssignment: layer in ``[0, num_layers)`` and not repeated (``bad-layer``), candidates non-empty
       and distinct leaf keys (``bad-value``). ``group_node``/``group_size`` are informational and unchecked
       (a share without a tree node, as in ``fedavg-lora``, has ``group_size`` 0);
    4. the sketch spec, when declared (``out_dim != 0``; ``query``/``evaluate`` messages carry none): its
       (kind, out_dim, seed) equals the receiver's (``bad-value``), the kind is known (``bad-value``), and its
       ``layer_dims``, when declared (non-empty), hold one positive dim per layer (``bad-value``);
    5. ``lam`` finite (``non-finite``) and ≥ 0 (``bad-value``); ``local_steps`` ≤ ``max_local_steps`` and
       candidates per layer ≤ ``max_candidates`` (``too-large``); ``local_steps`` 0 means "the client's own
       default";
    6. exactly the tensors of :func:`expected_assignment_tensors`: ``cand.<leaf>.<l>`` ``(sketch_dim,)``,
       ``share.<l>.A/B`` for shared layers, and with a warm start ``warm.<l>.A/B`` for every layer; the head
       ``warm.head.weight/bias`` is optional — both or neither, only with a warm start, shapes ``head_shapes``
       when given (``missing-tensor``, ``unexpected-tensor``, ``bad-shape``, ``bad-dtype``, ``non-finite``,
       ``too-large``, ``malformed``; see :func:`protos.codec.validate_tensors`); ``proto.<c>.mean``
       ``(feature_dim,)`` only for classes of ``proto_classes`` (``unexpected-tensor`` otherwise).

    Every Assignment the server builds (``server.state.GlobalState.assignment`` / ``control``) passes.
    """
    assignment = _as_message(assignment, pb.Assignment, "an Assignment", parse_assignment)
    spec = assignment.sketch
    if sketch_dim is None:
        sketch_dim = spec.out_dim
        if sketch_dim == 0:
            raise ProtocolError("bad-value", "assignment sketch spec has out_dim = 0")
    _check_config(num_layers, adapter_shapes, sketch_dim)
    _check_receiver_sketch(sketch_kind, sketch_seed)
    if expected_client is not None and assignment.client_id and assignment.client_id != expected_client:
        raise ProtocolError("bad-value", f"assignment is for client {assignment.client_id!r}, this is "
                            f"{expected_client!r}")
    layers_seen: set[int] = set()
    for la in assignment.layers:
        if la.layer >= num_layers:
            raise ProtocolError("bad-layer", f"layer assignment for layer {la.layer}, the model has {num_layers}")
        if la.layer in layers_seen:
            raise ProtocolError("bad-layer", f"layer {la.layer} is assigned twice")
        layers_seen.add(la.layer)
        if not all(la.candidates) or len(set(la.candidates)) != len(la.candidates):
            raise ProtocolError("bad-value", f"layer {la.layer}: candidates must be non-empty, distinct leaf keys")
        parts = list(la.share_parts)
        if parts and (not la.shared or len(set(parts)) != len(parts) or not set(parts) <= {"A", "B"}):
            raise ProtocolError("bad-value", f"layer {la.layer}: share_parts {parts} must be distinct A/B of a shared "
                                f"layer")
    if spec.out_dim:
        kind = spec.kind if sketch_kind is None else sketch_kind
        seed = spec.seed if sketch_seed is None else sketch_seed
        if (spec.kind, spec.out_dim, spec.seed) != (kind, sketch_dim, seed):
            raise ProtocolError("bad-value", f"sketch spec {spec.kind}/{spec.out_dim}/{spec.seed} differs from this "
                                f"client's {kind}/{sketch_dim}/{seed}")
        check_sketch_kind(spec.kind)
        if spec.layer_dims and (len(spec.layer_dims) != num_layers or not all(spec.layer_dims)):
            raise ProtocolError("bad-value", f"sketch spec has layer dims {list(spec.layer_dims)}, the model has "
                                f"{num_layers} layers (one positive dim each)")
    check_finite(assignment.lam, "assignment lam")
    if assignment.lam < 0:
        raise ProtocolError("bad-value", f"assignment lam is negative ({assignment.lam})")
    if max_local_steps is not None and assignment.local_steps > max_local_steps:
        raise ProtocolError("too-large", f"assignment asks for {assignment.local_steps} local steps; this client "
                            f"trains at most {max_local_steps} (node config max-local-steps)")
    if max_candidates is not None:
        for la in assignment.layers:
            if len(la.candidates) > max_candidates:
                raise ProtocolError("too-large", f"layer {la.layer} has {len(la.candidates)} candidates; this client "
                                    f"probes at most {max_candidates} (run config candidates-per-layer)")
    declared = {info.name for info in assignment.manifest}
    allowed = set(proto_classes or ())
    protos = sorted(p[0] for p in map(parse_proto_name, declared)
                    if p is not None and p[1] == "mean" and p[0] in allowed)
    expected = expected_assignment_tensors(assignment, adapter_shapes=adapter_shapes, sketch_dim=sketch_dim,
                                           head_shapes=head_shapes, prototypes=protos, feature_dim=feature_dim)
    if assignment.warm_start_leaf and WARM_HEAD_WEIGHT not in declared and WARM_HEAD_BIAS not in declared:
        del expected[WARM_HEAD_WEIGHT], expected[WARM_HEAD_BIAS]  # the optional head did not come
    return validate_tensors(arrays, assignment.manifest, expected=expected, max_bytes=max_bytes)
