"""A hostile or buggy client cannot crash the server, end another client's run, or poison the tree and averages.

Every case hands a crafted reply to the server's real ingest path (or the real loop, through a tampering grid) and
asserts: rejected with a ProtocolError of the expected code and a readable reason, and the whole server state —
tree, bandits, leaves (records and files), shares and this round's adapters, clients, accuracy rows, DP
accounts, the checkpoint it would write — byte-identical; the process alive; and afterwards a run that completes
with results.
"""

from __future__ import annotations

import copy
import hashlib
import io
import math

import numpy as np
import pytest
import torch
from flwr.app import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.client_app import app as client_app
from protos import treelora_fed_pb2 as pb
from protos.envelope import pack, unpack
from protos.wire import ProtocolError, parse_checkpoint, serialize
from server.checkpoint import write_checkpoint
from server.local_grid import LocalGrid
from server.loop import run
from server.state import GlobalState
from treelora.fed.settings import FedSettings

# one round per task, two tasks: round 1 makes every client's first leaf, round 2 finishes the second task with
# candidates (pulls) from the other clients' leaves; the schedule ends after round 2
BASE = {
    "stream": "synthetic-text", "backbone": "tiny-bert", "tasks-per-client": 2, "rounds-per-task": 1,
    "local-steps": 2, "batch-size": 8, "train-per-class": 16, "test-per-class": 8, "regularizer": "l1-grad-fd",
    "sketch-dim": 32, "warm-start": False,
}


def _train(state: GlobalState, grid: LocalGrid, nid: int, rnd: int) -> tuple[bytes, dict]:
    client = next((c for c, i in state.clients.items() if i.node_id == nid), f"?{nid}")
    a, arrays = state.assignment(client, rnd)
    reply = client_app(Message(pack(a, arrays), dst_node_id=nid, message_type="train", group_id=str(rnd)),
                       grid.context(nid))
    return unpack(reply.content)


@pytest.fixture(scope="module")
def primed(tmp_path_factory):
    """A server after round 1 (three leaves), with every client's valid round-2 reply (not ingested yet)."""
    tmp = tmp_path_factory.mktemp("hostile")
    rc = dict(BASE, **{"out-dir": str(tmp / "server")})
    fed = FedSettings.from_run_config(rc)
    grid = LocalGrid(client_app, 3, run_config=rc, state_dir=str(tmp / "clients"))
    state = GlobalState(fed, tmp / "server", run_id="r")
    for nid in (1, 2, 3):
        state.ingest(None, nid, 1, *_train(state, grid, nid, 1))
    state.aggregate()
    state.round = 1
    replies = {nid: _train(state, grid, nid, 2) for nid in (1, 2, 3)}
    assert len(state.strategy.leaves) == 3 and any(pb.ClientReport.FromString(c).pulls for c, _ in replies.values())
    return state, replies


def snapshot(state: GlobalState) -> bytes:
    """Everything the server holds, as bytes: its checkpoint (creation time zeroed), this round's adapters and
    offers, and the leaf files."""
    write_checkpoint(state)
    ckpt = parse_checkpoint((state.out_dir / "checkpoint.pb").read_bytes())
    ckpt.created_unix = 0.0
    buf = io.BytesIO()
    torch.save({"round_adapters": state.round_adapters, "offered": state.offered}, buf)
    leaves = sorted((p.name, hashlib.sha256(p.read_bytes()).hexdigest())
                    for p in (state.out_dir / "leaves").glob("*.safetensors"))
    return serialize(ckpt) + buf.getvalue() + repr(leaves).encode()


def _mut(control: bytes, **fields) -> bytes:
    r = pb.ClientReport.FromString(control)
    for k, v in fields.items():
        if k == "metrics":
            r.metrics.clear()
            r.metrics.update(v)
        else:
            setattr(r, k, v)
    return serialize(r)


def _with(control: bytes, fn) -> bytes:
    r = pb.ClientReport.FromString(control)
    fn(r)
    return serialize(r)


def _arrays(arrays: dict, **replace) -> dict:
    out = dict(arrays)
    out.update(replace)
    return out


def _bf16(x: float, shape) -> np.ndarray:
    return torch.full(shape, x).to(torch.bfloat16).view(torch.int16).numpy()


def _not_offered(state: GlobalState, report: pb.ClientReport) -> tuple[int, str]:
    """A (layer, leaf) of another client's existing leaf that the server did not offer ``report``'s client."""
    _, offered = state.offered[report.client_id]
    pulled = {(p.layer, p.leaf) for p in report.pulls}
    return next((layer, leaf) for layer in range(state.num_layers) for leaf in sorted(state.strategy.known_leaves())
                if not leaf.startswith(report.client_id + "/") and leaf not in offered.get(layer, ())
                and (layer, leaf) not in pulled)


