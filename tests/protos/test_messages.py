"""protos.messages: deterministic serialization, parse_* on arbitrary bytes (fuzzed), and the builders."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protos import SCHEMA_VERSION, messages, wire
from protos import treelora_fed_pb2 as pb
from protos.wire import ProtocolError

from .samples import FUZZ, check_case, good_assignment, good_report


def test_report_and_assignment_round_trip_through_bytes():
    for finished in (False, True):
        report, _, _ = good_report(finished)
        parsed = wire.parse_report(wire.serialize(report))
        assert parsed == report and parsed.version == SCHEMA_VERSION
    for warm in (True, False):
        msg, _, _ = good_assignment(warm)
        assert wire.parse_assignment(wire.serialize(msg)) == msg


def test_eval_checkpoint_error_round_trips():
    ev = wire.make_eval(round=3, client_id="c2", task_keys=["t0", "t1"], accuracies=[0.5, 0.75])
    back = wire.parse_eval(wire.serialize(ev))
    assert list(back.accuracies) == [0.5, 0.75] and back.tasks_seen == 2
    ck = wire.make_checkpoint(round=4, run_id="r", tree=b"\x80\x02torch", bandit={"n": {"c0/t0": 3}},
                              leaves=[dict(key="c0/t0", client_id="c0", task_key="t0", adapter_file="a.pt",
                                           num_examples=10)], config={"lr": 0.001}, created_unix=1.7e9)
    back = wire.parse_checkpoint(wire.serialize(ck))
    assert back == ck and json.loads(back.bandit) == {"n": {"c0/t0": 3}} and back.config["lr"] == "0.001"
    err = ProtocolError("unknown-leaf", "leaf 'x' is not in the tree")
    back = wire.parse_error(wire.serialize(wire.error_reply(err)))
    assert (back.code, back.reason) == ("unknown-leaf", "leaf 'x' is not in the tree")
    assert wire.error_reply(RuntimeError("boom")).code == "internal"
    assert str(err) == "[unknown-leaf] leaf 'x' is not in the tree" and isinstance(err, ValueError)


def test_serialize_is_deterministic():
    r1 = wire.make_report(round=1, client_id="c", task_key="t", num_examples=1, steps=1, loss=0.0,
                          metrics={"b": 1.0, "a": 2.0})
    r2 = wire.make_report(round=1, client_id="c", task_key="t", num_examples=1, steps=1, loss=0.0,
                          metrics={"a": 2.0, "b": 1.0})
    assert wire.serialize(r1) == wire.serialize(r2)


def test_builders_accept_plain_values():
    info = wire.make_tensor_info("x", (2, 3), "float16")
    assert (info.name, list(info.shape), info.dtype) == ("x", [2, 3], "float16")
    with pytest.raises(ProtocolError) as e:
        wire.make_tensor_info("x", (2,), "float64")
    assert e.value.code == "bad-dtype"
    a = wire.make_assignment(round=1, client_id="c", local_steps=1, lam=0.0,
                             sketch=wire.make_sketch_spec("gaussian", 4, 1, [2, 2]),
                             layers=[dict(layer=1, candidates=["k"], shared=True)],
                             manifest=[dict(name="cand.k.1", shape=[4], dtype="float32"),
                                       ("share.1.A", [1], "float32")])
    assert a.version == SCHEMA_VERSION and a.layers[0].shared
    assert [i.name for i in a.manifest] == ["cand.k.1", "share.1.A"]
    r = wire.make_report(round=1, client_id="c", task_key="t", num_examples=1, steps=1, loss=0.0,
                         pulls=[wire.make_pull(0, "k", 1.0, 2), dict(layer=1, leaf="k", xi_sum=0.5, count=1)])
    assert [(p.layer, p.count) for p in r.pulls] == [(0, 2), (1, 1)]
    assert wire.make_checkpoint(round=1, bandit='{"a": 1}').bandit == b'{"a": 1}'
    assert wire.make_leaf_record("k", "c", "t").key == "k"


def test_message_size_limits():
    assert messages.DEFAULT_MAX_MESSAGE_BYTES == 16 << 20 and messages.DEFAULT_MAX_CHECKPOINT_BYTES == 1 << 30
    big = wire.serialize(pb.ErrorReply(version=1, reason="x" * 100))
    assert wire.parse_error(big, max_bytes=None).reason == "x" * 100


# ------------------------------------------------------------------------------------------------ every code


CASES = {
    "parse-garbage": ("malformed", lambda: wire.parse_report(b"\xff\xff\xff\xff")),
    "parse-not-bytes": ("malformed", lambda: wire.parse_assignment("text")),
    "parse-bad-utf8": ("malformed", lambda: wire.parse_report(b"\x2a\x02\xff\xfe")),  # task_key = invalid UTF-8
    "parse-no-version": ("bad-version", lambda: wire.parse_eval(b"")),
    "parse-version-2": ("bad-version", lambda: wire.parse_checkpoint(
        pb.Checkpoint(version=2).SerializeToString())),
    "parse-wrong-type": ("bad-version", lambda: wire.parse_assignment(
        pb.ErrorReply(code="x").SerializeToString())),
    "parse-too-large": ("too-large", lambda: wire.parse_report(b"\x08\x01" * 100, max_bytes=10)),
    "eval-length-mismatch": ("malformed", lambda: wire.parse_eval(
        pb.EvalReport(version=1, client_id="c", task_keys=["a"], accuracies=[]).SerializeToString())),
    "eval-nan": ("non-finite", lambda: wire.parse_eval(
        pb.EvalReport(version=1, client_id="c", task_keys=["a"], accuracies=[math.nan]).SerializeToString())),
    "eval-negative": ("bad-value", lambda: wire.parse_eval(
        pb.EvalReport(version=1, client_id="c", task_keys=["a"], accuracies=[-1]).SerializeToString())),
    "eval-dup-keys": ("malformed", lambda: wire.parse_eval(
        pb.EvalReport(version=1, client_id="c", task_keys=["a", "a"], accuracies=[1, 1]).SerializeToString())),
    "ckpt-dup-leaf": ("malformed", lambda: wire.parse_checkpoint(wire.serialize(wire.make_checkpoint(
        round=1, leaves=[dict(key="a", client_id="c", task_key="t")] * 2)))),
    "ckpt-bad-json": ("malformed", lambda: wire.parse_checkpoint(wire.serialize(wire.make_checkpoint(
        round=1, bandit=b"{not json")))),
    "ckpt-nan-time": ("non-finite", lambda: wire.parse_checkpoint(wire.serialize(wire.make_checkpoint(
        round=1, created_unix=math.nan)))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_protocol_error_codes(case):
    check_case(*CASES[case])


# ------------------------------------------------------------------------------------------------ fuzzing

PARSERS = [wire.parse_assignment, wire.parse_report, wire.parse_eval, wire.parse_checkpoint, wire.parse_error]


@FUZZ
@given(st.binary(max_size=512), st.sampled_from(PARSERS))
def test_fuzz_parsers_random_bytes(data, parse):
    try:
        msg = parse(data)
    except ProtocolError:
        return
    assert msg.version == SCHEMA_VERSION


_VALID_REPORT_BYTES = wire.serialize(good_report(True)[0])


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(_VALID_REPORT_BYTES) - 1), st.integers(0, 255)), max_size=8),
       st.sampled_from(PARSERS))
def test_fuzz_parsers_flipped_bytes(flips, parse):
    data = bytearray(_VALID_REPORT_BYTES)
    for pos, val in flips:
        data[pos] = val
    try:
        parse(bytes(data))
    except ProtocolError:
        pass
