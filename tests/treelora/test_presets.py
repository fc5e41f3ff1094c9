"""Regime presets (treelora.presets) and their precedence in ``treelora train``."""

import argparse

import pytest

from treelora.cli import build_parser, train_settings
from treelora.presets import list_presets, load_preset


def test_the_builtin_presets_load_through_the_override_parser():
    assert {"default", "converged", "stress"} <= set(list_presets())
    config, sizes = load_preset("stress")
    assert config["lr"] == 5e-3 and config["epochs"] == 2 and sizes["train_per_class"] == 64
    assert load_preset("converged")[0]["epochs"] == 4


def test_a_preset_file_is_checked(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = 'fast'\n")
    with pytest.raises(ValueError, match="lr='fast'"):
        load_preset(bad)
    bad.write_text("nope = 1\n")
    with pytest.raises(ValueError, match="unknown key 'nope'"):
        load_preset(bad)
    bad.write_text("[stream]\ntrain_per_klass = 3\n")
    with pytest.raises(ValueError, match="unknown \\[stream\\] key"):
        load_preset(bad)
    with pytest.raises(FileNotFoundError, match="no preset 'missing'"):
        load_preset("missing")


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


def test_set_and_explicit_options_win_over_the_preset(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text("lr = 2e-3\nepochs = 3\nlam = 0.1\n[stream]\ntrain_per_class = 10\ntest_per_class = 7\n")
    config, sizes = train_settings(_args("--preset", str(f), "--set", "lam=0.3", "--train-per-class", "12"))
    assert config == {"lr": 2e-3, "epochs": 3, "lam": 0.3}
    assert sizes["train_per_class"] == 12 and sizes["test_per_class"] == 7
    config, sizes = train_settings(_args())
    assert config == {} and sizes["train_per_class"] == 64 and sizes["test_per_class"] == 16
    with pytest.raises(SystemExit, match="--preset"):
        train_settings(_args("--preset", "missing"))