def cases(replies: dict, state: GlobalState) -> dict:
    """name -> (expected code, client hint, node id, round, control, arrays)."""
    c0, a0 = replies[1]
    c1, a1 = replies[2]
    r0 = pb.ClientReport.FromString(c0)
    own_leaf = "c0/t0"
    layer, leaf = _not_offered(state, r0)
    sk = next(n for n in a0 if n.startswith("sketch."))
    ad = next(n for n in a0 if n.startswith("adapter."))
    done = serialize(pb.ClientReport(version=1, round=2, client_id="c0", metrics={"stream_done": 1.0}))
    out = {
        # --- the cases
        "acc-names-no-task": ("bad-value", _mut(c0, metrics={**r0.metrics, "acc/anything": 0.5})),
        "acc-of-another-client": ("bad-value", _mut(c0, metrics={**r0.metrics, "acc/c1/t0": 0.5})),
        "acc-missing-task": ("bad-value", _mut(c0, metrics={k: v for k, v in r0.metrics.items() if k != "acc/c0/t0"})),
        "acc-7.5": ("bad-value", _mut(c0, metrics={**r0.metrics, "acc/c0/t1": 7.5})),
        "til-7.5": ("bad-value", _mut(c0, metrics={**r0.metrics, "til/c0/t1": 7.5})),
        "til-names-no-task": ("bad-value", _mut(c0, metrics={**r0.metrics, "til/anything": 0.5})),
        "ti-missing-task": ("bad-value", _mut(c0, metrics={k: v for k, v in r0.metrics.items() if k != "ti/c0/t0"})),
        "stream-done-stale-round": ("bad-round", _mut(done, round=1), {}),
        "stream-done-nan": ("bad-value", _mut(done, metrics={"stream_done": math.nan}), {}),
        "stream-done-before-the-end": ("bad-value", done, {}),
        "stream-done-with-a-task": ("bad-value", _mut(done, task_key="c0/t1", num_examples=8), {}),
        "examples-2^63": ("bad-value", _mut(c0, num_examples=2**63)),
        "xi-1e300": ("bad-value", _with(c0, lambda r: setattr(r.pulls[0], "xi_sum", 1e300))),
        "pull-own-leaf": ("bad-value", _with(c0, lambda r: r.pulls.add(layer=0, leaf=own_leaf, xi_sum=0.1, count=1))),
        "sketch-3e38": ("bad-value", c0, _arrays(a0, **{sk: np.full(32, 3e38, np.float32)})),
        # --- more of the same kind
        "pull-not-offered": ("bad-value", _with(c0, lambda r: r.pulls.add(layer=layer, leaf=leaf, xi_sum=0.1,
                                                                         count=1))),
        "pull-unknown-leaf": ("unknown-leaf", _with(c0, lambda r: setattr(r.pulls[0], "leaf", "c9/t0"))),
        "pulls-over-steps": ("bad-value", _with(c0, lambda r: setattr(r.pulls[0], "count", r.steps + 1))),
        "xi-negative": ("bad-value", _with(c0, lambda r: setattr(r.pulls[0], "xi_sum", -1.0))),
        "adapter-1e30": ("bad-value", c0, _arrays(a0, **{ad: _bf16(1e30, a0[ad].shape)})),
        "steps-over-asked": ("bad-value", _mut(c0, steps=3)),
        "steps-zero": ("bad-value", _mut(c0, steps=0)),
        "loss-negative": ("bad-value", _mut(c0, loss=-1.0)),
        "loss-huge": ("bad-value", _mut(c0, loss=1e30)),
        "loss-nan": ("non-finite", _mut(c0, loss=math.nan)),
        "train-s-negative": ("bad-value", _mut(c0, metrics={**r0.metrics, "train_s": -5.0})),
        "model-bytes-1e300": ("bad-value", _mut(c0, metrics={**r0.metrics, "model_bytes": 1e300})),
        "unknown-metric": ("bad-value", _mut(c0, metrics={**r0.metrics, "secret": 1.0})),
        "task-key-of-another-client": ("malformed", _mut(c0, task_key="c1/t1")),
        "task-key-and-index-disagree": ("malformed", _mut(c0, task_index=0)),
        "task-ahead-of-schedule": ("bad-value", _mut(c0, task_key="c0/t2", task_index=2)),
        "finished-task-again": ("malformed", _mut(c0, task_key="c0/t0", task_index=0, metrics={
            **{k: v for k, v in r0.metrics.items() if not k.startswith(("acc/", "til/", "ti/"))}, "acc/c0/t0": 0.5})),
        "wrong-round": ("bad-round", _mut(c0, round=3)),
        "old-round": ("bad-round", _mut(c0, round=1)),
        "empty-client": ("malformed", _mut(c0, client_id="")),
        "client-with-slash": ("malformed", _mut(c0, client_id="c0/x")),
        "missing-final-sketch": ("missing-tensor", c0, {k: v for k, v in a0.items() if k != "final.0"}),
    }
    rows = {name: (code, "c0", 1, 2, ctl, a0) for name, (code, ctl, *rest) in out.items() if not rest}
    rows.update({name: (code, "c0", 1, 2, ctl, rest[0]) for name, (code, ctl, *rest) in out.items() if rest})
    rows["stream-done-from-a-new-node"] = ("bad-identity", None, 9, 2, _mut(done, round=2), {})
    rows["new-node-replays-c0"] = ("bad-identity", None, 9, 2, c0, a0)  # a node id not seen before
    rows["c1s-node-reports-as-c0"] = ("bad-identity", "c1", 2, 2, c0, a0)
    rows["c0s-node-sends-c1s-report"] = ("bad-identity", "c0", 1, 2, c1, a1)
    return rows


