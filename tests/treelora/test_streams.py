"""Tests of treelora.streams: built-in streams, splits, ordering, the JSONL format and its validation."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from treelora.streams import (
    SYNTHETIC_FAMILIES,
    WORDNET_LEXNAMES,
    WORDNET_TASKS,
    Example,
    TaskStream,
    list_streams,
    load_jsonl_stream,
    load_stream,
)


def _texts(examples: list[Example]) -> list[str]:
    return [ex.text for ex in examples]


@pytest.fixture(scope="module")
def wordnet() -> TaskStream:
    return load_stream("wordnet", seed=0)


# --------------------------------------------------------------------------------------------- wordnet


def test_wordnet_has_41_classes_in_8_disjoint_tasks(wordnet: TaskStream) -> None:
    assert wordnet.num_classes() == 41 == len(WORDNET_LEXNAMES)
    assert sum(n.startswith("noun.") for n in wordnet.class_names) == 26
    assert sum(n.startswith("verb.") for n in wordnet.class_names) == 15
    assert len(wordnet.tasks) == 8 == len(WORDNET_TASKS)
    seen = [c for t in wordnet.tasks for c in t.classes]
    assert sorted(seen) == list(range(41))  # disjoint and covering
    for task in wordnet.tasks:
        assert task.classes == sorted(task.classes)
        assert 5 <= len(task.classes) <= 6
        assert {ex.label for ex in task.train} == set(task.classes)
        assert {ex.label for ex in task.test} == set(task.classes)


def test_wordnet_is_the_default_stream(wordnet: TaskStream) -> None:
    assert load_stream().name == "wordnet"
    assert load_stream().class_names == wordnet.class_names


def test_wordnet_examples_are_clean_and_within_caps(wordnet: TaskStream) -> None:
    for task in wordnet.tasks:
        train, test = _texts(task.train), _texts(task.test)
        assert not set(train) & set(test)
        assert len(set(train)) == len(train)
        for text in train + test:
            assert text and text.strip() == text
            assert '"' not in text  # usage examples are stripped
        for c in task.classes:
            assert 1 <= sum(ex.label == c for ex in task.train) <= 64
            assert 1 <= sum(ex.label == c for ex in task.test) <= 16
    big = wordnet.class_names.index("noun.artifact")
    task = next(t for t in wordnet.tasks if big in t.classes)
    assert sum(ex.label == big for ex in task.train) == 64
    assert sum(ex.label == big for ex in task.test) == 16


def test_wordnet_small_caps_and_short_classes() -> None:
    s = load_stream("wordnet", train_per_class=200, test_per_class=50)
    motive = s.class_names.index("noun.motive")  # about 40 unique definitions: split in proportion
    task = next(t for t in s.tasks if motive in t.classes)
    n_train = sum(ex.label == motive for ex in task.train)
    n_test = sum(ex.label == motive for ex in task.test)
    assert 0 < n_test < n_train < 200


def test_splits_are_deterministic_and_independent_of_order(wordnet: TaskStream) -> None:
    again = load_stream("wordnet", seed=0)
    order = [7, 3, 0, 5, 1, 6, 2, 4]
    permuted = load_stream("wordnet", seed=0, order=order)
    other_seed = load_stream("wordnet", seed=1)
    assert [t.name for t in permuted.tasks] == [wordnet.tasks[i].name for i in order]
    for i, task in enumerate(wordnet.tasks):
        assert again.tasks[i] == task
        assert permuted.tasks[order.index(i)] == task
    assert any(other_seed.tasks[i].train != t.train for i, t in enumerate(wordnet.tasks))


def test_test_split_does_not_move_with_train_cap(wordnet: TaskStream) -> None:
    smaller = load_stream("wordnet", train_per_class=8)
    assert _texts(smaller.tasks[0].test) == _texts(wordnet.tasks[0].test)
    assert set(_texts(smaller.tasks[0].train)) <= set(_texts(wordnet.tasks[0].train))


def test_num_tasks_truncates_after_order() -> None:
    s = load_stream("wordnet", order=[2, 0, 1, 3, 4, 5, 6, 7], num_tasks=2)
    assert [t.name for t in s.tasks] == [WORDNET_TASKS[2][0], WORDNET_TASKS[0][0]]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"order": [0, 1, 2]},
        {"order": [0, 0, 1, 2, 3, 4, 5, 6]},
        {"num_tasks": 0},
        {"num_tasks": 9},
        {"train_per_class": 0},
        {"test_per_class": -1},
    ],
)
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        load_stream("wordnet", **kwargs)


def test_wordnet_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TREELORA_WORDNET_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="TREELORA_WORDNET_DIR"):
        load_stream("wordnet")


def test_instruction_pairs_for_classification(wordnet: TaskStream) -> None:
    pairs = wordnet.instruction_pairs(0, "test")
    assert len(pairs) == len(wordnet.tasks[0].test)
    prompt, answer = pairs[0]
    options = [wordnet.readable(c) for c in wordnet.tasks[0].classes]
    assert prompt.endswith("Answer:")
    assert wordnet.tasks[0].test[0].text in prompt
    assert all(o in prompt for o in options)
    assert answer in options
    assert answer == wordnet.readable(wordnet.tasks[0].test[0].label)
    assert len(set(wordnet.readable_names or [])) == 41  # noun.body and verb.body stay distinct
    with pytest.raises(ValueError, match="split"):
        wordnet.instruction_pairs(0, "dev")
    with pytest.raises(ValueError, match="out of range"):
        wordnet.instruction_pairs(8, "train")


def test_unknown_stream_lists_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        load_stream("imagenet")
    for name in list_streams():
        assert name in str(info.value)
    assert "jsonl:" in str(info.value)
    assert {"wordnet", "synthetic-text", "digits", "fashion-mnist"} <= set(list_streams())


# --------------------------------------------------------------------------------------------- synthetic


def test_synthetic_text_is_small_distinct_and_deterministic() -> None:
    s = load_stream("synthetic-text", train_per_class=16, test_per_class=4)
    assert s.modality == "text" and len(s.tasks) == 3 and s.num_classes() == 6
    vocab = {c: set(words) for c, (_, words) in enumerate(SYNTHETIC_FAMILIES)}
    for task in s.tasks:
        assert len(task.classes) == 2
        assert not set(_texts(task.train)) & set(_texts(task.test))
        for ex in task.train + task.test:
            tokens = set(ex.text.split())
            assert tokens & vocab[ex.label]
            assert not any(tokens & vocab[c] for c in vocab if c != ex.label)
        assert sum(ex.label == task.classes[0] for ex in task.train) == 16
    assert load_stream("synthetic-text", train_per_class=16, test_per_class=4).tasks == s.tasks


# --------------------------------------------------------------------------------------------- vision


def test_digits_stream_shapes() -> None:
    s = load_stream("digits", train_per_class=10, test_per_class=5)
    assert s.modality == "vision" and len(s.tasks) == 5 and s.num_classes() == 10
    for task in s.tasks:
        assert len(task.classes) == 2
        assert len(task.train) == 20 and len(task.test) == 10
    px = s.tasks[0].train[0].pixels
    assert px is not None and px.shape == (1, 8, 8) and px.dtype == np.float32
    assert 0.0 <= px.min() and px.max() <= 1.0
    assert s.tasks[0].train[0].text is None
    with pytest.raises(ValueError, match="vision"):
        s.instruction_pairs(0, "train")


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    monkeypatch.setenv("TREELORA_FASHION_MNIST_DIR", str(tmp_path))
    s = load_stream("fashion-mnist", train_per_class=4, test_per_class=2)
    assert len(s.tasks) == 5 and s.num_classes() == 10
    assert s.tasks[0].train[0].pixels.shape == (1, 28, 28)
    assert all(len(t.train) == 8 and len(t.test) == 4 for t in s.tasks)


def test_fashion_mnist_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TREELORA_FASHION_MNIST_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_stream("fashion-mnist")


# --------------------------------------------------------------------------------------------- jsonl


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


CLASSIFICATION_ROWS = [
    {"task": "sentiment", "split": "train", "text": "a fine film", "label": "positive"},
    {"task": "sentiment", "split": "train", "text": "dull and long", "label": "negative"},
    {"task": "sentiment", "split": "test", "text": "loved it", "label": "positive"},
    {"task": "topic", "split": "train", "text": "the match ended 2-1", "label": "sport"},
    {"task": "topic", "split": "train", "text": "parliament voted", "label": "politics"},
    {"task": "topic", "split": "test", "text": "a late goal", "label": "sport"},
    {"task": "topic", "split": "test", "text": "a fine result", "label": "positive"},
]


def test_jsonl_classification_round_trip(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "mine.jsonl", CLASSIFICATION_ROWS)
    s = load_jsonl_stream(path)
    assert s.modality == "text"
    assert s.class_names == ["positive", "negative", "sport", "politics"]
    assert [t.name for t in s.tasks] == ["sentiment", "topic"]
    assert s.tasks[0].classes == [0, 1]
    assert s.tasks[1].classes == [0, 2, 3]  # tasks may share classes
    assert _texts(s.tasks[0].train) == ["a fine film", "dull and long"]
    assert [ex.label for ex in s.tasks[1].test] == [2, 0]  # file order is kept
    prompt, answer = s.instruction_pairs(0, "test")[0]
    assert "loved it" in prompt and answer == "positive"
    via_name = load_stream(f"jsonl:{path}", order=[1, 0])
    assert [t.name for t in via_name.tasks] == ["topic", "sentiment"]


def test_jsonl_instruction_round_trip_and_caps(tmp_path: Path) -> None:
    rows = [{"task": "qa", "split": "train", "prompt": f"Q{i}?", "answer": "A" if i % 2 else "B"} for i in range(10)]
    rows.append({"task": "qa", "split": "test", "prompt": "Q?", "answer": "a long free answer"})
    path = _write_jsonl(tmp_path / "trace.jsonl", rows)
    s = load_jsonl_stream(path)
    assert s.instruction_pairs(0, "train")[:2] == [("Q0?", "B"), ("Q1?", "A")]
    assert s.instruction_pairs(0, "test") == [("Q?", "a long free answer")]
    capped = load_jsonl_stream(path, train_per_class=2, seed=3)
    assert len(capped.tasks[0].train) == 4  # two per (task, answer)
    assert capped.tasks == load_jsonl_stream(path, train_per_class=2, seed=3).tasks
    assert len(load_stream(f"jsonl:{path}").tasks[0].train) == 10


_OK = {"task": "t", "split": "train", "text": "x", "label": "a"}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "JSON object"),
        ({"split": "train", "text": "x", "label": "a"}, "missing field 'task'"),
        ({"task": "t", "text": "x", "label": "a"}, "missing field 'split'"),
        ({"task": "t", "split": "dev", "text": "x", "label": "a"}, "'split' must be"),
        ({"task": "", "split": "train", "text": "x", "label": "a"}, "'task' must be a non-empty string"),
        ({"task": "t", "split": "train", "text": "x"}, "missing field 'label'"),
        ({"task": "t", "split": "train", "label": "a"}, "missing field 'text'"),
        ({"task": "t", "split": "train", "text": "x", "label": 3}, "'label' must be a non-empty string"),
        ({"task": "t", "split": "train"}, "need 'text'\\+'label' or 'prompt'\\+'answer'"),
        ({"task": "t", "split": "train", "text": "x", "label": "a", "answer": "b"}, "mixes classification"),
        ({"task": "t", "split": "train", "prompt": "x", "answer": "b"}, "mixed formats.*line 1"),
    ],
)
def test_jsonl_validation_names_the_line(tmp_path: Path, bad: object, message: str) -> None:
    path = _write_jsonl(tmp_path / "bad.jsonl", [_OK, "", bad, _OK])
    with pytest.raises(ValueError, match=message) as info:
        load_jsonl_stream(path)
    assert "bad.jsonl:3:" in str(info.value)


def test_jsonl_task_without_test_and_empty_file(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "a.jsonl", [_OK, {**_OK, "task": "u"}, {**_OK, "task": "u", "split": "test"}])
    with pytest.raises(ValueError, match="task 't' \\(first seen on line 1\\) has no test examples"):
        load_jsonl_stream(path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty"):
        load_jsonl_stream(empty)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_stream(f"jsonl:{tmp_path / 'nope.jsonl'}")


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_jsonl_non_utf8_byte_names_file_line_and_offset(tmp_path: Path, newline: str) -> None:
    ok, latin1 = json.dumps(_OK).encode(), json.dumps({**_OK, "text": "cafe"}).encode().replace(b"cafe", b"caf\xff")
    raw = newline.encode().join([ok, b"", latin1, ok])  # the \xff byte (Latin-1 for "e acute") is on line 3
    path = tmp_path / "latin.jsonl"
    path.write_bytes(raw)
    with pytest.raises(ValueError) as info:
        load_jsonl_stream(path)
    assert not isinstance(info.value, UnicodeDecodeError)  # a subclass of ValueError, but names no file or line
    msg, offset = str(info.value), raw.index(b"\xff")
    assert msg.startswith(f"{path}:3: not UTF-8: byte(s) ff at byte offset {offset} "), msg


def test_wordnet_dir_override_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from treelora.streams import find_wordnet_dir

    real = find_wordnet_dir()
    monkeypatch.setenv("TREELORA_WORDNET_DIR", str(real))
    assert find_wordnet_dir() == real
