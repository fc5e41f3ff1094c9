"""The contract's error vocabulary: :class:`ProtocolError`, its codes, and the ``ErrorReply`` built from it.

Everything a peer sends that a receiver refuses is rejected with a :class:`ProtocolError` — a ``ValueError``
with a machine-readable ``code`` from :data:`ERROR_CODES` and a human-readable ``reason`` — and never with
another exception, so a receiver can catch exactly one type, keep its state unchanged and answer with
:func:`error_reply`. The codes are part of the wire contract (they travel in ``ErrorReply.code``): add one
here, with a comment saying when it is raised, before any node raises it. See DESIGN.md §3 (repository root).
"""

from __future__ import annotations

from protos import SCHEMA_VERSION
from protos import treelora_fed_pb2 as pb

__all__ = ["ERROR_CODES", "ProtocolError", "error_reply", "make_error"]

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
    "stale-round",        # a round older than the receiver's last one (a client sent an out-of-date assignment)
    "bad-layer",          # layer index out of range or repeated
    "bad-value",          # a field out of its allowed range (counts, sizes, empty ids, negative xi, ...)
    "bad-identity",       # a node reporting as another client than the one it is bound to, or for another client
    "duplicate",          # a second report of one client in one round
    "internal",           # only in ErrorReply: the receiver failed for a reason that is not the sender's fault
})


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


def make_error(code: str, reason: str) -> pb.ErrorReply:
    """An ``ErrorReply`` with ``version`` filled in (``code`` is not checked against :data:`ERROR_CODES`)."""
    return pb.ErrorReply(version=SCHEMA_VERSION, code=code, reason=reason)


def error_reply(exc: BaseException) -> pb.ErrorReply:
    """``ErrorReply`` for any exception: its code for a :class:`ProtocolError`, ``"internal"`` otherwise."""
    if isinstance(exc, ProtocolError):
        return exc.to_reply()
    return make_error("internal", f"{type(exc).__name__}: {exc}")
