"""The shared-probe signature: the same on every node given the seed, whatever the live state; live state untouched."""

import pytest
import torch

from treelora.probe import reference_adapter

from .learners import assert_same, make_learner, tiny_stream


@pytest.fixture(scope="module")
def stream():
    return tiny_stream()


def _train_a_bit(learner, task, steps=3):
    learner.begin_task("t0", task.classes)
    enc = learner.encode(task.train)
    learner.start_epoch(steps)
    from treelora.data import iterate_batches

    for i, batch in enumerate(iterate_batches(enc, 8, shuffle=True, seed=1)):
        learner.train_step(batch)
        if i + 1 >= steps:
            break


@pytest.mark.parametrize("kind", ["probe-grad", "probe-fisher", "probe-input", "probe-input-grad"])
def test_same_seed_same_signature_whatever_the_live_state(stream, kind):
    task = stream.tasks[0]
    a = make_learner("seqlora", stream, seed=0)
    b = make_learner("seqlora", stream, seed=5)
    _train_a_bit(b, task)  # different adapter, head, optimiser state
    sa = a.probe_signature(task.train, task.classes, batches=2, kind=kind, seed=7)
    sb = b.probe_signature(task.train, task.classes, batches=2, kind=kind, seed=7)
    d_in = [a.lora.params(l)[0].shape[1] for l in range(a.lora.num_layers)]
    widths = {"probe-input": d_in, "probe-input-grad": [x + g for x, g in zip(d_in, a.lora.layer_dims())]}.get(
        kind, a.lora.layer_dims())
    assert len(sa) == a.lora.num_layers and [s.numel() for s in sa] == widths
    assert all(torch.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(sa, sb))
    assert all(float(x.abs().sum()) > 0 for x in sa)  # B != 0 at the reference: A's gradient does not vanish
    if kind == "probe-fisher":
        assert all(bool((x >= 0).all()) for x in sa)
    other = a.probe_signature(stream.tasks[1].train, stream.tasks[1].classes, batches=2, kind=kind, seed=7)
    assert not all(torch.allclose(x, y) for x, y in zip(sa, other))


def test_live_state_is_left_byte_identical(stream):
    task = stream.tasks[0]
    learner = make_learner("seqlora", stream)
    _train_a_bit(learner, task)
    learner.model.train()
    before = learner.state_dict()
    grads = [None if p.grad is None else p.grad.clone() for p in learner.lora.parameters()]
    rng = torch.get_rng_state()
    learner.probe_signature(task.train, task.classes, batches=2, kind="probe-grad", seed=3)
    assert_same(learner.state_dict(), before)
    assert learner.model.training
    assert torch.equal(torch.get_rng_state(), rng)
    after = [None if p.grad is None else p.grad for p in learner.lora.parameters()]
    assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(grads, after))


def test_reference_adapter_depends_on_the_seed_only():
    shapes = [((2, 4), (4, 2))] * 2
    assert_same(reference_adapter(shapes, 1), reference_adapter(shapes, 1))
    assert not torch.equal(reference_adapter(shapes, 1)["0.B"], reference_adapter(shapes, 2)["0.B"])
    assert float(reference_adapter(shapes, 1)["1.B"].abs().sum()) > 0


def test_unknown_kind_is_refused(stream):
    learner = make_learner("seqlora", stream)
    with pytest.raises(ValueError, match="probe kind"):
        learner.probe_signature(stream.tasks[0].train, stream.tasks[0].classes, batches=1, kind="live", seed=0)


