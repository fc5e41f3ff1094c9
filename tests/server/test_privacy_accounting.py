"""DP on sketches end to end: clients noise before sketching, the server accounts (ε, δ) per client."""

import math

import pytest

from client.client_app import app as client_app
from server.local_grid import LocalGrid
from server.loop import run
from treelora.fed.settings import FedSettings

RC = {"stream": "synthetic-text", "backbone": "tiny-bert", "tasks-per-client": 2, "rounds-per-task": 2,
      "local-steps": 2, "batch-size": 8, "train-per-class": 16, "test-per-class": 8, "regularizer": "l1-grad-fd",
      "sketch-dim": 64, "dp-clip": 1.0, "dp-noise": 1.5}


@pytest.mark.parametrize("signature,releases", [
    # live: one sketch per round, one final sketch per finished task, one warm-start query probe (task 2)
    ("live", 4 + 2 + 1),
    # shared probe: one release per task (sent with every report of the task), plus the warm-start query's own
    ("probe-grad", 2 + 1),
    # the label-free probe: sketched at the LoRA layers' input widths, released and accounted the same way
    ("probe-input", 2 + 1),
])
def test_dp_sketches_are_accounted_per_client(tmp_path, signature, releases):
    rc = dict(RC, **{"out-dir": str(tmp_path / "server"), "tree-signature": signature})
    res = run(LocalGrid(client_app, 2, run_config=rc, state_dir=str(tmp_path / "c")), FedSettings.from_run_config(rc),
              progress=False)
    priv = res["privacy"]
    assert priv["enabled"] and priv["covers"] == ["sketches"] and priv["not_covered"] == ["adapters"]
    from dp_accounting import dp_event, rdp

    for client in ("c0", "c1"):
        entry = priv["per_client"][client]
        assert entry["releases"] == releases
        acc = rdp.RdpAccountant()
        acc.compose(dp_event.GaussianDpEvent(1.5), count=releases)
        assert entry["epsilon"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-6)
        assert math.isfinite(entry["epsilon"]) and entry["epsilon"] > 0
    assert not res["errors"] and len(res["leaves"]) == 4


def test_dp_settings_need_clip_and_noise():
    with pytest.raises(ValueError, match="clip and a noise"):
        FedSettings.from_run_config({"dp-noise": 1.0})
    with pytest.raises(ValueError, match="dp-delta"):
        FedSettings.from_run_config({"dp-delta": 2.0})
