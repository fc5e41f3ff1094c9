"""The shared-probe signature a client releases: its layers scaled as ``probe-norm`` says, then sketched."""

import torch

from client.node import ClientNode
from client.node_settings import NodeSettings
from treelora.fed.settings import FedSettings
from treelora.probe import normalise_layers
from treelora.sketch import LayerSketcher

RC = {"stream": "synthetic-text", "backbone": "tiny-bert", "tasks-per-client": 2, "rounds-per-task": 1,
      "local-steps": 1, "batch-size": 8, "train-per-class": 16, "test-per-class": 4, "sketch-dim": 32}


def _node(tmp_path, **over):
    fed = FedSettings.from_run_config({**RC, **over})
    return fed, ClientNode(fed, NodeSettings(partition_id=0, num_partitions=2, state_dir=tmp_path / "c0"))


def test_released_probe_is_the_sketch_of_the_unit_l1_layers(tmp_path):
    fed, node = _node(tmp_path)
    assert fed.probe_norm == "l1"
    learner, _ = node._learner()
    task = node._task(0)
    raw = learner.probe_signature(node._shard(task.train, node.schedule.tasks[0]), task.classes,
                                  batches=fed.probe_batches, kind=fed.tree_signature, seed=fed.seed)
    mine = node._shared_probe(learner, 0)
    assert all(abs(float(v.abs().sum()) - 1.0) < 1e-5 for v in mine)
    assert all(torch.allclose(a, b) for a, b in zip(mine, normalise_layers(raw, "l1")))
    sketcher = LayerSketcher([v.numel() for v in raw], out_dim=32, kind="cauchy", seed=fed.sketch_seed)
    released = node._release_probe(learner, 0)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(released, sketcher.sketch(mine)))


def test_probe_norm_none_releases_the_signature_as_measured(tmp_path):
    fed, node = _node(tmp_path, **{"probe-norm": "none"})
    learner, _ = node._learner()
    task = node._task(0)
    raw = learner.probe_signature(node._shard(task.train, node.schedule.tasks[0]), task.classes,
                                  batches=fed.probe_batches, kind=fed.tree_signature, seed=fed.seed)
    assert all(torch.equal(a, b) for a, b in zip(node._shared_probe(learner, 0), raw))
