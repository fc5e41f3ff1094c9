"""GlobalState at many leaves, driven by synthetic but fully valid reports (no training): checkpoint contents,
resume, and the rebuild schedule of the global tree."""

import io

import pytest
import torch

from protos.wire import parse_checkpoint
from server.checkpoint import CHECKPOINT
from server.state import GlobalState
from simulations.bench_common import SynthFed
from treelora.fed.settings import FedSettings
from treelora.tree import TaskTree

SHAPES = [((2, 8), (8, 2))] * 3


def grown(tmp_path, leaves: int, clients: int = 5, **settings) -> tuple[FedSettings, SynthFed]:
    # every client finishes a task every round: a schedule of one round per task, long enough for the test
    fed = FedSettings(method="treelora", backbone="tiny-bert", out_dir=str(tmp_path), sketch_dim=32,
                      rounds_per_task=1, tasks_per_client=1000, **settings)
    synth = SynthFed(fed, tmp_path, SHAPES, seed=0, clusters=4)
    made, rnd = 0, 1
    while made < leaves:
        for i in range(clients):
            if made == leaves:
                break
            c = f"c{i}"
            ctl, arrays = synth.report(c, rnd, finished=True)
            synth.state.ingest(c if c in synth.state.clients else None, i + 1, rnd, ctl, arrays)
            made += 1
        synth.state.round_adapters = {}
        synth.state.round = rnd
        rnd += 1
    return fed, synth


def test_checkpoint_refers_to_leaf_sketches_and_resume_restores_the_tree_exactly(tmp_path):
    fed, synth = grown(tmp_path, 23)
    state = synth.state
    state.checkpoint()
    msg = parse_checkpoint((tmp_path / CHECKPOINT).read_bytes())
    blob = torch.load(io.BytesIO(msg.tree), weights_only=False)
    assert len(blob["tree"]["entries"]) == 23
    assert all(e["signature"] is None for e in blob["tree"]["entries"])  # each lives once, in its leaf's file
    back = GlobalState.resume(FedSettings(**{**fed.__dict__, "resume": True}), tmp_path)
    a, b = state.strategy.tree.to_dict(), back.strategy.tree.to_dict()
    assert a["root"].keys() == b["root"].keys() and back.strategy.tree.render() == state.strategy.tree.render()
    for ea, eb in zip(a["entries"], b["entries"]):
        assert ea["key"] == eb["key"]
        for x, y in zip(ea["signature"], eb["signature"]):
            assert torch.equal(x, y)
    assert (back.strategy.index.since_build, back.strategy.index.built_size) == (
        state.strategy.index.since_build, state.strategy.index.built_size)
    assert all(torch.equal(back.strategy.tree.node_at(n.path).center, n.center)
               for n in state.strategy.tree.nodes() if n.center is not None)


