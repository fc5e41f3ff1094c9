"""``share-prototypes``: an adapter-sharing method with the ``ncm`` head also sends its task's per-class feature
sums (at the adapter it trains, so they change every round), and a class's prototype comes back pooled,
counts-weighted, over the client and the clients it averaged a layer with in the last round only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from client.client_app import app as client_app
from protos import treelora_fed_pb2 as pb
from protos.wire import parse_proto_name, proto_name
from server.local_grid import LocalGrid
from server.loop import run
from server.state import GlobalState
from treelora.fed.settings import FedSettings

from .test_baselines import BASE
from .test_fedproto import _by_round


def federate(tmp_path, method: str, n: int = 4):
    rc = dict(BASE, method=method, head="ncm", **{"share-prototypes": True, "out-dir": str(tmp_path / "server")})
    grid = LocalGrid(client_app, n, run_config=rc, state_dir=str(tmp_path / "clients"))
    return grid, run(grid, FedSettings.from_run_config(rc), progress=False), FedSettings.from_run_config(rc)


@pytest.fixture(scope="module")
def oracle_run(tmp_path_factory):
    return federate(tmp_path_factory.mktemp("share-protos"), "oracle-sharing")


def test_reports_carry_live_class_sums_and_prototypes_pool_only_among_partners(oracle_run):
    grid, res, fed = oracle_run
    assert not res["errors"] and res["rounds"] == 4
    assert res["privacy"]["not_covered"][-1] == "prototypes" and res["prototypes"]
    # every finished task also reports its task-incremental and task-inference rows; TIL (argmax over the task's
    # own classes) is never below CIL (argmax over all seen classes) on the same scores
    assert {"til_acc", "til_bwt", "task_inference_acc"} <= set(res["view_metrics"])
    for c in res["per_client"].values():
        cil, til = np.array(c["accuracy_matrix"], float), np.array(c["views"]["til"]["accuracy_matrix"], float)
        assert cil.shape == til.shape == (2, 2)
        assert np.all(np.nan_to_num(til, nan=1) >= np.nan_to_num(cil, nan=0) - 1e-9)
    received = sorted(_by_round(grid.received, "train"), key=lambda x: x[0])
    sums: dict[tuple[str, int], list[np.ndarray]] = {}
    latest: dict[int, dict[str, tuple[np.ndarray, float]]] = {}
    for rnd in sorted({r for r, *_ in received}):
        for r, control, arrays in received:
            if r != rnd:
                continue
            report = pb.ClientReport.FromString(control)
            assert any(n.startswith("adapter.") for n in arrays)  # the method's adapters still go up
            for name, arr in arrays.items():
                parsed = parse_proto_name(name)
                if parsed and parsed[1] == "sum":
                    sums.setdefault((report.task_key, parsed[0]), []).append(arr)
                    latest.setdefault(parsed[0], {})[report.client_id] = (arr, float(
                        arrays[proto_name(parsed[0], "count")][0]))
    # the LoRA trains, so a task's sums differ between its two rounds (fedproto's frozen encoder repeats them)
    assert all(len(v) == 2 and not np.array_equal(v[0], v[1]) for v in sums.values())
    # families=2 over 4 clients: c0/c2 and c1/c3 train the same tasks, so the oracle pairs them; a class's
    # pooled prototype holds exactly those two clients' statistics, never another family's
    state = GlobalState.resume(replace(fed, resume=True), fed.out_dir)
    state.strategy.start(state, 4)  # what the loop does before a resumed run's first round
    assert state.strategy.partners == {"c0": ["c2"], "c1": ["c3"], "c2": ["c0"], "c3": ["c1"]}
    for client in ("c0", "c1"):
        tensors = state.strategy.prototype_tensors(state, client, state.round)
        assert tensors
        for name, arr in tensors.items():
            cls = parse_proto_name(name)[0]
            parts = {c: v for c, v in latest[cls].items() if c in state.strategy.prototype_partners(state, client)}
            assert set(parts) == {client, {"c0": "c2", "c1": "c3"}[client]}
            want = sum(s.astype(np.float64) for s, _ in parts.values()) / sum(n for _, n in parts.values())
            np.testing.assert_allclose(arr.numpy(), want, rtol=1e-5, atol=1e-6)


def test_local_only_with_share_prototypes_pools_with_nobody(tmp_path):
    grid, res, fed = federate(tmp_path, "local-only", n=2)
    assert not res["errors"]
    state = GlobalState.resume(replace(fed, resume=True), fed.out_dir)
    assert state.strategy.partners == {}
    assert state.strategy.prototype_partners(state, "c0") == {"c0"}


def test_share_prototypes_needs_the_ncm_head_and_no_dp():
    with pytest.raises(ValueError, match="needs head=ncm"):
        FedSettings(method="treelora", share_prototypes=True)
    with pytest.raises(ValueError, match="fedproto always pools"):
        FedSettings(method="fedproto", share_prototypes=True)
    with pytest.raises(ValueError, match="run it without DP"):
        FedSettings(method="treelora", head="ncm", share_prototypes=True, dp_clip=1.0, dp_noise=0.5)
    assert FedSettings(method="treelora", head="ncm", share_prototypes=True).sends_prototypes
    assert not FedSettings(method="treelora", head="ncm").sends_prototypes
