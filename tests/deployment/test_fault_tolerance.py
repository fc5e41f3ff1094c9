"""Fault tolerance of a real deployment (TLS + node authentication, 2 edge nodes on loopback).

* A client killed mid-round: while its ClientApp process for round 3 runs, the edge node is killed (SIGTERM to the
  SuperNode, its SuperExec and that ClientApp — with tiny-bert most of the process's life is imports, so the kill
  lands before or during its few training steps; either way the round's work is lost). The SuperNode deactivates
  itself on SIGTERM, so the SuperLink answers the server with NODE_UNAVAILABLE and round 3 completes with the other
  client (``timeout-s`` bounds it otherwise). The node is restarted with the same key (same node id) and state-dir
  and continues its stream from its on-disk state: it trains task 1 in round 4 and its leaf appears. After a hard
  crash (SIGKILL, power loss) the SuperLink keeps the node online for up to 2 x 30 s of missed heartbeats and
  refuses its re-activation meanwhile; start_supernode.sh's NODE_RETRY_S covers that (README.md), it is too slow
  for a unit test.
* The server killed mid-run: the SuperLink with its SuperExec and the ServerApp is killed right after round 3's
  checkpoint, restarted on the same database (the SuperNodes stay up and reconnect), the crashed run is stopped
  (``flwr stop``: drops its queued messages) and the run is submitted again with resume=true: no leaf, bandit
  statistic or round of the pre-crash checkpoint is lost, and the run finishes.

Scenario: 2 tasks x 2 rounds per client, so round 3 is the first round of task 1 (a client that misses it still
trains task 1 in round 4) and rounds 3-4 carry LCB bandit statistics over the leaves of round 2.
"""

from __future__ import annotations

import hashlib
import io
import json
import signal
import time

import torch

from protos.wire import parse_checkpoint

from .conftest import TINY, checkpoint_round

SCENARIO = {"tasks-per-client": 2, "rounds-per-task": 2, "warm-start": False, "timeout-s": 45.0}


def _up(dep, n=2):
    dep.make_certs()
    names = [f"edge{i}" for i in range(n)]
    dep.make_keys(*names)
    dep.start_superlink()
    dep.configure_cli()
    ids = dep.register(*names)
    for pid in range(n):
        dep.start_node(pid, n)
    dep.wait_nodes_active(list(ids.values()))
    return ids


def _client_state(dep, client):
    return torch.load(dep.tmp / "state" / client / "state.pt", weights_only=False)


def test_client_killed_mid_round_restarts_from_its_state(deployment):
    dep = deployment
    t0 = time.time()
    ids = _up(dep)
    out = dep.tmp / "out"
    dep.submit(dict(TINY, **SCENARIO, **{"out-dir": str(out)}))

    dep.wait_for("round 2's checkpoint", lambda: checkpoint_round(out) >= 2, timeout=150)
    assert _client_state(dep, "c1")["last_round"] == 2
    node = dep.nodes[1]

    def round3_clientapp():  # the node logged round 3's train message and started a ClientApp for it
        text = node.text()
        at = text.find("ROUND 3]")
        started = at >= 0 and "Start `flwr-clientapp` process" in text[at:]
        return started and node.children_named("flwr-clientapp")

    dep.wait_for("edge node 1's round-3 ClientApp process", round3_clientapp, timeout=60, interval=0.1)
    time.sleep(1.0)
    assert checkpoint_round(out) == 2, "round 3 ended before the kill"
    node.kill_tree(signal.SIGTERM)  # the SuperNode, its SuperExec and the ClientApp that is training round 3
    assert node.popen.returncode is not None
    assert _client_state(dep, "c1")["last_round"] == 2  # the killed round left no partial state behind

    dep.start_node(1, 2)  # same key (same node id), same state-dir
    results = out / "results.json"
    dep.wait_for("results.json", results.exists, timeout=180, interval=1)
    res = json.loads(results.read_text())

    assert res["rounds"] == 4
    by_round = {h["round"]: h for h in res["history"]}
    assert by_round[3]["replies"] == 1  # the round completed with the surviving client
    assert all(by_round[r]["replies"] == 2 for r in (1, 2, 4))  # ... and the restarted one is back in round 4
    assert sorted(res["leaves"]) == ["c0/t0", "c0/t1", "c1/t0", "c1/t1"]  # its later task's leaf
    c1 = res["per_client"]["c1"]
    assert c1["tasks"] == ["c1/t0", "c1/t1"] and all(x is not None for x in c1["accuracy_matrix"][1])
    assert _client_state(dep, "c1")["last_round"] == 4
    assert not [e for e in res["errors"] if e["round"] != 3], res["errors"]
    assert f"Deactivated node_id={ids['edge1']}" in dep.superlink.text()
    print(f"client kill: {time.time() - t0:.1f} s, round 3 errors: {res['errors']}")


