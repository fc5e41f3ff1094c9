import pytest
import torch
from torch import nn

from treelora.adapters import LayerwiseLoRA
from treelora.regularizers import (
    REGULARIZER_REGISTRY,
    Regularizer,
    StepContext,
    l1_grad_backward,
    l1_grad_fd_backward,
    official_loss,
    plain_step,
)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(5, 5)
        self.value = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value(torch.tanh(self.query(x)))


def setup(seed: int = 0):
    torch.manual_seed(seed)
    model = Tiny().double()
    for p in model.parameters():
        p.requires_grad_(False)
    lora = LayerwiseLoRA(model, r=2, alpha=2.0, dropout=0.0, seed=seed)
    lora.model.double()
    with torch.no_grad():
        for p in lora.parameters():
            p.normal_(0, 0.5)  # B is zero at init; give the test a generic point
    x, y = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    targets = [torch.randn(d, dtype=torch.float64) * 0.1 for d in lora.layer_dims()]
    return lora, x, y, targets


def loss_fn(lora, x, y):
    return ((lora.model(x) - y) ** 2).mean()


def objective(lora, x, y, targets, lam, reduction="sum"):
    params = lora.parameters()
    grads = torch.autograd.grad(loss_fn(lora, x, y), params, create_graph=True)
    diffs = [(torch.cat([grads[2 * i].flatten(), grads[2 * i + 1].flatten()]) - t).abs() for i, t in enumerate(targets)]
    scale = {"sum": lambda p: 1.0, "mean": lambda p: 1.0 / p, "sqrt": lambda p: p ** -0.5}[reduction]
    reg = sum(d.sum() * scale(d.numel()) for d in diffs)
    return loss_fn(lora, x, y) + lam * reg


def numeric_gradient(lora, x, y, targets, lam, h=1e-6, reduction="sum"):
    out = []
    for p in lora.parameters():
        g = torch.zeros_like(p)
        for idx in range(p.numel()):
            flat = p.data.view(-1)
            old = float(flat[idx])
            flat[idx] = old + h
            up = float(objective(lora, x, y, targets, lam, reduction).detach())
            flat[idx] = old - h
            down = float(objective(lora, x, y, targets, lam, reduction).detach())
            flat[idx] = old
            g.view(-1)[idx] = (up - down) / (2 * h)
        out.append(g)
    return out


@pytest.mark.parametrize("reduction", ["sum", "mean", "sqrt"])
def test_l1_grad_matches_finite_differences(reduction):
    lora, x, y, targets = setup()
    lam = 0.7
    expected = numeric_gradient(lora, x, y, targets, lam, reduction=reduction)
    layer_grads, reg = l1_grad_backward(loss_fn(lora, x, y), lora, [], targets, lam, reduction)
    for p, e in zip(lora.parameters(), expected):
        assert torch.allclose(p.grad, e, rtol=1e-4, atol=1e-6), (p.grad, e)
    assert reg > 0
    # the returned per-layer gradients are those of the plain loss
    plain = torch.autograd.grad(loss_fn(lora, x, y), lora.parameters())
    assert torch.allclose(layer_grads[0], torch.cat([plain[0].flatten(), plain[1].flatten()]))


def test_l1_grad_skips_layers_without_target():
    lora, x, y, targets = setup(1)
    l1_grad_backward(loss_fn(lora, x, y), lora, [], [None, None], 0.7)
    plain = torch.autograd.grad(loss_fn(lora, x, y), lora.parameters())
    for p, g in zip(lora.parameters(), plain):
        assert torch.allclose(p.grad, g)


def test_sqrt_reduction_is_the_l1_distance_over_root_p():
    from treelora.regularizers import _l1

    d = torch.tensor([1.0, -2.0, 0.5, 0.5])  # p = 4, ‖d‖₁ = 4
    assert float(_l1(d, "sum")) == 4.0 and float(_l1(d, "mean")) == 1.0 and float(_l1(d, "sqrt")) == 2.0


