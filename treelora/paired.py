"""Paired comparisons over seeds: the mean difference of two methods run on the same seeds, its 95% interval, and
whether it separates them.

A benchmark compares methods on paired seeds (same data draw and training seed for every method), so the noise
that matters is the spread of the *per-seed difference*, not of each method alone. The interval is Student's t on
the n paired differences; a difference whose interval contains 0 is a **tie** and is reported as one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["paired_difference", "paired_table", "markdown_paired", "oracle_gain_share"]


def _t_critical(df: int, confidence: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, df))


def paired_difference(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95) -> dict[str, Any]:
    """``a − b`` over paired seeds: mean, sd, se, the ``confidence`` interval, and ``verdict``: "better" when the
    interval is above 0, "worse" when below, "tie" otherwise (also with fewer than 2 pairs)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same seeds: {len(a)} vs {len(b)}")
    d = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n if n else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "se": None, "low": None, "high": None, "verdict": "tie"}
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    se = sd / math.sqrt(n)
    half = _t_critical(n - 1, confidence) * se
    low, high = mean - half, mean + half
    verdict = "better" if low > 0 else "worse" if high < 0 else "tie"
    return {"n": n, "mean": mean, "sd": sd, "se": se, "low": low, "high": high, "confidence": confidence,
            "verdict": verdict}


def paired_table(values: Mapping[str, Mapping[int, float]], reference: str, *,
                 confidence: float = 0.95) -> list[dict[str, Any]]:
    """One row per method: its per-seed values, mean ± sd, and the paired difference to ``reference`` over the
    seeds both have (``values``: method → seed → metric)."""
    if reference not in values:
        raise ValueError(f"reference {reference!r} is not among the methods {sorted(values)}")
    ref = values[reference]
    rows = []
    for method, by_seed in values.items():
        seeds = sorted(set(by_seed) & set(ref))
        xs = [by_seed[s] for s in sorted(by_seed)]
        mean = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
        diff = None if method == reference else paired_difference([by_seed[s] for s in seeds],
                                                                   [ref[s] for s in seeds], confidence=confidence)
        rows.append({"method": method, "seeds": sorted(by_seed), "values": xs, "mean": mean, "sd": sd,
                     "vs_reference": diff})
    return rows


def oracle_gain_share(values: Mapping[str, Mapping[int, float]], oracle: str, floor: str
                      ) -> tuple[dict[str, float | None], float]:
    """(each method's share of the oracle's gain over the floor, the gain ``oracle − floor``).

    A method's share is ``(mean − floor) / (oracle − floor)`` on the means over the seeds that the method, the
    oracle and the floor all have (rows run at different seed counts are compared on the same seeds); None where
    there is no such seed or the two reference rows tie exactly there. The gain is over the seeds the oracle and
    the floor share."""
    ref_seeds = set(values[oracle]) & set(values[floor])

    def mean_on(method: str, seeds: list[int]) -> float:
        return sum(values[method][s] for s in seeds) / len(seeds)

    shares: dict[str, float | None] = {}
    for m, v in values.items():
        seeds = sorted(set(v) & ref_seeds)
        span_m = mean_on(oracle, seeds) - mean_on(floor, seeds) if seeds else 0.0
        shares[m] = (mean_on(m, seeds) - mean_on(floor, seeds)) / span_m if span_m else None
    ref = sorted(ref_seeds)
    return shares, (mean_on(oracle, ref) - mean_on(floor, ref)) if ref else 0.0


def markdown_paired(rows: list[dict[str, Any]], reference: str, *, metric: str, scale: float = 100.0) -> str:
    """A markdown table of :func:`paired_table` rows (values × ``scale``, e.g. accuracies in %)."""
    lines = [f"| method | seeds | {metric} mean ± sd | per seed | Δ vs {reference} (95% CI) | separates |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        per_seed = " ".join(f"{scale * v:.1f}" for v in r["values"])
        d = r["vs_reference"]
        if d is None:
            delta, sep = "reference", "-"
        elif d["low"] is None:
            delta, sep = f"{scale * d['mean']:+.2f} (n = {d['n']})", "tie (too few seeds)"
        else:
            delta = f"{scale * d['mean']:+.2f} [{scale * d['low']:+.2f}, {scale * d['high']:+.2f}]"
            sep = {"better": "yes, better", "worse": "yes, worse", "tie": "tie"}[d["verdict"]]
        lines.append(f"| {r['method']} | {len(r['seeds'])} | {scale * r['mean']:.2f} ± {scale * r['sd']:.2f} | "
                     f"{per_seed} | {delta} | {sep} |")
    return "\n".join(lines)
