"""One smoke run through Flower's real simulation engine: `flwr run .` with a local SuperLink and Ray."""

import json

import pytest

from simulations.run import _superlink_pids, main


@pytest.mark.slow
def test_flwr_run_smoke(tmp_path, capsys):
    home = tmp_path / "flwr-home"
    out = tmp_path / "out"
    rc = main([
        "--preset", "scale", "--clients", "2", "--methods", "treelora", "--out", str(out), "--flwr-home", str(home),
        "--set", "num-rounds=2", "--set", "tasks-per-client=2",
    ])
    assert rc == 0
    res = json.loads((out / "treelora" / "results.json").read_text())
    assert res["rounds"] == 2 and not res["errors"]
    assert sorted(res["leaves"]) == ["c0/t0", "c0/t1", "c1/t0", "c1/t1"]
    assert "| treelora |" in (out / "summary.md").read_text()
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == f"report (open in a browser): {out / 'report.html'}"  # after the summary table
    assert "| treelora |" in "\n".join(printed[-6:])
    assert (out / "report.html").read_text().count("<svg") >= 4
    assert not _superlink_pids(home)  # the local SuperLink that flwr run started was stopped
