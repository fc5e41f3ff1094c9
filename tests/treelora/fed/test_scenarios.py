"""Scenarios: who trains which stream task when, and disjoint data shards among a task's holders."""

import pytest

from treelora.fed.scenarios import holders, make_schedule, shard
from treelora.streams import Example


def test_schedules_per_scenario():
    assert make_schedule("identical", 2, 4, 8, 3, 2).tasks == (0, 1, 2)
    assert [make_schedule("staggered", c, 4, 8, 3, 2).tasks for c in range(4)] == [
        (0, 1, 2), (2, 3, 4), (4, 5, 6), (6, 7, 0)]
    fam = [make_schedule("families", c, 6, 8, 2, 1, families=3).tasks for c in range(6)]
    assert fam[0] == fam[3] and fam[1] == fam[4] and fam[2] == fam[5] and len({fam[0], fam[1], fam[2]}) == 3
    s = make_schedule("staggered", 0, 2, 8, 2, 3)
    assert s.total_rounds == 6
    assert [s.position(r) for r in range(1, 8)] == [(0, False), (0, False), (0, True), (1, False), (1, False),
                                                    (1, True), None]
    with pytest.raises(ValueError, match="unknown scenario"):
        make_schedule("random", 0, 2, 8, 2, 2)
    with pytest.raises(ValueError, match="tasks-per-client must be in 1..8"):
        make_schedule("identical", 0, 2, 8, 9, 2)
    with pytest.raises(ValueError, match="rounds are 1-based"):
        s.position(0)


def test_holders_and_disjoint_balanced_shards():
    assert holders(0, "families", 6, 8, 2, 1, families=3) == [0, 3]
    assert holders(1, "staggered", 4, 8, 3, 2) == [0]
    examples = [Example(text=f"x{i}", label=i % 3) for i in range(30)]
    parts = [shard(examples, c, 3, seed=0) for c in range(3)]
    texts = [{e.text for e in p} for p in parts]
    assert sum(map(len, texts)) == 30 and not (texts[0] & texts[1] or texts[1] & texts[2] or texts[0] & texts[2])
    assert all({e.label for e in p} == {0, 1, 2} for p in parts)
    assert shard(examples, 1, 3, seed=0) == parts[1] and shard(examples, 1, 3, seed=1) != parts[1]


def test_leaf_truth_names_each_leafs_stream_task_and_family():
    from treelora.fed.scenarios import leaf_truth
    from treelora.streams import load_stream

    stream = load_stream("wordnet", train_per_class=2, test_per_class=1)
    truth = leaf_truth("families", 6, stream.tasks, 2, 1, families=3)
    assert len(truth) == 12 and truth["c0/t0"] == truth["c3/t0"] and truth["c1/t1"] == truth["c4/t1"]
    assert truth["c0/t0"] != truth["c1/t0"]
    assert {f for _, f in truth.values()} <= {"living", "physical", "abstract", "verbs"}
    assert truth["c0/t0"] == ("living-organisms", "living")


def test_conflicting_scenario_same_inputs_every_family_its_own_labels():
    from treelora.fed.scenarios import leaf_truth, scenario_stream
    from treelora.fed.settings import FedSettings
    from treelora.streams import Task, TaskStream

    def ex(i: int, c: int) -> Example:
        return Example(text=f"{c}-{i}", label=c)

    base = TaskStream("s", "text", [f"k{i}" for i in range(6)], [
        Task("a", [0, 1, 2], [ex(i, c) for c in (0, 1, 2) for i in range(4)], [ex(9, c) for c in (0, 1, 2)], "F"),
        Task("b", [3, 4, 5], [ex(i, c) for c in (3, 4, 5) for i in range(4)], [ex(9, c) for c in (3, 4, 5)])])
    wide = scenario_stream(base, "conflicting", 3)
    assert scenario_stream(base, "families", 3) is base and len(base.tasks) == 2
    assert [t.name for t in wide.tasks] == ["a", "b", "a+shift1", "b+shift1", "a+shift2", "b+shift2"]
    assert wide.tasks[0] is base.tasks[0] and wide.tasks[2].family == "F+shift1" and wide.tasks[3].family == "b+shift1"
    copies = [wide.tasks[i] for i in (0, 2, 4)]
    for split in ("train", "test"):
        texts = [[e.text for e in getattr(t, split)] for t in copies]
        assert texts[0] == texts[1] == texts[2]  # the same inputs ...
        labels = [[e.label for e in getattr(t, split)] for t in copies]
        for i in range(3):  # ... and every pair of families disagrees on every example
            for j in range(i + 1, 3):
                assert all(x != y for x, y in zip(labels[i], labels[j]))
    assert {e.label for e in copies[1].train} == {0, 1, 2} and copies[1].classes == [0, 1, 2]
    assert [e.label for e in copies[1].test] == [1, 2, 0]  # class i's examples carry class i+1

    # family f walks its own copies: clients c and c+3 share every task, no task is held across families
    sched = [make_schedule("conflicting", c, 6, 6, 2, 1, families=3).tasks for c in range(6)]
    assert sched[:3] == [(0, 1), (2, 3), (4, 5)] and sched[3:] == sched[:3]
    assert holders(2, "conflicting", 6, 6, 2, 1, families=3) == [1, 4]
    truth = leaf_truth("conflicting", 6, wide.tasks, 2, 1, families=3)
    assert truth["c1/t0"] == ("a+shift1", "F+shift1") and truth["c4/t0"] == truth["c1/t0"] != truth["c0/t0"]

    with pytest.raises(ValueError, match="exceeds the 2 tasks of one family"):
        make_schedule("conflicting", 0, 6, 6, 3, 1, families=3)
    with pytest.raises(ValueError, match="not 3 copies"):
        make_schedule("conflicting", 0, 6, 7, 2, 1, families=3)
    with pytest.raises(ValueError, match="fewer than families=4"):
        scenario_stream(base, "conflicting", 4)
    with pytest.raises(ValueError, match="families >= 2"):
        FedSettings(scenario="conflicting", families=1)
    fed = FedSettings(scenario="conflicting", families=2)
    assert [t.name for t in fed.load_stream().tasks][8] == "living-organisms+shift1"
