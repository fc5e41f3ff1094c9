"""The evaluation views (treelora.evaluation) against a hand-computed case, and on a tiny learner."""

import pytest
import torch

from treelora.evaluation import VIEWS, flat_view_metrics, main_view, view_scores
from treelora.metrics import summarize

from .learners import make_learner, tiny_stream


def test_views_from_one_score_matrix_by_hand():
    # classes 0..5; seen = 0..3 (tasks {0,1} and {2,3}); the test set is task {2,3}'s
    logits = torch.tensor([
        [0.0, 0.0, 5.0, 1.0, 9.0, 0.0],   # label 2: CIL argmax over 0..3 = 2 (right); TIL = 2 (right)
        [4.0, 0.0, 1.0, 3.0, 0.0, 0.0],   # label 3: CIL = 0 (wrong task); TIL over {2,3} = 3 (right)
        [0.0, 6.0, 2.0, 1.0, 0.0, 0.0],   # label 2: CIL = 1 (wrong task); TIL = 2 (right)
        [0.0, 0.0, 2.0, 1.0, 0.0, 0.0],   # label 3: CIL = 2 (right task, wrong class); TIL = 2 (wrong)
    ])
    labels = torch.tensor([2, 3, 2, 3])
    got = view_scores(logits, labels, seen=[0, 1, 2, 3], own=[2, 3])
    assert got == {"cil": 0.25, "til": 0.75, "task_inference": 0.5}  # class 4 is unseen: never predicted
    assert tuple(got) == VIEWS


@pytest.fixture(scope="module")
def stream():
    return tiny_stream()


def test_learner_views_agree_with_evaluate_and_the_results(stream):
    learner = make_learner("seqlora", stream, epochs=1)
    res = learner.run_stream(stream)
    t1 = stream.tasks[1]
    views = learner.evaluate_views(t1, key="t1")
    assert views["cil"] == pytest.approx(learner.evaluate(t1, key="t1"))  # the federation's float is the CIL view
    assert views["til"] == pytest.approx(learner.evaluate(t1, own_classes=True))
    assert res["views"]["cil"]["accuracy_matrix"][-1][1] == pytest.approx(views["cil"])
    flat = flat_view_metrics(res)
    til = [[x for x in row] for row in res["views"]["til"]["accuracy_matrix"]]
    assert flat["til_acc"] == pytest.approx(summarize([[til[0][0], float("nan")], til[1]])["acc"])
    assert {"cil_acc", "til_bwt", "task_inference_acc", "til_forgetting"} <= set(flat)
    assert flat_view_metrics({"metrics": {}}) == {}


@pytest.mark.parametrize("head", ["linear", "ncm", "slca"])
def test_the_cil_view_is_what_evaluate_returns_for_every_head(stream, head):
    """A federated client reports its accuracy row from the views' one pass, so the CIL view must be the score
    ``evaluate`` gives (each head's predict is the argmax of its logits over the seen classes)."""
    learner = make_learner("seqlora", stream, epochs=1, head=head, head_samples=16, head_refit_epochs=1)
    learner.run_stream(stream)
    for i, task in enumerate(stream.tasks):
        views = learner.evaluate_views(task, key=f"t{i}")
        assert views["cil"] == pytest.approx(learner.evaluate(task, key=f"t{i}"))
        assert views["til"] == pytest.approx(learner.evaluate(task, own_classes=True))


def test_the_oracle_scores_each_task_with_its_snapshot_so_its_til_bwt_is_zero(stream):
    learner = make_learner("seqlora", stream, epochs=1, task_aware=True)
    assert main_view(learner.cfg) == "til"
    res = learner.run_stream(stream)
    R = res["views"]["til"]["accuracy_matrix"]
    assert R[1][0] == R[0][0]  # task 0 after task 1 = task 0 after task 0: its own snapshot
    assert res["views"]["til"]["metrics"]["bwt"] == 0.0 and res["oracle"] is True
    assert res["accuracy_matrix"] == R  # the headline matrix of an oracle run is its TIL view
