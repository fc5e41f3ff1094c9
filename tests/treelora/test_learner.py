import math

import pytest
import torch

from treelora.backbones import load_backbone
from treelora.config import METHODS, make_config
from treelora.learner import ContinualLearner
from treelora.streams import load_stream


@pytest.fixture(scope="module")
def stream():
    s = load_stream("synthetic-text", train_per_class=24, test_per_class=8)
    s.tasks = s.tasks[:2]
    return s


def make(method: str, stream, **kw) -> ContinualLearner:
    cfg = make_config(method, epochs=2, batch_size=8, max_length=12, progress=False, lr=5e-3, **kw)
    attn = "eager" if cfg.regularizer == "l1-grad" else "sdpa"
    return ContinualLearner(load_backbone("tiny-bert", seed=0, attn_implementation=attn), stream.num_classes(), cfg)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_runs_two_tasks_end_to_end(method, stream):
    learner = make(method, stream)
    res = learner.run_stream(stream)
    R = res["accuracy_matrix"]
    assert len(R) == 2 and R[0][1] is None and all(0.0 <= x <= 1.0 for x in (R[0][0], R[1][0], R[1][1]))
    assert set(res["metrics"]) >= {"acc", "bwt", "bwt_clipped", "forgetting"}
    assert all(math.isfinite(v) for v in res["metrics"].values())
    assert res["steps_per_task"] == [12, 12]  # 48 examples / batch 8 × 2 epochs
    assert len(learner.tree) == 2 and sorted(res["tree"]["tasks"]) == ["t0", "t1"]
    if method.startswith("treelora"):
        assert sum(res["chosen_per_task"][1].values()) == 12 * learner.lora.num_layers
        assert res["search_time_per_task_s"][1] > 0
    else:
        assert res["chosen_per_task"][1] == {}


def test_training_reduces_loss_and_learns(stream):
    learner = make("seqlora", stream)
    encoded = learner.encode(stream.tasks[0].train)
    learner.begin_task("t0", stream.tasks[0].classes)
    from treelora.data import iterate_batches

    learner.start_epoch(3)
    losses = [learner.train_step(b) for epoch in range(25) for b in iterate_batches(encoded, 16, shuffle=True, seed=epoch)]
    learner.end_task()
    assert sum(losses[-3:]) < sum(losses[:3])
    assert learner.evaluate(stream.tasks[0], key="t0") > 0.7


def test_only_lora_and_head_train(stream):
    learner = make("treelora", stream)
    trainable = {n for n, p in learner.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters() if not p.requires_grad}
    learner.run_stream(stream)
    for n, p in learner.model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, before[n]), n


def test_task_aware_uses_snapshots(stream):
    learner = make("seqlora", stream, task_aware=True)
    res = learner.run_stream(stream)
    # task-aware scores of task 0 come from its own snapshot, so they do not change after task 1
    assert res["accuracy_matrix"][1][0] == res["accuracy_matrix"][0][0]


def test_lora_depth_limits_layers(stream):
    learner = make("treelora", stream, lora_depth=2)
    assert learner.lora.num_layers == 2


def test_task_lifecycle_errors(stream):
    learner = make("seqlora", stream)
    with pytest.raises(RuntimeError, match="no open task"):
        learner.train_step({})
    with pytest.raises(ValueError, match="outside"):
        learner.begin_task("x", [99])
    learner.begin_task("t0", [0, 1])
    with pytest.raises(RuntimeError, match="still open"):
        learner.begin_task("t1", [2, 3])
    with pytest.raises(RuntimeError, match="without a training step"):
        learner.end_task()


def test_signatures_have_layer_sizes(stream):
    learner = make("treelora", stream)
    learner.run_stream(stream)
    sig = learner.tree.entries["t0"].signature
    assert [s.numel() for s in sig] == learner.lora.layer_dims()
    official = make("treelora-official", stream)
    official.run_stream(stream)
    assert [s.numel() for s in official.tree.entries["t0"].signature] == official.lora.a_dims()


@pytest.mark.parametrize("reg", ["l1-grad-fd", "none"])
def test_regulariser_variants_run(reg, stream):
    learner = make("treelora", stream, regularizer=reg, selector="flat-lcb")
    res = learner.run_stream(stream)
    assert all(math.isfinite(v) for v in res["metrics"].values())


def test_warm_start_loads_adapter(stream):
    learner = make("seqlora", stream)
    learner.run_stream(stream)
    snap = learner.tree.entries["t0"].payload
    fresh = make("seqlora", stream)
    fresh.begin_task("n0", [0, 1], warm_start=snap)
    for k, v in fresh.adapter_state().items():
        assert torch.allclose(v, snap[k])


def test_forward_transfer_needs_the_initial_evaluation(stream):
    learner = make("seqlora", stream, fwt=True)
    res = learner.run_stream(stream)
    assert res["initial_accuracy"] is not None and len(res["initial_accuracy"]) == 2
    assert res["accuracy_matrix"][0][1] is not None  # task 1 scored after task 0, before it is trained
    expected = res["accuracy_matrix"][0][1] - res["initial_accuracy"][1]
    assert res["metrics"]["fwt"] == pytest.approx(expected)


def test_task_incremental_scores_over_own_classes(stream):
    learner = make("seqlora", stream, task_incremental=True)
    res = learner.run_stream(stream)
    free = make("seqlora", stream).run_stream(stream)
    # same training; restricting the argmax to a task's classes can only help
    for j in range(2):
        for i in range(j + 1):
            assert res["accuracy_matrix"][j][i] >= free["accuracy_matrix"][j][i]


def test_vision_stream_runs_on_tiny_vit():
    s = load_stream("digits", train_per_class=8, test_per_class=4, num_tasks=2)
    cfg = make_config("treelora", epochs=1, batch_size=8, progress=False, regularizer="l1-grad-fd")
    learner = ContinualLearner(load_backbone("tiny-vit"), s.num_classes(), cfg, stream=s)
    res = learner.run_stream(s)
    assert len(res["accuracy_matrix"]) == 2 and res["steps_per_task"] == [2, 2]


@pytest.mark.parametrize("method", ["treelora", "seqlora"])
def test_bf16_autocast_trains_with_fp32_parameters(method, stream):
    """``precision="bf16"`` is the GPU-node path (CUDA + bf16 autocast) exercised on the CPU: matmuls run in bf16,
    including treelora's exact double backward, while adapters, head and optimiser state stay fp32."""
    learner = make(method, stream, precision="bf16")
    assert learner.autocast_dtype is torch.bfloat16
    seen: set[torch.dtype] = set()
    linear = next(m for n, m in learner.model.named_modules() if isinstance(m, torch.nn.Linear) and "query" in n)
    hook = linear.register_forward_hook(lambda mod, inp, out: seen.add(out.dtype))
    try:
        res = learner.run_stream(stream)
    finally:
        hook.remove()
    assert seen == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in learner.model.parameters() if p.requires_grad)
    assert all(math.isfinite(v) for v in res["metrics"].values())
    assert res["accuracy_matrix"][0][0] > 0.5  # it learns under bf16 too


def test_precision_defaults_to_fp32_on_cpu_and_rejects_unknown_values(stream):
    assert make("seqlora", stream).autocast_dtype is None  # "auto": bf16 only on CUDA
    assert make("seqlora", stream, precision="fp32").autocast_dtype is None
    with pytest.raises(ValueError, match="precision='fp16' is not one of auto, bf16, fp32"):
        make_config("seqlora", precision="fp16")
