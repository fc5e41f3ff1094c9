"""protos.codec: tensor encoding/decoding (bf16 as int16 bit patterns), validate_tensors, and its error codes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from protos import codec, wire
from protos import treelora_fed_pb2 as pb
from protos.wire import ProtocolError

from .samples import FUZZ, check_case


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


def test_encode_tensors_takes_a_dtype_per_name():
    arrays, manifest = wire.encode_tensors({"sketch.0": torch.ones(2), "adapter.0.A": torch.ones(2)},
                                           lambda n: "float32" if n.startswith("sketch.") else "bfloat16")
    assert [(i.name, i.dtype) for i in manifest] == [("sketch.0", "float32"), ("adapter.0.A", "bfloat16")]
    assert arrays["sketch.0"].dtype == np.float32 and arrays["adapter.0.A"].dtype == np.int16


def test_wire_dtypes_and_limit():
    assert codec.WIRE_DTYPES == ("float32", "float16", "bfloat16")
    assert codec.DEFAULT_MAX_TENSOR_BYTES == 64 << 20
    assert codec.check_wire_dtype("float16") == "float16"


# ------------------------------------------------------------------------------------------------ every code


def _tensor_case(mutate):
    def run():
        arrays, manifest = wire.encode_tensors({"x": torch.ones(2, 3), "y": torch.ones(4)}, "bfloat16")
        manifest = list(manifest)
        mutate(arrays, manifest)
        wire.validate_tensors(arrays, manifest, max_bytes=1024)
    return run


CASES = {
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
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_protocol_error_codes(case):
    check_case(*CASES[case])


def test_bfloat16_decode_matches_torch_on_every_bit_pattern():
    """The numpy widening of bf16 bit patterns is torch's bf16 -> float32 cast, bit for bit, for all 65536 patterns
    and in either byte order; the 256 non-finite ones (exponent all ones: 2 infinities, 254 NaNs) are refused."""
    bits = np.arange(-(2**15), 2**15, dtype=np.int16)
    ref = torch.from_numpy(bits.copy()).view(torch.bfloat16).to(torch.float32)
    finite = torch.isfinite(ref).numpy()
    assert int((~finite).sum()) == 256
    ok = bits[finite]
    info = pb.TensorInfo(name="x", dtype="bfloat16", shape=[ok.size])
    got = wire.decode_tensor(ok, info)
    assert torch.equal(got.view(torch.int32), ref[torch.from_numpy(finite)].view(torch.int32))
    assert torch.equal(wire.decode_tensor(ok.astype(">i2"), info).view(torch.int32), got.view(torch.int32))
    for bad in bits[~finite][::37]:
        with pytest.raises(ProtocolError, match="non-finite"):
            wire.decode_tensor(np.array([bad], dtype=np.int16), pb.TensorInfo(name="y", dtype="bfloat16", shape=[1]))
