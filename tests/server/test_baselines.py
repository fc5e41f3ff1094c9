"""The federated baselines a user would pick instead, in the same loop and bytes accounting: FedSA-LoRA, FFA-LoRA,
clustered FL, and the oracle that shares exactly among clients with the same true task."""

from __future__ import annotations

import pytest
import torch

from client.client_app import app as client_app
from protos import treelora_fed_pb2 as pb
from protos.envelope import unpack
from server.local_grid import LocalGrid
from server.loop import run
from server.strategies import cosine_kmeans
from treelora.fed.settings import FedSettings

BASE = {
    "stream": "synthetic-text", "backbone": "tiny-bert", "tasks-per-client": 2, "rounds-per-task": 2,
    "local-steps": 2, "batch-size": 8, "train-per-class": 16, "test-per-class": 8, "regularizer": "l1-grad-fd",
    "sketch-dim": 32, "scenario": "families", "families": 2,
}


def federate(tmp_path, method: str, n: int = 4):
    rc = dict(BASE, method=method, **{"out-dir": str(tmp_path / method / "server")})
    grid = LocalGrid(client_app, n, run_config=rc, state_dir=str(tmp_path / method / "clients"))
    return grid, run(grid, FedSettings.from_run_config(rc), progress=False)


def _train_messages(grid):
    return [(pb.Assignment.FromString(unpack(m.content)[0]), unpack(m.content)[1]) for m in grid.sent
            if m.metadata.message_type == "train"]


def _reports(grid):
    return [unpack(m.content) for m in grid.received if m.metadata.message_type == "train"]


@pytest.mark.parametrize("method,up,down", [("fedsa-lora", "A", "A"), ("ffa-lora", "B", "B")])
def test_half_shared_baselines_send_and_share_one_matrix(tmp_path, method, up, down):
    grid, res = federate(tmp_path, method)
    assert not res["errors"] and res["rounds"] == 4
    for _, arrays in _reports(grid):
        names = {n for n in arrays if n.startswith("adapter.")}
        assert names and all(n.endswith("." + up) for n in names)
    shared = [(a, arrays) for a, arrays in _train_messages(grid) if any(la.shared for la in a.layers)]
    assert shared
    for a, arrays in shared:
        assert all(list(la.share_parts) == [down] for la in a.layers if la.shared)
        assert all(n.endswith("." + down) for n in arrays if n.startswith("share."))
    fedavg_grid, fedavg = federate(tmp_path, "fedavg-lora")
    assert res["bytes_up_total"] < 0.75 * fedavg["bytes_up_total"]


def test_ffa_keeps_every_a_at_its_seeded_value(tmp_path):
    grid, _ = federate(tmp_path, "ffa-lora", n=2)
    state = torch.load(tmp_path / "ffa-lora" / "clients" / "c0" / "state.pt", weights_only=False)
    fresh = torch.load(tmp_path / "ffa-lora" / "clients" / "c1" / "state.pt", weights_only=False)
    a_keys = [k for k in state["learner"]["adapter"] if k.endswith(".A")]
    assert a_keys and all(torch.equal(state["learner"]["adapter"][k], fresh["learner"]["adapter"][k]) for k in a_keys)
    b_keys = [k for k in state["learner"]["adapter"] if k.endswith(".B")]
    assert any(state["learner"]["adapter"][k].abs().sum() > 0 for k in b_keys)  # B trained (it starts at 0)


def test_oracle_shares_exactly_among_same_task_clients(tmp_path):
    """families scenario, 2 families over 4 clients: c0/c2 and c1/c3 train the same tasks at the same rounds, so the
    oracle's groups are exactly the true co-task pairs (precision and recall 1 on every layer); FedAvg-LoRA's one
    group holds every pair, the true ones among them."""
    grid, res = federate(tmp_path, "oracle-sharing")
    assert not res["errors"]
    sharing = res["tree_quality"]["sharing"]
    assert sharing and all(s["precision"] == 1.0 and s["recall"] == 1.0 for s in sharing.values())
    _, fedavg = federate(tmp_path, "fedavg-lora")
    assert all(s["precision"] < 1.0 and s["recall"] == 1.0 for s in fedavg["tree_quality"]["sharing"].values())


def test_clustered_fl_runs_and_cosine_kmeans_separates_two_directions(tmp_path):
    grid, res = federate(tmp_path, "clustered-fl")
    assert not res["errors"] and res["rounds"] == 4
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.tensor([[5.0, 0.0, 0.0]]) + 0.1 * torch.randn(4, 3, generator=g),
                   torch.tensor([[0.0, 5.0, 0.0]]) + 0.1 * torch.randn(4, 3, generator=g)])
    labels = cosine_kmeans(x, 2, seed=1)
    assert len(set(labels[:4])) == 1 and len(set(labels[4:])) == 1 and labels[0] != labels[4]


def test_conflicting_scenario_pairs_the_same_labelling_not_the_same_inputs(tmp_path):
    """scenario=conflicting over 4 clients, 2 families: all four train the same inputs, c1/c3 under shifted
    labels. The server's ground truth names the shifted copies, and the oracle pairs c0/c2 and c1/c3 only."""
    rc = dict(BASE, scenario="conflicting", method="oracle-sharing", **{"out-dir": str(tmp_path / "server")})
    grid = LocalGrid(client_app, 4, run_config=rc, state_dir=str(tmp_path / "clients"))
    res = run(grid, FedSettings.from_run_config(rc), progress=False)
    assert not res["errors"] and res["rounds"] == 4
    from client.learner_cache import stream_for
    from server.tree_audit import load_truth

    fed = FedSettings.from_run_config(rc)
    truth = load_truth(fed, 4)
    widened = stream_for(fed).tasks  # what each client trains on: both families' copies
    assert len(widened) % 2 == 0 and widened[len(widened) // 2].name == widened[0].name + "+shift1"
    assert truth["c0/t0"][0] + "+shift1" == truth["c1/t0"][0] == truth["c3/t0"][0] and truth["c2/t0"] == truth["c0/t0"]
    sharing = res["tree_quality"]["sharing"]
    assert sharing and all(s["precision"] == 1.0 and s["recall"] == 1.0 for s in sharing.values())
