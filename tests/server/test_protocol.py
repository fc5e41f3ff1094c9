"""Each kind of bad report is rejected with a clear reason and leaves the server's tree and statistics unchanged."""

import copy
import io

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.client_app import app as client_app
from protos import treelora_fed_pb2 as pb
from protos.envelope import pack, unpack
from protos.wire import ProtocolError, serialize
from server.local_grid import LocalGrid
from server.loop import run
from server.state import GlobalState
from treelora.fed.settings import FedSettings

BASE = {
    "stream": "synthetic-text", "backbone": "tiny-bert", "tasks-per-client": 2, "rounds-per-task": 1,
    "local-steps": 2, "batch-size": 8, "train-per-class": 16, "test-per-class": 8, "regularizer": "l1-grad-fd",
    "sketch-dim": 64,
}


def snapshot(state: GlobalState) -> bytes:
    buf = io.BytesIO()
    torch.save({
        "tree": None if state.strategy.tree is None else state.strategy.tree.to_dict(),
        "bandits": {c: b.state() for c, b in state.strategy.bandits.items()},
        "leaves": copy.deepcopy(state.strategy.leaves.records), "sketches": state.strategy.sketches,
        "clients": {c: vars(i).copy() for c, i in state.clients.items()}, "round_adapters": state.round_adapters,
    }, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def primed(tmp_path_factory):
    """A server that has ingested round 1 (one leaf per client) and a valid round-2 reply to corrupt."""
    tmp = tmp_path_factory.mktemp("proto")
    rc = dict(BASE, **{"out-dir": str(tmp / "server")})
    fed = FedSettings.from_run_config(rc)
    grid = LocalGrid(client_app, 2, run_config=rc, state_dir=str(tmp / "clients"))
    state = GlobalState(fed, tmp / "server")
    for nid in (1, 2):
        a, arrays = state.assignment(f"?{nid}", 1)
        reply = client_app(Message(pack(a, arrays), dst_node_id=nid, message_type="train", group_id="1"),
                           grid.context(nid))
        state.ingest(None, nid, 1, *unpack(reply.content))
    state.aggregate()
    assert len(state.strategy.leaves) == 2
    a, arrays = state.assignment("c0", 2)
    reply = client_app(Message(pack(a, arrays), dst_node_id=1, message_type="train", group_id="2"), grid.context(1))
    control, arrays = unpack(reply.content)
    return state, control, arrays


def _report(control: bytes) -> pb.ClientReport:
    return pb.ClientReport.FromString(control)


def corruptions(control: bytes, arrays: dict[str, np.ndarray]):
    rep = _report(control)

    def with_report(mutate):
        r = pb.ClientReport()
        r.CopyFrom(rep)
        mutate(r)
        return serialize(r), arrays

    def with_arrays(mutate):
        new = {k: v.copy() for k, v in arrays.items()}
        mutate(new)
        return control, new

    yield "malformed", (b"\x00\xffgarbage", arrays)
    yield "bad-version", with_report(lambda r: setattr(r, "version", 99))
    yield "bad-round", with_report(lambda r: setattr(r, "round", 7))
    yield "unknown-leaf", with_report(lambda r: r.pulls.add(layer=0, leaf="nobody/t9", xi_sum=1.0, count=1))
    yield "missing-tensor", with_arrays(lambda a: a.pop("adapter.0.A"))
    yield "unexpected-tensor", (control, {**arrays, "secret.data": np.zeros(3, np.float32)})
    yield "bad-shape", with_arrays(lambda a: a.__setitem__("sketch.0", np.zeros(5, np.float32)))

    def nan(a):
        a["sketch.1"] = a["sketch.1"].copy()
        a["sketch.1"][0] = np.nan

    yield "non-finite", with_arrays(nan)
    yield "bad-dtype", with_arrays(lambda a: a.__setitem__("sketch.0", a["sketch.0"].astype(np.float64)))
    yield "malformed", with_report(lambda r: setattr(r, "task_key", "c1/t0"))  # another client's task


@pytest.mark.parametrize("index", range(10))
def test_bad_report_rejected_and_state_unchanged(primed, index):
    state, control, arrays = primed
    code, (bad_control, bad_arrays) = list(corruptions(control, arrays))[index]
    before = snapshot(state)
    with pytest.raises(ProtocolError) as err:
        state.ingest("c0", 1, 2, bad_control, bad_arrays)
    assert err.value.code == code, err.value
    assert str(err.value)  # a readable reason
    assert snapshot(state) == before


def test_valid_report_still_accepted_after_rejections(primed):
    state, control, arrays = primed
    state.ingest("c0", 1, 2, control, arrays)
    assert state.clients["c0"].task_key == "c0/t1"


def test_federation_survives_a_client_sending_nan(tmp_path):
    rc = dict(BASE, **{"out-dir": str(tmp_path / "server")})

    def poison(node: int, reply: Message) -> Message:
        if node != 2 or not reply.has_content() or "tensors" not in reply.content:
            return reply
        control, arrays = unpack(reply.content)
        arrays = {k: (np.full_like(v, np.nan) if k.startswith("sketch.") else v) for k, v in arrays.items()}
        return Message(pack(control, arrays), reply_to=Message(reply.content, dst_node_id=node, message_type="train"))

    grid = LocalGrid(client_app, 3, run_config=rc, state_dir=str(tmp_path / "clients"), tamper=poison)
    res = run(grid, FedSettings.from_run_config(rc), progress=False)
    assert res["errors"] and all(e["node_id"] == 2 and e["code"] == "non-finite" for e in res["errors"])
    assert sorted(res["leaves"]) == ["c0/t0", "c0/t1", "c2/t0", "c2/t1"]


def test_client_rejects_bad_assignment_without_touching_its_state(tmp_path):
    rc = dict(BASE, **{"out-dir": str(tmp_path / "server")})
    grid = LocalGrid(client_app, 1, run_config=rc, state_dir=str(tmp_path / "clients"))
    bad = Message(pack(b"not a protobuf"), dst_node_id=1, message_type="train", group_id="1")
    reply = client_app(bad, grid.context(1))
    with pytest.raises(ProtocolError, match="peer replied with an error"):
        unpack(reply.content)
    assert not (tmp_path / "clients" / "c0" / "state.pt").exists()
    wrong_version = pb.Assignment(version=2, round=1)
    reply = client_app(Message(pack(wrong_version), dst_node_id=1, message_type="train", group_id="1"),
                       grid.context(1))
    with pytest.raises(ProtocolError, match="version"):
        unpack(reply.content)




def _fuzzed_content(draw, control: bytes, arrays: dict[str, np.ndarray]) -> RecordDict:
    choice = draw(st.integers(0, 4))
    if choice == 0:  # random bytes as control
        return pack(draw(st.binary(max_size=300)), arrays)
    if choice == 1:  # flip bytes in the real control
        raw = bytearray(control)
        for _ in range(draw(st.integers(1, 5))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return pack(bytes(raw), arrays)
    if choice == 2:  # replace one array with random content of random dtype/shape
        name = draw(st.sampled_from(sorted(arrays)))
        dtype = draw(st.sampled_from([np.float32, np.float64, np.int16, np.int64, np.uint8]))
        shape = tuple(draw(st.lists(st.integers(0, 6), min_size=0, max_size=3)))
        values = np.asarray(draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32),
                                          min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))))
        return pack(control, {**arrays, name: values.reshape(shape).astype(dtype)})
    if choice == 3:  # wrong record types / names
        content = RecordDict({"control": ConfigRecord({"proto": draw(st.sampled_from([1, "x", 2.5]))})})
        content["tensors"] = ArrayRecord({"adapter.0.A": Array(np.zeros(3, np.float32))})
        return content
    return RecordDict({draw(st.text(max_size=8)): ConfigRecord({"x": 1})})


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(data=st.data())
def test_fuzzed_reply_never_crashes_or_changes_the_server(primed, data):
    state, control, arrays = primed
    content = _fuzzed_content(data.draw, control, arrays)
    before = snapshot(state)
    try:
        state.ingest("c0", 1, 2, *unpack(content))
    except ProtocolError:
        pass
    else:  # only an unchanged valid report may pass; then the state changes legitimately
        return
    assert snapshot(state) == before


