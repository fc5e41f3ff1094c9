"""run_federation.sh's run config: preset + KEY=VALUE overrides through treelora.overrides, checked whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from simulations.deploy.merge_config import main, merge

ROOT = Path(__file__).resolve().parents[2]
EDGE = ROOT / "simulations" / "deploy" / "edge.toml"


def test_overrides_are_typed_and_merged():
    cfg = merge(EDGE, 'resume=true local-steps=4 lr=1e-3 out-dir="/data/my runs" l1_reduction=mean')
    assert cfg["resume"] is True and cfg["local-steps"] == 4 and cfg["lr"] == 0.001
    assert cfg["out-dir"] == "/data/my runs" and cfg["l1-reduction"] == "mean"
    assert cfg["backbone"] == "minilm"  # the preset's own keys stay


@pytest.mark.parametrize("bad, msg", [("local-step=4", "local-step"), ("local-steps=four", "local-steps"),
                                      ("noequals", "noequals"), ("local-steps=0", "local-steps")])
def test_bad_overrides_are_refused_before_submitting(bad, msg, tmp_path, capsys):
    with pytest.raises(ValueError, match=msg):
        merge(EDGE, bad)
    assert main([str(EDGE), bad, str(tmp_path / "out.toml")]) == 2
    assert msg in capsys.readouterr().err and not (tmp_path / "out.toml").exists()


def test_the_script_uses_it(tmp_path):
    """run_federation.sh stops with the parser's message (before configure_cli or flwr are reached)."""
    env = {"PATH": "/usr/bin:/bin", "DEPLOY_DIR": str(tmp_path), "FLWR_HOME": str(tmp_path / "home"),
           "PYTHON": sys.executable}
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "config.toml").write_text("[superlink]\n")  # non-empty: configure_cli.sh is skipped
    proc = subprocess.run(["bash", str(ROOT / "simulations" / "deploy" / "run_federation.sh"), str(EDGE),
                           "local-steps=many"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "local-steps" in proc.stderr
    assert tomllib.loads((tmp_path / "home" / "config.toml").read_text()) == {"superlink": {}}
