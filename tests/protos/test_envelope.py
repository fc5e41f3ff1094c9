"""protos.envelope: the Flower RecordDict around a message (pack / pack_error / unpack / content_nbytes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from protos import envelope, wire
from protos.wire import ProtocolError

from .samples import check_report, good_report


def test_pack_unpack_round_trip_keeps_bytes_and_arrays():
    report, arrays, _ = good_report(True)
    content = envelope.pack(report, arrays)
    assert set(content.keys()) == {"control", "tensors"}
    control, back = envelope.unpack(content)
    assert control == wire.serialize(report)
    assert list(back) == list(arrays)
    for name, arr in arrays.items():
        assert back[name].dtype == arr.dtype and np.array_equal(back[name], arr)
    check_report(control, back, expected_round=7)  # what arrives validates like what was sent


def test_pack_takes_bytes_and_no_arrays():
    content = envelope.pack(b"\x08\x01")
    assert envelope.unpack(content) == (b"\x08\x01", {})


def test_content_nbytes_counts_arrays_and_control():
    arrays, manifest = wire.encode_tensors({"a": torch.ones(3, 4), "b": torch.ones(5)}, "float32")
    content = envelope.pack(b"12345", arrays)
    record = content["tensors"]
    assert envelope.content_nbytes(content) == 5 + sum(len(record[n].data) for n in arrays)
    assert envelope.content_nbytes(content) > 5 + 4 * 17  # Flower stores .npy bytes: a header per array


def test_error_reply_round_trip_and_truncation():
    content = envelope.pack_error("bad-layer", "x" * 5000)
    assert set(content.keys()) == {"error"}
    data = content["error"]["proto"]
    assert data == wire.serialize(wire.make_error("bad-layer", "x" * envelope.MAX_ERROR_REASON))
    with pytest.raises(ProtocolError) as e:
        envelope.unpack(content)
    assert e.value.code == "bad-layer"
    assert e.value.reason == "peer replied with an error: " + "x" * envelope.MAX_ERROR_REASON


@pytest.mark.parametrize("content", [
    RecordDict({}),
    RecordDict({"control": ConfigRecord({"other": b""})}),
    RecordDict({"control": ConfigRecord({"proto": "text"})}),
    RecordDict({"error": ConfigRecord({"proto": b"\xff\xff"})}),
    RecordDict({"tensors": ArrayRecord({})}),
])
def test_unpack_rejects_foreign_content(content):
    with pytest.raises(ProtocolError) as e:
        envelope.unpack(content)
    assert e.value.code == "malformed"
