"""The federated prototype baseline (``fedproto``): frozen encoder, ncm head, counts-weighted class means, in the
same loop and bytes accounting as the other methods; hostile prototype statistics are rejected, state unchanged."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from client.client_app import app as client_app
from client.learner_cache import learner_for
from protos import treelora_fed_pb2 as pb
from protos.envelope import unpack
from protos.wire import ProtocolError, parse_proto_name, proto_name, serialize
from server.local_grid import LocalGrid
from server.loop import run
from server.state import GlobalState
from treelora.fed.settings import FedSettings

from .crash import run_until_crash
from .test_baselines import BASE
from .test_hostile import _train, snapshot


def federate(tmp_path, method: str, n: int = 4):
    rc = dict(BASE, method=method, **{"out-dir": str(tmp_path / method / "server")})
    grid = LocalGrid(client_app, n, run_config=rc, state_dir=str(tmp_path / method / "clients"))
    return grid, run(grid, FedSettings.from_run_config(rc), progress=False), FedSettings.from_run_config(rc)


@pytest.fixture(scope="module")
def proto_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fedproto")
    return (tmp, *federate(tmp, "fedproto"))


def _by_round(messages, kind: str):
    """[(round, control, arrays)] of the messages of one type."""
    return [(int(m.metadata.group_id), *unpack(m.content)) for m in messages if m.metadata.message_type == kind]


def test_fedproto_runs_and_reports_carry_only_prototype_statistics(proto_run):
    _, grid, res, fed = proto_run
    assert not res["errors"] and res["rounds"] == 4
    assert res["privacy"]["not_covered"][-1] == "prototypes"
    state = GlobalState(fed, "/nonexistent")
    state.strategy.start(state, 4)
    catalogue = state.strategy.pool.catalogue
    proto_bytes_up = 0
    reports = _by_round(grid.received, "train")
    assert reports
    for _, control, arrays in reports:
        report = pb.ClientReport.FromString(control)
        if not report.task_key:
            continue  # a done reply
        assert not report.pulls
        names = [parse_proto_name(n) for n in arrays]
        assert all(p is not None and p[1] in ("sum", "count") for p in names), sorted(arrays)
        assert {p[0] for p in names} == set(catalogue[report.task_key])  # every class of the task, no other
        proto_bytes_up += sum(a.nbytes for a in arrays.values())
    assert res["bytes_up_total"] > proto_bytes_up > 0  # the statistics are counted with the envelopes
    down = [(r, a) for r, _, a in _by_round(grid.sent, "train") if a]
    assert down and all(parse_proto_name(n)[1] == "mean" for _, a in down for n in a)
    assert res["prototypes"] and res["leaves"] == [] and res["tree"] is None


def test_fedproto_sends_fewer_bytes_than_fedavg_and_more_than_local_only(tmp_path, proto_run):
    _, _, res, _ = proto_run
    _, fedavg, _ = federate(tmp_path, "fedavg-lora")
    _, local, _ = federate(tmp_path, "local-only")
    assert local["bytes_up_total"] < res["bytes_up_total"] < fedavg["bytes_up_total"]
    assert local["bytes_down_total"] < res["bytes_down_total"]


def test_global_prototype_is_the_counts_weighted_mean_of_what_clients_sent(proto_run):
    _, grid, res, fed = proto_run
    latest: dict[int, dict[str, tuple[np.ndarray, float]]] = {}
    received = sorted(_by_round(grid.received, "train"), key=lambda x: x[0])
    sent = _by_round(grid.sent, "train")
    checked = 0
    for rnd in sorted({r for r, *_ in received}):
        # what the server sends in round rnd is the mean of what it received in rounds < rnd
        for r, _, arrays in sent:
            if r != rnd:
                continue
            for name, arr in arrays.items():
                cls = parse_proto_name(name)[0]
                parts = latest[cls].values()
                want = sum(s.astype(np.float64) for s, _ in parts) / sum(n for _, n in parts)
                np.testing.assert_allclose(arr, want, rtol=1e-5, atol=1e-6)
                checked += 1
        for r, control, arrays in received:
            if r != rnd:
                continue
            report = pb.ClientReport.FromString(control)
            for name, arr in arrays.items():
                cls, kind = parse_proto_name(name)
                if kind == "sum":
                    count = float(arrays[proto_name(cls, "count")][0])
                    latest.setdefault(cls, {})[report.client_id] = (arr, count)
    assert checked > 0
    # after the run: the checkpoint's global prototypes, over every client's last report
    state = GlobalState.resume(replace(fed, resume=True), fed.out_dir)
    for cls, parts in latest.items():
        want = sum(s.astype(np.float64) for s, _ in parts.values()) / sum(n for _, n in parts.values())
        np.testing.assert_allclose(state.strategy.pool.mean(cls).numpy(), want, rtol=1e-5, atol=1e-6)
        assert sorted(parts) == res["prototypes"][str(cls)]["clients"]
    assert state.strategy.feature_dim == next(iter(latest[0].values()))[0].shape[0]


def test_lora_stays_frozen_and_the_ncm_head_holds_the_global_prototypes(proto_run):
    tmp, grid, res, fed = proto_run
    _, initial = learner_for(fed, None)
    server = GlobalState.resume(replace(fed, resume=True), fed.out_dir)
    for c in range(4):
        saved = torch.load(_client_state(fed, c), weights_only=False)["learner"]
        lora = {k: v for k, v in initial["adapter"].items() if not k.startswith("head.")}
        assert lora
        for key, value in lora.items():
            assert torch.equal(saved["adapter"][key], value), key  # LoRA never moved
        protos = saved["head_state"]["prototypes"]
        last = max(int(k) for k in res["prototypes"] if f"c{c}" in res["prototypes"][k]["clients"])
        assert protos is not None
        torch.testing.assert_close(protos[last], server.strategy.pool.mean(last), rtol=1e-5, atol=1e-6)


def _client_state(fed: FedSettings, c: int) -> Path:
    return Path(fed.out_dir).parent / "clients" / f"c{c}" / "state.pt"


def test_fedproto_refuses_dp():
    with pytest.raises(ValueError, match="fedproto releases per-class feature sums"):
        FedSettings(method="fedproto", dp_clip=1.0, dp_noise=1.0)
    with pytest.raises(ValueError, match="run fedproto without DP"):
        FedSettings(method="fedproto", dp_adapter_clip=1.0, dp_adapter_noise=1.0)


def test_fedproto_resumes_after_a_crash_to_the_uninterrupted_result(tmp_path, proto_run):
    """The server crashes after round 2's checkpoint; the resumed run ends with the same global prototypes and
    accuracy matrices as the run that never stopped (the frozen encoder makes every client's sums deterministic)."""
    _, _, uninterrupted, fed0 = proto_run
    rc = dict(BASE, method="fedproto", **{"out-dir": str(tmp_path / "server")})
    grid = LocalGrid(client_app, 4, run_config=rc, state_dir=str(tmp_path / "clients"))

    run_until_crash(grid, FedSettings.from_run_config(rc))
    saved = GlobalState.resume(FedSettings.from_run_config(rc), tmp_path / "server")
    assert saved.round == 2 and saved.strategy.pool.contributions and saved.strategy.feature_dim
    res = run(grid, FedSettings.from_run_config({**rc, "resume": True}), progress=False)
    assert res["rounds"] == 4 and not res["errors"]
    assert res["prototypes"] == uninterrupted["prototypes"]
    assert {c: d["accuracy_matrix"] for c, d in res["per_client"].items()} == \
        {c: d["accuracy_matrix"] for c, d in uninterrupted["per_client"].items()}
    a = GlobalState.resume(FedSettings.from_run_config({**rc, "resume": True}), tmp_path / "server").strategy
    b = GlobalState.resume(replace(fed0, resume=True), fed0.out_dir).strategy
    for cls in b.pool.contributions:
        torch.testing.assert_close(a.pool.mean(cls), b.pool.mean(cls))


# ---------------------------------------------------------------------------------------------------- hostile


@pytest.fixture(scope="module")
def primed(tmp_path_factory):
    """A fedproto server after round 1 (every client's sums ingested), with every client's round-2 reply."""
    tmp = tmp_path_factory.mktemp("hostile-proto")
    rc = dict(BASE, method="fedproto", **{"out-dir": str(tmp / "server")})
    fed = FedSettings.from_run_config(rc)
    grid = LocalGrid(client_app, 4, run_config=rc, state_dir=str(tmp / "clients"))
    state = GlobalState(fed, tmp / "server", run_id="r")
    state.strategy.start(state, 4)
    for nid in (1, 2, 3, 4):
        state.ingest(None, nid, 1, *_train(state, grid, nid, 1))
    state.aggregate()
    state.round = 1
    replies = {nid: _train(state, grid, nid, 2) for nid in (1, 2, 3, 4)}
    return state, replies


def _edit(control: bytes, arrays: dict, *, drop=(), add=None, rename=None) -> tuple[bytes, dict]:
    """The reply with tensors dropped, added ({name: array}) or renamed ({old: new}), manifest and arrays alike."""
    r = pb.ClientReport.FromString(control)
    out = dict(arrays)
    infos = [i for i in r.manifest if i.name not in drop]
    for n in drop:
        out.pop(n)
    for old, new in (rename or {}).items():
        out[new] = out.pop(old)
        for i in infos:
            if i.name == old:
                i.name = new
    for n, a in (add or {}).items():
        out[n] = a
        infos.append(pb.TensorInfo(name=n, dtype="float32", shape=list(a.shape)))
    del r.manifest[:]
    r.manifest.extend(infos)
    return serialize(r), out


def hostile_cases(state: GlobalState, replies: dict) -> dict:
    c0, a0 = replies[1]
    classes = sorted(state.strategy.pool.catalogue["c0/t0"])
    other = next(c for key, v in state.strategy.pool.catalogue.items() for c in v if c not in classes)
    k = classes[0]
    s, n = proto_name(k, "sum"), proto_name(k, "count")
    shard = state.strategy.pool.catalogue["c0/t0"][k]
    nan = a0[s].copy()
    nan[0] = np.nan
    return {
        "nan-sum": ("non-finite", c0, {**a0, s: nan}),
        "count-above-shard": ("bad-value", c0, {**a0, n: np.array([shard + 1], np.float32)}),
        "count-zero": ("bad-value", c0, {**a0, n: np.array([0.0], np.float32)}),
        "count-fractional": ("bad-value", c0, {**a0, n: np.array([1.5], np.float32)}),
        "sum-over-count-bound": ("bad-value", c0, {**a0, s: np.full_like(a0[s], 1e4 * float(a0[n][0]) * 2)}),
        "missing-count": ("missing-tensor", *_edit(c0, a0, drop=[n])),
        "missing-class": ("missing-tensor", *_edit(c0, a0, drop=[s, n])),
        "extra-proto-tensor": ("unexpected-tensor", *_edit(c0, a0, add={proto_name(k, "mean"): a0[s]})),
        "class-not-in-task": ("unexpected-tensor", *_edit(c0, a0, rename={s: proto_name(other, "sum"),
                                                                        n: proto_name(other, "count")})),
        "extra-class": ("unexpected-tensor", *_edit(c0, a0, add={proto_name(other, "sum"): a0[s],
                                                                 proto_name(other, "count"): a0[n]})),
        "adapter-smuggled": ("unexpected-tensor", *_edit(c0, a0, add={"adapter.0.A": np.zeros((8, 8), np.float32)})),
        "sum-wrong-width": ("bad-shape", *_edit(c0, a0, drop=[s], add={s: a0[s][:-1]})),
        "unknown-task": ("malformed", _retask(c0), a0),
    }


def _retask(control: bytes) -> bytes:
    r = pb.ClientReport.FromString(control)
    r.task_key = "c7/t1"
    return serialize(r)


def test_hostile_prototype_statistics_are_rejected_with_the_state_unchanged(primed):
    state, replies = copy.deepcopy(primed[0]), primed[1]
    before = snapshot(state)
    contributions = copy.deepcopy(state.strategy.pool.contributions)
    for name, (code, control, arrays) in hostile_cases(state, replies).items():
        with pytest.raises(ProtocolError) as err:
            state.ingest("c0", 1, 2, control, arrays, live_nodes=[1, 2, 3, 4])
        assert err.value.code == code, (name, err.value)
        assert err.value.reason, name
        assert snapshot(state) == before, f"{name} changed the server state"
    assert state.strategy.pool.contributions.keys() == contributions.keys()
    for cls, parts in contributions.items():
        for client, (total, _) in parts.items():
            assert torch.equal(state.strategy.pool.contributions[cls][client][0], total)
    # and the valid replies still pass
    for nid, (control, arrays) in replies.items():
        state.ingest(f"c{nid - 1}", nid, 2, control, arrays, live_nodes=[1, 2, 3, 4])


def test_a_task_outside_the_scenario_is_refused(primed):
    state, replies = copy.deepcopy(primed[0]), primed[1]
    state.strategy.pool.catalogue.pop("c0/t0")
    with pytest.raises(ProtocolError) as err:
        state.ingest("c0", 1, 2, *replies[1], live_nodes=[1, 2, 3, 4])
    assert err.value.code == "bad-value" and "scenario" in err.value.reason
