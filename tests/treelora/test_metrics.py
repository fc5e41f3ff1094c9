"""Tests for treelora.metrics on hand-computed accuracy matrices (arithmetic in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from treelora.metrics import (
    average_accuracy,
    backward_transfer,
    clipped_backward_transfer,
    forgetting,
    forward_transfer,
    mean_std,
    summarize,
)

NAN = math.nan

# 3 tasks, upper triangle not evaluated. Task 0 is forgotten (0.9 -> 0.6), task 1 improves (0.8 -> 0.85).
R3 = np.array([
    [0.9, NAN, NAN],
    [0.7, 0.8, NAN],
    [0.6, 0.85, 0.7],
])

# 4 tasks, every cell evaluated (percentages). Task 0 peaks after task 2 (85), not after its own training (80).
R4 = np.array([
    [80.0, 10.0, 20.0, 30.0],
    [70.0, 90.0, 25.0, 35.0],
    [85.0, 85.0, 60.0, 40.0],
    [65.0, 80.0, 55.0, 95.0],
])
INIT4 = np.array([10.0, 12.0, 15.0, 25.0])


def test_3x3_by_hand() -> None:
    # ACC = (0.6 + 0.85 + 0.7) / 3 = 2.15 / 3 = 0.71667
    assert average_accuracy(R3) == pytest.approx(2.15 / 3)
    # BWT = 1/2 * ((0.6 - 0.9) + (0.85 - 0.8)) = 1/2 * (-0.3 + 0.05) = -0.125
    assert backward_transfer(R3) == pytest.approx(-0.125)
    # clipped = 1/3 * (min(-0.3, 0) + min(0.05, 0) + min(0.7 - 0.7, 0)) = -0.3 / 3 = -0.1
    assert clipped_backward_transfer(R3) == pytest.approx(-0.1)
    assert clipped_backward_transfer(R3, as_magnitude=True) == pytest.approx(0.1)
    # forgetting: task 0: max(0.9, 0.7) - 0.6 = 0.3; task 1: max(0.8) - 0.85 = -0.05; mean = 0.25 / 2 = 0.125
    assert forgetting(R3) == pytest.approx(0.125)


def test_4x4_by_hand() -> None:
    # ACC = (65 + 80 + 55 + 95) / 4 = 295 / 4 = 73.75
    assert average_accuracy(R4) == pytest.approx(73.75)
    # BWT = 1/3 * ((65 - 80) + (80 - 90) + (55 - 60)) = 1/3 * (-15 - 10 - 5) = -10
    assert backward_transfer(R4) == pytest.approx(-10.0)
    # clipped = 1/4 * (-15 - 10 - 5 + 0) = -7.5 (magnitude 7.5)
    assert clipped_backward_transfer(R4) == pytest.approx(-7.5)
    assert clipped_backward_transfer(R4, as_magnitude=True) == pytest.approx(7.5)
    # forgetting: task 0: max(80, 70, 85) - 65 = 20; task 1: max(90, 85) - 80 = 10; task 2: max(60) - 55 = 5
    #             mean = 35 / 3 = 11.667 (the upper-triangle 10, 20, 25 ... never enter the max)
    assert forgetting(R4) == pytest.approx(35.0 / 3)
    # FWT = 1/3 * ((R[0,1] - 12) + (R[1,2] - 15) + (R[2,3] - 25)) = 1/3 * ((10 - 12) + (25 - 15) + (40 - 25))
    #     = 1/3 * (-2 + 10 + 15) = 23 / 3 = 7.667
    assert forward_transfer(R4, INIT4) == pytest.approx(23.0 / 3)


def test_fwt_reads_only_the_superdiagonal() -> None:
    R = R4.copy()
    R[0, 2] = R[0, 3] = R[1, 3] = NAN  # not used by FWT (nor by anything else)
    INIT = INIT4.copy()
    INIT[0] = NAN  # initial[0] is not used either: FWT starts at task 1
    assert forward_transfer(R, INIT) == pytest.approx(23.0 / 3)
    assert summarize(R, INIT) == pytest.approx(summarize(R4, INIT4))


def test_summarize_keys() -> None:
    s = summarize(R4, INIT4)
    assert list(s) == ["acc", "bwt", "bwt_clipped", "forgetting", "fwt"]
    assert s == pytest.approx({"acc": 73.75, "bwt": -10.0, "bwt_clipped": -7.5,
                               "forgetting": 35.0 / 3, "fwt": 23.0 / 3})
    assert all(isinstance(v, float) for v in s.values())
    # without initial scores, or without the superdiagonal, there is no FWT key
    assert "fwt" not in summarize(R4)
    assert "fwt" not in summarize(R3, initial=[0.1, 0.1, 0.1])
    assert summarize(R3) == pytest.approx({"acc": 2.15 / 3, "bwt": -0.125, "bwt_clipped": -0.1, "forgetting": 0.125})


def test_the_two_bwt_forms_disagree_in_sign_when_a_task_improved() -> None:
    # Task 0 drops a little (0.5 -> 0.45), task 1 improves a lot (0.6 -> 0.9).
    R = np.array([
        [0.5, NAN, NAN],
        [0.4, 0.6, NAN],
        [0.45, 0.9, 0.8],
    ])
    # BWT = 1/2 * ((0.45 - 0.5) + (0.9 - 0.6)) = 1/2 * (-0.05 + 0.3) = +0.125: the gain hides the loss
    assert backward_transfer(R) == pytest.approx(0.125)
    # clipped = 1/3 * (min(-0.05, 0) + min(0.3, 0) + 0) = -0.05 / 3 = -0.016667: the gain counts as 0
    assert clipped_backward_transfer(R) == pytest.approx(-0.05 / 3)
    assert clipped_backward_transfer(R, as_magnitude=True) == pytest.approx(0.05 / 3)


def test_no_forgetting_gives_zero_clipped_bwt_not_negative_zero() -> None:
    R = np.array([[0.5, NAN], [0.6, 0.7]])
    assert clipped_backward_transfer(R) == 0.0
    assert math.copysign(1.0, clipped_backward_transfer(R)) == 1.0
    assert math.copysign(1.0, clipped_backward_transfer(R, as_magnitude=True)) == 1.0
    assert backward_transfer(R) == pytest.approx(0.1)  # 0.6 - 0.5
    assert forgetting(R) == pytest.approx(-0.1)  # max(0.5) - 0.6: an improvement is negative forgetting


def test_single_task() -> None:
    R = np.array([[0.42]])
    assert average_accuracy(R) == pytest.approx(0.42)
    assert backward_transfer(R) == 0.0
    assert clipped_backward_transfer(R) == 0.0
    assert forgetting(R) == 0.0
    assert forward_transfer(R, [0.1]) == 0.0
    assert summarize(R, [0.1]) == {"acc": pytest.approx(0.42), "bwt": 0.0, "bwt_clipped": 0.0,
                                   "forgetting": 0.0, "fwt": 0.0}
    assert average_accuracy([[1.0]]) == 1.0  # nested lists are accepted


@pytest.mark.parametrize(
    "cell, metric, match",
    [
        ((2, 0), backward_transfer, r"R\[2, 0\]"),
        ((1, 1), backward_transfer, r"R\[1, 1\]"),
        ((2, 2), average_accuracy, r"R\[2, 2\]"),
        ((2, 2), clipped_backward_transfer, r"R\[2, 2\]"),
        ((1, 0), forgetting, r"R\[1, 0\]"),
    ],
)
def test_nan_in_a_used_entry_is_named(cell: tuple[int, int], metric, match: str) -> None:
    R = R3.copy()
    R[cell] = NAN
    with pytest.raises(ValueError, match=match):
        metric(R)


def test_nan_or_inf_errors_for_fwt_and_summarize() -> None:
    R = R4.copy()
    R[1, 2] = math.inf
    with pytest.raises(ValueError, match=r"R\[1, 2\]"):
        forward_transfer(R, INIT4)
    bad_init = INIT4.copy()
    bad_init[2] = NAN
    with pytest.raises(ValueError, match=r"initial\[2\]"):
        summarize(R4, bad_init)
    R = R3.copy()
    R[1, 0] = NAN  # a used entry, so summarize raises rather than dropping a key
    with pytest.raises(ValueError, match=r"R\[1, 0\]"):
        summarize(R)


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), np.zeros((0, 0)), np.zeros(3), np.zeros((2, 2, 2)), [["a"]]])
def test_bad_shapes_raise(bad) -> None:
    with pytest.raises(ValueError, match="square|numeric"):
        summarize(bad)


def test_initial_shape_must_match() -> None:
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        forward_transfer(R4, [1.0, 2.0, 3.0])


def test_mean_std() -> None:
    # mean = 2.5; sample var = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert std == pytest.approx(math.sqrt(5.0 / 3.0))
    assert mean_std([0.7]) == (pytest.approx(0.7), 0.0)
    with pytest.raises(ValueError, match="non-empty"):
        mean_std([])
    with pytest.raises(ValueError, match="index 1"):
        mean_std([1.0, NAN])


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 6)).map(lambda t: (t[0], t[0])),
              elements=st.floats(0.0, 1.0)))
def test_metric_relations_hold_on_any_matrix(R: np.ndarray) -> None:
    T = R.shape[0]
    R = np.where(np.tril(np.ones((T, T), dtype=bool)), R, NAN)  # upper triangle not evaluated
    bwt, clipped, forg = backward_transfer(R), clipped_backward_transfer(R), forgetting(R)
    assert clipped <= 0.0
    assert clipped == pytest.approx(-clipped_backward_transfer(R, as_magnitude=True))
    # sum of min(d_i, 0) <= sum of d_i
    assert clipped * T <= bwt * (T - 1) + 1e-12
    # max_{j>=i} R[j,i] >= R[i,i], so each task's forgetting >= -(its BWT term)
    assert forg >= -bwt - 1e-12
    assert 0.0 <= average_accuracy(R) <= 1.0
