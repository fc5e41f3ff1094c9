"""Tensor names: the keys of the arrays that travel next to a message (DESIGN.md §3, repository root).

Control data travels as a protobuf message; its tensors travel next to it, keyed by these names, and each
message lists them in its ``manifest``. The names are the contract between the server's builders and the
client's readers (and back), so every node spells them through these functions, never by hand.

``<l>`` is a 0-based layer index in decimal, ``<leaf>`` a tree leaf key such as ``"c3/t1"``:

===========================  =========================  =====================================================
name                         travels with               meaning
===========================  =========================  =====================================================
``cand.<leaf>.<l>``          Assignment                 layer-``l`` sketch of candidate leaf ``<leaf>``
``share.<l>.A/B``            Assignment (``shared``)    group-averaged adapter of layer ``l``
``warm.<l>.A/B``             Assignment (warm start)    adapter of ``warm_start_leaf`` for layer ``l``
``warm.head.weight/bias``    Assignment (warm start)    head of ``warm_start_leaf`` (optional)
``adapter.<l>.A/B``          ClientReport               the client's live adapter, every layer
``sketch.<l>``               ClientReport               sketch of the current task's signature, every layer
``final.<l>``                ClientReport (finished)    final signature sketch of the finished task
``proto.<c>.sum``            ClientReport (fedproto)    sum of the client's features of class ``<c>``
``proto.<c>.count``          ClientReport (fedproto)    how many examples that sum is over, shape ``(1,)``
``proto.<c>.mean``           Assignment (fedproto)      the global prototype of class ``<c>`` (counts-weighted)
===========================  =========================  =====================================================

``<c>`` is a global class id (0-based, decimal).

Which of them a given message must carry is decided in :mod:`protos.validation`
(``expected_report_tensors`` / ``expected_assignment_tensors``).
"""

from __future__ import annotations

__all__ = [
    "WARM_HEAD_WEIGHT",
    "WARM_HEAD_BIAS",
    "adapter_name",
    "sketch_name",
    "final_name",
    "cand_name",
    "share_name",
    "warm_name",
    "PROTO_KINDS",
    "proto_name",
    "parse_proto_name",
]

PROTO_KINDS = ("sum", "count", "mean")

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


def proto_name(cls: int, kind: str) -> str:
    """``proto.<class>.<sum|count|mean>``: a class's feature sum / count (ClientReport) or global prototype
    (Assignment)."""
    if kind not in PROTO_KINDS:
        raise ValueError(f"prototype tensor kind must be one of {PROTO_KINDS}, got {kind!r}")
    if int(cls) < 0:
        raise ValueError(f"class id must be a non-negative int, got {cls!r}")
    return f"proto.{int(cls)}.{kind}"


def parse_proto_name(name: str) -> tuple[int, str] | None:
    """``(class, kind)`` of a ``proto.<class>.<kind>`` name; None for any other name."""
    parts = name.split(".")
    if (len(parts) != 3 or parts[0] != "proto" or not (parts[1].isascii() and parts[1].isdigit())
            or str(int(parts[1])) != parts[1] or parts[2] not in PROTO_KINDS):
        return None
    return int(parts[1]), parts[2]
