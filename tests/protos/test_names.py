"""protos.names: the tensor names, spelled as the table in its docstring says."""

from __future__ import annotations

import re

import pytest

from protos import names, wire


def test_names_follow_the_table():
    assert names.adapter_name(0, "A") == "adapter.0.A" and names.adapter_name(11, "B") == "adapter.11.B"
    assert names.sketch_name(3) == "sketch.3"
    assert names.final_name(3) == "final.3"
    assert names.cand_name("c3/t1", 2) == "cand.c3/t1.2"
    assert names.share_name(1, "A") == "share.1.A"
    assert names.warm_name(1, "B") == "warm.1.B"
    assert (names.WARM_HEAD_WEIGHT, names.WARM_HEAD_BIAS) == ("warm.head.weight", "warm.head.bias")


def test_layer_is_written_in_decimal():
    import numpy as np

    assert names.sketch_name(np.int64(7)) == "sketch.7" and names.adapter_name(True, "A") == "adapter.1.A"


@pytest.mark.parametrize("fn", [names.adapter_name, names.share_name, names.warm_name])
def test_adapter_part_is_A_or_B(fn):
    with pytest.raises(ValueError):
        fn(0, "C")


def test_every_name_of_the_table_is_documented_and_re_exported():
    table = set(re.findall(r"^``([a-z]+)\.", names.__doc__, re.M))
    assert table == {"cand", "share", "warm", "adapter", "sketch", "final", "proto"}
    for name in names.__all__:
        assert getattr(wire, name) is getattr(names, name)


def test_prototype_names_round_trip_and_nothing_else_parses():
    assert names.proto_name(7, "sum") == "proto.7.sum" and names.proto_name(0, "mean") == "proto.0.mean"
    for cls in (0, 3, 120):
        for kind in names.PROTO_KINDS:
            assert names.parse_proto_name(names.proto_name(cls, kind)) == (cls, kind)
    for bad in ("proto.7", "proto.x.sum", "proto.-1.sum", "proto.07.sum", "proto.\u00b2.sum", "proto.1.var",
                "adapter.0.A", "proto.1.sum.x", ""):
        assert names.parse_proto_name(bad) is None, bad
    with pytest.raises(ValueError):
        names.proto_name(1, "var")
    with pytest.raises(ValueError):
        names.proto_name(-1, "sum")