def test_probe_input_sees_the_inputs_not_the_labels(stream):
    """The mean layer input at the reference point: blind to the class list, changed by other examples, and the
    forward hooks it uses are gone afterwards."""
    task, other = stream.tasks[0], stream.tasks[1]
    learner = make_learner("seqlora", stream)
    sig = learner.probe_signature(task.train, task.classes, batches=2, kind="probe-input", seed=7)
    relabelled = learner.probe_signature(task.train, other.classes, batches=2, kind="probe-input", seed=7)
    assert all(torch.equal(x, y) for x, y in zip(sig, relabelled))
    moved = learner.probe_signature(other.train, task.classes, batches=2, kind="probe-input", seed=7)
    assert not all(torch.allclose(x, y) for x, y in zip(sig, moved))
    assert all(not layer._forward_hooks for layer in learner.lora.layers)
    assert all(float(x.abs().sum()) > 0 for x in sig)


def test_probe_input_grad_is_both_halves_each_at_unit_l1(stream):
    """``probe-input-grad`` = per layer [input mean, gradient], each scaled to unit L1 and halved: the same values
    as the two kinds measured apart; it sees the labels (through its gradient half) and the inputs."""
    from treelora.probe import normalise_layers

    task, other = stream.tasks[0], stream.tasks[1]
    learner = make_learner("seqlora", stream)
    both = learner.probe_signature(task.train, task.classes, batches=2, kind="probe-input-grad", seed=7)
    x = normalise_layers(learner.probe_signature(task.train, task.classes, batches=2, kind="probe-input", seed=7), "l1")
    g = normalise_layers(learner.probe_signature(task.train, task.classes, batches=2, kind="probe-grad", seed=7), "l1")
    for b, xi, gi in zip(both, x, g):
        assert b.shape == (xi.numel() + gi.numel(),)
        assert torch.allclose(b[: xi.numel()], xi / 2, atol=1e-7) and torch.allclose(b[xi.numel():], gi / 2, atol=1e-7)
        assert abs(float(b.abs().sum()) - 1.0) < 1e-5
    assert all(torch.allclose(a, b) for a, b in zip(normalise_layers(both, "l1"), both))  # probe-norm is a no-op
    relabelled = learner.probe_signature(task.train, other.classes, batches=2, kind="probe-input-grad", seed=7)
    assert not all(torch.allclose(a, b) for a, b in zip(both, relabelled))
    assert all(not layer._forward_hooks for layer in learner.lora.layers)


def test_token_mean_counts_only_the_real_tokens():
    from treelora.probe import _token_mean

    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [100.0, 100.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.allclose(_token_mean(x, mask), torch.tensor([3.0, 4.0]))
    assert torch.allclose(_token_mean(x[:, 0], None), torch.tensor([3.0, 4.0]))  # (batch, d): every row


def test_normalise_layers_scales_each_layer_to_unit_l1_and_keeps_direction():
    from treelora.probe import normalise_layers

    sig = [torch.tensor([3.0, -1.0, 0.0]), torch.tensor([0.5, 0.5]), torch.zeros(4)]
    out = normalise_layers(sig, "l1")
    assert [float(v.abs().sum()) for v in out[:2]] == pytest.approx([1.0, 1.0])
    assert torch.allclose(out[0], torch.tensor([0.75, -0.25, 0.0]))
    assert torch.equal(out[2], torch.zeros(4))  # an all-zero layer stays zero, no NaN
    # scale-free: a task's signature at any magnitude releases the same vector
    assert all(torch.allclose(a, b) for a, b in zip(normalise_layers([7.0 * v for v in sig], "l1"), out))
    assert all(v.norm() <= 1.0 + 1e-6 for v in out)  # every released layer has L2 norm <= 1
    assert all(a is b for a, b in zip(normalise_layers(sig, "none"), sig))
    assert sig[0][0] == 3.0  # the input is not modified
    with pytest.raises(ValueError, match="probe-norm"):
        normalise_layers(sig, "l2")


def test_probe_norm_is_a_validated_run_config_knob():
    from treelora.fed.settings import FedSettings

    assert FedSettings().probe_norm == "l1"
    assert FedSettings(probe_norm="none").probe_norm == "none"
    with pytest.raises(ValueError, match="probe-norm"):
        FedSettings(probe_norm="max")
