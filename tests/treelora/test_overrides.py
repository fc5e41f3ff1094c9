"""Tests of treelora.overrides (the one KEY=VALUE parser) and of the scripts that use it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pytest
import tomllib

from treelora.config import LearnerConfig
from treelora.overrides import coerce, parse_pairs, parse_value


@dataclass
class Knobs:
    flag: bool = False
    count: int = 1
    rate: float = 0.5
    name: str = "x"
    pair: tuple[float, float] = (0.9, 0.95)
    names: tuple[str, ...] | None = None
    device: str | None = None
    legacy: Optional[int] = None  # noqa: UP045 - typing.Optional must work as well as X | None
    two_words: str = ""


# --------------------------------------------------------------------------------------------- parse_pairs


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mean", "mean"),
        ("1e-3", 0.001),
        ("3", 3),
        ("-2.5", -2.5),
        ("true", True),
        ("false", False),
        ("[0.9, 0.95]", [0.9, 0.95]),
        ('["query", "value"]', ["query", "value"]),
        ('"quoted string"', "quoted string"),
        ("'literal'", "literal"),
        ("", ""),
        ("runs/x", "runs/x"),
        ("l1-grad-fd", "l1-grad-fd"),
        ("False", "False"),  # not TOML: the bare string (coerce reads it as a bool where one is expected)
        ("2025-01-01", "2025-01-01"),  # a TOML date, kept as the name typed
        ("{a = 1}", "{a = 1}"),  # an inline table is not a value of any knob
        ('"a"\nw = 1', '"a"\nw = 1'),  # never a second key
    ],
)
def test_parse_value_toml_literal_else_bare_string(text, expected):
    value = parse_value(text)
    assert value == expected and type(value) is type(expected)


def test_parse_pairs_splits_at_the_first_equals_and_strips_the_key():
    assert parse_pairs([" lam = 0.1", "out-dir=a=b", "seed=1", "seed=2"]) == {"lam": 0.1, "out-dir": "a=b", "seed": 2}
    assert parse_pairs([]) == {}


@pytest.mark.parametrize("item, why", [("lam", "no '='"), ("=3", "empty key"), ("  =x", "empty key")])
def test_parse_pairs_errors_name_the_item(item, why):
    with pytest.raises(ValueError, match=f"expected KEY=VALUE, got {item!r} \\({why}\\)"):
        parse_pairs([item])


# --------------------------------------------------------------------------------------------- coerce


def test_coerce_every_type():
    values = {
        "flag": "Yes", "count": "4", "rate": 1, "name": 2024, "pair": [1, 2], "names": ["q", "v"], "device": "cuda",
        "legacy": 3.0, "two-words": "ok",
    }
    assert coerce(Knobs, values, kebab=True) == {
        "flag": True, "count": 4, "rate": 1.0, "name": "2024", "pair": (1.0, 2.0), "names": ("q", "v"),
        "device": "cuda", "legacy": 3, "two_words": "ok",
    }
    out = coerce(Knobs, {"flag": 0, "count": 7.0, "rate": "1e-3", "names": None, "device": "None", "legacy": "null"})
    assert out == {"flag": False, "count": 7, "rate": 0.001, "names": None, "device": None, "legacy": None}
    assert type(out["count"]) is int and type(out["rate"]) is float


@pytest.mark.parametrize("text, expected", [("true", True), ("FALSE", False), ("1", True), ("0", False),
                                            ("yes", True), ("No", False)])
def test_coerce_bool_words(text, expected):
    assert coerce(Knobs, {"flag": text}) == {"flag": expected}


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("flag", "maybe", "flag='maybe': expected bool (true/false/1/0/yes/no)"),
        ("flag", 2, "flag=2: expected bool"),
        ("count", 2.5, "count=2.5: expected int (a whole number)"),
        ("count", "2.5", "count='2.5': expected int (a whole number)"),
        ("count", "many", "count='many': expected int"),
        ("count", True, "count=True: expected int"),
        ("rate", "fast", "rate='fast': expected float"),
        ("rate", False, "rate=False: expected float"),
        ("name", True, "name=True: expected str"),
        ("name", ["a"], "name=['a']: expected str"),
        ("pair", "(0.9,0.95)", "pair='(0.9,0.95)': expected tuple[float, float] (a TOML array"),
        ("pair", [1, 2, 3], "pair=[1, 2, 3]: expected tuple[float, float] (an array of 2 items)"),
        ("pair", ["a", "b"], "pair=['a', 'b']: expected tuple[float, float]"),
        ("names", "query", "names='query': expected tuple[str, ...] | None (a TOML array"),
        ("device", [1], "device=[1]: expected str | None"),
        ("legacy", "x", "legacy='x': expected int | None"),
    ],
)
def test_coerce_errors_name_key_value_and_type(key, value, message):
    with pytest.raises(ValueError) as info:
        coerce(Knobs, {key: value})
    assert str(info.value).startswith(message), str(info.value)


def test_coerce_unknown_key_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown key 'bogus' for Knobs; known keys: flag, count, rate, name"):
        coerce(Knobs, {"bogus": 1})
    with pytest.raises(ValueError, match="known keys: .*two-words"):  # kebab: listed as they may be typed
        coerce(Knobs, {"bogus": 1}, kebab=True)
    with pytest.raises(ValueError, match="unknown key 'two-words'"):  # without kebab, dashes are not mapped
        coerce(Knobs, {"two-words": "x"})
    with pytest.raises(TypeError, match="dataclass"):
        coerce(dict, {})


def test_coerce_learner_config_round_trip():
    pairs = parse_pairs(["lam=0.1", "lora-depth=4", "selector=flat-lcb", "progress=False", "betas=[0.8, 0.9]",
                         'target_modules=["query"]', "device=none", "lr=1e-4"])
    values = coerce(LearnerConfig, pairs, kebab=True)
    assert values == {"lam": 0.1, "lora_depth": 4, "selector": "flat-lcb", "progress": False, "betas": (0.8, 0.9),
                      "target_modules": ("query",), "device": None, "lr": 1e-4}
    LearnerConfig(**values)  # the typed values build the config


# --------------------------------------------------------------------------------------------- the scripts


def test_cli_parse_overrides_exits_naming_the_problem():
    from treelora.cli import parse_overrides

    assert parse_overrides(["epochs=3", "l1-reduction=mean"]) == {"epochs": 3, "l1_reduction": "mean"}
    for bad, message in ((["epochs"], "--set: expected KEY=VALUE"), (["nokey=1"], "--set: unknown key 'nokey'"),
                         (["lora_r=2.5"], "--set: lora_r=2.5: expected int")):
        with pytest.raises(SystemExit, match=message):
            parse_overrides(bad)


def test_simulations_run_overrides_bare_word_and_run_config(tmp_path):
    from simulations.run import ROOT, run_config_overrides, write_run_config

    # used to be a TOMLDecodeError: a bare word is the string
    extra = run_config_overrides(["l1-reduction=mean", "lr=1", "share_layers=no", "num-rounds=2",
                                  'state-dir="/shared/state"', "out-dir=2024"])
    assert extra == {"l1-reduction": "mean", "lr": 1.0, "share-layers": False, "num-rounds": 2,
                     "state-dir": "/shared/state", "out-dir": "2024"}
    path = write_run_config(ROOT / "simulations" / "scale.toml", "treelora", tmp_path, extra)
    written = tomllib.loads(path.read_text())
    assert written["l1-reduction"] == "mean" and written["lr"] == 1.0 and written["share-layers"] is False
    assert written["method"] == "treelora" and written["out-dir"] == str(tmp_path / "treelora")  # the run's own
    for bad, message in ((["l1-reduction"], "expected KEY=VALUE"), (["bogus=1"], "unknown key 'bogus' for FedSettings"),
                         (["local-steps=2.5"], "local-steps=2.5: expected int")):
        with pytest.raises(ValueError, match=message):
            run_config_overrides(bad)


def test_simulations_run_bad_set_is_a_usage_error(capsys):
    from simulations.run import main

    with pytest.raises(SystemExit) as info:
        main(["--set", "local-steps=many", "--flwr-home", "/nonexistent"])
    assert info.value.code == 2
    assert "--set: local-steps='many': expected int" in capsys.readouterr().err


def test_bench_fed_accuracy_bad_set_is_a_usage_error(capsys):
    from simulations.bench_fed_accuracy import main

    with pytest.raises(SystemExit) as info:
        main(["--set", "nokey=1", "--out", "/nonexistent"])
    assert info.value.code == 2
    assert "--set: unknown key 'nokey' for FedSettings" in capsys.readouterr().err


def test_bench_scale_checks_flwr_set_before_running(capsys):
    from simulations.bench_scale import main

    with pytest.raises(SystemExit) as info:
        main(["--parts", "flwr", "--flwr-set", "l1-reduction=mean", "rounds-per-tsk=1", "--out", "/nonexistent"])
    assert info.value.code == 2
    assert "--flwr-set: unknown key 'rounds-per-tsk' for FedSettings" in capsys.readouterr().err
