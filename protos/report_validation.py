"""The server's validators of what clients send: a ``train`` report, a ``query`` (probe) reply, a done reply.

Each checks every field of a ClientReport and its arrays against what the server sent and what it knows, before
anything changes, and returns the decoded tensors; anything wrong is a :class:`~protos.errors.ProtocolError`.
What the server knows is passed in (:class:`ReportExpectation`): the round, the client, the steps and batch size it
asked for, the candidate leaves it offered this client this round, and the task keys an accuracy row may name.
Bounds that no honest client exceeds, whatever its data:

* accuracies in [0, 1]; losses and times finite, ≥ 0 and below :data:`MAX_LOSS` / :data:`MAX_SECONDS`;
* ``steps`` in [1, the steps asked for]; ``num_examples`` in [1, steps × batch size];
* pulls only of candidates offered to this client this round, at most one per (layer, leaf), their counts
  summing to at most ``steps`` per layer, ξ finite, ≥ 0 and at most what two in-bound sketches can be apart
  (``2 · MAX_SKETCH_ABS / dim``: ξ is an L1 estimate per coordinate);
* adapter values with |x| ≤ :data:`MAX_ADAPTER_ABS`, sketch values with |x| ≤ :data:`MAX_SKETCH_ABS` (finite
  values of ±3e38 would overflow the tree's means and distances);
* only the metric keys the client sends (:data:`TRAIN_METRICS`, ``acc/<task key>`` at a task's end, and there
  optionally the ``til/`` and ``ti/`` rows of the same tasks, :data:`VIEW_PREFIXES`);
* prototype statistics (``fedproto``): exactly ``proto.<c>.sum`` ``(feature dim,)`` and ``proto.<c>.count``
  ``(1,)`` for every class ``c`` of the client's current task, a count that is an integer in [1, the client's
  shard size] and a sum with every |x| ≤ count × :data:`MAX_FEATURE_ABS`.

The ``train`` report of a method whose clients send nothing but counts (``local-only``) is validated by the same
function with ``with_adapters=False, with_sketches=False``. See DESIGN.md §3 (repository root).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from protos import treelora_fed_pb2 as pb
from protos.codec import DEFAULT_MAX_TENSOR_BYTES, validate_tensors
from protos.errors import ProtocolError
from protos.messages import check_finite, parse_report
from protos.names import adapter_name, final_name, parse_proto_name, proto_name, sketch_name
from protos.validation import Shapes, _as_message, _check_config

__all__ = [
    "MAX_ADAPTER_ABS",
    "MAX_SKETCH_ABS",
    "MAX_FEATURE_ABS",
    "MAX_LOSS",
    "MAX_SECONDS",
    "TRAIN_METRICS",
    "PROBE_METRICS",
    "ReportExpectation",
    "expected_report_tensors",
    "validate_report",
    "validate_probe",
    "validate_done",
    "is_done_report",
]

MAX_ADAPTER_ABS = 1e4  # LoRA weights are O(0.01-1); DP noise of multiplier x clip adds O(1)
MAX_SKETCH_ABS = 1e12  # Cauchy entries reach 3.2e6 and gradients O(1): sketches stay many decades below
MAX_FEATURE_ABS = 1e4  # pooled hidden states of a (layer-normed) transformer are O(1-10) per coordinate
MAX_LOSS = 1e6
MAX_SECONDS = 1e7
MAX_MODEL_BYTES = 2.0**53
TRAIN_METRICS = frozenset({"train_s", "loss", "model_bytes"})
PROBE_METRICS = frozenset({"probe", "last_round"})
DONE_METRIC = "stream_done"


@dataclass(frozen=True)
class ReportExpectation:
    """What the server knows that a report must agree with (``None``: not checked)."""

    round: int | None = None
    client_id: str | None = None
    max_steps: int | None = None  # the local steps the server asked for
    batch_size: int | None = None  # examples per step (run config)
    offered: Mapping[int, Collection[str]] | None = None  # layer -> candidate leaves sent this round
    acc_keys: Collection[str] | None = None  # the task keys a finished task's accuracy row must name
    extra_metrics: frozenset[str] = field(default_factory=frozenset)


def is_done_report(report: pb.ClientReport) -> bool:
    """Whether a report says its stream is over (it carries the ``stream_done`` metric, whatever its value)."""
    return DONE_METRIC in report.metrics


def _check_identity(report: pb.ClientReport, expect: ReportExpectation) -> None:
    if expect.round is not None and report.round != expect.round:
        raise ProtocolError("bad-round", f"report is for round {report.round}, this is round {expect.round}")
    if not report.client_id:
        raise ProtocolError("bad-value", "report has an empty client_id")
    if expect.client_id is not None and report.client_id != expect.client_id:
        raise ProtocolError("bad-identity", f"report is from client {report.client_id!r}, expected "
                            f"{expect.client_id!r}")

VIEW_PREFIXES = ("til/", "ti/")  # a finished task's task-incremental and task-inference rows (optional, complete)


def _in_range(value: float, lo: float, hi: float, what: str) -> None:
    check_finite(value, what)
    if not lo <= value <= hi:
        raise ProtocolError("bad-value", f"{what} is {value}, outside [{lo:g}, {hi:g}]")


def _check_metrics(report: pb.ClientReport, expect: ReportExpectation) -> None:
    acc = {k[4:]: v for k, v in report.metrics.items() if k.startswith("acc/")}
    views = {p: {k[len(p):] for k in report.metrics if k.startswith(p)} for p in VIEW_PREFIXES}
    for key, value in report.metrics.items():
        if key.startswith(("acc/", *VIEW_PREFIXES)):
            _in_range(value, 0.0, 1.0, f"accuracy {key!r}")
        elif key in ("train_s",):
            _in_range(value, 0.0, MAX_SECONDS, f"metric {key!r}")
        elif key == "loss":
            _in_range(value, 0.0, MAX_LOSS, f"metric {key!r}")
        elif key == "model_bytes":
            _in_range(value, 0.0, MAX_MODEL_BYTES, f"metric {key!r}")
        elif key not in expect.extra_metrics:
            raise ProtocolError("bad-value", f"report carries metric {key!r}, which a train report does not have")
        else:
            check_finite(value, f"metric {key!r}")
    if expect.acc_keys is None:
        return
    if not report.task_finished and (acc or any(views.values())):
        raise ProtocolError("bad-value", f"an unfinished task's report carries accuracies "
                            f"{sorted(acc) or sorted(k for v in views.values() for k in v)}")
    if report.task_finished and set(acc) != set(expect.acc_keys):
        raise ProtocolError("bad-value", f"accuracy row names {sorted(acc)}, expected the client's tasks "
                            f"{sorted(expect.acc_keys)}")
    for prefix, keys in views.items():
        if keys and keys != set(expect.acc_keys):
            raise ProtocolError("bad-value", f"{prefix[:-1]} row names {sorted(keys)}, expected the client's tasks "
                                f"{sorted(expect.acc_keys)} (or none)")


def _check_pulls(report: pb.ClientReport, num_layers: int, dims: list[int], known_leaves: Any,
                 expect: ReportExpectation) -> None:
    seen: set[tuple[int, str]] = set()
    per_layer: dict[int, int] = {}
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
        if expect.offered is not None and pull.leaf not in expect.offered.get(pull.layer, ()):
            raise ProtocolError("bad-value", f"{where}: this leaf was not offered to {report.client_id!r} for "
                                f"layer {pull.layer} this round")
        check_finite(pull.xi_sum, f"{where} xi_sum")
        if pull.xi_sum < 0:
            raise ProtocolError("bad-value", f"{where}: xi_sum is negative ({pull.xi_sum})")
        if pull.count == 0:
            raise ProtocolError("bad-value", f"{where}: count is 0 (must be > 0)")
        bound = 2 * MAX_SKETCH_ABS / dims[pull.layer] if dims else math.inf
        if pull.xi_sum / pull.count > bound:
            raise ProtocolError("bad-value", f"{where}: mean xi {pull.xi_sum / pull.count:.4g} exceeds what two "
                                f"in-bound sketches can be apart ({bound:.4g})")
        if (pull.layer, pull.leaf) in seen:
            raise ProtocolError("malformed", f"{where}: repeated (layer, leaf); sum the steps into one Pull")
        seen.add((pull.layer, pull.leaf))
        per_layer[pull.layer] = per_layer.get(pull.layer, 0) + pull.count
    for layer, n in per_layer.items():
        if n > report.steps:
            raise ProtocolError("bad-value", f"layer {layer}: {n} pulls in {report.steps} steps (at most one a step)")


def _check_prototypes(tensors: dict[str, torch.Tensor], prototypes: Mapping[int, int]) -> None:
    """Counts integers in [1, the class's bound]; sums within count × MAX_FEATURE_ABS."""
    for cls, most in sorted(prototypes.items()):
        count = float(tensors[proto_name(cls, "count")].flatten()[0])
        if count != int(count) or not 1 <= count <= most:
            raise ProtocolError("bad-value", f"class {cls}: count {count:g} is not an integer in [1, {most}] (the "
                                f"client's shard)")
        total = tensors[proto_name(cls, "sum")]
        if total.numel() and float(total.abs().max()) > count * MAX_FEATURE_ABS:
            raise ProtocolError("bad-value", f"class {cls}: feature sum has |x| up to {float(total.abs().max()):.4g}, "
                                f"over count x {MAX_FEATURE_ABS:g}")


def _check_magnitudes(tensors: dict[str, torch.Tensor]) -> None:
    for name, t in tensors.items():
        if parse_proto_name(name) is not None:
            continue  # bounded by their counts (_check_prototypes)
        bound = MAX_ADAPTER_ABS if name.startswith("adapter.") else MAX_SKETCH_ABS
        if not t.numel():
            continue
        lo, hi = torch.aminmax(t)  # one pass, no |t| temporary
        top = max(-float(lo), float(hi))
        if top > bound:
            raise ProtocolError("bad-value", f"tensor {name!r} has |x| up to {top:.4g}, over the bound {bound:g}")


def expected_report_tensors(*, num_layers: int, adapter_shapes: Shapes, sketch_dim: int, task_finished: bool,
                            with_sketches: bool = True, with_adapters: bool = True,
                            adapter_parts: tuple[str, ...] = ("A", "B"),
                            prototypes: Collection[int] = (), feature_dim: int | None = None
                            ) -> dict[str, tuple[int, ...] | None]:
    """The exact tensors a ClientReport carries: adapter.<l>.<part> for ``adapter_parts`` (``with_adapters``;
    FedSA-LoRA sends A only, FFA-LoRA B only), sketch.<l> and, when its task finished, final.<l>
    (``with_sketches``); ``proto.<c>.sum`` ``(feature_dim,)`` (any shape while ``feature_dim`` is None) and
    ``proto.<c>.count`` ``(1,)`` for each class of ``prototypes``; none at all for a counts-only method."""
    out: dict[str, tuple[int, ...] | None] = {}
    for cls in prototypes:
        out[proto_name(cls, "sum")] = None if feature_dim is None else (int(feature_dim),)
        out[proto_name(cls, "count")] = (1,)
    if not (with_adapters or with_sketches):
        return out
    shapes = _check_config(num_layers, adapter_shapes, sketch_dim)
    for l, (a, b) in enumerate(shapes):
        if with_adapters:
            for part, shape in (("A", a), ("B", b)):
                if part in adapter_parts:
                    out[adapter_name(l, part)] = shape
        if with_sketches:
            out[sketch_name(l)] = (sketch_dim,)
        if with_sketches and task_finished:
            out[final_name(l)] = (sketch_dim,)
    return out


def validate_report(report: pb.ClientReport | bytes, arrays: Mapping[str, Any], *, num_layers: int,
                    adapter_shapes: Shapes, sketch_dim: int, known_leaves: Any,
                    expected_round: int | None = None, expected_client: str | None = None,
                    max_bytes: int = DEFAULT_MAX_TENSOR_BYTES, with_sketches: bool = True,
                    with_adapters: bool = True, adapter_parts: tuple[str, ...] = ("A", "B"),
                    prototypes: Mapping[int, int] | None = None, feature_dim: int | None = None,
                    expect: ReportExpectation | None = None) -> dict[str, torch.Tensor]:
    """Check a ``train`` ClientReport (message or bytes) and its arrays; return the decoded float32 tensors.

    Checks, in order: version; round (``bad-round``) and client (``bad-identity``) against ``expect`` (or the
    ``expected_round`` / ``expected_client`` shorthands); non-empty task key, ``num_examples`` in [1, steps ×
    batch size] and ``steps`` in [1, max steps] (``bad-value``); loss and metrics finite (``non-finite``) and in
    range, only known metric keys, an accuracy row naming exactly ``expect.acc_keys`` at a task's end and none
    before (``bad-value``); every Pull: layer in range (``bad-layer``), leaf in ``known_leaves``
    (``unknown-leaf``) and offered this round, ξ finite (``non-finite``), ≥ 0 and in bound, ``count > 0``, counts
    per layer ≤ steps (``bad-value``), one Pull per (layer, leaf) (``malformed``); then exactly the tensors of
    :func:`expected_report_tensors` (see :func:`protos.codec.validate_tensors`) within the magnitude bounds;
    with ``prototypes`` (``{class: most examples}`` of the client's current task, ``fedproto``), its
    ``proto.<c>.sum/count`` pairs: one vector shape across classes, ``feature_dim`` when known (``bad-shape``),
    counts integers in [1, most] and sums within count × :data:`MAX_FEATURE_ABS` (``bad-value``).

    ``num_layers``/``adapter_shapes``/``sketch_dim`` are this node's configuration (a bad value there raises
    ValueError/TypeError at once, except that a counts-only method passes ``num_layers=0``); for any
    ``report``/``arrays`` only :class:`ProtocolError` is raised.
    """
    counts_only = not (with_adapters or with_sketches)
    if not counts_only:
        _check_config(num_layers, adapter_shapes, sketch_dim)
    if expect is None:
        expect = ReportExpectation(round=expected_round, client_id=expected_client)
    report = _as_message(report, pb.ClientReport, "a ClientReport", parse_report)
    _check_identity(report, expect)
    if not report.task_key:
        raise ProtocolError("bad-value", "report has an empty task_key")
    if report.num_examples == 0:
        raise ProtocolError("bad-value", "report has num_examples = 0 (must be > 0)")
    if expect.max_steps is not None and not 1 <= report.steps <= expect.max_steps:
        raise ProtocolError("bad-value", f"report has {report.steps} steps, the server asked for "
                            f"{expect.max_steps}")
    if expect.batch_size is not None and report.num_examples > max(report.steps, 1) * expect.batch_size:
        raise ProtocolError("bad-value", f"report claims {report.num_examples} examples in {report.steps} steps of "
                            f"{expect.batch_size}")
    _in_range(report.loss, 0.0, MAX_LOSS, "report loss")
    _check_metrics(report, expect)
    dims = [] if counts_only else [max(math.prod(a) + math.prod(b), 1) for a, b in adapter_shapes]
    _check_pulls(report, num_layers, dims, known_leaves, expect)
    expected = expected_report_tensors(num_layers=num_layers, adapter_shapes=adapter_shapes, sketch_dim=sketch_dim,
                                       task_finished=report.task_finished, with_sketches=with_sketches,
                                       with_adapters=with_adapters, adapter_parts=adapter_parts,
                                       prototypes=sorted(prototypes or {}), feature_dim=feature_dim)
    tensors = validate_tensors(arrays, report.manifest, expected=expected, max_bytes=max_bytes)
    _check_magnitudes(tensors)
    if prototypes:
        shapes = {tuple(tensors[proto_name(c, "sum")].shape) for c in prototypes}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1 or not next(iter(shapes))[0]:
            raise ProtocolError("bad-shape", f"prototype sums must be vectors of one length, got shapes "
                                f"{sorted(shapes)}")
        _check_prototypes(tensors, prototypes)
    return tensors


def validate_probe(report: pb.ClientReport | bytes, arrays: Mapping[str, Any], *, num_layers: int, sketch_dim: int,
                   expect: ReportExpectation) -> dict[str, torch.Tensor]:
    """Check a ``query`` reply: the sketch of one batch's gradient of the client's next task.

    Exactly ``sketch.<l>`` ``(sketch_dim,)`` per layer within :data:`MAX_SKETCH_ABS`; round and client as
    expected; a task key; ``num_examples`` in [1, batch size]; no steps, pulls, finished task or other metrics
    than :data:`PROBE_METRICS` (finite, ≥ 0)."""
    report = _as_message(report, pb.ClientReport, "a ClientReport", parse_report)
    _check_identity(report, expect)
    if not report.task_key:
        raise ProtocolError("bad-value", "probe has an empty task_key")
    if report.steps or report.pulls or report.task_finished:
        raise ProtocolError("bad-value", "a probe reports no steps, pulls or finished task")
    batch = expect.batch_size or report.num_examples
    if not 1 <= report.num_examples <= batch:
        raise ProtocolError("bad-value", f"probe of {report.num_examples} examples (one batch is {batch})")
    for key, value in report.metrics.items():
        if key not in PROBE_METRICS:
            raise ProtocolError("bad-value", f"probe carries metric {key!r}")
        _in_range(value, 0.0, 2.0**53, f"probe metric {key!r}")
    expected = {sketch_name(l): (sketch_dim,) for l in range(num_layers)}
    tensors = validate_tensors(arrays, report.manifest, expected=expected)
    _check_magnitudes(tensors)
    return tensors


def validate_done(report: pb.ClientReport | bytes, arrays: Mapping[str, Any], *,
                  expect: ReportExpectation) -> pb.ClientReport:
    """Check a reply after the end of a client's stream: round and client as expected, ``metrics`` exactly
    ``{"stream_done": 1.0}``, and nothing else (no task, counts, pulls or tensors)."""
    report = _as_message(report, pb.ClientReport, "a ClientReport", parse_report)
    _check_identity(report, expect)
    if dict(report.metrics) != {DONE_METRIC: 1.0}:
        raise ProtocolError("bad-value", f"a done reply carries exactly stream_done = 1, got {dict(report.metrics)}")
    if report.task_key or report.num_examples or report.steps or report.pulls or report.task_finished or report.loss:
        raise ProtocolError("bad-value", "a done reply carries no task, counts, loss or pulls")
    validate_tensors(arrays, report.manifest, expected={})
    return report
