"""``treelora check-stream``: a good JSONL stream is summarised (tasks, classes, train/test counts per task and per
class); a bad one exits 2 with the loader's message; README's example is a valid stream."""

from __future__ import annotations

import json
import re
from pathlib import Path

from treelora.cli import main
from treelora.stream_check import describe_stream
from treelora.streams import load_jsonl_stream

ROOT = Path(__file__).resolve().parents[2]

ROWS = [
    {"task": "sentiment", "split": "train", "text": "a fine film", "label": "positive"},
    {"task": "sentiment", "split": "train", "text": "dull and long", "label": "negative"},
    {"task": "sentiment", "split": "train", "text": "loved it", "label": "positive"},
    {"task": "sentiment", "split": "test", "text": "great acting", "label": "positive"},
    {"task": "sentiment", "split": "test", "text": "a bore", "label": "negative"},
    {"task": "topic", "split": "train", "text": "the match ended 2-1", "label": "sports"},
    {"task": "topic", "split": "train", "text": "shares fell", "label": "finance"},
    {"task": "topic", "split": "test", "text": "a late goal", "label": "sports"},
]


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_summary_counts_per_task_and_class(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path / "mine.jsonl", ROWS)
    desc = describe_stream(load_jsonl_stream(path))
    assert desc["format"] == "classification" and desc["num_tasks"] == 2 and desc["num_classes"] == 4
    sent, topic = desc["tasks"]
    assert (sent["name"], sent["train"], sent["test"]) == ("sentiment", 3, 2)
    assert sent["per_class"] == {"positive": {"train": 2, "test": 1}, "negative": {"train": 1, "test": 1}}
    assert topic["per_class"] == {"sports": {"train": 1, "test": 1}, "finance": {"train": 1, "test": 0}}
    assert any("'finance' has no test example" in n for n in desc["notes"])

    assert main(["check-stream", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 tasks, 4 classes, 5 train / 3 test examples" in out
    assert re.search(r"sentiment\s+2\s+3\s+2", out) and re.search(r"finance\s+1\s+0", out)
    assert main(["check-stream", f"jsonl:{path}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tasks"][1]["name"] == "topic"


def test_bad_stream_exits_2_with_the_loaders_message(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path / "bad.jsonl", [ROWS[0], '{"task": "x", "split": "dev", "text": "t", "label": "a"}'])
    assert main(["check-stream", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: 'split' must be 'train' or 'test'" in err
    assert main(["check-stream", str(tmp_path / "missing.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err


def test_list_points_to_the_format(capsys) -> None:
    assert main(["list"]) == 0
    assert "check-stream" in capsys.readouterr().out


def test_readme_example_is_a_valid_stream(tmp_path: Path, capsys) -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```jsonl\n(.*?)```", readme, re.S)
    assert block, "README.md has no ```jsonl example"
    path = tmp_path / "example.jsonl"
    path.write_text(block.group(1))
    assert main(["check-stream", str(path)]) == 0
    assert "classification stream" in capsys.readouterr().out
