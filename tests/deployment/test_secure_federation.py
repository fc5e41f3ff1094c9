"""Deployment with security: a TLS SuperLink with SuperNode authentication and 3 registered edge nodes runs a
small scenario to the end; a node whose key was never registered is refused and never gets a node id."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from .conftest import TINY


def test_tls_authenticated_federation_and_unregistered_node_refused(deployment):
    dep = deployment
    t0 = time.time()
    dep.make_certs()
    dep.make_keys("edge0", "edge1", "edge2", "rogue")
    dep.start_superlink()
    dep.configure_cli()
    ids = dep.register("edge0", "edge1", "edge2")
    assert len(set(ids.values())) == 3
    for pid in range(3):
        dep.start_node(pid, 3)
    dep.wait_nodes_active(list(ids.values()))

    out = dep.tmp / "out"
    run_id = dep.submit(dict(TINY, **{"tasks-per-client": 2, "rounds-per-task": 1, "out-dir": str(out),
                                      "timeout-s": 120.0}))
    assert run_id > 0

    # An edge node with a key the SuperLink does not know: refused at activation, exits non-zero, gets no id.
    rogue = dep.start_node(0, 3, key="rogue", extra=("--max-retries", "0"), name="rogue")
    rc = rogue.popen.wait(timeout=60)
    assert rc != 0, rogue.tail()
    assert "SuperNode ID:" not in rogue.text(), rogue.tail()
    assert "Failed to activate SuperNode" in rogue.text(), rogue.tail()
    link_log = dep.superlink.text()
    assert "No SuperNode found with the given public key" in link_log

    results = out / "results.json"
    dep.wait_for("results.json", results.exists, timeout=150, interval=1)
    res = json.loads(results.read_text())
    assert res["rounds"] == 2 and not res["errors"], res["errors"]
    assert sorted(res["leaves"]) == ["c0/t0", "c0/t1", "c1/t0", "c1/t1", "c2/t0", "c2/t1"]
    assert all(h["replies"] == 3 for h in res["history"])
    assert set(res["final_evaluation"]["per_client"]) == {"c0", "c1", "c2"}

    # Only the three registered nodes were ever activated; the rogue key got no node id.
    activated = {int(line.rsplit("=", 1)[1]) for line in dep.superlink.text().splitlines()
                 if "[Fleet.ActivateNode] Activated node_id=" in line}
    assert activated == set(ids.values())
    # TLS only: a plain-HTTP request to the SuperLink's port gets no HTTP answer.
    conn = http.client.HTTPConnection("127.0.0.1", dep.port, timeout=5)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        conn.request("GET", "/")
        conn.getresponse()
    conn.close()
    print(f"secure federation: {time.time() - t0:.1f} s")
