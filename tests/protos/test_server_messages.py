"""The validators accept every message the real server and clients build, and the client's stale-round.

* ``validate_assignment`` over every ``train`` / ``query`` / ``evaluate`` message a real in-process federation
  (LocalGrid, tiny backbone) sends, for each method, with exactly the arguments the client can pass: its model's
  layer count and adapter shapes and its sketch configuration;
* ``validate_assignment`` over ``GlobalState.assignment()`` at a larger synthetic tree (several candidates per
  layer, warm starts chosen by ``ingest_probe``), without training;
* ``validate_report`` over every ``train`` reply the real clients send that the server validates with it;
* the real client refuses faulty copies of a real message with validate_assignment's code, before its state
  changes (it validates with that one function).
"""

from __future__ import annotations

from copy import deepcopy

import numpy as np
import pytest
from flwr.app import Message

from client.client_app import app as client_app
from client.node_settings import NodeSettings
from protos import treelora_fed_pb2 as pb
from protos import wire
from protos.envelope import unpack
from protos.wire import ProtocolError
from server.local_grid import LocalGrid
from server.loop import run
from treelora.fed.settings import FedSettings

BASE = {
    "stream": "synthetic-text", "backbone": "tiny-bert", "tasks-per-client": 2, "rounds-per-task": 2,
    "local-steps": 1, "batch-size": 8, "train-per-class": 16, "test-per-class": 8, "regularizer": "l1-grad-fd",
    "sketch-dim": 32, "candidates-per-layer": 2, "eval-every": 2,
}
METHODS = ("treelora", "fedavg-lora", "local-only")


def receiver(fed: FedSettings, grid: LocalGrid, node_id: int) -> dict:
    """What a client passes to validate_assignment: its model's layers and shapes, its sketch configuration."""
    from client.learner_cache import learner_for

    node = NodeSettings.from_node_config(grid.context(node_id).node_config, fed)
    learner, _ = learner_for(fed, node.device, node.precision)
    num_layers = learner.lora.num_layers
    shapes = [tuple(tuple(p.shape) for p in learner.lora.params(l)) for l in range(num_layers)]
    return dict(num_layers=num_layers, adapter_shapes=shapes, sketch_dim=fed.sketch_dim,
                sketch_kind=fed.sketch_kind, sketch_seed=fed.sketch_seed)


