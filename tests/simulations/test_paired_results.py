"""simulations/paired_results.py: methods read from several summaries are paired by seed, the oracle-gain share is
computed, sources are named, and disagreeing or missing sources are refused."""

import json

import pytest

from simulations import paired_results


def summary(path, seeds, per_method):
    path.write_text(json.dumps({"seeds": seeds, "summary": {m: {"per_seed_acc": v} for m, v in per_method.items()}}))
    return str(path)


def test_combines_sources_pairs_by_seed_and_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paired_results, "RESULTS", tmp_path / "results")
    a = summary(tmp_path / "a.json", [0, 1, 2], {"ref": [0.50, 0.52, 0.51], "good": [0.60, 0.63, 0.61]})
    b = summary(tmp_path / "b.json", [0, 1, 2], {"floor": [0.40, 0.41, 0.42], "oracle": [0.70, 0.72, 0.71],
                                                 "ref": [0.50, 0.52, 0.51]})
    rc = paired_results.main(["--from", f"{a}:ref,good", f"{b}:floor,oracle,ref", "--reference", "ref",
                              "--oracle", "oracle", "--floor", "floor", "--name", "t"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| good | 3 |" in out and "yes, better" in out and "yes, worse" in out  # floor is below ref
    data = json.loads((tmp_path / "results" / "t.json").read_text())
    assert data["values"]["good"] == {"0": 0.60, "1": 0.63, "2": 0.61}
    assert data["oracle_gain_share"]["ref"] == pytest.approx((0.51 - 0.41) / (0.71 - 0.41))
    assert data["sources"]["ref"] == [a, b]


def test_refuses_disagreeing_or_missing_sources(tmp_path, capsys):
    a = summary(tmp_path / "a.json", [0, 1], {"ref": [0.5, 0.6]})
    b = summary(tmp_path / "b.json", [0, 1], {"ref": [0.5, 0.7]})
    assert paired_results.main(["--from", f"{a}:ref", f"{b}:ref", "--reference", "ref"]) == 2
    assert "not the same runs" in capsys.readouterr().err
    assert paired_results.main(["--from", f"{a}:nope", "--reference", "ref"]) == 2
    assert "no method 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        paired_results.main(["--from", "no-colon", "--reference", "ref"])