def test_client_rejects_bad_tensors_and_keeps_its_state(tmp_path):
    rc = dict(BASE, **{"out-dir": str(tmp_path / "server")})
    fed = FedSettings.from_run_config(rc)
    grid = LocalGrid(client_app, 1, run_config=rc, state_dir=str(tmp_path / "clients"))
    state = GlobalState(fed, tmp_path / "server")
    good, arrays = state.assignment("?1", 1)
    ok = client_app(Message(pack(good, arrays), dst_node_id=1, message_type="train", group_id="1"), grid.context(1))
    unpack(ok.content)
    saved = (tmp_path / "clients" / "c0" / "state.pt").read_bytes()
    shared = pb.Assignment()
    shared.CopyFrom(good)
    shared.round = 2
    shared.client_id = "c0"
    shared.layers.add(layer=0, shared=True, group_size=2)
    bad_cases = {
        "missing-tensor": {},  # declared share layer without its tensors
        "bad-shape": {"share.0.A": np.zeros((3, 3), np.float32), "share.0.B": np.zeros((3, 3), np.float32)},
    }
    for code, bad_arrays in bad_cases.items():
        msg = pb.Assignment()
        msg.CopyFrom(shared)
        del msg.manifest[:]
        for name, arr in bad_arrays.items():
            msg.manifest.add(name=name, shape=list(arr.shape), dtype="float32")
        reply = client_app(Message(pack(msg, bad_arrays), dst_node_id=1, message_type="train", group_id="2"),
                           grid.context(1))
        with pytest.raises(ProtocolError) as err:
            unpack(reply.content)
        assert err.value.code == code
        assert (tmp_path / "clients" / "c0" / "state.pt").read_bytes() == saved
