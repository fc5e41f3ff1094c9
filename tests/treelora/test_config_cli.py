import json

import pytest

from treelora.cli import main, parse_overrides
from treelora.config import make_config


def test_presets_differ_where_paper_and_release_disagree():
    paper, released = make_config("treelora"), make_config("treelora-official")
    for key in ("signature", "split", "selector", "regularizer"):
        assert getattr(paper, key) != getattr(released, key)
    assert make_config("seqlora").regularizer == "none"


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown method"):
        make_config("nope")
    with pytest.raises(ValueError, match="unknown config key"):
        make_config("treelora", bogus=1)
    with pytest.raises(ValueError, match="split="):
        make_config("treelora", split="kd")
    with pytest.raises(ValueError, match="epochs"):
        make_config("treelora", epochs=0)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        make_config("treelora", lr=-1e-3)
    with pytest.raises(ValueError, match="head="):
        make_config("treelora", head="nope")


def test_lr_zero_means_frozen_and_head_only_sets_it():
    assert make_config("seqlora", lr=0.0).lr == 0.0 and make_config("seqlora", head_lr=0).head_lr == 0.0
    assert make_config("head-only").lr == 0.0 and make_config("head-only").regularizer == "none"


def test_overrides_parse_types():
    assert parse_overrides(["lam=0.1", "lora-depth=4", "selector=flat-lcb"]) == {
        "lam": 0.1,
        "lora_depth": 4,
        "selector": "flat-lcb",
    }
    with pytest.raises(SystemExit):
        parse_overrides(["nokey=1"])


def test_cli_train_writes_results_and_compare(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "train", "--method", "treelora", "seqlora", "--stream", "synthetic-text", "--backbone", "tiny-bert",
            "--epochs", "1", "--num-tasks", "2", "--train-per-class", "8", "--test-per-class", "4",
            "--set", "batch_size=8", "--set", "progress=False", "--out", str(out),
        ]
    )
    assert rc == 0
    for method in ("treelora", "seqlora"):
        d = out / method / "seed0"
        data = json.loads((d / "results.json").read_text())
        assert len(data["accuracy_matrix"]) == 2 and data["method"] == method
        for name in ("metrics.csv", "accuracy_matrix.png"):
            assert (d / name).stat().st_size > 0
        header = (d / "metrics.csv").read_text().splitlines()[0].split(",")
        assert {"cil_acc", "til_acc", "til_bwt", "task_inference_acc"} <= set(header)
        # a tree picture only for a method that selects from its tree (seqlora's selector is none)
        assert (d / "tree.png").exists() == (d / "tree.txt").exists() == (method == "treelora")
    assert "| treelora |" in (out / "summary.md").read_text()
    assert (out / "acc.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["compare", str(out)]) == 0
    out_text = capsys.readouterr().out
    assert "| seqlora |" in out_text and "TIL ACC %" in out_text and "task-inference %" in out_text


def test_cli_reports_bad_stream(capsys):
    assert main(["train", "--stream", "nope", "--backbone", "tiny-bert", "--out", "/tmp/never"]) == 2
    assert "unknown stream" in capsys.readouterr().err
