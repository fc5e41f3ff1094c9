import math

import pytest

from treelora.stream_run import results_dict, run_stream, versions

from .learners import make_learner, tiny_stream

RESULT_KEYS = [
    "method", "config", "stream", "backbone", "tasks", "task_families", "task_classes", "accuracy_matrix", "metrics",
    "oracle", "initial_accuracy", "time_per_task_s", "train_time_per_task_s", "search_time_per_task_s",
    "reg_time_per_task_s", "steps_per_task", "step_time_s", "mean_loss_per_task", "chosen_per_task", "peak_rss_mb",
    "cuda_peak_mb", "device", "tree", "tree_quality", "num_layers", "versions", "views",
]


@pytest.fixture(scope="module")
def stream():
    return tiny_stream()


def test_results_dict_keys_are_stable_and_the_learner_delegates(stream):
    res = run_stream(make_learner("seqlora", stream, epochs=1), stream)
    assert list(res) == RESULT_KEYS
    assert res["steps_per_task"] == [6, 6] and res["accuracy_matrix"][0][1] is None
    assert res["step_time_s"] == pytest.approx(sum(res["train_time_per_task_s"]) / 12)
    via_learner = make_learner("seqlora", stream, epochs=1).run_stream(stream)
    assert via_learner["accuracy_matrix"] == res["accuracy_matrix"]
    assert via_learner["mean_loss_per_task"] == res["mean_loss_per_task"]
    views = res["views"]
    assert list(views) == ["cil", "til", "task_inference"]
    assert views["cil"]["accuracy_matrix"] == res["accuracy_matrix"]  # the headline matrix is the CIL view
    for j, row in enumerate(views["til"]["accuracy_matrix"]):
        for i in range(j + 1):  # TIL argmax over fewer classes: never below CIL, and task inference bounds CIL
            assert row[i] >= views["cil"]["accuracy_matrix"][j][i]
            assert views["task_inference"]["accuracy_matrix"][j][i] >= views["cil"]["accuracy_matrix"][j][i]
    assert set(views["til"]["metrics"]) == {"acc", "bwt", "bwt_clipped", "forgetting"}


def test_per_task_epochs_are_checked(stream):
    with pytest.raises(ValueError, match="epochs has 1 entries for 2 tasks"):
        run_stream(make_learner("seqlora", stream), stream, epochs=[1])


def test_results_dict_turns_unscored_cells_into_none(stream):
    import numpy as np

    learner = make_learner("seqlora", stream)
    R = np.array([[0.5, np.nan], [0.25, 0.75]])
    res = results_dict(learner, stream, R, None, [1.0, 2.0], [])
    assert res["accuracy_matrix"] == [[0.5, None], [0.25, 0.75]] and math.isfinite(res["metrics"]["acc"])
    assert res["step_time_s"] == 0.0 and res["time_per_task_s"] == [1.0, 2.0]


def test_versions_name_the_libraries():
    assert set(versions()) == {"python", "torch", "transformers", "peft", "numpy"}
