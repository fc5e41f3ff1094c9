import math

import pytest
import torch

from treelora.backbones import load_backbone
from treelora.config import METHODS, make_config
from treelora.learner import ContinualLearner
from treelora.streams import load_stream

from .learners import assert_same, round_trip, tiny_stream
from .learners import make_learner as make


@pytest.fixture(scope="module")
def stream():
    return tiny_stream()


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
    losses = [
        learner.train_step(b) for epoch in range(25) for b in iterate_batches(encoded, 16, shuffle=True, seed=epoch)
    ]
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


def _steps(learner, stream, plan, seed=0):
    """Train ``plan`` = [(task index, steps, close?)] with a fixed torch seed per step; returns the losses."""
    from treelora.data import iterate_batches

    losses = []
    for j, n, close in plan:
        task = stream.tasks[j]
        if learner.current is None:
            learner.begin_task(f"t{j}", task.classes)
            learner.start_epoch(6)
        batches = list(iterate_batches(learner.encode(task.train), 8, shuffle=True, seed=j))
        for i in range(n):
            torch.manual_seed(seed + 100 * j + i)  # dropout: both learners of a comparison draw the same masks
            losses.append(learner.train_step(batches[(learner._step_in_task) % len(batches)]))
        if close:
            learner.end_task()
    return losses


@pytest.mark.parametrize("method", ["treelora", "treelora-official", "ewc"])
def test_state_dict_round_trips_mid_task_and_training_continues_identically(method, stream):
    a = make(method, stream)
    _steps(a, stream, [(0, 3, True), (1, 2, False)])
    state = a.state_dict()
    assert state["format"] == 2 and set(state["method_state"]) == (
        {"fisher", "anchor", "sq", "count"} if method == "ewc" else set()
    )
    b = make(method, stream)
    b.load_state_dict(round_trip(state))
    assert_same(b.state_dict(), a.state_dict())
    if method == "treelora-official":
        return  # its sampler draws from a numpy generator the checkpoint does not hold: it restarts from the seed
    assert _steps(a, stream, [(1, 3, True)], seed=7) == _steps(b, stream, [(1, 3, True)], seed=7)
    assert_same(_untimed(b.state_dict()), _untimed(a.state_dict()))


def _untimed(state):
    """``state`` without the records' wall-clock times (they differ between two runs of the same steps)."""
    records = {k: {f: v for f, v in r.items() if not f.endswith("_time_s")} for k, r in state["records"].items()}
    return {**state, "records": records}


def test_olora_state_restores_before_a_merge_and_refuses_after(stream):
    a = make("olora", stream)
    _steps(a, stream, [(0, 2, False)])
    b = make("olora", stream)
    b.load_state_dict(round_trip(a.state_dict()))
    assert_same(b.state_dict(), a.state_dict())
    _steps(a, stream, [(0, 1, True), (1, 1, False)])  # task 1 merged task 0's LoRA into the base
    merged = a.state_dict()
    assert all(len(prev) == 1 for prev in merged["method_state"]["prev"])
    before = b.state_dict()
    with pytest.raises(ValueError, match="olora state cannot be restored"):
        b.load_state_dict(merged)
    assert_same(b.state_dict(), before)  # refused before anything changed


def test_olora_has_no_task_aware_inference(stream):
    learner = make("olora", stream, task_aware=True, epochs=1)
    with pytest.raises(ValueError, match="task-aware inference is not available for olora"):
        learner.run_stream(stream)


def test_state_of_another_method_or_format_is_refused(stream):
    state = make("seqlora", stream).state_dict()
    with pytest.raises(ValueError, match="for method 'seqlora'"):
        make("ewc", stream).load_state_dict(state)
    with pytest.raises(ValueError, match=r"format 1\)"):
        make("seqlora", stream).load_state_dict({**state, "format": 1})