@pytest.fixture(scope="module")
def case_table(primed):
    return cases(primed[1], primed[0])


def test_every_hostile_case_is_rejected_with_the_state_unchanged(primed, case_table):
    state, replies = primed
    before = snapshot(state)
    results = {}
    for name, (code, hint, nid, rnd, control, arrays) in case_table.items():
        with pytest.raises(ProtocolError) as err:
            state.ingest(hint, nid, rnd, control, arrays, live_nodes=[1, 2, 3])
        results[name] = err.value.code
        assert err.value.code == code, (name, err.value)
        assert err.value.reason, name
        assert snapshot(state) == before, f"{name} changed the server state"
    assert len(results) >= 35


def test_the_valid_reports_still_pass_and_a_duplicate_does_not(primed):
    state, replies = copy.deepcopy(primed[0]), primed[1]
    for nid, (control, arrays) in replies.items():
        state.ingest(f"c{nid - 1}", nid, 2, control, arrays, live_nodes=[1, 2, 3])
    before = snapshot(state)
    with pytest.raises(ProtocolError) as err:
        state.ingest("c0", 1, 2, *replies[1], live_nodes=[1, 2, 3])
    assert err.value.code == "duplicate" and snapshot(state) == before
    state.aggregate()
    res = state.results()
    assert all(len(c["tasks"]) == 2 and c["metrics"] for c in res["per_client"].values())


def test_a_done_reply_after_the_schedule_is_accepted_but_only_from_the_bound_node(primed):
    state = copy.deepcopy(primed[0])
    done = serialize(pb.ClientReport(version=1, round=3, client_id="c0", metrics={"stream_done": 1.0}))
    with pytest.raises(ProtocolError) as err:
        state.ingest("c1", 2, 3, done, {})
    assert err.value.code == "bad-identity" and not state.clients["c0"].done
    state.ingest("c0", 1, 3, done, {})
    assert state.clients["c0"].done and not state.clients["c1"].done


def test_rebinding_a_client_to_a_new_node_needs_the_knob_and_its_old_node_gone(primed):
    state, replies = copy.deepcopy(primed[0]), primed[1]
    control, arrays = replies[1]
    with pytest.raises(ProtocolError, match="allow-rebind is off"):
        state.ingest(None, 7, 2, control, arrays, live_nodes=[2, 3, 7])
    state.fed = FedSettings(**{**state.fed.__dict__, "allow_rebind": True})
    with pytest.raises(ProtocolError, match="node 1 is still connected"):
        state.ingest(None, 7, 2, control, arrays, live_nodes=[1, 2, 3, 7])
    state.ingest(None, 7, 2, control, arrays, live_nodes=[2, 3, 7])  # node 1 left: c0 moves to node 7
    assert state.clients["c0"].node_id == 7


