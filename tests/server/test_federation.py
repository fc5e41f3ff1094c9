"""In-process federation: the real ClientApp and server loop over a LocalGrid (no Ray, no SuperLink)."""


import numpy as np
import pytest
import torch

from client.client_app import app as client_app
from protos import treelora_fed_pb2 as pb
from protos.envelope import pack, unpack
from protos.wire import parse_report
from server.local_grid import LocalGrid
from server.loop import run
from server.state import GlobalState
from treelora.fed.settings import FedSettings

from .crash import run_until_crash

BASE = {
    "stream": "synthetic-text", "backbone": "tiny-bert", "tasks-per-client": 2, "rounds-per-task": 2,
    "local-steps": 3, "batch-size": 8, "train-per-class": 16, "test-per-class": 8, "lr": 0.005,
    "regularizer": "l1-grad-fd", "sketch-dim": 64,
}


def setup(tmp_path, n=3, **kw):
    rc = dict(BASE, **kw, **{"out-dir": str(tmp_path / "server")})
    grid = LocalGrid(client_app, n, run_config=rc, state_dir=str(tmp_path / "clients"))
    return grid, FedSettings.from_run_config(rc)


@pytest.fixture(scope="module")
def treelora_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fed")
    grid, fed = setup(tmp)
    results = run(grid, fed, progress=False)
    return tmp, grid, fed, results


def test_treelora_federation_runs_to_the_end(treelora_run):
    tmp, grid, fed, res = treelora_run
    assert res["rounds"] == 4 and not res["errors"]
    assert len(res["leaves"]) == 6  # 3 clients x 2 tasks, every task a leaf
    for client, data in res["per_client"].items():
        assert data["tasks"] == [f"{client}/t0", f"{client}/t1"]
        R = data["accuracy_matrix"]
        assert R[0][1] is None and all(0 <= x <= 1 for x in (R[0][0], R[1][0], R[1][1]))
    assert (tmp / "server" / "checkpoint.pb").exists()
    assert len(list((tmp / "server" / "trees").glob("round_*.txt"))) == 3  # the tree as it grows (rounds 2-4)
    assert 0 < res["up_vs_full_model"] < 0.05


def test_assignments_carry_candidates_shares_and_warm_starts(treelora_run):
    _, grid, _, _ = treelora_run
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    by_round: dict[int, list[pb.Assignment]] = {}
    for m in train:
        control, arrays = unpack(m.content)
        a = pb.Assignment.FromString(control)
        by_round.setdefault(int(a.round), []).append((a, arrays))
    # round 1: empty tree, every client in the root: nothing to share yet, no candidates
    assert all(not a.layers and not arrays for a, arrays in by_round[1])
    # round 2, still no leaves: groups from a tree of round 1's running sketches (share-groups=running). Layer 0
    # sits in the root, shared by all; of 3 clients two are nearest each other and share every layer
    L = len(by_round[3][0][0].layers)
    shared = {a.client_id: [la.layer for la in a.layers if la.shared] for a, _ in by_round[2]}
    assert all(s[:1] == [0] for s in shared.values())
    assert sorted(len(s) for s in shared.values())[1:] == [L, L]
    for a, arrays in by_round[2]:
        assert set(arrays) == {f"share.{l}.{p}" for l in shared[a.client_id] for p in ("A", "B")}
    # round 3: leaves exist: candidates from other clients only, a warm start for the new task
    for a, arrays in by_round[3]:
        cands = {c for la in a.layers for c in la.candidates}
        assert cands and not any(c.startswith(a.client_id + "/") for c in cands)
        assert a.warm_start_leaf and "warm.0.A" in arrays
    queries = [m for m in grid.sent if m.metadata.message_type == "query"]
    assert len(queries) == 3  # one probe per client, before its second task


def test_reports_return_xi_for_pulled_candidates(treelora_run):
    _, grid, fed, _ = treelora_run
    reports = [parse_report(unpack(m.content)[0]) for m in grid.received if m.metadata.message_type == "train"]
    with_pulls = [r for r in reports if r.pulls]
    assert with_pulls and all(r.round >= 3 for r in with_pulls)  # candidates exist once leaves do
    for r in with_pulls:
        for pull in r.pulls:
            assert pull.count > 0 and np.isfinite(pull.xi_sum) and pull.xi_sum > 0
            assert not pull.leaf.startswith(r.client_id + "/")
        assert sum(p.count for p in r.pulls) == r.steps * len({p.layer for p in r.pulls})


