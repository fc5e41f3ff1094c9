"""User task streams from a JSONL file (``load_stream("jsonl:/path/to/file.jsonl")``), validated line by line.

JSONL format (:func:`load_jsonl_stream`)
----------------------------------------
UTF-8, one JSON object per line (blank lines are skipped). Every object has

- ``task`` (non-empty string): the task it belongs to; tasks are ordered by first appearance in the file;
- ``split``: ``"train"`` or ``"test"``;

and then *either* the classification fields

- ``text`` (string) and ``label`` (non-empty string: a class name; the class list is global, in order of first
  appearance, and tasks may share classes),

*or* the instruction fields (TRACE style)

- ``prompt`` (string) and ``answer`` (non-empty string).

One file uses one format. In the instruction format each distinct answer is also a class (so that short-answer
sets, e.g. multiple choice, can still be scored as classification) and :meth:`TaskStream.instruction_pairs`
returns the prompts and answers unchanged. Every task needs at least one train and one test example. Optional
caps (``train_per_class``/``test_per_class``) apply per (task, class), e.g. ``{"task": "sentiment", "split":
"train", "text": "a fine film", "label": "positive"}``.

Every malformed line is a ValueError ``<file>:<line>: <what is wrong>`` (1-based line numbers, counted like
Python's text mode: ``\\n``, ``\\r\\n`` or ``\\r`` ends a line), including bytes that are not UTF-8, which also name
their byte offset in the file.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from .base import Example, Task, TaskStream, class_rng, reorder_tasks

__all__ = ["load_jsonl_stream"]

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def _jsonl_error(path: Path, lineno: int, msg: str) -> ValueError:
    return ValueError(f"{path}:{lineno}: {msg}")


def _read_utf8(path: Path) -> str:
    """The file's text; a byte that is not UTF-8 is a ValueError naming its line and byte offset (0-based)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = len(_LINE_BREAK.findall(raw, 0, exc.start)) + 1
        bad = raw[exc.start : exc.end].hex(" ")
        raise _jsonl_error(
            path, lineno, f"not UTF-8: byte(s) {bad} at byte offset {exc.start} ({exc.reason}); save the file as UTF-8"
        ) from None


def _parse_jsonl(path: Path) -> tuple[str, list[tuple[int, str, str, str, str]]]:
    """Validate the file and return its format and rows (lineno, task, split, input, label/answer)."""
    fmt: str | None = None
    fmt_line = 0
    rows: list[tuple[int, str, str, str, str]] = []
    with io.StringIO(_read_utf8(path), newline=None) as fh:  # newline=None: line ends as in text-mode open()
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _jsonl_error(path, lineno, f"invalid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise _jsonl_error(path, lineno, "expected a JSON object")
            for key in ("task", "split"):
                if key not in obj:
                    raise _jsonl_error(path, lineno, f"missing field {key!r}")
            task, split = obj["task"], obj["split"]
            if not isinstance(task, str) or not task.strip():
                raise _jsonl_error(path, lineno, f"'task' must be a non-empty string, got {task!r}")
            if split not in ("train", "test"):
                raise _jsonl_error(path, lineno, f"'split' must be 'train' or 'test', got {split!r}")
            has_cls = "text" in obj or "label" in obj
            has_ins = "prompt" in obj or "answer" in obj
            if has_cls and has_ins:
                raise _jsonl_error(
                    path, lineno, "mixes classification (text/label) and instruction (prompt/answer) fields"
                )
            if not has_cls and not has_ins:
                raise _jsonl_error(path, lineno, "missing fields: need 'text'+'label' or 'prompt'+'answer'")
            line_fmt = "classification" if has_cls else "instruction"
            in_key, out_key = ("text", "label") if has_cls else ("prompt", "answer")
            for key in (in_key, out_key):
                if key not in obj:
                    raise _jsonl_error(path, lineno, f"missing field {key!r} ({line_fmt} format)")
            inp, out = obj[in_key], obj[out_key]
            if not isinstance(inp, str):
                raise _jsonl_error(path, lineno, f"{in_key!r} must be a string, got {type(inp).__name__}")
            if not isinstance(out, str) or not out.strip():
                raise _jsonl_error(path, lineno, f"{out_key!r} must be a non-empty string, got {out!r}")
            if fmt is None:
                fmt, fmt_line = line_fmt, lineno
            elif fmt != line_fmt:
                raise _jsonl_error(
                    path,
                    lineno,
                    f"mixed formats: this line is {line_fmt} but line {fmt_line} is {fmt}; use one format per file",
                )
            rows.append((lineno, task, split, inp, out))
    if fmt is None:
        raise ValueError(f"{path}: no examples (the file is empty)")
    return fmt, rows


def _cap_per_class(
    examples: list[Example], cap: int | None, seed: int, key: str, class_names: list[str]
) -> list[Example]:
    """Keep at most ``cap`` examples per class (seeded draw), preserving file order."""
    if cap is None:
        return examples
    by_class: dict[int, list[int]] = {}
    for i, ex in enumerate(examples):
        by_class.setdefault(ex.label, []).append(i)
    keep: set[int] = set()
    for c, idx in by_class.items():
        if len(idx) > cap:
            idx = [idx[j] for j in class_rng(seed, f"{key}:{class_names[c]}").permutation(len(idx))[:cap]]
        keep.update(idx)
    return [ex for i, ex in enumerate(examples) if i in keep]


def load_jsonl_stream(
    path: str | Path,
    *,
    seed: int = 0,
    order: list[int] | None = None,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    num_tasks: int | None = None,
) -> TaskStream:
    """Load a user task stream from a JSONL file (format in the module docstring).

    Splits come from the file. ``train_per_class``/``test_per_class`` (None = keep all) cap each (task, class)
    with a seeded draw; ``order`` permutes tasks and ``num_tasks`` truncates, as in :func:`load_stream`.
    Raises FileNotFoundError for a missing file and ValueError naming the line for malformed content.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"JSONL stream file not found: {p}")
    fmt, rows = _parse_jsonl(p)

    for split, cap in (("train", train_per_class), ("test", test_per_class)):
        if cap is not None and (not isinstance(cap, int) or cap < 1):
            raise ValueError(f"{split}_per_class must be a positive int or None, got {cap!r}")
    caps = {"train": train_per_class, "test": test_per_class}

    class_ids: dict[str, int] = {}
    first_line: dict[str, int] = {}
    buckets: dict[str, dict[str, list[Example]]] = {}
    for lineno, task, split, inp, out in rows:
        c = class_ids.setdefault(out, len(class_ids))
        first_line.setdefault(task, lineno)
        ex = Example(inp, c) if fmt == "classification" else Example(inp, c, answer=out)
        buckets.setdefault(task, {"train": [], "test": []})[split].append(ex)

    class_names = list(class_ids)
    tasks: list[Task] = []
    for task, splits in buckets.items():
        for split in ("train", "test"):
            if not splits[split]:
                raise ValueError(f"{p}: task {task!r} (first seen on line {first_line[task]}) has no {split} examples")
            splits[split] = _cap_per_class(splits[split], caps[split], seed, f"jsonl:{task}:{split}", class_names)
        classes = sorted({ex.label for ex in splits["train"] + splits["test"]})
        tasks.append(Task(name=task, classes=classes, train=splits["train"], test=splits["test"]))

    return TaskStream(
        name=f"jsonl:{p.stem}",
        modality="text",
        class_names=class_names,
        tasks=reorder_tasks(tasks, order, num_tasks, str(p)),
    )
