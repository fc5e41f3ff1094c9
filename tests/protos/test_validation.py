"""protos.validation: validate_report (server) and validate_assignment (client), every rejection, and fuzzing.

The real server's messages are validated in test_server_messages.py; here the validators meet hand-built ones.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from protos import treelora_fed_pb2 as pb
from protos import wire
from protos.wire import ProtocolError

from .samples import (
    ADAPTER_SHAPES,
    FUZZ,
    HEAD_SHAPES,
    LEAVES,
    L,
    S,
    check_assignment,
    check_case,
    check_report,
    good_assignment,
    good_report,
    set_fields,
    sketch_dtype,
)

# ------------------------------------------------------------------------------------------------ validate_report


def test_report_round_trip_and_validation():
    for finished in (False, True):
        report, arrays, tensors = good_report(finished)
        data = wire.serialize(report)
        parsed = wire.parse_report(data)
        assert parsed == report
        out = check_report(parsed, arrays, expected_round=7, expected_client="c1")
        assert set(out) == set(tensors)
        for name, t in tensors.items():
            tol = 0 if sketch_dtype(name) == "float32" else 2**-8
            assert torch.allclose(out[name], t, rtol=tol, atol=0)
        assert check_report(data, arrays).keys() == out.keys()  # bytes accepted too


def test_report_without_sketches_for_fedavg():
    report, arrays, tensors = good_report(True)
    keep = {n for n in tensors if n.startswith("adapter.")}
    del report.manifest[:]
    report.manifest.extend(wire.encode_tensors({n: tensors[n] for n in keep}, "bfloat16")[1])
    out = check_report(report, {n: a for n, a in arrays.items() if n in keep}, with_sketches=False)
    assert set(out) == keep
    with pytest.raises(ProtocolError) as e:
        check_report(*good_report(False)[:2], with_sketches=False)
    assert e.value.code == "unexpected-tensor"


def test_config_errors_are_not_protocol_errors():
    report, arrays, _ = good_report()
    with pytest.raises(ValueError) as e:
        check_report(report, arrays, adapter_shapes=ADAPTER_SHAPES[:2])
    assert not isinstance(e.value, ProtocolError)


# ------------------------------------------------------------------------------------------------ validate_assignment


def test_assignment_round_trip_and_validation():
    for warm in (True, False):
        msg, arrays, tensors = good_assignment(warm)
        parsed = wire.parse_assignment(wire.serialize(msg))
        assert parsed == msg
        out = check_assignment(parsed, arrays, expected_client="c1", sketch_dim=S)
        assert set(out) == set(tensors)
        assert wire.sketch_spec_to_dict(parsed.sketch)["layer_dims"] == [10, 10, 8]
    msg, arrays, _ = good_assignment(True)
    assert check_assignment(msg, arrays, head_shapes=None).keys() == set(arrays)  # head shape unchecked
    assert check_assignment(wire.serialize(msg), arrays).keys() == set(arrays)  # bytes accepted too


def server_like_assignment():
    """An Assignment shaped like server.state.GlobalState.assignment() builds one: a SketchSpec without
    layer_dims, a share without a tree node (group_size 0), a layer with no candidate, a warm start without
    head, a client_id the server does not know yet (""), float32 candidates and bf16 adapters."""
    g = torch.Generator().manual_seed(2)
    tensors = {wire.cand_name("c0/t0", 1): torch.randn(S, generator=g)}
    for l, (a, b) in enumerate(ADAPTER_SHAPES):
        tensors[wire.warm_name(l, "A")], tensors[wire.warm_name(l, "B")] = torch.randn(a), torch.randn(b)
    tensors[wire.share_name(0, "A")], tensors[wire.share_name(0, "B")] = (torch.randn(s) for s in ADAPTER_SHAPES[0])
    arrays, manifest = wire.encode_tensors(tensors, lambda n: "float32" if n.startswith("cand.") else "bfloat16")
    layers = [pb.LayerAssignment(layer=0, shared=True), pb.LayerAssignment(layer=1, candidates=["c0/t0"],
                                                                           group_node="0", group_size=2),
              pb.LayerAssignment(layer=2, candidates=[], group_node="0", group_size=2)]
    msg = pb.Assignment(version=1, round=3, run_id="r", client_id="", local_steps=5, lam=0.5, layers=layers,
                        warm_start_leaf="c0/t0", manifest=manifest,
                        sketch=pb.SketchSpec(kind="cauchy", out_dim=S, seed=1234))
    return msg, arrays, tensors


RECEIVER = dict(num_layers=L, adapter_shapes=ADAPTER_SHAPES, sketch_dim=S, sketch_kind="cauchy", sketch_seed=1234)


def test_accepts_what_the_server_builds():
    msg, arrays, tensors = server_like_assignment()
    out = wire.validate_assignment(msg, arrays, **RECEIVER, expected_client="c1")
    assert set(out) == set(tensors)
    again = wire.validate_assignment(wire.serialize(msg), arrays, **RECEIVER, head_shapes=HEAD_SHAPES)
    assert again.keys() == out.keys()
    msg.local_steps = 0  # 0 means the client's own default
    wire.validate_assignment(msg, arrays, **RECEIVER)


def test_accepts_tensor_free_control_messages():
    """``query`` and ``evaluate`` carry GlobalState.control(): no sketch spec, no layers, lam 0, local_steps 0."""
    for client_id in ("c1", ""):
        msg = pb.Assignment(version=1, round=4, run_id="r", client_id=client_id)
        assert wire.validate_assignment(wire.serialize(msg), {}, **RECEIVER, expected_client="c1") == {}


def test_sketch_spec_mismatch_names_both_specs():
    msg, arrays, _ = server_like_assignment()
    for field, value in (("kind", "gaussian"), ("seed", 7), ("out_dim", S + 1)):
        bad = pb.Assignment()
        bad.CopyFrom(msg)
        setattr(bad.sketch, field, value)
        with pytest.raises(ProtocolError) as e:
            wire.validate_assignment(bad, arrays, **RECEIVER)
        s = bad.sketch
        assert e.value.code == "bad-value"
        assert e.value.reason == f"sketch spec {s.kind}/{s.out_dim}/{s.seed} differs from this client's cauchy/{S}/1234"


def test_sketch_kind_and_seed_are_compared_only_when_given():
    msg, arrays, _ = server_like_assignment()
    msg.sketch.seed, msg.sketch.kind = 99, "gaussian"
    wire.validate_assignment(msg, arrays, num_layers=L, adapter_shapes=ADAPTER_SHAPES, sketch_dim=S)
    wire.validate_assignment(msg, arrays, num_layers=L, adapter_shapes=ADAPTER_SHAPES)  # out_dim from the spec


def test_declared_layer_dims_must_fit_the_model():
    msg, arrays, _ = server_like_assignment()
    msg.sketch.layer_dims[:] = [10, 10, 8]
    wire.validate_assignment(msg, arrays, **RECEIVER)
    for dims in ([10, 10], [10, 0, 8]):
        msg.sketch.layer_dims[:] = dims
        with pytest.raises(ProtocolError) as e:
            wire.validate_assignment(msg, arrays, **RECEIVER)
        assert e.value.code == "bad-value"


def test_warm_head_is_optional_but_comes_whole():
    msg, arrays, _ = good_assignment(warm=True, head=False)
    assert wire.WARM_HEAD_WEIGHT not in check_assignment(msg, arrays)
    msg, arrays, _ = good_assignment(warm=True, head=True)
    assert wire.WARM_HEAD_WEIGHT in check_assignment(msg, arrays)
    names = [i.name for i in msg.manifest]
    del msg.manifest[names.index(wire.WARM_HEAD_BIAS)]
    del arrays[wire.WARM_HEAD_BIAS]
    with pytest.raises(ProtocolError) as e:
        check_assignment(msg, arrays)
    assert e.value.code == "missing-tensor" and wire.WARM_HEAD_BIAS in e.value.reason


def test_assignment_config_errors_are_not_protocol_errors():
    msg, arrays, _ = server_like_assignment()
    for bad in (dict(sketch_kind="laplace"), dict(sketch_seed=-1), dict(sketch_dim=0),
                dict(adapter_shapes=ADAPTER_SHAPES[:2])):
        with pytest.raises(ValueError) as e:
            wire.validate_assignment(msg, arrays, **{**RECEIVER, **bad})
        assert not isinstance(e.value, ProtocolError)


def test_expected_assignment_tensors():
    msg, _, tensors = good_assignment(True)
    exp = wire.expected_assignment_tensors(msg, adapter_shapes=ADAPTER_SHAPES, sketch_dim=S)
    assert set(exp) == set(tensors) and exp[wire.WARM_HEAD_WEIGHT] is None
    assert exp["cand.c0/t0.0"] == (S,) and exp["share.0.A"] == (2, 5)


# ------------------------------------------------------------------------------------------------ every code


def _report_case(mutate, **check_kw):
    def run():
        report, arrays, _ = good_report(finished=False)
        mutate(report, arrays)
        check_report(report, arrays, **check_kw)
    return run


def _assign_case(mutate, **kw):
    def run():
        msg, arrays, _ = good_assignment(True)
        mutate(msg, arrays)
        check_assignment(msg, arrays, **kw)
    return run


def _drop(msg, arrays, name):
    del msg.manifest[[i.name for i in msg.manifest].index(name)]
    arrays.pop(name)


_set = set_fields

REPORT_CASES = {
    "report-version": ("bad-version", _report_case(lambda r, a: _set(r, version=3))),
    "report-round": ("bad-round", _report_case(lambda r, a: None, expected_round=8)),
    "report-client": ("bad-identity", _report_case(lambda r, a: None, expected_client="c9")),
    "report-empty-client": ("bad-value", _report_case(lambda r, a: _set(r, client_id=""))),
    "report-empty-task": ("bad-value", _report_case(lambda r, a: _set(r, task_key=""))),
    "report-zero-examples": ("bad-value", _report_case(lambda r, a: _set(r, num_examples=0))),
    "report-nan-loss": ("non-finite", _report_case(lambda r, a: _set(r, loss=math.inf))),
    "report-nan-metric": ("non-finite", _report_case(lambda r, a: r.metrics.__setitem__("train_s", math.nan))),
    "report-pull-layer": ("bad-layer", _report_case(lambda r, a: _set(r.pulls[0], layer=L))),
    "report-pull-leaf": ("unknown-leaf", _report_case(lambda r, a: _set(r.pulls[0], leaf="c9/t9"))),
    "report-pull-xi-nan": ("non-finite", _report_case(lambda r, a: _set(r.pulls[0], xi_sum=math.nan))),
    "report-pull-xi-neg": ("bad-value", _report_case(lambda r, a: _set(r.pulls[0], xi_sum=-0.5))),
    "report-pull-count": ("bad-value", _report_case(lambda r, a: _set(r.pulls[0], count=0))),
    "report-pull-dup": ("malformed", _report_case(lambda r, a: r.pulls.append(r.pulls[0]))),
    "report-finished-without-final": ("missing-tensor", _report_case(lambda r, a: _set(r, task_finished=True))),
    "report-final-when-unfinished": (
        "unexpected-tensor",
        _report_case(
            lambda r, a: (
                r.manifest.append(pb.TensorInfo(name="final.0", shape=[S], dtype="float32")),
                a.update({"final.0": np.zeros(S, np.float32)}),
            )
        ),
    ),
    "report-missing-adapter": (
        "missing-tensor",
        _report_case(
            lambda r, a: (
                a.pop("adapter.1.B"),
                r.manifest.__delitem__([i.name for i in r.manifest].index("adapter.1.B")),
            )
        ),
    ),
    "report-undeclared-array": ("unexpected-tensor", _report_case(lambda r, a: a.update(junk=np.zeros(1)))),
    "report-adapter-shape": (
        "bad-shape",
        _report_case(
            lambda r, a: (
                r.manifest[0].shape.__setitem__(slice(None), [5, 2]),
                a.update({r.manifest[0].name: np.zeros((5, 2), np.int16)}),
            )
        ),
    ),
    "report-sketch-dtype": (
        "bad-dtype",
        _report_case(lambda r, a: a.update({"sketch.0": a["sketch.0"].astype(np.float64)})),
    ),
    "report-sketch-nan": ("non-finite", _report_case(lambda r, a: a["sketch.2"].__setitem__(3, np.nan))),
    "report-too-large": ("too-large", _report_case(lambda r, a: None, max_bytes=100)),
    "report-not-a-report": ("malformed", lambda: check_report(pb.Assignment(version=1), {})),
    "report-bad-bytes": ("malformed", lambda: check_report(b"\x0a\xff", {})),
}

ASSIGN_CASES = {
    # 1. decoding and version
    "assign-version": ("bad-version", _assign_case(lambda m, a: _set(m, version=0))),
    "assign-not-an-assignment": ("malformed", lambda: check_assignment(pb.ClientReport(version=1), {})),
    "assign-bad-bytes": ("malformed", lambda: check_assignment(b"\x0a\xff", {})),
    # 2. addressee
    "assign-client": ("bad-value", _assign_case(lambda m, a: None, expected_client="c2")),
    # 3. layers
    "assign-layer-range": ("bad-layer", _assign_case(lambda m, a: _set(m.layers[1], layer=L))),
    "assign-layer-dup": ("bad-layer", _assign_case(lambda m, a: _set(m.layers[1], layer=0))),
    "assign-dup-cand": ("bad-value", _assign_case(lambda m, a: m.layers[0].candidates.append("c0/t0"))),
    "assign-empty-cand": ("bad-value", _assign_case(lambda m, a: m.layers[1].candidates.append(""))),
    # 4. sketch spec
    "assign-kind": ("bad-value", _assign_case(lambda m, a: _set(m.sketch, kind="x"))),
    "assign-kind-differs": ("bad-value", _assign_case(lambda m, a: None, sketch_kind="gaussian")),
    "assign-seed-differs": ("bad-value", _assign_case(lambda m, a: None, sketch_seed=4)),
    "assign-sketch-dim": ("bad-value", _assign_case(lambda m, a: None, sketch_dim=S + 1)),
    "assign-layer-dims": ("bad-value", _assign_case(lambda m, a: m.sketch.layer_dims.append(4))),
    "assign-layer-dim-zero": ("bad-value", _assign_case(lambda m, a: m.sketch.layer_dims.__setitem__(1, 0))),
    "assign-no-spec-no-dim": ("bad-value", _assign_case(lambda m, a: m.sketch.Clear())),
    # 5. lam
    "assign-lam-nan": ("non-finite", _assign_case(lambda m, a: _set(m, lam=math.nan))),
    "assign-lam-neg": ("bad-value", _assign_case(lambda m, a: _set(m, lam=-1.0))),
    # 6. tensors
    "assign-missing-share": ("missing-tensor", _assign_case(lambda m, a: _set(m.layers[1], shared=True))),
    "assign-lone-head": ("missing-tensor", _assign_case(lambda m, a: _drop(m, a, wire.WARM_HEAD_WEIGHT))),
    "assign-head-shape": ("bad-shape", _assign_case(lambda m, a: None, head_shapes=((4, 7), (4,)))),
    "assign-cand-shape": (
        "bad-shape",
        _assign_case(
            lambda m, a: (
                m.manifest[0].shape.__setitem__(0, S + 1),
                a.update({m.manifest[0].name: np.zeros(S + 1, np.float16)}),
            )
        ),
    ),
    "assign-no-warm": ("unexpected-tensor", _assign_case(lambda m, a: _set(m, warm_start_leaf=""))),
    "assign-undeclared-array": ("unexpected-tensor", _assign_case(lambda m, a: a.update(junk=np.zeros(1)))),
    "assign-dtype": (
        "bad-dtype",
        _assign_case(lambda m, a: a.update({m.manifest[0].name: a[m.manifest[0].name].astype(np.float32)})),
    ),
    "assign-nan": ("non-finite", _assign_case(lambda m, a: a[m.manifest[0].name].__setitem__(0, np.nan))),
    "assign-too-large": ("too-large", _assign_case(lambda m, a: None, max_bytes=100)),
    "assign-dup-manifest": ("malformed", _assign_case(lambda m, a: m.manifest.append(m.manifest[0]))),
}

CASES = {**REPORT_CASES, **ASSIGN_CASES}

# Every code validate_assignment can raise. Not among them: bad-round / stale-round (the round is the client's
# business: ClientNode compares it with its saved state), unknown-leaf (the client does not know the tree),
# internal (never a validation outcome).
ASSIGNMENT_CODES = {
    "bad-version",
    "malformed",
    "too-large",
    "bad-value",
    "bad-layer",
    "non-finite",
    "missing-tensor",
    "unexpected-tensor",
    "bad-shape",
    "bad-dtype",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_protocol_error_codes(case):
    check_case(*CASES[case])


def test_every_assignment_rejection_code_is_exercised():
    assert {code for code, _ in ASSIGN_CASES.values()} == ASSIGNMENT_CODES
    assert ASSIGNMENT_CODES < wire.ERROR_CODES


# ------------------------------------------------------------------------------------------------ fuzzing


_weird_values = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=3),
    st.just([1.0, 2.0]),
    st.just(torch.zeros(S)),
    st.builds(
        lambda n, dt: np.zeros(n, dtype=dt),
        st.integers(0, 9),
        st.sampled_from(
            [np.float32, np.float16, np.int16, np.float64, np.int8, np.bool_, object, ">f4", ">i2", "U3", [("a", "f4")]]
        ),
    ),
    st.builds(lambda n: np.full(n, np.nan, np.float32), st.integers(1, 9)),
)
_floats = st.floats(allow_nan=True, allow_infinity=True)
_mutation = st.one_of(
    st.tuples(st.just("drop-array"), st.integers(0, 100)),
    st.tuples(st.just("set-array"), st.integers(0, 100), _weird_values),
    st.tuples(st.just("new-array"), st.one_of(st.text(max_size=12), st.integers(), st.none()), _weird_values),
    st.tuples(st.just("poke"), st.integers(0, 100), st.integers(0, 20), st.integers(-(2**15), 2**15 - 1)),
    st.tuples(st.just("drop-info"), st.integers(0, 100)),
    st.tuples(st.just("info-shape"), st.integers(0, 100), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)),
    st.tuples(st.just("info-dtype"), st.integers(0, 100), st.text(max_size=9)),
    st.tuples(st.just("info-name"), st.integers(0, 100), st.text(max_size=12)),
    st.tuples(
        st.just("field"), st.sampled_from(["round", "num_examples", "steps", "task_index"]), st.integers(0, 2**32 - 1)
    ),
    st.tuples(st.just("float"), st.sampled_from(["loss"]), _floats),
    st.tuples(st.just("text"), st.sampled_from(["client_id", "task_key", "run_id"]), st.text(max_size=5)),
    st.tuples(st.just("finished"), st.booleans()),
    st.tuples(st.just("version"), st.integers(0, 2**32 - 1)),
    st.tuples(
        st.just("pull"),
        st.integers(0, 2**32 - 1),
        st.sampled_from(sorted(LEAVES) + ["", "zz"]),
        _floats,
        st.integers(0, 2**32 - 1),
    ),
    st.tuples(st.just("metric"), st.text(max_size=4), _floats),
    st.tuples(st.just("as-bytes"), st.integers(0, 300), st.integers(0, 255)),
)


def _apply(mutations, finished):
    report, arrays, _ = good_report(finished)
    arrays = dict(arrays)
    names = list(arrays)
    for m in mutations:
        kind = m[0]
        if kind == "drop-array" and arrays:
            arrays.pop(list(arrays)[m[1] % len(arrays)], None)
        elif kind == "set-array":
            arrays[names[m[1] % len(names)]] = m[2]
        elif kind == "new-array":
            arrays[m[1]] = m[2]
        elif kind == "poke":
            name = names[m[1] % len(names)]
            a = arrays.get(name)
            if isinstance(a, np.ndarray) and a.size and a.dtype == np.int16:
                a = a.copy()
                a.reshape(-1)[m[2] % a.size] = m[3]
                arrays[name] = a
        elif isinstance(report, bytes):
            continue  # serialized already: only the arrays can still change
        elif kind.startswith("info-") or kind == "drop-info":
            if not len(report.manifest):
                continue
            info = report.manifest[m[1] % len(report.manifest)]
            if kind == "drop-info":
                report.manifest.remove(info)
            elif kind == "info-shape":
                info.shape[:] = m[2]
            elif kind == "info-dtype":
                info.dtype = m[2]
            else:
                info.name = m[2]
        elif kind == "field":
            setattr(report, m[1], m[2])
        elif kind in ("float", "text"):
            setattr(report, m[1], m[2])
        elif kind == "finished":
            report.task_finished = m[1]
        elif kind == "version":
            report.version = m[1]
        elif kind == "pull":
            report.pulls.add(layer=m[1], leaf=m[2], xi_sum=m[3], count=m[4])
        elif kind == "metric":
            report.metrics[m[1]] = m[2]
        elif kind == "as-bytes":
            data = bytearray(wire.serialize(report))
            if data:
                data[m[1] % len(data)] = m[2]
            report = bytes(data)
    return report, arrays


@FUZZ
@given(st.lists(_mutation, max_size=5), st.booleans(), st.sampled_from([None, 7]))
def test_fuzz_validate_report_only_raises_protocol_error(mutations, finished, expected_round):
    report, arrays = _apply(mutations, finished)
    try:
        out = check_report(report, arrays, expected_round=expected_round)
    except ProtocolError as e:
        assert e.code in wire.ERROR_CODES
        return
    final = report.task_finished if isinstance(report, pb.ClientReport) else wire.parse_report(report).task_finished
    assert set(out) == set(
        wire.expected_report_tensors(num_layers=L, adapter_shapes=ADAPTER_SHAPES, sketch_dim=S, task_finished=final)
    )
    assert all(t.dtype == torch.float32 and bool(torch.isfinite(t).all()) for t in out.values())


_assign_mutation = st.one_of(
    st.tuples(st.just("drop-array"), st.integers(0, 100)),
    st.tuples(st.just("set-array"), st.integers(0, 100), _weird_values),
    st.tuples(st.just("drop-info"), st.integers(0, 100)),
    st.tuples(st.just("info-shape"), st.integers(0, 100), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)),
    st.tuples(
        st.just("layer"),
        st.integers(0, 5),
        st.lists(st.sampled_from(["", "c0/t0", "c1/t0"]), max_size=3),
        st.booleans(),
    ),
    st.tuples(
        st.just("spec"),
        st.sampled_from(["", "cauchy", "gaussian"]),
        st.integers(0, 2 * S),
        st.integers(0, 5),
        st.lists(st.integers(0, 12), max_size=4),
    ),
    st.tuples(st.just("lam"), _floats),
    st.tuples(st.just("warm"), st.sampled_from(["", "c0/t0"])),
    st.tuples(st.just("as-bytes"), st.integers(0, 300), st.integers(0, 255)),
)


@FUZZ
@given(st.lists(_assign_mutation, max_size=5), st.booleans())
def test_fuzz_validate_assignment_only_raises_protocol_error(mutations, warm):
    msg, arrays, _ = good_assignment(warm)
    names = list(arrays)
    for m in mutations:
        kind = m[0]
        if kind == "drop-array" and arrays:
            arrays.pop(list(arrays)[m[1] % len(arrays)], None)
        elif kind == "set-array" and names:
            arrays[names[m[1] % len(names)]] = m[2]
        elif isinstance(msg, bytes):
            continue
        elif kind in ("drop-info", "info-shape") and len(msg.manifest):
            info = msg.manifest[m[1] % len(msg.manifest)]
            if kind == "drop-info":
                msg.manifest.remove(info)
            else:
                info.shape[:] = m[2]
        elif kind == "layer":
            msg.layers.add(layer=m[1], candidates=m[2], shared=m[3])
        elif kind == "spec":
            msg.sketch.kind, msg.sketch.out_dim, msg.sketch.seed = m[1], m[2], m[3]
            msg.sketch.layer_dims[:] = m[4]
        elif kind == "lam":
            msg.lam = m[1]
        elif kind == "warm":
            msg.warm_start_leaf = m[1]
        elif kind == "as-bytes":
            data = bytearray(wire.serialize(msg))
            data[m[1] % len(data)] = m[2]
            msg = bytes(data)
    try:
        out = check_assignment(msg, arrays, sketch_dim=S, sketch_kind="cauchy", sketch_seed=3)
    except ProtocolError as e:
        assert e.code in wire.ERROR_CODES
        return
    assert all(t.dtype == torch.float32 and bool(torch.isfinite(t).all()) for t in out.values())
