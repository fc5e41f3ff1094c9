"""Continual-learning metrics from an accuracy matrix (DESIGN.md §2 "Metrics").

``R`` is a (T, T) array with ``R[j, i]`` = score on task i after training task j (0-based here; the formulas in
the docstrings use T for the last row, i.e. index T-1). Entries above the diagonal (i > j) may be NaN (not
evaluated) or filled by a learner that evaluates future tasks; only forward transfer reads them. Each function
reads only the entries its formula needs and raises ValueError naming the first used entry that is NaN or inf.
Scores may be on any scale (fractions or percentages); the metrics keep that scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "average_accuracy",
    "backward_transfer",
    "clipped_backward_transfer",
    "forgetting",
    "forward_transfer",
    "summarize",
    "mean_std",
]


def _matrix(R: ArrayLike) -> np.ndarray:
    try:
        arr = np.asarray(R, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"accuracy matrix must be numeric: {exc}") from exc
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 1:
        raise ValueError(f"accuracy matrix must be square (T, T) with T >= 1, got shape {arr.shape}")
    return arr


def _require_finite(R: np.ndarray, cells: Iterable[tuple[int, int]], metric: str) -> None:
    for j, i in cells:
        if not math.isfinite(R[j, i]):
            raise ValueError(f"{metric} needs R[{j}, {i}] (task {i} after training task {j}), but it is {R[j, i]}")


def average_accuracy(R: ArrayLike) -> float:
    """ACC (the released code's OP): mean of the last row, the score on every task after the last one."""
    R = _matrix(R)
    T = R.shape[0]
    _require_finite(R, [(T - 1, i) for i in range(T)], "average_accuracy")
    return float(R[T - 1].mean())


def backward_transfer(R: ArrayLike) -> float:
    """BWT = 1/(T-1) * sum_{i<T} (R[T,i] - R[i,i]) (Lopez-Paz & Ranzato 2017); negative means forgetting.

    0.0 when T == 1 (nothing came after the only task).
    """
    R = _matrix(R)
    T = R.shape[0]
    if T == 1:
        _require_finite(R, [(0, 0)], "backward_transfer")
        return 0.0
    cells = [(T - 1, i) for i in range(T - 1)] + [(i, i) for i in range(T - 1)]
    _require_finite(R, cells, "backward_transfer")
    idx = np.arange(T - 1)
    return float(np.mean(R[T - 1, idx] - R[idx, idx]))


def clipped_backward_transfer(R: ArrayLike, as_magnitude: bool = False) -> float:
    """The paper's / released code's BWT = 1/T * sum_i min(R[T,i] - R[i,i], 0) (always <= 0).

    Unlike :func:`backward_transfer`, a task that improved counts as 0 rather than cancelling another task's
    forgetting, and it divides by T (the last task, always 0, is in the average). ``as_magnitude=True`` returns
    the absolute value, as the released code reports it (so "BWT 3.77" there means this value is -3.77).
    """
    R = _matrix(R)
    T = R.shape[0]
    cells = [(T - 1, i) for i in range(T)] + [(i, i) for i in range(T)]
    _require_finite(R, cells, "clipped_backward_transfer")
    idx = np.arange(T)
    value = float(np.mean(np.minimum(R[T - 1, idx] - R[idx, idx], 0.0)))
    return abs(value) if as_magnitude else value + 0.0  # + 0.0 turns -0.0 into 0.0


def forgetting(R: ArrayLike) -> float:
    """Average forgetting = mean over i<T of (max_{i<=j<T} R[j,i]) - R[T,i] (Chaudhry et al. 2018).

    The max runs over the rows from the one that trained task i up to the one before the last, so scores a
    task had before it was trained (the upper triangle) never count as knowledge to forget. A task that ends
    above every earlier score of it contributes a negative term (it is not clipped). 0.0 when T == 1.
    """
    R = _matrix(R)
    T = R.shape[0]
    if T == 1:
        _require_finite(R, [(0, 0)], "forgetting")
        return 0.0
    cells = [(j, i) for i in range(T - 1) for j in range(i, T)]
    _require_finite(R, cells, "forgetting")
    per_task = [R[i:T - 1, i].max() - R[T - 1, i] for i in range(T - 1)]
    return float(np.mean(per_task))


def forward_transfer(R: ArrayLike, initial: ArrayLike) -> float:
    """FWT = 1/(T-1) * sum_{i>0} (R[i-1,i] - initial[i]) (Lopez-Paz & Ranzato 2017).

    ``initial[i]`` is task i's score before any training; ``R[i-1, i]`` is its score just before it is trained,
    so the learner must have evaluated the next task after each task. 0.0 when T == 1.
    """
    R = _matrix(R)
    T = R.shape[0]
    try:
        init = np.asarray(initial, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"initial scores must be numeric: {exc}") from exc
    if init.shape != (T,):
        raise ValueError(f"initial scores must have shape ({T},) to match R, got {init.shape}")
    if T == 1:
        return 0.0
    _require_finite(R, [(i - 1, i) for i in range(1, T)], "forward_transfer")
    for i in range(1, T):
        if not math.isfinite(init[i]):
            raise ValueError(f"forward_transfer needs initial[{i}] (task {i} before training), but it is {init[i]}")
    idx = np.arange(1, T)
    return float(np.mean(R[idx - 1, idx] - init[idx]))


def summarize(R: ArrayLike, initial: ArrayLike | None = None) -> dict[str, float]:
    """All metrics under stable keys: acc, bwt, bwt_clipped, forgetting, and fwt when it can be computed.

    ``bwt_clipped`` is the signed (<= 0) clipped form. ``fwt`` is present only when ``initial`` is given and R's
    superdiagonal (each task evaluated just before its training) is filled; a NaN in ``initial`` itself is an
    error, not a reason to drop the key.
    """
    R = _matrix(R)
    out = {
        "acc": average_accuracy(R),
        "bwt": backward_transfer(R),
        "bwt_clipped": clipped_backward_transfer(R),
        "forgetting": forgetting(R),
    }
    T = R.shape[0]
    if initial is not None and all(math.isfinite(R[i - 1, i]) for i in range(1, T)):
        out["fwt"] = forward_transfer(R, initial)
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) over seeds; std is 0.0 for a single value."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"mean_std needs a non-empty flat list of numbers, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"mean_std got a non-finite value at index {int(bad[0])}: {arr[bad[0]]}")
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), std
