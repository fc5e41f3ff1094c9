"""protos.wire: tensor codec, parsing, validation, builders, sketch-spec bridge, and fuzzing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protos import SCHEMA_VERSION
from protos import treelora_fed_pb2 as pb
from protos import wire
from protos.wire import ProtocolError

L = 3
ADAPTER_SHAPES = [((2, 5), (4, 2)), ((2, 5), (4, 2)), ((2, 3), (6, 2))]
S = 8
LEAVES = {"c0/t0", "c1/t0", "c2/t1"}
FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def report_tensors(finished: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for l, (a, b) in enumerate(ADAPTER_SHAPES):
        out[wire.adapter_name(l, "A")] = torch.randn(*a, generator=g)
        out[wire.adapter_name(l, "B")] = torch.randn(*b, generator=g)
        out[wire.sketch_name(l)] = torch.randn(S, generator=g)
        if finished:
            out[wire.final_name(l)] = torch.randn(S, generator=g)
    return out


def sketch_dtype(name: str) -> str:
    return "float32" if name.startswith(("sketch.", "final.")) else "bfloat16"


def good_report(finished: bool = False, **kw):
    tensors = report_tensors(finished)
    arrays, manifest = wire.encode_tensors(tensors, sketch_dtype)
    args = dict(round=7, client_id="c1", task_key="t1", task_index=1, task_finished=finished, num_examples=32,
                steps=10, loss=0.5, pulls=[(0, "c0/t0", 1.25, 4), (2, "c2/t1", 0.0, 6)], manifest=manifest,
                metrics={"acc": 0.9})
    args.update(kw)
    return wire.make_report(**args), arrays, tensors


def check_report(report, arrays, **kw):
    args = dict(num_layers=L, adapter_shapes=ADAPTER_SHAPES, sketch_dim=S, known_leaves=LEAVES)
    args.update(kw)
    return wire.validate_report(report, arrays, **args)


def good_assignment(warm: bool = True):
    g = torch.Generator().manual_seed(1)
    layers = [wire.make_layer_assignment(0, ["c0/t0", "c2/t1"], "n0", 3, True),
              wire.make_layer_assignment(2, ["c1/t0"], "n5", 1, False)]
    tensors = {}
    for la in layers:
        for leaf in la.candidates:
            tensors[wire.cand_name(leaf, la.layer)] = torch.randn(S, generator=g)
        if la.shared:
            a, b = ADAPTER_SHAPES[la.layer]
            tensors[wire.share_name(la.layer, "A")] = torch.randn(*a, generator=g)
            tensors[wire.share_name(la.layer, "B")] = torch.randn(*b, generator=g)
    if warm:
        for l, (a, b) in enumerate(ADAPTER_SHAPES):
            tensors[wire.warm_name(l, "A")] = torch.randn(*a, generator=g)
            tensors[wire.warm_name(l, "B")] = torch.randn(*b, generator=g)
        tensors[wire.WARM_HEAD_WEIGHT] = torch.randn(4, 6, generator=g)
        tensors[wire.WARM_HEAD_BIAS] = torch.randn(4, generator=g)
    arrays, manifest = wire.encode_tensors(tensors, "float16")
    spec = {"kind": "cauchy", "out_dim": S, "seed": 3, "layer_dims": [10, 10, 8], "version": 1}
    msg = wire.make_assignment(round=7, client_id="c1", run_id="r", local_steps=10, lam=0.1, sketch=spec,
                               layers=layers, warm_start_leaf="c0/t0" if warm else "", manifest=manifest)
    return msg, arrays, tensors


def check_assignment(msg, arrays, **kw):
    args = dict(num_layers=L, adapter_shapes=ADAPTER_SHAPES, head_shapes=((4, 6), (4,)))
    args.update(kw)
    return wire.validate_assignment(msg, arrays, **args)


# ------------------------------------------------------------------------------------------------ tensor codec


@pytest.mark.parametrize("dtype,np_dtype,tol", [("float32", np.float32, 2**-24), ("float16", np.float16, 2**-11),
                                                ("bfloat16", np.int16, 2**-8)])
def test_tensor_round_trip(dtype, np_dtype, tol):
    t = torch.randn(3, 4, 5, dtype=torch.float64) * 10
    arr, info = wire.encode_tensor(t, dtype, name="x")
    assert arr.dtype == np_dtype and arr.shape == (3, 4, 5)
    assert info.name == "x" and list(info.shape) == [3, 4, 5] and info.dtype == dtype
    back = wire.decode_tensor(arr, info)
    assert back.dtype == torch.float32 and back.shape == t.shape
    rel = ((back.double() - t).abs() / t.abs()).max().item()
    assert rel <= tol


def test_bf16_is_an_int16_view_of_torch_bfloat16():
    t = torch.tensor([1.0, -2.5, 3.14159, 1e-20, 6e37])
    arr, info = wire.encode_tensor(t)  # default: bfloat16
    assert info.dtype == "bfloat16"
    np.testing.assert_array_equal(arr, t.to(torch.bfloat16).view(torch.int16).numpy())
    assert torch.equal(wire.decode_tensor(arr, info), t.to(torch.bfloat16).float())


@FUZZ
@given(st.lists(st.floats(min_value=-2.0**126, max_value=2.0**126, width=32, allow_subnormal=False)
                .filter(lambda x: x == 0 or abs(x) >= 1e-37), min_size=1, max_size=64))
def test_bf16_relative_error_bound(values):
    t = torch.tensor(values, dtype=torch.float32)
    arr, info = wire.encode_tensor(t, "bfloat16")
    back = wire.decode_tensor(arr, info)
    err = (back.double() - t.double()).abs()
    assert bool((err <= t.double().abs() * 2**-8).all())


def test_encode_does_not_alias_and_handles_odd_inputs():
    t = torch.zeros(4, requires_grad=True)
    arr, _ = wire.encode_tensor(t, "float32")
    with torch.no_grad():
        t.add_(1)
    assert (arr == 0).all()
    arr, info = wire.encode_tensor(torch.arange(12.0).reshape(3, 4).t(), "float32")  # non-contiguous
    assert wire.decode_tensor(arr, info).tolist() == torch.arange(12.0).reshape(3, 4).t().tolist()
    arr, info = wire.encode_tensor(torch.tensor(2.0), "bfloat16")  # 0-d
    assert arr.shape == () and wire.decode_tensor(arr, info).item() == 2.0
    arr, info = wire.encode_tensor(torch.zeros(0, 3), "float16")  # empty
    assert wire.decode_tensor(arr, info).shape == (0, 3)


def test_decode_accepts_big_endian_and_read_only_arrays():
    t = torch.randn(5)
    arr, info = wire.encode_tensor(t, "float32")
    be = arr.astype(">f4")
    be.flags.writeable = False
    assert torch.equal(wire.decode_tensor(be, info), t)


def test_encode_errors():
    with pytest.raises(ProtocolError) as e:
        wire.encode_tensor(torch.ones(2), "int8")
    assert e.value.code == "bad-dtype"
    with pytest.raises(ProtocolError) as e:
        wire.encode_tensor(torch.ones(2, dtype=torch.int64), "float32")
    assert e.value.code == "bad-dtype"
    with pytest.raises(ProtocolError) as e:
        wire.encode_tensor(torch.tensor([1.0, math.nan]), "float32")
    assert e.value.code == "non-finite"
    with pytest.raises(ProtocolError) as e:
        wire.encode_tensor(torch.tensor([1e6]), "float16", name="big")
    assert e.value.code == "non-finite" and "overflows" in str(e.value) and "big" in str(e.value)
    with pytest.raises(TypeError):
        wire.encode_tensor(np.ones(2), "float32")


def test_validate_tensors_round_trip_and_order():
    tensors = {"b": torch.randn(2, 3), "a": torch.randn(4)}
    arrays, manifest = wire.encode_tensors(tensors, "float32")
    out = wire.validate_tensors(arrays, manifest, expected={"a": (4,), "b": (2, 3)})
    assert list(out) == ["b", "a"]
    assert all(torch.equal(out[k], tensors[k]) for k in tensors)
    out = wire.validate_tensors(arrays, manifest, expected={"a": None, "b": (2, 3)})  # None: any shape
    assert set(out) == {"a", "b"}


def test_validate_tensors_accepts_objects_with_numpy_method():
    class FakeFlowerArray:
        def __init__(self, a):
            self._a = a

        def numpy(self):
            return self._a

    arrays, manifest = wire.encode_tensors({"x": torch.ones(3)}, "bfloat16")
    out = wire.validate_tensors({"x": FakeFlowerArray(arrays["x"])}, manifest)
    assert out["x"].tolist() == [1.0, 1.0, 1.0]


# ------------------------------------------------------------------------------------------------ messages


def test_report_round_trip_and_validation():
    for finished in (False, True):
        report, arrays, tensors = good_report(finished)
        data = wire.serialize(report)
        parsed = wire.parse_report(data)
        assert parsed == report and parsed.version == SCHEMA_VERSION
        out = check_report(parsed, arrays, expected_round=7, expected_client="c1")
        assert set(out) == set(tensors)
        for name, t in tensors.items():
            tol = 0 if sketch_dtype(name) == "float32" else 2**-8
            assert torch.allclose(out[name], t, rtol=tol, atol=0)
        assert check_report(data, arrays).keys() == out.keys()  # bytes accepted too


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


def test_protocol_error_pickles():
    import pickle

    e = pickle.loads(pickle.dumps(ProtocolError("too-large", "x")))
    assert (e.code, e.reason) == ("too-large", "x")


def test_serialize_is_deterministic():
    r1 = wire.make_report(round=1, client_id="c", task_key="t", num_examples=1, steps=1, loss=0.0,
                          metrics={"b": 1.0, "a": 2.0})
    r2 = wire.make_report(round=1, client_id="c", task_key="t", num_examples=1, steps=1, loss=0.0,
                          metrics={"a": 2.0, "b": 1.0})
    assert wire.serialize(r1) == wire.serialize(r2)


# ------------------------------------------------------------------------------------------------ sketch spec


def test_sketch_spec_bridge_matches_layer_sketcher():
    from treelora import sketch as tsk

    assert wire.SKETCH_SPEC_VERSION == tsk.SPEC_VERSION and wire.SKETCH_KINDS == tsk.KINDS
    for kind in tsk.KINDS:
        sk = tsk.LayerSketcher([16, 16, 24], out_dim=12, kind=kind, seed=2**40 + 5)
        spec = wire.sketch_spec_from_dict(sk.spec())
        back = pb.SketchSpec.FromString(spec.SerializeToString())
        d = wire.sketch_spec_to_dict(back)
        assert d == sk.spec()
        rebuilt = tsk.LayerSketcher.from_spec(d)
        x = torch.randn(16)
        assert torch.equal(rebuilt.layer(0).apply(x), sk.layer(0).apply(x))


@pytest.mark.parametrize("mutate,code", [
    (lambda d: d.update(version=2), "bad-version"),
    (lambda d: d.update(kind="laplace"), "bad-value"),
    (lambda d: d.update(seed=-1), "bad-value"),
    (lambda d: d.update(seed=2**64), "bad-value"),
    (lambda d: d.update(out_dim=0), "bad-value"),
    (lambda d: d.update(out_dim=True), "bad-value"),
    (lambda d: d.update(layer_dims=[]), "bad-value"),
    (lambda d: d.update(layer_dims=[4, "8"]), "bad-value"),
    (lambda d: d.pop("seed"), "malformed"),
    (lambda d: d.update(extra=1), "malformed"),
])
def test_sketch_spec_from_dict_rejects(mutate, code):
    d = {"kind": "gaussian", "out_dim": 4, "seed": 0, "layer_dims": [4, 8], "version": 1}
    mutate(d)
    with pytest.raises(ProtocolError) as e:
        wire.sketch_spec_from_dict(d)
    assert e.value.code == code


def test_sketch_spec_to_dict_rejects_unusable_spec():
    with pytest.raises(ProtocolError) as e:
        wire.sketch_spec_to_dict(pb.SketchSpec(kind="cauchy", out_dim=4, layer_dims=[]))
    assert e.value.code == "bad-value"


# ------------------------------------------------------------------------------------------------ every code


def _report_case(mutate, **check_kw):
    def run():
        report, arrays, _ = good_report(finished=False)
        mutate(report, arrays)
        check_report(report, arrays, **check_kw)
    return run


def _tensor_case(mutate):
    def run():
        arrays, manifest = wire.encode_tensors({"x": torch.ones(2, 3), "y": torch.ones(4)}, "bfloat16")
        manifest = list(manifest)
        mutate(arrays, manifest)
        wire.validate_tensors(arrays, manifest, max_bytes=1024)
    return run


def _assign_case(mutate, **kw):
    def run():
        msg, arrays, _ = good_assignment(True)
        mutate(msg, arrays)
        check_assignment(msg, arrays, **kw)
    return run


def _set(obj, **kw):
    for k, v in kw.items():
        setattr(obj, k, v)


CASES = {
    # parse_*
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
    # decode_tensor / validate_tensors
    "decode-bad-dtype": ("bad-dtype", lambda: wire.decode_tensor(
        np.zeros(2, np.float32), pb.TensorInfo(name="x", shape=[2], dtype="float64"))),
    "decode-dtype-mismatch": ("bad-dtype", lambda: wire.decode_tensor(
        np.zeros(2, np.float32), pb.TensorInfo(name="x", shape=[2], dtype="bfloat16"))),
    "decode-shape": ("bad-shape", lambda: wire.decode_tensor(
        np.zeros(2, np.float32), pb.TensorInfo(name="x", shape=[3], dtype="float32"))),
    "decode-nan-bits": ("non-finite", lambda: wire.decode_tensor(
        np.array([0x7FC0], np.int16), pb.TensorInfo(name="x", shape=[1], dtype="bfloat16"))),
    "decode-not-array": ("malformed", lambda: wire.decode_tensor(
        [1.0], pb.TensorInfo(name="x", shape=[1], dtype="float32"))),
    "tensors-missing": ("missing-tensor", _tensor_case(lambda a, m: a.pop("x"))),
    "tensors-extra": ("unexpected-tensor", _tensor_case(lambda a, m: a.update(z=np.zeros(1, np.int16)))),
    "tensors-nonstr-key": ("unexpected-tensor", _tensor_case(lambda a, m: a.update({3: a["x"]}))),
    "tensors-dup-manifest": ("malformed", _tensor_case(lambda a, m: m.append(m[0]))),
    "tensors-empty-name": ("malformed", _tensor_case(lambda a, m: m.append(pb.TensorInfo(dtype="float32")))),
    "tensors-neg-dim": ("bad-shape", _tensor_case(lambda a, m: m[0].shape.__setitem__(0, -2))),
    "tensors-too-large-declared": ("too-large", _tensor_case(lambda a, m: m[0].shape.__setitem__(0, 2**62))),
    "tensors-too-large": ("too-large", _tensor_case(lambda a, m: (
        a.update(x=np.zeros((200, 3), np.int16)), m[0].shape.__setitem__(0, 200)))),
    "tensors-inf": ("non-finite", _tensor_case(lambda a, m: a["y"].__setitem__(1, 0x7F80))),
    "tensors-not-mapping": ("malformed", lambda: wire.validate_tensors([np.zeros(1)], [])),
    "tensors-bad-manifest": ("malformed", lambda: wire.validate_tensors({}, [1])),
    # validate_report
    "report-version": ("bad-version", _report_case(lambda r, a: _set(r, version=3))),
    "report-round": ("bad-round", _report_case(lambda r, a: None, expected_round=8)),
    "report-client": ("bad-value", _report_case(lambda r, a: None, expected_client="c9")),
    "report-empty-client": ("bad-value", _report_case(lambda r, a: _set(r, client_id=""))),
    "report-empty-task": ("bad-value", _report_case(lambda r, a: _set(r, task_key=""))),
    "report-zero-examples": ("bad-value", _report_case(lambda r, a: _set(r, num_examples=0))),
    "report-nan-loss": ("non-finite", _report_case(lambda r, a: _set(r, loss=math.inf))),
    "report-nan-metric": ("non-finite", _report_case(lambda r, a: r.metrics.__setitem__("acc", math.nan))),
    "report-pull-layer": ("bad-layer", _report_case(lambda r, a: _set(r.pulls[0], layer=L))),
    "report-pull-leaf": ("unknown-leaf", _report_case(lambda r, a: _set(r.pulls[0], leaf="c9/t9"))),
    "report-pull-xi-nan": ("non-finite", _report_case(lambda r, a: _set(r.pulls[0], xi_sum=math.nan))),
    "report-pull-xi-neg": ("bad-value", _report_case(lambda r, a: _set(r.pulls[0], xi_sum=-0.5))),
    "report-pull-count": ("bad-value", _report_case(lambda r, a: _set(r.pulls[0], count=0))),
    "report-pull-dup": ("malformed", _report_case(lambda r, a: r.pulls.append(r.pulls[0]))),
    "report-finished-without-final": ("missing-tensor", _report_case(lambda r, a: _set(r, task_finished=True))),
    "report-final-when-unfinished": ("unexpected-tensor", _report_case(lambda r, a: (
        r.manifest.append(pb.TensorInfo(name="final.0", shape=[S], dtype="float32")),
        a.update({"final.0": np.zeros(S, np.float32)})))),
    "report-missing-adapter": ("missing-tensor", _report_case(lambda r, a: (
        a.pop("adapter.1.B"), r.manifest.__delitem__([i.name for i in r.manifest].index("adapter.1.B"))))),
    "report-undeclared-array": ("unexpected-tensor", _report_case(lambda r, a: a.update(junk=np.zeros(1)))),
    "report-adapter-shape": ("bad-shape", _report_case(lambda r, a: (
        r.manifest[0].shape.__setitem__(slice(None), [5, 2]), a.update({r.manifest[0].name: np.zeros((5, 2), np.int16)})))),
    "report-sketch-dtype": ("bad-dtype", _report_case(lambda r, a: a.update(
        {"sketch.0": a["sketch.0"].astype(np.float64)}))),
    "report-sketch-nan": ("non-finite", _report_case(lambda r, a: a["sketch.2"].__setitem__(3, np.nan))),
    "report-too-large": ("too-large", _report_case(lambda r, a: None, max_bytes=100)),
    "report-not-a-report": ("malformed", lambda: check_report(pb.Assignment(version=1), {})),
    "report-bad-bytes": ("malformed", lambda: check_report(b"\x0a\xff", {})),
    # validate_assignment
    "assign-version": ("bad-version", _assign_case(lambda m, a: _set(m, version=0))),
    "assign-client": ("bad-value", _assign_case(lambda m, a: None, expected_client="c2")),
    "assign-kind": ("bad-value", _assign_case(lambda m, a: _set(m.sketch, kind="x"))),
    "assign-sketch-dim": ("bad-value", _assign_case(lambda m, a: None, sketch_dim=S + 1)),
    "assign-layer-dims": ("bad-value", _assign_case(lambda m, a: m.sketch.layer_dims.append(4))),
    "assign-lam-nan": ("non-finite", _assign_case(lambda m, a: _set(m, lam=math.nan))),
    "assign-lam-neg": ("bad-value", _assign_case(lambda m, a: _set(m, lam=-1.0))),
    "assign-no-steps": ("bad-value", _assign_case(lambda m, a: _set(m, local_steps=0))),
    "assign-layer-range": ("bad-layer", _assign_case(lambda m, a: _set(m.layers[1], layer=L))),
    "assign-layer-dup": ("bad-layer", _assign_case(lambda m, a: _set(m.layers[1], layer=0))),
    "assign-dup-cand": ("bad-value", _assign_case(lambda m, a: m.layers[0].candidates.append("c0/t0"))),
    "assign-group-size": ("bad-value", _assign_case(lambda m, a: _set(m.layers[0], group_size=0))),
    "assign-missing-share": ("missing-tensor", _assign_case(lambda m, a: _set(m.layers[1], shared=True))),
    "assign-head-shape": ("bad-shape", _assign_case(lambda m, a: None, head_shapes=((4, 7), (4,)))),
    "assign-no-warm": ("unexpected-tensor", _assign_case(lambda m, a: _set(m, warm_start_leaf=""))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_protocol_error_codes(case):
    code, run = CASES[case]
    with pytest.raises(ProtocolError) as e:
        run()
    assert e.value.code == code, str(e.value)
    assert e.value.code in wire.ERROR_CODES and str(e.value).startswith(f"[{code}] ")


def test_every_error_code_is_exercised():
    assert {code for code, _ in CASES.values()} == wire.ERROR_CODES - {"internal"}


def test_config_errors_are_not_protocol_errors():
    report, arrays, _ = good_report()
    with pytest.raises(ValueError) as e:
        check_report(report, arrays, adapter_shapes=ADAPTER_SHAPES[:2])
    assert not isinstance(e.value, ProtocolError)


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


_weird_values = st.one_of(
    st.none(), st.integers(), st.text(max_size=3), st.just([1.0, 2.0]), st.just(torch.zeros(S)),
    st.builds(lambda n, dt: np.zeros(n, dtype=dt), st.integers(0, 9),
              st.sampled_from([np.float32, np.float16, np.int16, np.float64, np.int8, np.bool_, object,
                               ">f4", ">i2", "U3", [("a", "f4")]])),
    st.builds(lambda n: np.full(n, np.nan, np.float32), st.integers(1, 9)),
)
_floats = st.floats(allow_nan=True, allow_infinity=True)
_mutation = st.one_of(
    st.tuples(st.just("drop-array"), st.integers(0, 100)),
    st.tuples(st.just("set-array"), st.integers(0, 100), _weird_values),
    st.tuples(st.just("new-array"), st.one_of(st.text(max_size=12), st.integers(), st.none()), _weird_values),
    st.tuples(st.just("poke"), st.integers(0, 100), st.integers(0, 20), st.integers(-2**15, 2**15 - 1)),
    st.tuples(st.just("drop-info"), st.integers(0, 100)),
    st.tuples(st.just("info-shape"), st.integers(0, 100), st.lists(st.integers(-2**63, 2**63 - 1), max_size=4)),
    st.tuples(st.just("info-dtype"), st.integers(0, 100), st.text(max_size=9)),
    st.tuples(st.just("info-name"), st.integers(0, 100), st.text(max_size=12)),
    st.tuples(st.just("field"), st.sampled_from(["round", "num_examples", "steps", "task_index"]),
              st.integers(0, 2**32 - 1)),
    st.tuples(st.just("float"), st.sampled_from(["loss"]), _floats),
    st.tuples(st.just("text"), st.sampled_from(["client_id", "task_key", "run_id"]), st.text(max_size=5)),
    st.tuples(st.just("finished"), st.booleans()),
    st.tuples(st.just("version"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("pull"), st.integers(0, 2**32 - 1), st.sampled_from(sorted(LEAVES) + ["", "zz"]),
              _floats, st.integers(0, 2**32 - 1)),
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
    assert set(out) == set(wire.expected_report_tensors(num_layers=L, adapter_shapes=ADAPTER_SHAPES,
                                                        sketch_dim=S, task_finished=final))
    assert all(t.dtype == torch.float32 and bool(torch.isfinite(t).all()) for t in out.values())
