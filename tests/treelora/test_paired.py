"""Paired comparisons: the interval of the mean difference, and ties reported as ties."""

import math

import pytest

from treelora.paired import markdown_paired, paired_difference, paired_table


def test_paired_difference_against_a_hand_computed_t_interval():
    a, b = [0.50, 0.52, 0.55, 0.51], [0.48, 0.49, 0.50, 0.50]
    d = paired_difference(a, b)
    diffs = [0.02, 0.03, 0.05, 0.01]
    mean = sum(diffs) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 3)
    half = 3.182446305284263 * sd / 2  # t(0.975, 3)
    assert d["mean"] == pytest.approx(mean) and d["low"] == pytest.approx(mean - half)
    assert d["high"] == pytest.approx(mean + half) and d["verdict"] == "better"
    assert paired_difference(b, a)["verdict"] == "worse"
    assert paired_difference([0.5, 0.6, 0.4], [0.5, 0.5, 0.5])["verdict"] == "tie"
    assert paired_difference([0.6], [0.5])["verdict"] == "tie"  # one seed cannot separate anything
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([1.0], [1.0, 2.0])


def test_paired_table_pairs_by_seed_and_renders():
    values = {"seqlora": {0: 0.40, 1: 0.42, 2: 0.41}, "treelora": {0: 0.45, 1: 0.46, 2: 0.47, 3: 0.9}}
    rows = paired_table(values, "seqlora")
    tree = next(r for r in rows if r["method"] == "treelora")
    assert tree["vs_reference"]["n"] == 3 and tree["vs_reference"]["verdict"] == "better"  # seed 3 has no pair
    md = markdown_paired(rows, "seqlora", metric="ACC %")
    assert "| seqlora | 3 |" in md and "yes, better" in md and "reference" in md
    with pytest.raises(ValueError, match="reference 'x'"):
        paired_table(values, "x")


def test_oracle_gain_share_uses_the_seeds_a_method_shares_with_both_reference_rows():
    from treelora.paired import oracle_gain_share

    values = {"floor": {0: 0.40, 1: 0.50}, "oracle": {0: 0.60, 1: 0.90},
              "m": {0: 0.50, 1: 0.70, 2: 0.99, 3: 0.99}, "lone": {5: 0.5}}
    shares, gain = oracle_gain_share(values, "oracle", "floor")
    assert gain == pytest.approx(0.30)
    assert shares["m"] == pytest.approx((0.60 - 0.45) / 0.30)  # seeds 2-3 have no reference rows: left out
    assert shares["lone"] is None and shares["oracle"] == pytest.approx(1.0)