@pytest.fixture(scope="module", params=METHODS)
def federation(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    rc = dict(BASE, method=request.param, **{"out-dir": str(tmp / "server")})
    grid = LocalGrid(client_app, 2, run_config=rc, state_dir=str(tmp / "clients"))
    fed = FedSettings.from_run_config(rc)
    results = run(grid, fed, progress=False)
    assert not results["errors"] and results["rounds"] == 4
    return request.param, grid, fed, results


def test_every_message_the_server_sends_passes_validate_assignment(federation):
    method, grid, fed, _ = federation
    seen: dict[str, int] = {}
    parts = set()
    for m in grid.sent:
        kind = m.metadata.message_type
        assert kind in ("train", "query", "evaluate")
        control, arrays = unpack(m.content)
        tensors = wire.validate_assignment(control, arrays, **receiver(fed, grid, m.metadata.dst_node_id))
        assert set(tensors) == set(arrays)
        seen[kind] = seen.get(kind, 0) + 1
        a = wire.parse_assignment(control)
        parts.update(n.split(".")[0] for n in tensors)
        if any(la.shared and la.group_size == 0 for la in a.layers):
            parts.add("share-without-node")
        if a.warm_start_leaf:
            parts.add("warm-start")
    assert seen["train"] == 8 and seen["evaluate"] >= 2
    expected = {"treelora": {"cand", "share", "warm", "share-without-node", "warm-start"},
                "fedavg-lora": {"share", "share-without-node"}, "local-only": set()}[method]
    assert parts == expected
    assert ("query" in seen) == (method == "treelora")


def test_every_train_reply_the_server_validates_passes_validate_report(federation):
    method, grid, fed, results = federation
    checked = 0
    for m in grid.received:
        if m.metadata.message_type != "train":
            continue
        control, arrays = unpack(m.content)
        report = wire.parse_report(control)
        if report.metrics.get("stream_done"):
            continue
        if method == "local-only":  # no tensors at all: the server checks these without validate_report
            assert not arrays and not report.manifest
            checked += 1
            continue
        r = receiver(fed, grid, m.metadata.src_node_id)
        wire.validate_report(control, arrays, num_layers=r["num_layers"], adapter_shapes=r["adapter_shapes"],
                             sketch_dim=fed.sketch_dim, known_leaves=set(results["leaves"]),
                             expected_round=report.round, with_sketches=fed.fed_method.sends_sketches)
        checked += 1
    assert checked == 8


def test_client_refuses_a_stale_round(federation):
    _, grid, _, _ = federation
    first = next(m for m in grid.sent if m.metadata.message_type == "train" and m.metadata.dst_node_id == 1)
    assert wire.parse_assignment(unpack(first.content)[0]).round == 1
    replay = Message(content=deepcopy(first.content), dst_node_id=1, message_type="train", group_id="replay")
    reply = client_app(replay, grid.context(1))
    with pytest.raises(ProtocolError) as e:
        unpack(reply.content)
    assert e.value.code == "stale-round" and "older than this client's last round" in e.value.reason


def test_global_state_assignments_at_a_larger_tree_pass(tmp_path):
    from simulations.bench_common import SynthFed

    shapes = [((2, 8), (8, 2))] * 3
    fed = FedSettings(method="treelora", backbone="tiny-bert", out_dir=str(tmp_path), sketch_dim=16,
                      candidates_per_layer=3)
    synth = SynthFed(fed, tmp_path, shapes, seed=0, clusters=3)
    state = synth.state
    me = dict(num_layers=3, adapter_shapes=shapes, sketch_dim=16, sketch_kind=fed.sketch_kind,
              sketch_seed=fed.sketch_seed)
    clients = [f"c{i}" for i in range(5)]
    parts: set[str] = set()
    for rnd in range(1, 7):
        for c in clients:
            if state.wants_probe(c):
                probe = {wire.sketch_name(l): s for l, s in enumerate(synth.sketch(rnd))}
                arrays, manifest = wire.encode_tensors(probe, "float32")
                nxt = state.clients[c].task_index + 1
                report = pb.ClientReport(version=1, round=rnd, client_id=c, task_key=f"{c}/t{nxt}", task_index=nxt,
                                         num_examples=8, manifest=manifest)
                assert state.ingest_probe(c, rnd, wire.serialize(report), arrays)
            wire.validate_assignment(wire.serialize(state.control(c, rnd)), {}, **me, expected_client=c)
        for i, c in enumerate(clients):
            assignment, arrays = state.assignment(c if c in state.clients else f"?{i + 1}", rnd)
            tensors = wire.validate_assignment(wire.serialize(assignment), arrays, **me, expected_client=c)
            parts.update(n.split(".")[0] for n in tensors)
            if max((len(la.candidates) for la in assignment.layers), default=0) > 1:
                parts.add("several-candidates")
            ctl, rep = synth.report(c, rnd, finished=rnd % 2 == 0, pulls=synth.pulls_for(assignment))
            state.ingest(c if c in state.clients else None, i + 1, rnd, ctl, rep)
        state.aggregate()
        state.round = rnd
    assert parts == {"cand", "share", "warm", "several-candidates"} and len(state.strategy.leaves) == 15


def _outcome(check):
    try:
        check()
    except ProtocolError as e:
        return e.code, e.reason
    return "accepted", ""


def _mutations(a: pb.Assignment, arrays: dict) -> dict:
    """Named faults of a real train message, each a function of (message copy, arrays copy)."""
    shared = next(la.layer for la in a.layers if la.shared)
    cand = next(n for n in arrays if n.startswith("cand."))
    unshared = next((la.layer for la in a.layers if not la.shared), None)

    def add_head(m, arr, names):
        for n in names:
            m.manifest.add(name=n, shape=[2], dtype="float32")
            arr[n] = np.zeros(2, np.float32)

    out = {
        "valid": lambda m, arr: None,
        "layer-range": lambda m, arr: setattr(m.layers[0], "layer", 99),
        "layer-dup": lambda m, arr: m.layers.add(layer=m.layers[0].layer),
        "kind": lambda m, arr: setattr(m.sketch, "kind", "gaussian"),
        "seed": lambda m, arr: setattr(m.sketch, "seed", 7),
        "out-dim": lambda m, arr: setattr(m.sketch, "out_dim", 5),
        "lam-negative": lambda m, arr: setattr(m, "lam", -1.0),
        "lam-nan": lambda m, arr: setattr(m, "lam", float("nan")),
        "drop-cand-array": lambda m, arr: arr.pop(cand),
        "drop-share-array": lambda m, arr: arr.pop(wire.share_name(shared, "A")),
        "extra-array": lambda m, arr: arr.update(junk=np.zeros(1, np.float32)),
        "head": lambda m, arr: add_head(m, arr, [wire.WARM_HEAD_WEIGHT, wire.WARM_HEAD_BIAS]),
        "lone-head": lambda m, arr: add_head(m, arr, [wire.WARM_HEAD_WEIGHT]),
        "layer-dims-wrong": lambda m, arr: m.sketch.layer_dims.extend([3]),
        "no-spec": lambda m, arr: m.ClearField("sketch"),
    }
    if unshared is not None:
        out["shared-without-tensors"] = lambda m, arr: setattr(
            next(la for la in m.layers if la.layer == unshared), "shared", True)
    return out


ACCEPTED = {"valid", "head", "no-spec"}  # the server may send these (no spec: the tensor-free messages)


@pytest.mark.parametrize("federation", ["treelora"], indirect=True)  # candidates, shares and warm starts
def test_the_client_refuses_faulty_assignments_with_the_contract_code_and_keeps_its_state(federation):
    _, grid, fed, _ = federation
    from client.node import ClientNode

    msg = next(m for m in grid.sent if m.metadata.message_type == "train"
               and any(n.startswith("warm.") for n in unpack(m.content)[1]))
    nid = msg.metadata.dst_node_id
    node = ClientNode(fed, NodeSettings.from_node_config(grid.context(nid).node_config, fed))
    before = node.store.path.read_bytes()
    control, arrays = unpack(msg.content)
    real = wire.parse_assignment(control)
    for name, mutate in _mutations(real, arrays).items():
        m, arr = pb.Assignment(), deepcopy(arrays)
        m.CopyFrom(real)
        mutate(m, arr)
        code = _outcome(lambda: wire.validate_assignment(m, arr, **receiver(fed, grid, nid)))[0]
        assert (code == "accepted") == (name in ACCEPTED), (name, code)
        if code != "accepted":
            assert _outcome(lambda: node.train(wire.serialize(m), arr))[0] == code, name
    assert node.store.path.read_bytes() == before
