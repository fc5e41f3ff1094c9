"""protos.errors: the error vocabulary of the contract, ErrorReply, and that every code is used and exercised."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

from protos import errors, wire
from protos.wire import ProtocolError

from . import test_codec, test_messages, test_validation

REPO = Path(__file__).resolve().parents[2]

CONTRACT_CODES = {"bad-version", "bad-shape", "bad-dtype", "non-finite", "unknown-leaf", "missing-tensor",
                  "unexpected-tensor", "too-large", "malformed", "bad-round", "stale-round", "bad-layer",
                  "bad-value", "bad-identity", "duplicate", "internal"}


def test_error_codes_are_the_contracts():
    assert errors.ERROR_CODES == CONTRACT_CODES and wire.ERROR_CODES is errors.ERROR_CODES


def test_stale_round_is_a_code_and_travels_in_a_reply():
    assert "stale-round" in wire.ERROR_CODES
    err = ProtocolError("stale-round", "round 2 is older than this client's last round 3")
    back = wire.parse_error(wire.serialize(wire.error_reply(err)))
    assert (back.version, back.code, back.reason) == (1, "stale-round", err.reason)


def test_protocol_error_pickles():
    e = pickle.loads(pickle.dumps(ProtocolError("too-large", "x")))
    assert (e.code, e.reason) == ("too-large", "x")


def test_error_reply_and_make_error():
    assert wire.make_error("bad-value", "r") == errors.ProtocolError("bad-value", "r").to_reply()
    reply = wire.error_reply(KeyError("k"))
    assert (reply.version, reply.code, reply.reason) == (1, "internal", "KeyError: 'k'")


def test_every_error_code_is_exercised():
    """Each code protos/ raises has a test that provokes it; stale-round is the client's own (its real raise is
    tested in test_server_messages.py), duplicate the server's book-keeping (tests/server/test_hostile.py), and
    internal is never a validation outcome."""
    cases = {**test_codec.CASES, **test_messages.CASES, **test_validation.CASES}
    assert {code for code, _ in cases.values()} == wire.ERROR_CODES - {"internal", "stale-round", "duplicate"}


def _raised_codes(path: Path) -> set[str]:
    """String codes given to ProtocolError(...), make_error(...) and pack_error(...) calls in one file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and node.args:
            fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            arg = node.args[0]
            if fn in ("ProtocolError", "make_error", "pack_error") and isinstance(arg, ast.Constant) \
                    and isinstance(arg.value, str):
                out.add(arg.value)
    return out


def test_every_code_raised_anywhere_is_a_contract_code_and_every_code_is_raised():
    raised: dict[str, set[str]] = {}
    for package in ("protos", "client", "server"):
        for path in sorted((REPO / package).rglob("*.py")):
            for code in _raised_codes(path):
                raised.setdefault(code, set()).add(str(path.relative_to(REPO)))
    unknown = {c: sorted(p) for c, p in raised.items() if c not in wire.ERROR_CODES}
    assert not unknown, f"codes raised but not in protos.errors.ERROR_CODES: {unknown}"
    assert set(raised) == wire.ERROR_CODES, f"codes nobody raises: {sorted(wire.ERROR_CODES - set(raised))}"
    assert "client/node.py" in raised["stale-round"]
