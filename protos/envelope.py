"""The Flower envelope: a message's ``RecordDict`` ⟷ (protobuf control bytes, named numpy arrays).

This is the one module of ``protos/`` that imports Flower: it puts the contract's two halves — the serialized
control message (:mod:`protos.messages`) and its tensors (:mod:`protos.codec`, names from :mod:`protos.names`)
— into the ``RecordDict`` a Flower ``Message`` carries, and takes them out again. Both apps use it: the client
(``client/client_app.py``) and the server's round loop (``server/loop.py``). See DESIGN.md §3 (repository root).

A message's content is ``{"control": ConfigRecord{"proto": bytes}, "tensors": ArrayRecord{name: Array}}``; an
error reply is ``{"error": ConfigRecord{"proto": ErrorReply bytes}}``. Anything else is rejected with a
:class:`protos.errors.ProtocolError`. Unpacking does not validate: the arrays still go through the receiver's
validator (:mod:`protos.validation`) before anything uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from protos.errors import ProtocolError, make_error
from protos.messages import parse_error, serialize

__all__ = ["pack", "pack_error", "unpack", "content_nbytes"]

MAX_ERROR_REASON = 2000
"""Characters of an error reason that travel in a :func:`pack_error` reply (the rest is cut)."""


def pack(control: Any, arrays: Mapping[str, np.ndarray] | None = None) -> RecordDict:
    """Content of a message: a serialized protobuf (or its bytes) and its tensors."""
    data = control if isinstance(control, bytes) else serialize(control)
    content = RecordDict({"control": ConfigRecord({"proto": data})})
    content["tensors"] = ArrayRecord({name: Array(np.ascontiguousarray(a)) for name, a in (arrays or {}).items()})
    return content


def pack_error(code: str, reason: str) -> RecordDict:
    """An error reply (the receiver keeps its state unchanged)."""
    msg = make_error(code, reason[:MAX_ERROR_REASON])
    return RecordDict({"error": ConfigRecord({"proto": serialize(msg)})})


def unpack(content: RecordDict) -> tuple[bytes, dict[str, np.ndarray]]:
    """(control bytes, arrays) of a message; an error reply raises ProtocolError with the peer's code and reason."""
    try:
        if "error" in content:
            err = parse_error(bytes(content["error"]["proto"]))
            raise ProtocolError(err.code or "peer-error", f"peer replied with an error: {err.reason}")
        control = content["control"]["proto"]
        tensors = content.get("tensors") if "tensors" in content else None
        arrays = {} if tensors is None else {name: arr.numpy() for name, arr in tensors.items()}
    except ProtocolError:
        raise
    except Exception as exc:  # noqa: BLE001 - any shape of bad content is a protocol error
        raise ProtocolError("malformed", f"message content is not a TreeLoRA-Fed message: {exc}") from exc
    if not isinstance(control, bytes):
        raise ProtocolError("malformed", "control record must hold bytes")
    return control, arrays


def content_nbytes(content: RecordDict) -> int:
    """Bytes a message carries: serialized array payloads plus control bytes."""
    total = 0
    for _, record in content.items():
        if isinstance(record, ArrayRecord):
            total += sum(len(arr.data) for arr in record.values())
        elif isinstance(record, ConfigRecord):
            total += sum(len(v) if isinstance(v, bytes) else 8 for v in record.values())
    return total