@pytest.mark.parametrize("reduction", ["sum", "mean", "sqrt"])
def test_finite_difference_variant_approximates_exact(reduction):
    lora, x, y, targets = setup(2)
    lam = 0.7
    l1_grad_backward(loss_fn(lora, x, y), lora, [], targets, lam, reduction)
    exact = [p.grad.clone() for p in lora.parameters()]
    before = [p.detach().clone() for p in lora.parameters()]
    l1_grad_fd_backward(lambda: loss_fn(lora, x, y), lora, [], targets, lam, eps=1e-6, reduction=reduction)
    for p, e, b in zip(lora.parameters(), exact, before):
        assert torch.allclose(p.grad, e, rtol=1e-3, atol=1e-5)
        assert torch.equal(p.detach(), b)  # parameters restored after the shifted pass


def test_official_reproduces_released_formula():
    lora, x, y, _ = setup(3)
    targets = [torch.randn(d, dtype=torch.float64) for d in lora.a_dims()]
    lam_t = 0.3
    loss = loss_fn(lora, x, y)
    total, r = official_loss(loss, lora, targets, lam_t)
    a_mats = [lora.params(i)[0] for i in range(lora.num_layers)]
    r_ref = -sum((a.flatten() * t).sum() for a, t in zip(a_mats, targets))
    assert r == pytest.approx(float(r_ref))
    assert float(total) == pytest.approx(float(loss) * (1 - lam_t), rel=1e-4)  # ε guard
    total.backward()
    got = [a.grad.clone() for a in a_mats]
    for p in lora.parameters():
        p.grad = None
    loss = loss_fn(lora, x, y)
    r_live = -sum((a.flatten() * t).sum() for a, t in zip(a_mats, targets))
    ref = loss - lam_t * loss.detach() * r_live / (r_live.detach() + 1e-5 * (1 if float(r_live) >= 0 else -1))
    ref.backward()
    for g, a in zip(got, a_mats):
        assert torch.allclose(g, a.grad)


def test_official_keeps_sign_of_r_near_zero():
    lora, x, y, _ = setup(4)
    a = lora.params(0)[0]
    t0 = torch.zeros(a.numel(), dtype=torch.float64)
    t0[0] = 1e-12 / max(abs(float(a.flatten()[0])), 1e-12)
    loss = loss_fn(lora, x, y)
    total, r = official_loss(loss, lora, [t0, None], 0.5)
    assert torch.isfinite(total)


# ---------------------------------------------------------------------------------------------- hook classes


def context(lora, x, y, targets, calls=None, **kw):
    def task_loss():
        if calls is not None:
            calls.append(1)
        return loss_fn(lora, x, y)

    values = dict(lam=0.7, step_in_epoch=3, steps_in_epoch=4, reduction="sum", fd_eps=1e-6, **kw)
    return StepContext(task_loss=task_loss, lora=lora, head=[], targets=targets, **values)


def grads_of(lora):
    out = [p.grad.clone() for p in lora.parameters()]
    for p in lora.parameters():
        p.grad = None
    return out


@pytest.mark.parametrize("name", ["l1-grad", "l1-grad-fd"])
def test_l1_hooks_perform_the_backward_of_their_function(name):
    lora, x, y, targets = setup(5)
    calls: list[int] = []
    loss, layer_grads = REGULARIZER_REGISTRY.get(name)().backward(context(lora, x, y, targets, calls))
    got = grads_of(lora)
    if name == "l1-grad":
        l1_grad_backward(loss_fn(lora, x, y), lora, [], targets, 0.7, "sum")
    else:
        l1_grad_fd_backward(lambda: loss_fn(lora, x, y), lora, [], targets, 0.7, 1e-6, "sum")
    assert all(torch.equal(g, w) for g, w in zip(got, grads_of(lora)))
    assert len(calls) == (1 if name == "l1-grad" else 2)
    assert float(loss) == float(loss_fn(lora, x, y))  # the plain task loss is what is reported
    plain = torch.autograd.grad(loss_fn(lora, x, y), lora.parameters())
    assert torch.allclose(layer_grads[0], torch.cat([plain[0].flatten(), plain[1].flatten()]))


