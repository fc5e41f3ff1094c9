"""The run config: kebab-case keys, types, clear errors, one mapping to the client's learner config, and the same
defaults as pyproject.toml's [tool.flwr.app.config]."""

import dataclasses
from pathlib import Path

import pytest
import tomllib

from treelora.config import LearnerConfig
from treelora.fed.settings import LEARNER_KEYS, FedSettings

ROOT = Path(__file__).resolve().parents[3]


def test_run_config_parses_types_and_names_unknown_keys():
    fed = FedSettings.from_run_config({"local-steps": "4", "share-layers": "false", "rebuild-growth": "0.5"})
    assert fed.local_steps == 4 and fed.share_layers is False and fed.rebuild_growth == 0.5
    with pytest.raises(ValueError, match="run config: unknown key 'local_step' for FedSettings; known keys: method"):
        FedSettings.from_run_config({"local_step": 4})
    with pytest.raises(ValueError, match="share-layers='maybe': expected bool"):
        FedSettings.from_run_config({"share-layers": "maybe"})
    with pytest.raises(ValueError, match="rebuild-growth must be >= 0"):
        FedSettings(rebuild_growth=-1.0)
    with pytest.raises(ValueError, match="l1-reduction must be sum or mean"):
        FedSettings.from_run_config({"l1-reduction": "max"})
    with pytest.raises(
        ValueError, match="unknown federated method 'fedprox'; known: treelora, fedavg-lora, local-only"
    ):
        FedSettings(method="fedprox")
    with pytest.raises(ValueError, match="scenario must be one of"):
        FedSettings(scenario="random")
    with pytest.raises(ValueError, match="head must be one of"):
        FedSettings(head="knn")
    with pytest.raises(ValueError, match="method=fedproto scores with head=ncm; head=slca does not apply"):
        FedSettings(method="fedproto", head="slca")
    assert FedSettings(method="local-only", head="ncm").learner_config().head == "ncm"
    with pytest.raises(ValueError, match="tree-estimator must be one of median, geomean"):
        FedSettings.from_run_config({"tree-estimator": "mean"})
    assert FedSettings(method="treelora").fed_method.sends_sketches
    assert not FedSettings(method="fedavg-lora").fed_method.sends_sketches


def test_every_run_config_key_is_in_pyproject_with_the_same_default():
    flwr_config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    defaults = FedSettings().to_run_config()
    assert sorted(flwr_config) == sorted(defaults)
    for key, value in defaults.items():
        assert flwr_config[key] == value and type(flwr_config[key]) is type(value), key
    assert FedSettings.from_run_config(flwr_config) == FedSettings()


def test_learner_config_takes_every_shared_field_and_the_method_preset():
    shared = {f.name for f in dataclasses.fields(FedSettings)} & {f.name for f in dataclasses.fields(LearnerConfig)}
    assert LEARNER_KEYS == shared - {"method"}
    fed = FedSettings(
        batch_size=7,
        leaf_size=2,
        lcb_c=0.5,
        lam=0.1,
        lr=2e-3,
        head_lr=3e-2,
        max_length=20,
        seed=5,
        rebuild_every=3,
        l1_reduction="mean",
        regularizer="l1-grad-fd",
        threads=1,
    )
    cfg = fed.learner_config(device="cpu", precision="fp32")
    for name in LEARNER_KEYS:
        assert getattr(cfg, name) == getattr(fed, name), name
    assert (cfg.method, cfg.device, cfg.precision, cfg.progress) == ("treelora", "cpu", "fp32", False)
    default = FedSettings().learner_config()
    assert (default.regularizer, default.l1_reduction) == ("l1-grad", "sum")  # "" = the preset's own
    assert FedSettings(method="fedavg-lora").learner_config().method == "seqlora"
    assert FedSettings(local_method="treelora-official").learner_config().regularizer == "official"