def test_aggregation_groups_follow_the_tree(tmp_path):
    # the paper's reading (share-groups=route: the global tree's node at each layer's depth) with the paper's split,
    # whose geometry this test spells out
    _, fed = setup(tmp_path, **{"tree-split": "l1-median", "share-groups": "route"})
    state = GlobalState(fed, tmp_path)
    state.num_layers = 3
    a = {l: {"A": torch.full((2, 4), 1.0), "B": torch.zeros(4, 2)} for l in range(3)}
    b = {l: {"A": torch.full((2, 4), 3.0), "B": torch.zeros(4, 2)} for l in range(3)}
    c = {l: {"A": torch.full((2, 4), 9.0), "B": torch.zeros(4, 2)} for l in range(3)}
    # no tree yet: everyone in the root, only layer 0 shared, weighted by examples
    state.round_adapters = {"c0": (a, 1), "c1": (b, 3), "c2": (c, 0)}
    state.aggregate()
    assert set(state.shares["c0"]) == {0}
    assert torch.allclose(state.shares["c0"][0]["A"], torch.full((2, 4), 2.5))
    # with a tree: clients whose sketches sit under the same node share deeper layers. The L1-median split puts
    # tasks near the group mean left and outliers right: a tight group at 0 and scattered far tasks.
    tree = state.strategy.index.ensure(3)
    g = torch.Generator().manual_seed(0)
    near = [torch.zeros(fed.sketch_dim) for _ in range(3)]
    outliers = [[torch.randn(fed.sketch_dim, generator=g) * 100 for _ in range(3)] for _ in range(4)]
    for i in range(4):
        tree.add(f"x{i}/t0", [v + 0.01 * torch.randn(fed.sketch_dim, generator=g) for v in near], rebuild=True)
        tree.add(f"y{i}/t0", outliers[i], rebuild=True)
    state.strategy.sketches = {"c0": near, "c1": near, "c2": outliers[0]}
    state.round_adapters = {"c0": (a, 1), "c1": (b, 1), "c2": (c, 1)}
    state.aggregate()
    assert set(state.shares["c0"]) == set(state.shares["c1"]) == {0, 1, 2}
    assert torch.allclose(state.shares["c0"][2]["A"], torch.full((2, 4), 2.0))  # c0 and c1 only
    assert set(state.shares["c2"]) == {0}  # the root is everyone's; deeper layers stay personal
    assert torch.allclose(state.shares["c2"][0]["A"], torch.full((2, 4), 13.0 / 3))


@pytest.mark.parametrize("split", ["bisect-linkage", "bisect", "average-linkage"])
def test_aggregation_groups_follow_the_clustering_tree(tmp_path, split):
    assert FedSettings().tree_split == "bisect-linkage"  # the default
    _, fed = setup(tmp_path, **{"tree-split": split, "share-groups": "route"})
    state = GlobalState(fed, tmp_path)
    state.num_layers = 3
    a = {l: {"A": torch.full((2, 4), 1.0), "B": torch.zeros(4, 2)} for l in range(3)}
    b = {l: {"A": torch.full((2, 4), 3.0), "B": torch.zeros(4, 2)} for l in range(3)}
    c = {l: {"A": torch.full((2, 4), 9.0), "B": torch.zeros(4, 2)} for l in range(3)}
    # two well-separated clusters of leaves: the clients in one cluster share deeper layers, a lone client does not
    tree = state.strategy.index.ensure(3)
    g = torch.Generator().manual_seed(0)
    here = [torch.zeros(fed.sketch_dim) for _ in range(3)]
    there = [torch.full((fed.sketch_dim,), 50.0) for _ in range(3)]
    for i in range(4):
        tree.add(f"x{i}/t0", [v + torch.randn(fed.sketch_dim, generator=g) for v in here], rebuild=True)
        tree.add(f"y{i}/t0", [v + torch.randn(fed.sketch_dim, generator=g) for v in there], rebuild=True)
    state.strategy.sketches = {"c0": here, "c1": here, "c2": there}
    state.round_adapters = {"c0": (a, 1), "c1": (b, 1), "c2": (c, 1)}
    state.aggregate()
    assert set(state.shares["c0"]) == set(state.shares["c1"]) == {0, 1, 2}
    assert torch.allclose(state.shares["c0"][2]["A"], torch.full((2, 4), 2.0))
    assert set(state.shares["c2"]) == {0}
    assert state.strategy.index.nearest_leaf([v + 0.1 for v in there]).startswith("y")


