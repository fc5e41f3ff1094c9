"""A client caps what a server may ask of it, with a clear error and its state untouched."""

from __future__ import annotations

import pytest
import torch
from flwr.app import Message

from client.client_app import app as client_app
from protos import treelora_fed_pb2 as pb
from protos.envelope import pack, unpack
from protos.wire import ProtocolError, cand_name, encode_tensors
from server.local_grid import LocalGrid
from server.state import GlobalState
from treelora.fed.settings import FedSettings

BASE = {
    "stream": "synthetic-text", "backbone": "tiny-bert", "tasks-per-client": 2, "rounds-per-task": 1,
    "local-steps": 2, "batch-size": 8, "train-per-class": 16, "test-per-class": 8, "regularizer": "l1-grad-fd",
    "sketch-dim": 32,
}


@pytest.fixture()
def client_after_round_1(tmp_path):
    rc = dict(BASE, **{"out-dir": str(tmp_path / "server")})
    grid = LocalGrid(client_app, 1, run_config=rc, state_dir=str(tmp_path / "clients"),
                     node_config={1: {"max-local-steps": 16}})
    state = GlobalState(FedSettings.from_run_config(rc), tmp_path / "server")
    a, arrays = state.assignment("?1", 1)
    unpack(client_app(Message(pack(a, arrays), dst_node_id=1, message_type="train", group_id="1"),
                      grid.context(1)).content)
    return grid, tmp_path / "clients" / "c0" / "state.pt"


def _send(grid: LocalGrid, msg: pb.Assignment, arrays: dict) -> ProtocolError:
    reply = client_app(Message(pack(msg, arrays), dst_node_id=1, message_type="train", group_id="2"),
                       grid.context(1))
    with pytest.raises(ProtocolError) as err:
        unpack(reply.content)
    return err.value


def _assignment(**kw) -> pb.Assignment:
    fields = dict(version=1, round=2, client_id="c0", local_steps=2, lam=0.5,
                  sketch=pb.SketchSpec(kind="cauchy", out_dim=32, seed=1234))
    fields.update(kw)
    return pb.Assignment(**fields)


def test_the_client_refuses_too_many_steps_and_keeps_its_state(client_after_round_1):
    grid, state_file = client_after_round_1
    saved = state_file.read_bytes()
    err = _send(grid, _assignment(local_steps=2**32 - 1), {})
    assert err.code == "too-large" and "at most 16" in err.reason and "max-local-steps" in err.reason
    assert state_file.read_bytes() == saved


def test_the_client_refuses_duplicate_or_too_many_candidates(client_after_round_1):
    grid, state_file = client_after_round_1
    saved = state_file.read_bytes()
    sketch = {cand_name("c1/t0", 0): torch.ones(32), cand_name("c2/t0", 0): torch.ones(32)}
    arrays, manifest = encode_tensors(sketch, "float32")
    two = _assignment(layers=[pb.LayerAssignment(layer=0, candidates=["c1/t0", "c2/t0"])], manifest=manifest)
    err = _send(grid, two, arrays)
    assert err.code == "too-large" and "candidates-per-layer" in err.reason
    one_arrays, one_manifest = encode_tensors({cand_name("c1/t0", 0): torch.ones(32)}, "float32")
    dup = _assignment(layers=[pb.LayerAssignment(layer=0, candidates=["c1/t0", "c1/t0"])], manifest=one_manifest)
    assert _send(grid, dup, one_arrays).code == "bad-value"
    assert state_file.read_bytes() == saved


def test_node_config_cap_is_checked(tmp_path):
    from client.node_settings import NodeSettings

    fed = FedSettings(local_steps=3)
    assert NodeSettings.from_node_config({"partition-id": 0, "num-partitions": 1}, fed).max_local_steps == 12
    with pytest.raises(ValueError, match="max-local-steps must be an integer"):
        NodeSettings.from_node_config({"partition-id": 0, "num-partitions": 1, "max-local-steps": "lots"}, fed)