def test_l1_grad_top_is_the_top_layers_term_differentiated_by_the_top_layers_only():
    lora, x, y, targets = setup(8)
    REGULARIZER_REGISTRY.get("l1-grad-top")().backward(context(lora, x, y, targets, top_layers=1))
    got = grads_of(lora)
    params = lora.parameters()
    plain = torch.autograd.grad(loss_fn(lora, x, y), params)
    grads = torch.autograd.grad(loss_fn(lora, x, y), params, create_graph=True)
    top = torch.cat([grads[2].flatten(), grads[3].flatten()])
    reg = 0.7 * (top - targets[1]).abs().sum()
    reg_top = torch.autograd.grad(reg, params[2:], retain_graph=True)
    assert torch.allclose(got[0], plain[0]) and torch.allclose(got[1], plain[1])  # the lower layer: task loss only
    assert torch.allclose(got[2], plain[2] + reg_top[0]) and torch.allclose(got[3], plain[3] + reg_top[1])
    full = torch.autograd.grad(reg, params[:2])  # what l1-grad would add to the lower layer, and -top leaves out
    assert max(float(f.abs().max()) for f in full) > 1e-6


def test_l1_grad_top_over_every_layer_is_l1_grad():
    lora, x, y, targets = setup(9)
    REGULARIZER_REGISTRY.get("l1-grad-top")().backward(context(lora, x, y, targets, top_layers=len(targets)))
    top = grads_of(lora)
    REGULARIZER_REGISTRY.get("l1-grad")().backward(context(lora, x, y, targets))
    assert all(torch.allclose(a, b) for a, b in zip(top, grads_of(lora)))


def test_official_hook_ramps_lambda_over_the_epoch():
    lora, x, y, _ = setup(6)
    targets = [torch.randn(d, dtype=torch.float64) for d in lora.a_dims()]
    loss, _ = REGULARIZER_REGISTRY.get("official")().backward(context(lora, x, y, targets))
    got = grads_of(lora)
    total, _ = official_loss(loss_fn(lora, x, y), lora, targets, 0.7 * (3 - 1) / 4)
    total.backward()
    assert all(torch.equal(g, w) for g, w in zip(got, grads_of(lora)))
    assert float(loss) == float(loss_fn(lora, x, y))


def test_none_and_plain_step_are_the_ordinary_backward():
    lora, x, y, targets = setup(7)
    REGULARIZER_REGISTRY.get("none")().backward(context(lora, x, y, targets))
    none = grads_of(lora)
    plain_step(context(lora, x, y, targets))
    plain = grads_of(lora)
    loss_fn(lora, x, y).backward()
    assert all(torch.equal(a, c) and torch.equal(b, c) for a, b, c in zip(none, plain, grads_of(lora)))
    assert sorted(n for n in REGULARIZER_REGISTRY.names() if REGULARIZER_REGISTRY.get(n).needs_eager_attention) == [
        "l1-grad", "l1-grad-top"]


def test_a_regulariser_registered_in_a_test_is_used_by_the_learner_by_name():
    from .learners import make_learner, tiny_stream

    calls: list[int] = []

    @REGULARIZER_REGISTRY.register("double-loss")
    class DoubleLoss(Regularizer):
        """Scales the task loss by 2 (a stand-in for a new regulariser)."""

        def backward(self, ctx):
            assert all(t is not None for t in ctx.targets)  # called only on steps that have targets
            calls.append(ctx.step_in_epoch)
            loss = ctx.task_loss()
            (2 * loss).backward()
            return loss, ctx.lora.grad_vectors()

    stream = tiny_stream()
    try:
        learner = make_learner("treelora", stream, epochs=1, regularizer="double-loss")
        assert learner.cfg.attn_implementation == "sdpa" and isinstance(learner.regularizer, DoubleLoss)
        res = learner.run_stream(stream)
    finally:
        REGULARIZER_REGISTRY.unregister("double-loss")
    assert calls == [1, 2, 3, 4, 5, 6]  # every step of the second task; the first has nothing stored to look at
    assert sum(res["chosen_per_task"][1].values()) == 6 * learner.lora.num_layers
