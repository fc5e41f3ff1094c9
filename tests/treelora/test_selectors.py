import math

import pytest
import torch

from treelora.bandit import FlatLCBBandit, OfficialSoftmaxSampler, TreeLCBBandit, UniformRandomSelector
from treelora.config import make_config
from treelora.selectors import SELECTOR_REGISTRY, Selector, make_selector
from treelora.tree import TaskTree


def tree(n: int = 5, layers: int = 2, dim: int = 6, split: str = "l1-median") -> TaskTree:
    g = torch.Generator().manual_seed(0)
    t = TaskTree(layers, split=split)
    for i in range(n):
        t.add(f"t{i}", [torch.randn(dim, generator=g) for _ in range(layers)])
    t.build()
    return t


ALGORITHMS = {"tree-lcb": TreeLCBBandit, "flat-lcb": FlatLCBBandit, "official-softmax": OfficialSoftmaxSampler,
              "random": UniformRandomSelector, "none": type(None)}


@pytest.mark.parametrize("name", SELECTOR_REGISTRY.names())
def test_each_selector_wraps_its_algorithm(name):
    sel = make_selector(make_config("treelora", selector=name), tree())
    assert type(sel).name == name and isinstance(sel.algorithm, ALGORITHMS[name])


def test_official_sampler_counts_steps_in_the_epoch_the_lcb_selectors_in_the_task():
    cfg = make_config("treelora-official")
    t = tree(split="dot-consecutive")
    sel, ref = make_selector(cfg, t), OfficialSoftmaxSampler(t, seed=cfg.seed)
    sel.start_epoch(10)
    ref.start_epoch(10)
    assert sel.select_all(step_in_task=37, step_in_epoch=3) == ref.select_all(3)
    cfg = make_config("treelora", selector="tree-lcb")
    t = tree()
    sel = make_selector(cfg, t)
    ref = TreeLCBBandit(t, c=cfg.lcb_c, delta=cfg.tree_delta, delta_decay=cfg.tree_delta_decay, seed=cfg.seed)
    for step in range(1, 8):
        got, want = sel.select_all(step, 1), ref.select_all(step)
        assert got == want
        sel.update_all(got, [0.1 * step, 0.2], step)
        ref.update_all(want, [0.1 * step, 0.2], step)


def test_observed_distance_is_per_coordinate_except_for_the_released_sampler():
    targets = [torch.zeros(4), None]
    vectors = [torch.tensor([1.0, -1.0, 2.0, 0.0]), torch.ones(3)]
    lcb = make_selector(make_config("treelora"), tree(dim=4))
    official = make_selector(make_config("treelora-official"), tree(dim=4))
    assert lcb.observed_distances(targets, vectors)[0] == 1.0 and math.isnan(
        lcb.observed_distances(targets, vectors)[1]
    )
    assert official.observed_distances(targets, vectors)[0] == 4.0


def test_lcb_selectors_forget_at_a_task_start_and_restore_their_state():
    cfg = make_config("treelora", selector="flat-lcb")
    t = tree()
    sel = make_selector(cfg, t)
    choices = sel.select_all(1, 1)
    sel.update_all(choices, [0.5, 0.25], 1)
    state = sel.state()
    other = make_selector(cfg, t)
    other.load_state(state)
    assert other.state() == state and other.algorithm.arm_means(0) == {choices[0]: 0.5}
    sel.begin_task()
    assert sel.algorithm.arm_means(0) == {}


def test_none_selects_nothing_and_an_empty_tree_gives_no_choice():
    sel = make_selector(make_config("seqlora"), tree())
    assert sel.select_all(3, 3) == [None, None] and sel.state() is None
    sel.load_state(None)
    assert make_selector(make_config("treelora"), TaskTree(2)).select_all(1, 1) == [None, None]


def test_a_registered_selector_is_found_by_name():
    @SELECTOR_REGISTRY.register("first-task")
    class FirstTask(Selector):
        def select_all(self, step_in_task, step_in_epoch):
            first = next(iter(self.tree.entries), None)
            return [first] * self.tree.num_layers

    try:
        sel = make_selector(make_config("treelora", selector="first-task"), tree())
        assert isinstance(sel, FirstTask) and sel.select_all(1, 1) == ["t0", "t0"]
    finally:
        SELECTOR_REGISTRY.unregister("first-task")
    with pytest.raises(ValueError, match="first-task"):
        make_config("treelora", selector="first-task")


def test_random_selector_draws_uniformly_and_replays_after_a_restore():
    t = tree(n=4, layers=3)
    sel = make_selector(make_config("treelora", selector="random"), t)
    draws = [sel.select_all(s, s) for s in range(1, 401)]
    counts = {k: sum(row.count(k) for row in draws) for k in t.entries}
    assert set(counts) == set(t.entries) and min(counts.values()) > 0.8 * 1200 / 4  # ≈ 300 each
    sel.update_all(draws[-1], [1.0, 2.0, 3.0], 400)  # ignored
    state = sel.state()
    again = make_selector(make_config("treelora", selector="random"), t)
    again.load_state(state)
    assert [again.select_all(s, s) for s in range(5)] == [sel.select_all(s, s) for s in range(5)]
    assert make_selector(make_config("treelora", selector="random"), TaskTree(3)).select_all(1, 1) == [None] * 3
