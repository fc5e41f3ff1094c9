from collections import Counter

import pytest
import torch

from treelora.config import make_config
from treelora.methods import EWC, METHOD_REGISTRY, ContinualMethod, OLoRA, make_method

from . import test_regularizers as tiny
from .learners import assert_same, make_learner, round_trip, tiny_stream


def _value(t):
    return float(t.detach())


def _flat(lora, layer):
    return torch.cat([p.detach().flatten() for p in lora.params(layer)])


def test_every_method_carries_its_preset_and_hook_class():
    for name in METHOD_REGISTRY.names():
        cfg = make_config(name)
        assert all(getattr(cfg, k) == v for k, v in METHOD_REGISTRY.get(name).preset.items())
    lora = tiny.setup()[0]
    assert isinstance(make_method(make_config("ewc"), lora), EWC)
    assert isinstance(make_method(make_config("olora"), lora), OLoRA)
    assert [n for n in METHOD_REGISTRY.names() if METHOD_REGISTRY.get(n).task_aware_unavailable] == ["olora"]


def test_ewc_fisher_anchor_penalty_and_state():
    lora = tiny.setup()[0]
    cfg = make_config("ewc", ewc_lambda=2.0)
    ewc = make_method(cfg, lora)
    assert ewc.penalty() == 0.0  # no finished task yet
    g = torch.Generator().manual_seed(1)
    grads = [[torch.randn(d, generator=g, dtype=torch.float64) for d in lora.layer_dims()] for _ in range(3)]
    ewc.start_epoch()
    ewc.observe(grads[0])
    ewc.start_epoch()  # only the last epoch's gradients count
    ewc.observe(grads[1])
    ewc.observe(grads[2])
    ewc.end_task()
    for layer in range(lora.num_layers):
        want = (grads[1][layer].float() ** 2 + grads[2][layer].float() ** 2) / 2
        assert torch.allclose(ewc.fisher[layer], want)
        assert torch.equal(ewc.anchor[layer], _flat(lora, layer))
    assert _value(ewc.penalty()) == 0.0  # at the anchor
    with torch.no_grad():
        lora.params(0)[0].add_(0.5)
    a = lora.params(0)[0]
    want = 0.5 * 2.0 * (ewc.fisher[0][: a.numel()] * 0.25).sum()
    assert _value(ewc.penalty()) == pytest.approx(float(want))

    other = make_method(cfg, lora)
    other.load_state_dict(round_trip(ewc.state_dict()))
    assert_same(other.state_dict(), ewc.state_dict())
    assert _value(other.penalty()) == _value(ewc.penalty())
    assert all(t.device.type == "cpu" for t in ewc.state_dict()["fisher"])
    # a second task adds its Fisher to the first's, from the task loss's gradient: the step's gradient minus the
    # penalty's lambda * F * (theta - theta*), here nonzero on layer 0's A (moved by 0.5 above)
    first = [f.clone() for f in ewc.fisher]
    anchor = [x.clone() for x in ewc.anchor]
    ewc.start_epoch()
    ewc.observe(grads[0])
    ewc.end_task()
    for layer, (f, f0, g0) in enumerate(zip(ewc.fisher, first, grads[0])):
        task_grad = g0.float() - 2.0 * f0 * (_flat(lora, layer) - anchor[layer])
        assert torch.allclose(f, f0 + task_grad**2)
    assert not torch.allclose(ewc.fisher[0].double(), (first[0] + grads[0][0].float() ** 2).double())  # penalty out


def test_olora_merges_resets_and_penalises_overlap_with_earlier_a():
    lora = tiny.setup()[0]
    olora = make_method(make_config("olora", olora_lambda=0.5), lora)
    olora.begin_task(0)
    assert olora.prev == [[], []] and olora.penalty() == 0.0
    a_before = [lora.params(layer)[0].detach().clone() for layer in range(lora.num_layers)]
    base_before = lora.model.base_model.model.query.base_layer.weight.detach().clone()
    olora.begin_task(1)
    assert all(torch.equal(p[0], a) for p, a in zip(olora.prev, a_before))
    assert not torch.equal(lora.model.base_model.model.query.base_layer.weight, base_before)  # merged
    assert all(_value(lora.params(layer)[1].abs().sum()) == 0.0 for layer in range(lora.num_layers))  # fresh B
    want = 0.5 * sum((a @ lora.params(layer)[0].detach().T).abs().sum() for layer, a in enumerate(a_before))
    assert _value(olora.penalty()) == pytest.approx(float(want))
    with pytest.raises(ValueError, match="merged into the base"):
        make_method(make_config("olora"), lora).load_state_dict(olora.state_dict())
    fresh = make_method(make_config("olora"), lora)
    fresh.load_state_dict(round_trip(fresh.state_dict()))
    assert fresh.prev == [[], []]


@pytest.fixture(scope="module")
def stream():
    return tiny_stream()


def test_a_method_registered_in_a_test_runs_through_the_learner(stream):
    calls: Counter = Counter()

    @METHOD_REGISTRY.register("offset")
    class Offset(ContinualMethod):
        """SeqLoRA plus a constant penalty: the reported loss moves by 1, the gradients not at all."""

        preset = dict(signature="grad", selector="none", regularizer="none")

        def begin_task(self, tasks_done):
            calls[f"begin{tasks_done}"] += 1

        def start_epoch(self):
            calls["epoch"] += 1

        def penalty(self):
            calls["penalty"] += 1
            return 1.0

        def observe(self, grads):
            calls["observe"] += 1
            assert len(grads) == self.lora.num_layers

        def end_task(self):
            calls["end"] += 1

        def state_dict(self):
            return {"calls": dict(calls)}

    try:
        assert make_config("offset").selector == "none"
        learner = make_learner("offset", stream, epochs=1)
        assert isinstance(learner.method, Offset)
        res = learner.run_stream(stream)
        assert learner.state_dict()["method_state"] == {"calls": dict(calls)}
    finally:
        METHOD_REGISTRY.unregister("offset")
    assert calls == Counter(begin0=1, begin1=1, epoch=2, penalty=12, observe=12, end=2)
    seq = make_learner("seqlora", stream, epochs=1).run_stream(stream)
    assert res["method"] == "offset" and res["accuracy_matrix"] == seq["accuracy_matrix"]
    assert res["mean_loss_per_task"] == pytest.approx([x + 1.0 for x in seq["mean_loss_per_task"]])