def _leaf_hashes(out):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "leaves").glob("*.safetensors")}


def test_server_killed_mid_run_resumes_without_loss(deployment):
    dep = deployment
    t0 = time.time()
    _up(dep)
    out = dep.tmp / "out"
    run_config = dict(TINY, **SCENARIO, **{"out-dir": str(out)})
    first_run = dep.submit(run_config)

    dep.wait_for("round 3's checkpoint", lambda: checkpoint_round(out) >= 3, timeout=170, interval=0.1)
    dep.superlink.kill_tree(signal.SIGKILL)  # SuperLink + SuperExec + ServerApp: the server host crashes
    pre_bytes = (out / "checkpoint.pb").read_bytes()
    pre = parse_checkpoint(pre_bytes)
    assert pre.round == 3
    pre_meta = json.loads(pre.bandit.decode())
    pre_leaves = {leaf.key: leaf for leaf in pre.leaves}
    pre_hashes = _leaf_hashes(out)
    assert sorted(pre_leaves) == ["c0/t0", "c1/t0"]
    assert set(pre_meta["bandits"]) == {"c0", "c1"}  # round 3 pulled candidates over the other client's leaf
    assert all(sum(b["arms"]["layer_cnt"]) > 0 for b in pre_meta["bandits"].values())

    dep.start_superlink()  # same --database: the registered nodes and their ids survive; the nodes reconnect
    # The crashed run still counts as running and holds its queued round-4 messages: stop it (this drops them),
    # then submit again with resume=true.
    stop = dep.sh("flwr", "stop", str(first_run), "deploy")
    assert "successfully stopped" in stop.stdout, stop.stdout
    second_run = dep.submit(run_config, overrides="resume=true")
    assert second_run != first_run
    results = out / "results.json"
    dep.wait_for("results.json of the resumed run", results.exists, timeout=150, interval=1)

    final = parse_checkpoint((out / "checkpoint.pb").read_bytes())
    meta = json.loads(final.bandit.decode())
    assert final.round == 4 and final.run_id == pre.run_id
    # rounds: none lost, none repeated; the pre-crash rounds' records are untouched
    assert [h["round"] for h in meta["history"]] == [1, 2, 3, 4]
    assert meta["history"][:3] == pre_meta["history"]
    # leaves: every pre-crash leaf kept, byte for byte, and the run's later leaves added
    final_leaves = {leaf.key: leaf for leaf in final.leaves}
    for key, leaf in pre_leaves.items():
        assert final_leaves[key] == leaf
    assert sorted(final_leaves) == ["c0/t0", "c0/t1", "c1/t0", "c1/t1"]
    hashes = _leaf_hashes(out)
    assert all(hashes[name] == h for name, h in pre_hashes.items())
    tree = torch.load(io.BytesIO(final.tree), weights_only=False)["tree"]
    assert set(pre_leaves) <= {e["key"] for e in tree["entries"]}
    # bandit statistics: round 4 continues the clients' tasks, so every pre-crash count can only have grown
    for client, b in pre_meta["bandits"].items():
        after = meta["bandits"][client]["arms"]
        for key, counts in b["arms"]["cnt"].items():
            assert all(a >= c for a, c in zip(after["cnt"][key], counts)), (client, key)
            assert all(a >= c for a, c in zip(after["sum"][key], b["arms"]["sum"][key])), (client, key)
        assert sum(after["layer_cnt"]) > sum(b["arms"]["layer_cnt"])
    assert meta["acc_rows"] == {c: rows + meta["acc_rows"][c][len(rows):] for c, rows in pre_meta["acc_rows"].items()}
    res = json.loads(results.read_text())
    assert res["rounds"] == 4 and sorted(res["leaves"]) == ["c0/t0", "c0/t1", "c1/t0", "c1/t1"]
    assert set(res["final_evaluation"]["per_client"]) == {"c0", "c1"}
    print(f"server kill: {time.time() - t0:.1f} s, errors: {res['errors']}")