def test_a_probe_must_be_the_bound_clients_own_next_task_in_this_round(primed):
    state = copy.deepcopy(primed[0])
    from protos.wire import encode_tensors, sketch_name

    arrays, manifest = encode_tensors({sketch_name(l): torch.ones(32) for l in range(state.num_layers)}, "float32")

    def probe(**kw):
        fields = dict(version=1, round=2, client_id="c0", task_key="c0/t1", task_index=1, num_examples=8,
                      manifest=manifest, metrics={"probe": 1.0, "last_round": 1.0})
        fields.update(kw)
        return serialize(pb.ClientReport(**fields))

    before = snapshot(state)
    bad = {
        "bad-round": (probe(round=1), arrays),
        "bad-identity": (probe(client_id="c1", task_key="c1/t1"), arrays),
        "bad-value": (probe(task_key="c0/t0", task_index=0), arrays),  # not a new task
    }
    big = {k: np.full(32, 1e20, np.float32) for k in arrays}
    for code, (ctl, arr) in list(bad.items()) + [("bad-value", (probe(), big)), ("bad-value", (probe(steps=3), arrays)),
                                                 ("bad-value", (probe(num_examples=9999), arrays))]:
        with pytest.raises(ProtocolError) as err:
            state.ingest_probe("c0", 2, ctl, arr)
        assert err.value.code == code, (code, err.value)
    assert snapshot(state) == before
    assert state.ingest_probe("c0", 2, probe(), arrays) in state.strategy.known_leaves()


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_fields_are_rejected_cleanly_or_leave_results_working(primed, data):
    """Any field of a valid report set to an arbitrary value: a ProtocolError with the state unchanged, or (when
    the value is still plausible) accepted — and then the results step still works."""
    state = copy.deepcopy(primed[0])
    control, arrays = primed[1][1]
    r = pb.ClientReport.FromString(control)
    field = data.draw(st.sampled_from(["round", "num_examples", "steps", "loss", "task_index", "task_key",
                                       "task_finished", "client_id", "metric", "pull"]))
    number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70))
    if field in ("round", "num_examples", "steps", "task_index"):
        setattr(r, field, data.draw(st.integers(0, 2**32 - 1)))
    elif field == "loss":
        r.loss = data.draw(st.floats(allow_nan=True, allow_infinity=True))
    elif field in ("task_key", "client_id"):
        setattr(r, field, data.draw(st.sampled_from(["", "c0/t1", "c0/t9", "c1/t1", "c0", "x/y/z", "c9"])))
    elif field == "task_finished":
        r.task_finished = data.draw(st.booleans())
    elif field == "metric":
        key = data.draw(st.sampled_from(["acc/c0/t0", "acc/c0/t1", "acc/zz", "loss", "train_s", "model_bytes", "x"]))
        value = data.draw(number)
        r.metrics[key] = float(value) if isinstance(value, float) else float(max(min(value, 2**60), -2**60))
    else:
        p = r.pulls.add()
        p.layer = data.draw(st.integers(0, 20))
        p.leaf = data.draw(st.sampled_from(["c0/t0", "c1/t0", "c2/t0", "c7/t0"]))
        p.xi_sum = data.draw(st.floats(allow_nan=True, allow_infinity=True))
        p.count = data.draw(st.integers(0, 10))
    before = snapshot(state)
    try:
        state.ingest("c0", 1, 2, serialize(r), arrays, live_nodes=[1, 2, 3])
    except ProtocolError:
        assert snapshot(state) == before
        return
    state.aggregate()
    state.results()  # whatever was accepted, the results step cannot break


def test_a_federation_with_tampering_clients_completes_with_results(tmp_path):
    """Through the real loop: node 2 replays node 1's reply, node 3 sends a bogus accuracy row and then claims
    its stream is over mid-run; node 1 is untouched. The run completes, node 1's work is all there, every
    tampered reply is recorded with its code."""
    rc = dict(BASE, **{"out-dir": str(tmp_path / "server"), "rounds-per-task": 2})
    seen: dict[int, Message] = {}

    def tamper(node: int, reply: Message) -> Message:
        if not reply.has_content() or reply.metadata.message_type != "train":
            return reply
        control, arrays = unpack(reply.content)
        report = pb.ClientReport.FromString(control)
        if node == 1:
            seen[report.round] = reply
            return reply
        if node == 2 and report.round == 2 and report.round in seen:
            return Message(copy.deepcopy(seen[report.round].content), reply_to=Message(
                reply.content, dst_node_id=node, message_type="train"))
        if node == 3 and report.round == 2:
            report.metrics["acc/anything"] = 0.5
        if node == 3 and report.round == 3:
            report = pb.ClientReport(version=1, round=3, client_id=report.client_id, metrics={"stream_done": 1.0})
            arrays = {}
        return Message(pack(serialize(report), arrays), reply_to=Message(reply.content, dst_node_id=node,
                                                                          message_type="train"))

    grid = LocalGrid(client_app, 3, run_config=rc, state_dir=str(tmp_path / "clients"), tamper=tamper)
    res = run(grid, FedSettings.from_run_config(rc), progress=False)
    codes = sorted((e["round"], e["node_id"], e["code"]) for e in res["errors"])
    assert (2, 2, "bad-identity") in codes and (2, 3, "bad-value") in codes and (3, 3, "bad-value") in codes
    assert res["rounds"] == 4 and res["per_client"]["c0"]["tasks"] == ["c0/t0", "c0/t1"]
    assert {"c0/t0", "c0/t1"} <= set(res["leaves"]) and res["metrics"]["acc"]["mean"] > 0
    assert not res["per_client"].get("c2", {}).get("error")
