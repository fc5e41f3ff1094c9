"""server/centre_store.py: checkpoints refer to the tree's node centres in append-only segments; a round writes only
the centres it created, resume restores them bit for bit, a crash between a segment and its checkpoint loses
nothing, unused segments go only after a newer checkpoint, and a missing or unreadable segment is a clear error."""

import io

import pytest
import torch
from safetensors.torch import load_file

from protos.wire import parse_checkpoint
from server.checkpoint import CHECKPOINT
from server.state import GlobalState
from simulations.bench_common import SynthFed
from treelora.fed.settings import FedSettings

from .test_state import grown


def segments(tmp_path):
    return sorted(p.name for p in (tmp_path / "tree_centres").glob("centres-*.safetensors"))


def resume(fed, tmp_path):
    return GlobalState.resume(FedSettings(**{**fed.__dict__, "resume": True}), tmp_path)


def grow(synth, n, start_round, clients=5):
    """``n`` more finished-task reports after round ``start_round``."""
    rnd, made = start_round + 1, 0
    while made < n:
        for i in range(clients):
            if made == n:
                break
            ctl, arrays = synth.report(f"c{i}", rnd, finished=True)
            synth.state.ingest(f"c{i}", i + 1, rnd, ctl, arrays)
            made += 1
        synth.state.round_adapters = {}
        synth.state.round = rnd
        rnd += 1
    return rnd - 1


def same_centres(a, b):
    nodes = [n for n in a.strategy.tree.nodes() if n.center is not None]
    assert nodes and [n.path for n in a.strategy.tree.nodes()] == [n.path for n in b.strategy.tree.nodes()]
    return all(torch.equal(b.strategy.tree.node_at(n.path).center, n.center) for n in nodes)


def deep(tmp_path, leaves):
    """A tree deep enough for inserts to split leaves: 8 layers (the depth cap), 4 clusters, no rebuild-below."""
    fed = FedSettings(method="treelora", backbone="tiny-bert", out_dir=str(tmp_path), sketch_dim=32,
                      rounds_per_task=1, tasks_per_client=1000, rebuild_below=0)
    synth = SynthFed(fed, tmp_path, [((2, 8), (8, 2))] * 8, seed=0, clusters=4)
    grow(synth, leaves, 0)
    return fed, synth


def test_a_round_writes_only_its_new_centres_and_the_checkpoint_holds_none(tmp_path):
    fed, synth = deep(tmp_path, 100)
    state = synth.state
    state.checkpoint()
    first = segments(tmp_path)
    assert len(first) == 1
    msg = parse_checkpoint((tmp_path / CHECKPOINT).read_bytes())
    blob = torch.load(io.BytesIO(msg.tree), weights_only=False)
    stack = [blob["tree"]["root"]]
    while stack:  # no tensor centre left in the checkpoint: references only
        n = stack.pop()
        assert n["center"] is None or set(n["center"]) == {"segment", "name"}
        stack.extend(n["children"])
    total = sum(n.center is not None for n in state.strategy.tree.nodes())
    state.checkpoint()  # nothing changed: no new segment
    assert segments(tmp_path) == first
    built = state.strategy.index.built_size
    for _ in range(10):  # inserts without a rebuild, until one splits a leaf: only that split's centres are new
        grow(synth, 2, state.round)
        state.checkpoint()
        if segments(tmp_path) != first:
            break
    assert state.strategy.index.built_size == built  # no rebuild happened
    new = [s for s in segments(tmp_path) if s not in first]
    assert len(new) == 1 and 1 <= len(load_file(tmp_path / "tree_centres" / new[0])) < total / 4
    back = resume(fed, tmp_path)
    assert back.round == state.round and same_centres(state, back)
    assert back.strategy.tree.render() == state.strategy.tree.render()


def test_a_crash_after_a_segment_before_its_checkpoint_resumes_the_last_checkpoint(tmp_path):
    fed, synth = grown(tmp_path, 30, rebuild_below=0)
    state = synth.state
    state.checkpoint()
    before = state.strategy.tree.render()
    grow(synth, 20, state.round)  # enough inserts for a rebuild: every centre new
    state.strategy.state_dict()  # the next checkpoint's segment is written ... and the process dies here
    assert len(segments(tmp_path)) == 2
    back = resume(fed, tmp_path)  # the last durable checkpoint, with its own segment
    assert back.strategy.tree.render() == before
    back.checkpoint()  # the resumed server's next checkpoint: a fresh name, and the stray segment is pruned
    assert len(segments(tmp_path)) == 1
    assert resume(fed, tmp_path).strategy.tree.render() == before


def test_segments_no_checkpoint_uses_are_deleted_after_the_newer_checkpoint(tmp_path):
    fed, synth = grown(tmp_path, 30, rebuild_below=0)
    state = synth.state
    state.checkpoint()
    old = segments(tmp_path)
    grow(synth, 40, state.round)  # rebuilt on the way: the old centres are all replaced
    state.checkpoint()
    now = segments(tmp_path)
    assert not set(old) & set(now) and len(now) == 1
    assert same_centres(state, resume(fed, tmp_path))


def test_resume_names_a_missing_or_unreadable_centre_segment(tmp_path):
    fed, synth = grown(tmp_path, 12, rebuild_below=0)
    synth.state.checkpoint()
    (seg,) = segments(tmp_path)
    path = tmp_path / "tree_centres" / seg
    data = path.read_bytes()
    path.write_bytes(data[:30])
    with pytest.raises(ValueError, match="centre segment .* cannot be read"):
        resume(fed, tmp_path)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="centre segment"):
        resume(fed, tmp_path)
