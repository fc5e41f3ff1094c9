"""Heads as registered variants (treelora.heads): linear, ncm, slca on the tiny backbone; Adam moment reset;
the head-only method leaves the LoRA unchanged."""

import pytest
import torch

from treelora.heads import HEAD_REGISTRY, Head, class_statistics, reset_head_moments

from .learners import make_learner, round_trip, tiny_stream


@pytest.fixture(scope="module")
def stream():
    return tiny_stream()


def test_registry_holds_the_three_heads():
    assert HEAD_REGISTRY.names() == ("linear", "ncm", "slca") and HEAD_REGISTRY.get("linear") is Head


def test_class_statistics_are_class_means():
    f = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    stats = class_statistics(f, torch.tensor([0, 0, 1]), [0, 1, 2])
    assert torch.equal(stats[0], torch.tensor([2.0, 1.0])) and torch.equal(stats[1], f[2]) and 2 not in stats


def test_ncm_scores_by_cosine_to_the_class_means(stream):
    learner = make_learner("seqlora", stream, epochs=1, head="ncm")
    res = learner.run_stream(stream)
    protos = learner.classifier.prototypes
    seen = sorted(learner.seen_classes)
    assert protos is not None and bool((protos[seen].norm(dim=-1) > 0).all())
    batch = learner._to_device(learner.encode(stream.tasks[0].test[:4]))
    learner.model.eval()
    with torch.no_grad():
        feats = learner.model.features(batch).float()
        want = torch.nn.functional.normalize(feats, dim=-1) @ torch.nn.functional.normalize(protos, dim=-1).T
        assert torch.allclose(learner.classifier.logits(batch), want)
    assert 0.0 <= res["views"]["cil"]["metrics"]["acc"] <= 1.0
    state = round_trip(learner.state_dict())
    other = make_learner("seqlora", stream, epochs=1, head="ncm")
    other.load_state_dict(state)
    assert torch.equal(other.classifier.prototypes, protos.cpu())


def test_slca_refits_the_head_on_sampled_features(stream):
    learner = make_learner("seqlora", stream, epochs=1, head="slca", head_samples=16, head_refit_epochs=2)
    task = stream.tasks[0]
    learner.begin_task("t0", task.classes)
    enc = learner.encode(task.train)
    learner.start_epoch(1)
    from treelora.data import iterate_batches

    learner.train_step(next(iter(iterate_batches(enc, 8, shuffle=False))))
    before = learner.model.head.weight.detach().clone()
    with pytest.raises(ValueError, match="training split"):
        learner.end_task()  # slca needs the features
    learner.end_task(enc)
    assert set(learner.classifier.means) == set(task.classes)
    assert all(c.shape == (before.shape[1], before.shape[1]) for c in learner.classifier.covs.values())
    assert not torch.equal(learner.model.head.weight, before)  # refit moved the seen rows
    assert learner.evaluate_views(task, key="t0")["til"] >= 0.0


def test_reset_head_moments_zeroes_the_finished_rows_only():
    head = torch.nn.Linear(3, 4)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    head(torch.randn(5, 3)).sum().backward()
    opt.step()
    reset_head_moments(opt, head, [1, 2])
    st = opt.state[head.weight]
    assert st["exp_avg"][[1, 2]].abs().sum() == 0 and st["exp_avg_sq"][[1, 2]].abs().sum() == 0
    assert st["exp_avg"][[0, 3]].abs().sum() > 0 and opt.state[head.bias]["exp_avg"][1] == 0


def test_finished_rows_stay_put_with_the_reset_and_drift_without(stream):
    moved = {}
    for reset in (True, False):
        learner = make_learner("seqlora", stream, epochs=1, head_moment_reset=reset)
        t0, t1 = stream.tasks
        learner.train_task("t0", t0)
        rows = learner.model.head.weight.detach()[t0.classes].clone()
        learner.train_task("t1", t1)
        moved[reset] = float((learner.model.head.weight.detach()[t0.classes] - rows).abs().max())
    assert moved[True] == 0.0 and moved[False] > 0.0


def test_head_only_leaves_the_lora_unchanged_even_with_an_lr(stream):
    for kw in ({"lr": 0.0}, {"lr": 5e-3}):  # the preset's lr = 0, and an override that cannot unfreeze it
        learner = make_learner("head-only", stream, epochs=1, **kw)
        lora0 = [p.detach().clone() for p in learner.lora.parameters()]
        head0 = learner.model.head.weight.detach().clone()
        learner.run_stream(stream)
        assert all(torch.equal(a, p.detach()) for a, p in zip(lora0, learner.lora.parameters()))
        assert not torch.equal(head0, learner.model.head.weight)