def test_running_groups_pair_the_nearest_running_tasks_before_any_leaf(tmp_path):
    """share-groups=running (the default): groups come from the round's sketches, not the global tree, so two clients
    on alike tasks share every layer from the first aggregation on, and the head's class means pool with them."""
    _, fed = setup(tmp_path)
    assert fed.share_groups == "running"
    state = GlobalState(fed, tmp_path)
    state.num_layers = 3
    a = {l: {"A": torch.full((2, 4), 1.0), "B": torch.zeros(4, 2)} for l in range(3)}
    b = {l: {"A": torch.full((2, 4), 3.0), "B": torch.zeros(4, 2)} for l in range(3)}
    c = {l: {"A": torch.full((2, 4), 9.0), "B": torch.zeros(4, 2)} for l in range(3)}
    g = torch.Generator().manual_seed(0)
    here = [torch.randn(fed.sketch_dim, generator=g) for _ in range(3)]
    state.strategy.sketches = {"c0": here, "c1": [v + 0.01 for v in here],
                               "c2": [torch.full((fed.sketch_dim,), 50.0) for _ in range(3)]}
    state.round_adapters = {"c0": (a, 1), "c1": (b, 3), "c2": (c, 1)}
    assert len(state.strategy.index) == 0
    state.aggregate()
    assert set(state.shares["c0"]) == set(state.shares["c1"]) == {0, 1, 2}
    assert torch.allclose(state.shares["c0"][2]["A"], torch.full((2, 4), 2.5))  # c0 and c1, weighted by examples
    assert set(state.shares["c2"]) == {0} and torch.allclose(state.shares["c2"][0]["A"], torch.full((2, 4), 3.8))
    assert state.strategy.partners == {"c0": ["c1"], "c1": ["c0"]}  # the last layer's group: the head's partners
    assert state.strategy.prototype_partners(state, "c2") == {"c2"}


def test_fedavg_and_local_only_baselines(tmp_path):
    for method, shared in (("fedavg-lora", True), ("local-only", False)):
        grid, fed = setup(tmp_path / method, method=method)
        res = run(grid, fed, progress=False)
        assert not res["errors"] and res["rounds"] == 4
        assert all(len(c["accuracy_matrix"]) == 2 for c in res["per_client"].values())
        if method == "local-only":  # no communication: no tensors in either direction
            assert all(not unpack(m.content)[1] for m in grid.sent + grid.received)
            assert not res["leaves"]
        shares = [h["shared_layers"] for h in res["history"]]
        assert (all(s > 0 for s in shares) if shared else all(s == 0 for s in shares))
        train = [unpack(m.content) for m in grid.sent if m.metadata.message_type == "train"]
        assert all(not any(k.startswith("cand.") for k in arrays) for _, arrays in train)
        if method == "fedavg-lora":  # no tree: adapters go up, sketches stay home
            up = [unpack(m.content)[1] for m in grid.received if m.metadata.message_type == "train"]
            assert up and all(any(k.startswith("adapter.") for k in a) for a in up)
            assert not any(k.startswith(("sketch.", "final.")) for a in up for k in a)
            assert not res["leaves"]


def test_resume_after_server_crash_loses_nothing(tmp_path):
    grid, fed = setup(tmp_path)

    run_until_crash(grid, fed)
    saved = GlobalState.resume(fed, tmp_path / "server")
    assert saved.round == 2 and len(saved.strategy.leaves) == 3
    resumed_fed = FedSettings.from_run_config({**BASE, "out-dir": str(tmp_path / "server"), "resume": True})
    res = run(grid, resumed_fed, progress=False)
    assert res["rounds"] == 4 and len(res["leaves"]) == 6 and not res["errors"]
    for data in res["per_client"].values():
        assert len(data["accuracy_matrix"]) == 2


def test_resume_refuses_a_different_config(tmp_path):
    grid, fed = setup(tmp_path, **{"num-rounds": 1})
    run(grid, fed, progress=False)
    other = FedSettings.from_run_config({**BASE, "out-dir": str(tmp_path / "server"), "resume": True, "lr": 0.1})
    with pytest.raises(ValueError, match="differs"):
        GlobalState.resume(other, tmp_path / "server")


def test_replayed_round_gets_the_saved_reply(tmp_path):
    grid, fed = setup(tmp_path, n=1, **{"num-rounds": 1})
    state = GlobalState(fed, tmp_path / "server")
    assignment, arrays = state.assignment("?1", 1)
    from flwr.app import Message

    msg = Message(pack(assignment, arrays), dst_node_id=1, message_type="train", group_id="1")
    first = client_app(msg, grid.context(1))
    second = client_app(Message(pack(assignment, arrays), dst_node_id=1, message_type="train", group_id="1"),
                        grid.context(1))
    c1, a1 = unpack(first.content)
    c2, a2 = unpack(second.content)
    assert c1 == c2 and all(np.array_equal(a1[k], a2[k]) for k in a1)


