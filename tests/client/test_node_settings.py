"""Node-config parsing: identity, state path, device and precision, with clear errors."""

from pathlib import Path

import pytest

from client.node_settings import NodeSettings
from treelora.fed.settings import FedSettings


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
    with pytest.raises(ValueError, match="needs integer 'partition-id'"):
        NodeSettings.from_node_config({"num-partitions": 3}, fed)
