"""What a task stream holds, as a person checks it before training: tasks in order, their classes, and how many
train/test examples each task and each class has (``treelora check-stream FILE``).

The stream is loaded by the same loader training uses (:func:`treelora.streams.load_jsonl_stream` for a JSONL
file), so a file that passes here loads for ``treelora train --stream jsonl:FILE`` too; a bad file fails here with
the loader's own message (file, line, what is wrong). Notes point at what loads but may not be meant: a class with
no test example in a task (it is never scored there), a class shared by several tasks.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .streams.base import TaskStream

__all__ = ["describe_stream", "render_stream_summary"]


def describe_stream(stream: TaskStream) -> dict[str, Any]:
    """JSON-able summary: name, format, class names, and per task its classes and train/test counts per class."""
    instruction = any(ex.answer is not None for t in stream.tasks for ex in t.train + t.test)
    tasks, notes = [], []
    owners: dict[str, list[str]] = {}
    for task in stream.tasks:
        train = Counter(ex.label for ex in task.train)
        test = Counter(ex.label for ex in task.test)
        per_class = {stream.class_names[c]: {"train": train.get(c, 0), "test": test.get(c, 0)} for c in task.classes}
        for name, n in per_class.items():
            owners.setdefault(name, []).append(task.name)
            if n["test"] == 0:
                notes.append(f"task {task.name!r}: class {name!r} has no test example (it is never scored there)")
            if n["train"] == 0:
                notes.append(f"task {task.name!r}: class {name!r} has no train example (it is never learned there)")
        tasks.append({"name": task.name, "family": task.family, "classes": list(per_class), "train": len(task.train),
                      "test": len(task.test), "per_class": per_class})
    for name, where in owners.items():
        if len(where) > 1:
            notes.append(f"class {name!r} appears in {len(where)} tasks ({', '.join(where)}): one head output for all")
    return {
        "name": stream.name,
        "modality": stream.modality,
        "format": "instruction" if instruction else "classification",
        "num_tasks": len(stream.tasks),
        "num_classes": len(stream.class_names),
        "class_names": list(stream.class_names),
        "train": sum(t["train"] for t in tasks),
        "test": sum(t["test"] for t in tasks),
        "tasks": tasks,
        "notes": notes,
    }


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*headers), fmt.format(*("-" * w for w in widths))] + [fmt.format(*map(str, r)) for r in rows]


def render_stream_summary(desc: dict[str, Any]) -> str:
    """The summary as text: a header line, one table of tasks, one table of classes per task, the notes."""
    lines = [f"{desc['name']}: {desc['format']} stream, {desc['num_tasks']} tasks, {desc['num_classes']} classes, "
             f"{desc['train']} train / {desc['test']} test examples", ""]
    lines += _table(["task", "classes", "train", "test"],
                    [[t["name"], len(t["classes"]), t["train"], t["test"]] for t in desc["tasks"]])
    for k, t in enumerate(desc["tasks"]):
        lines += ["", f"task {k}: {t['name']}" + (f" (family {t['family']})" if t["family"] else "")]
        lines += ["  " + x for x in _table(["class", "train", "test"],
                                           [[c, n["train"], n["test"]] for c, n in t["per_class"].items()])]
    if desc["notes"]:
        lines += ["", "notes:"] + [f"  - {n}" for n in desc["notes"]]
    return "\n".join(lines)
