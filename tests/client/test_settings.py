"""Run-config and node-config parsing: kebab-case keys, types, clear errors."""

from pathlib import Path

import pytest

from client.settings import FedSettings, NodeSettings


def test_run_config_parses_types_and_names_unknown_keys():
    fed = FedSettings.from_run_config({"local-steps": "4", "share-layers": "false", "rebuild-growth": "0.5"})
    assert fed.local_steps == 4 and fed.share_layers is False and fed.rebuild_growth == 0.5
    with pytest.raises(ValueError, match="unknown run-config key 'local_step'"):
        FedSettings.from_run_config({"local_step": 4})
    with pytest.raises(ValueError, match="rebuild-growth must be >= 0"):
        FedSettings(rebuild_growth=-1.0)
    with pytest.raises(ValueError, match="l1-reduction must be sum or mean"):
        FedSettings.from_run_config({"l1-reduction": "max"})
    assert FedSettings(method="treelora").uses_sketches and not FedSettings(method="fedavg-lora").uses_sketches


def test_node_config_device_and_precision(tmp_path):
    fed = FedSettings(out_dir=str(tmp_path))
    node = NodeSettings.from_node_config({"partition-id": 1, "num-partitions": 3}, fed)
    assert (node.client_id, node.device, node.precision) == ("c1", None, "auto")
    assert node.state_dir == Path(tmp_path) / "clients" / "c1"
    gpu = NodeSettings.from_node_config(
        {"partition-id": 0, "num-partitions": 1, "device": "cuda:1", "precision": "bf16", "state-dir": "/s"}, fed)
    assert (gpu.device, gpu.precision, gpu.state_dir) == ("cuda:1", "bf16", Path("/s/c0"))
    with pytest.raises(ValueError, match="precision='half' is not one of auto, bf16, fp32"):
        NodeSettings.from_node_config({"partition-id": 0, "num-partitions": 1, "precision": "half"}, fed)
    with pytest.raises(ValueError, match="partition-id 3 is outside 0..2"):
        NodeSettings.from_node_config({"partition-id": 3, "num-partitions": 3}, fed)
