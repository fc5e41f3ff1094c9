import numpy as np
import pytest
import torch

from treelora.bandit import FlatLCBBandit, OfficialSoftmaxSampler, TreeLCBBandit
from treelora.tree import TaskTree


def synthetic_problem(n_arms: int = 64, dim: int = 16, layers: int = 2, seed: int = 0):
    """Arms with signatures; the loss of an arm is its L1 distance per coordinate to a query, plus noise."""
    g = torch.Generator().manual_seed(seed)
    sigs = {f"t{i}": [torch.randn(dim, generator=g) * (1 + i % 4) for _ in range(layers)] for i in range(n_arms)}
    near = f"t{min(5, n_arms - 1)}"
    query = [sigs[near][layer] + 0.05 * torch.randn(dim, generator=g) for layer in range(layers)]
    true = {k: [float((query[l] - s[l]).abs().mean()) for l in range(layers)] for k, s in sigs.items()}
    tree = TaskTree(layers)
    for k, s in sigs.items():
        tree.add(k, s)
    tree.build()
    return tree, true


def run(bandit, true, steps: int, noise: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    layers = len(next(iter(true.values())))
    best = [min(v[l] for v in true.values()) for l in range(layers)]
    regret, picks = [], []
    total = 0.0
    for t in range(1, steps + 1):
        choices = bandit.select_all(t)
        losses = [true[k][l] + noise * rng.standard_normal() for l, k in enumerate(choices)]
        bandit.update_all(choices, losses, t)
        total += sum(true[k][l] - best[l] for l, k in enumerate(choices))
        regret.append(total)
        picks.append(choices)
    return np.array(regret), picks


@pytest.mark.parametrize("cls", [TreeLCBBandit, FlatLCBBandit])
def test_converges_to_nearest_arm(cls):
    tree, true = synthetic_problem()
    bandit = cls(tree, c=0.5, seed=0)
    _, picks = run(bandit, true, 3000)
    late = [p[0] for p in picks[-500:]]
    assert max(set(late), key=late.count) == "t5"
    assert late.count("t5") > 0.6 * len(late)


def test_tree_descent_needs_far_fewer_distance_evaluations_than_flat_scan():
    # 8 layers so that the tree can be 7 levels deep (level d splits on layer d)
    tree, true = synthetic_problem(n_arms=128, layers=8)
    bandit = TreeLCBBandit(tree, c=0.5, seed=0)
    steps = 300
    run(bandit, true, steps)
    exact_scan_evaluations = steps * tree.num_layers * len(tree)  # a flat exact scan measures every arm
    assert bandit.evaluations == steps * tree.num_layers
    assert bandit.evaluations * 50 < exact_scan_evaluations
    big, big_true = synthetic_problem(n_arms=1024, layers=10)
    flat = FlatLCBBandit(big, c=0.5, seed=0)
    run(flat, big_true, 20)
    descent = TreeLCBBandit(big, c=0.5)
    work_after_refresh = descent.work
    run(descent, big_true, 20)
    # bound computations per pull: O(depth) for the descent against O(n) for the flat scan
    assert (descent.work - work_after_refresh) * 10 < flat.work


def test_cumulative_regret_is_sublinear():
    tree, true = synthetic_problem(n_arms=32, seed=2)
    bandit = TreeLCBBandit(tree, c=0.5, seed=1)
    regret, _ = run(bandit, true, 4000, seed=3)
    first, second = regret[1999], regret[3999] - regret[1999]
    assert second < 0.5 * first


def test_unpulled_arms_are_tried_first_and_reset_forgets():
    tree, true = synthetic_problem(n_arms=8, layers=4)
    flat = FlatLCBBandit(tree, c=1.0)
    _, picks = run(flat, true, 8)
    assert {p[0] for p in picks} == set(tree.entries)
    bandit = TreeLCBBandit(tree, c=1.0)
    _, picks = run(bandit, true, 2)
    sides = [next(i for i, c in enumerate(tree.root.children) if p[0] in c.keys) for p in picks]
    assert sorted(sides) == [0, 1]  # an unexplored subtree (LCB −∞) is visited before any is revisited
    bandit.reset()
    assert bandit.arm_means(0) == {}


def test_nan_loss_rejected():
    tree, _ = synthetic_problem(n_arms=4)
    bandit = TreeLCBBandit(tree)
    k = bandit.select(0, 1)
    with pytest.raises(ValueError, match="not finite"):
        bandit.update(0, k, float("nan"), 1)


def test_state_round_trip_and_merge_absorbs_stats():
    tree, true = synthetic_problem(n_arms=6)
    bandit = TreeLCBBandit(tree, c=1.0)
    run(bandit, true, 50)
    other = TreeLCBBandit(tree, c=1.0)
    other.load_state(bandit.state())
    assert other.arm_means(0) == bandit.arm_means(0)
    pulls_before = sum(c.sum() for c in bandit.stats.cnt.values())
    tree.merge_to_budget(3)
    bandit.select(0, 51)  # sees the new tree version and refreshes
    assert set(bandit.stats.cnt) <= set(tree.entries)  # merged arms' statistics moved to the merged entry
    assert sum(bandit.stats.cnt[k].sum() for k in bandit.stats.cnt) == pulls_before


def test_official_sampler_formula_and_reset():
    tree, _ = synthetic_problem(n_arms=4, layers=3)
    s = OfficialSoftmaxSampler(tree, seed=0)
    s.start_epoch(10)
    s.update_all(["t0", "t1", "t0"], [2.0, 4.0, 6.0], 1)
    U = s.scores(t=1)
    M = np.zeros((4, 3))
    M[0, 0], M[1, 1], M[0, 2] = -2.0, -4.0, -6.0
    N = np.zeros((4, 3))
    N[0, 0] = N[1, 1] = N[0, 2] = 1
    r = np.sqrt(np.log(2 * 10 * 2 * 3)) / np.sqrt(2 * N + 1e-5)
    expected = -(M - r)
    expected = expected + expected.min()
    assert np.allclose(U, expected)
    choices = s.select_all(2)
    assert len(choices) == 3 and all(c in tree.entries for c in choices)
    s.start_epoch(10)
    assert s.N.sum() == 0 and s.S.sum() == 0


def test_official_sampler_favours_dissimilar_tasks():
    tree, true = synthetic_problem(n_arms=8, layers=1)
    s = OfficialSoftmaxSampler(tree, seed=0)
    s.start_epoch(1000)
    counts: dict[str, int] = {}
    for t in range(1000):
        (k,) = s.select_all(t)
        s.update_all([k], [true[k][0]], t)
        counts[k] = counts.get(k, 0) + 1
    nearest = min(true, key=lambda k: true[k][0])
    farthest = max(true, key=lambda k: true[k][0])
    assert counts.get(farthest, 0) > counts.get(nearest, 0)


def test_empty_tree_selects_nothing():
    tree = TaskTree(3)
    assert TreeLCBBandit(tree).select_all(1) == [None, None, None]
    assert FlatLCBBandit(tree).select_all(1) == [None, None, None]
    s = OfficialSoftmaxSampler(tree)
    s.start_epoch(5)
    assert s.select_all(1) == [None, None, None]


def test_sparse_node_statistics_match_a_full_recount_as_the_tree_changes():
    """Node statistics live only above pulled arms; after inserts, rebuilds and merges they must still equal the sum
    over each node's arms, and every node without statistics must have no pulled arm below it."""
    tree, true = synthetic_problem(n_arms=24, layers=3, seed=4)
    bandit = TreeLCBBandit(tree, c=0.5, seed=0)
    g = torch.Generator().manual_seed(9)

    def check():
        bandit.select(0, 1)  # refreshes if the tree changed since the last call
        for node in tree.nodes():
            want = sum((bandit.stats.cnt[k] for k in node.keys if k in bandit.stats.cnt), np.zeros(3))
            got = bandit._node_cnt.get(node.path, np.zeros(3))
            np.testing.assert_array_equal(got, want)
            if not node.is_leaf and not want.any():
                assert node.path not in bandit._min_child
        scale = np.array([bandit.stats.scale(layer) for layer in range(3)])
        for node in tree.nodes():  # the all-layers bound used by refresh() is the per-layer bound, exactly
            np.testing.assert_array_equal(bandit._bounds(node, 7, scale), [bandit._bound(node, l, 7) for l in range(3)])

    run(bandit, true, 30)
    check()
    for i in range(6):
        tree.add(f"n{i}", [torch.randn(16, generator=g) for _ in range(3)], rebuild=(i == 3))
        run(bandit, true, 5, seed=i)
        check()
    tree.merge_to_budget(20)
    check()
    assert len(bandit.stats.cnt) < len(tree)  # unpulled arms carry no statistics


def test_fresh_bandit_on_a_large_tree_costs_no_bound_computations():
    tree, _ = synthetic_problem(n_arms=512, layers=4)
    bandit = TreeLCBBandit(tree, c=0.5)
    assert bandit.work == 0 and not bandit._node_cnt  # nothing pulled: nothing to derive
    tree.add("late", [torch.zeros(16)] * 4)
    bandit.refresh()
    assert bandit.work == 0