def test_a_client_missing_the_last_round_of_a_task_recovers(tmp_path):
    grid, fed = setup(tmp_path)
    original = grid.push_messages

    def push(messages):
        messages = list(messages)
        rnd = int(messages[0].metadata.group_id) if messages and messages[0].metadata.group_id.isdigit() else 0
        grid.down = {2} if rnd == 2 else set()  # node 2 misses the last round of its first task
        return original(messages)

    grid.push_messages = push  # type: ignore[method-assign]
    res = run(grid, fed, progress=False)
    assert res["rounds"] == 4
    assert [e["node_id"] for e in res["errors"]] == [2] and "no reply" in res["errors"][0]["reason"]
    c1 = res["per_client"]["c1"]
    assert c1["tasks"] == ["c1/t1"] and c1["metrics"]  # its first task closed locally, never reported
    assert "c1/t0" not in res["leaves"] and "c1/t1" in res["leaves"]


def test_a_new_run_does_not_reuse_another_runs_client_state(tmp_path):
    grid, fed = setup(tmp_path, n=1, **{"num-rounds": 1})
    state = GlobalState(fed, tmp_path / "server", run_id="run-a")
    from flwr.app import Message

    a, arrays = state.assignment("?1", 1)
    client_app(Message(pack(a, arrays), dst_node_id=1, message_type="train", group_id="1"), grid.context(1))
    other = GlobalState(fed, tmp_path / "server2", run_id="run-b")
    b, arrays = other.assignment("?1", 1)
    reply = client_app(Message(pack(b, arrays), dst_node_id=1, message_type="train", group_id="1"), grid.context(1))
    unpack(reply.content)  # not a stale replay of run-a's reply: a fresh round 1
    assert (tmp_path / "clients" / "c0" / "state.run-run-a.pt").exists()


def test_node_config_precision_reaches_the_learner(tmp_path):
    """A GPU node's ``precision`` (here bf16 autocast on the CPU) travels from the node config to its learner."""
    from client import learner_cache

    rc = dict(BASE, **{"out-dir": str(tmp_path / "server"), "num-rounds": 1})
    grid = LocalGrid(client_app, 2, run_config=rc, state_dir=str(tmp_path / "clients"),
                     node_config={2: {"precision": "bf16", "device": "cpu"}})
    res = run(grid, FedSettings.from_run_config(rc), progress=False)
    assert res["rounds"] == 1 and not res["errors"]
    used = {(learner.cfg.device, learner.cfg.precision): learner.autocast_dtype
            for learner, _ in learner_cache._LEARNERS.values() if learner.backbone_name == "tiny-bert"}
    assert used[(None, "auto")] is None and used[("cpu", "bf16")] is torch.bfloat16


def test_released_local_method_federates_without_errors(tmp_path):
    """treelora-official clients compare their running weight signature (A values), not gradients, with the
    candidates' sketches, and probe with their live A matrices: no shape mismatch once leaves exist."""
    grid, fed = setup(tmp_path, **{"local-method": "treelora-official", "regularizer": ""})
    res = run(grid, fed, progress=False)
    assert not res["errors"] and len(res["leaves"]) == 6
    reports = [pb.ClientReport.FromString(unpack(m.content)[0]) for m in grid.received
               if m.metadata.message_type == "train"]
    assert any(r.pulls for r in reports)


def test_nearest_candidate_rule_offers_the_nearest_leaf_of_another_client(tmp_path):
    _, fed = setup(tmp_path)
    assert fed.candidate_rule == "nearest"
    state = GlobalState(fed, tmp_path)
    state.num_layers = 3
    tree = state.strategy.index.ensure(3)
    g = torch.Generator().manual_seed(0)
    here = [torch.zeros(fed.sketch_dim) for _ in range(3)]
    there = [torch.full((fed.sketch_dim,), 50.0) for _ in range(3)]
    for key, centre in (("c0/t0", here), ("c1/t0", here), ("c2/t0", there), ("c3/t0", there)):
        tree.add(key, [v + torch.randn(fed.sketch_dim, generator=g) for v in centre], rebuild=True)
    assert state.strategy._nearest_candidates("c0", here) == ["c1/t0"]  # never its own leaf
    assert state.strategy._nearest_candidates("c2", here) == ["c0/t0"] or \
        state.strategy._nearest_candidates("c2", here) == ["c1/t0"]
    assert state.strategy._nearest_candidates("c0", None) is None  # no sketch yet: the LCB bandit picks
