"""``make deploy-demo`` (simulations/deploy/demo.py), as a newcomer runs it: the quick variant finishes a secure
three-node federation, prints the summary table last, and leaves no process behind; Ctrl-C stops everything too."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid

from .conftest import ROOT, tagged_pids


def _demo(tmp_path, tag):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return [sys.executable, "-m", "simulations.deploy.demo", "--quick", "--dir", str(tmp_path / "demo"), "--tag",
            tag], env


def test_quick_demo_finishes_prints_the_table_and_leaves_nothing(tmp_path):
    tag = uuid.uuid4().hex
    cmd, env = _demo(tmp_path, tag)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, out[-6000:] + proc.stderr[-3000:]
    assert not tagged_pids(tag), f"processes left behind: {tagged_pids(tag)}"
    res = json.loads((tmp_path / "demo" / "out" / "results.json").read_text())
    assert res["rounds"] == 2 and len(res["leaves"]) == 6 and not res["errors"]
    lines = out.strip().splitlines()
    assert lines[-1].startswith("report (open in a browser): ") and (tmp_path / "demo" / "out" / "report.html").exists()
    assert any(line.startswith("| treelora |") for line in lines[-5:])  # the table comes last
    assert "TLS" in out and "SuperNodes active" in out and "stopped every process" in out
    assert "Successfully started run" in out  # flwr run over the TLS connection
    assert "FutureWarning" not in out + proc.stderr and "Loading weights" not in out + proc.stderr


def test_ctrl_c_stops_every_process(tmp_path):
    tag = uuid.uuid4().hex
    cmd, env = _demo(tmp_path, tag)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.time() + 300
        while time.time() < deadline and not any("SuperNodes active" in line for line in seen):
            if sel.select(timeout=5):
                line = proc.stdout.readline()
                if not line:
                    break
                seen.append(line)
        assert any("SuperNodes active" in line for line in seen), "".join(seen)
        assert len(tagged_pids(tag)) >= 4  # the SuperLink, its SuperExec, three SuperNodes (+ their SuperExecs)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest and "stopped every process" in rest
    assert not tagged_pids(tag), f"processes left behind: {tagged_pids(tag)}"