def test_resume_names_a_missing_leaf_file(tmp_path):
    fed, synth = grown(tmp_path, 6)
    synth.state.checkpoint()
    (tmp_path / "leaves" / "c2__t0.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="c2/t0"):
        GlobalState.resume(FedSettings(**{**fed.__dict__, "resume": True}), tmp_path)


def test_resume_names_an_unreadable_leaf_file(tmp_path):
    fed, synth = grown(tmp_path, 6)
    synth.state.checkpoint()
    path = tmp_path / "leaves" / "c1__t0.safetensors"
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.raises(ValueError, match="c1/t0.*cannot be read"):
        GlobalState.resume(FedSettings(**{**fed.__dict__, "resume": True}), tmp_path)


def test_global_tree_rebuilds_geometrically_not_every_few_inserts(tmp_path, monkeypatch):
    builds = []
    original = TaskTree.build

    def counting_build(self):
        builds.append(len(self.entries))
        original(self)

    monkeypatch.setattr(TaskTree, "build", counting_build)
    grown(tmp_path / "small", 40, clients=10)
    assert builds == list(range(1, 41))  # below rebuild-below (64) leaves: every insert rebuilds
    builds.clear()
    grown(tmp_path, 200, clients=10, rebuild_below=0)
    rebuilds = builds[1:]  # the first insert builds the one-leaf tree
    assert rebuilds[:4] == [4, 8, 12, 16]  # a small tree: every rebuild-every = 4 inserts, as on a client
    for before, after in zip(rebuilds, rebuilds[1:]):
        assert after - before >= max(4, 0.25 * before)
    assert len(rebuilds) <= 16  # every 4 inserts would be 50


def test_fedavg_server_rejects_a_report_carrying_sketches_and_keeps_its_state(tmp_path):
    """fedavg-lora clients send adapters only; a report with sketches is a protocol error that changes nothing."""
    from protos.wire import ProtocolError

    fed = FedSettings(method="fedavg-lora", backbone="tiny-bert", out_dir=str(tmp_path), sketch_dim=32)
    synth = SynthFed(fed, tmp_path, SHAPES, seed=0, clusters=4)
    ctl, arrays = synth.report("c0", 1, finished=True)  # built like a treelora client's: with sketches
    with pytest.raises(ProtocolError, match="sketch") as err:
        synth.state.ingest(None, 1, 1, ctl, arrays)
    assert err.value.code == "unexpected-tensor"
    assert not synth.state.clients and not synth.state.strategy.known_leaves() and not synth.state.round_adapters


def test_a_rejected_first_report_does_not_fix_the_adapter_shapes(tmp_path):
    """Shapes are trusted on first use only once that first report is valid: a bad one teaches the server nothing."""
    from protos.wire import ProtocolError

    fed = FedSettings(method="treelora", backbone="tiny-bert", out_dir=str(tmp_path), sketch_dim=32)
    synth = SynthFed(fed, tmp_path, SHAPES, seed=0, clusters=4)
    ctl, arrays = synth.report("c0", 1, finished=False)
    arrays = {k: v for k, v in arrays.items() if k != "sketch.0"}  # incomplete
    with pytest.raises(ProtocolError):
        synth.state.ingest(None, 1, 1, ctl, arrays)
    assert synth.state.num_layers == 0 and synth.state.adapter_shapes == []
    ctl, arrays = synth.report("c0", 1, finished=False)
    synth.state.ingest(None, 1, 1, ctl, arrays)
    assert synth.state.num_layers == 3 and synth.state.adapter_shapes == [((2, 8), (8, 2))] * 3


def test_global_tree_measures_with_the_configured_estimator():
    """``tree-estimator`` picks the sketch L1 estimator of the server's tree distances (and nothing else)."""
    from server.global_tree import GlobalTree
    from treelora.sketch import LinearSketch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 64, generator=g), torch.randn(3, 64, generator=g)
    sk = LinearSketch(1, 64, "cauchy", 1234)
    for est in ("median", "geomean"):
        tree = GlobalTree(FedSettings(sketch_dim=64, tree_estimator=est))
        torch.testing.assert_close(tree.distance(0, a, b), sk.l1_distance(a, b, estimator=est), rtol=0, atol=0)
    assert FedSettings().tree_estimator == "geomean"
    assert not torch.equal(GlobalTree(FedSettings(sketch_dim=64, tree_estimator="median")).distance(0, a, b),
                           GlobalTree(FedSettings(sketch_dim=64, tree_estimator="geomean")).distance(0, a, b))


def test_a_clients_tree_path_is_reused_only_while_its_sketch_and_the_tree_are_unchanged(tmp_path, monkeypatch):
    fed, synth = grown(tmp_path, 12)
    strategy = synth.state.strategy
    calls = []
    real = strategy.index.locate
    monkeypatch.setattr(strategy.index, "locate", lambda s: calls.append(1) or real(s))
    sketch = strategy.sketches["c0"]
    first = strategy._path("c0", sketch)
    assert strategy._path("c0", sketch) is first and len(calls) == 1  # aggregation, then the next assignment
    other = [t.clone() for t in sketch]  # a new report: a new sketch object
    assert [n.path for n in strategy._path("c0", other)] == [n.path for n in first] and len(calls) == 2
    ctl, arrays = synth.report("c1", synth.state.round + 1, finished=True)  # the tree changes
    synth.state.ingest("c1", 2, synth.state.round + 1, ctl, arrays)
    again = strategy._path("c0", other)
    assert len(calls) == 3 and [n.path for n in again] == [n.path for n in real(other)]


def test_a_leaf_file_is_the_safetensors_file_the_torch_writer_makes():
    from safetensors.torch import save

    from server.leaf_store import _safetensors_bytes

    flat = {"0.A": torch.randn(2, 8), "0.B": torch.randn(8, 2), "sketch.0": torch.randn(32)}
    assert _safetensors_bytes(flat) == save(flat)  # the numpy fast path
    flat["half"] = torch.randn(3).to(torch.bfloat16)  # numpy has no bf16: the torch writer
    assert _safetensors_bytes(flat) == save(flat)
