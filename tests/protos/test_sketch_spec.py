"""protos.sketch_spec: LayerSketcher.spec() dict ⟷ SketchSpec, mirrored constants, rejections."""

from __future__ import annotations

import pytest
import torch

from protos import sketch_spec, wire
from protos import treelora_fed_pb2 as pb
from protos.wire import ProtocolError


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


@pytest.mark.parametrize("spec,code", [
    (pb.SketchSpec(kind="x", out_dim=4, layer_dims=[2]), "bad-value"),
    (pb.SketchSpec(kind="cauchy", out_dim=0, layer_dims=[2]), "bad-value"),
    (pb.SketchSpec(kind="cauchy", out_dim=4, layer_dims=[2, 0]), "bad-value"),
    (pb.Assignment(), "malformed"),
])
def test_sketch_spec_to_dict_rejects_each_unusable_field(spec, code):
    with pytest.raises(ProtocolError) as e:
        wire.sketch_spec_to_dict(spec)
    assert e.value.code == code


def test_check_sketch_kind():
    for kind in sketch_spec.SKETCH_KINDS:
        sketch_spec.check_sketch_kind(kind)
    with pytest.raises(ProtocolError) as e:
        sketch_spec.check_sketch_kind("")
    assert e.value.code == "bad-value" and "cauchy" in e.value.reason
