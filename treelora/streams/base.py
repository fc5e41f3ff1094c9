"""The stream data model (:class:`Example`, :class:`Task`, :class:`TaskStream`) and the seeded split helpers.

Every stream module builds its tasks with these helpers, so that all streams share one splitting rule: splits
are fixed per class and drawn with a generator seeded by ``(seed, class key)`` (:func:`class_rng`). They depend
neither on ``order`` nor on the task grouping, and the test set is drawn first so that changing
``train_per_class`` does not change it (when the class has enough examples). A class with fewer than
``train_per_class + test_per_class`` examples is split in the same proportion (:func:`split_counts`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Example",
    "Task",
    "TaskStream",
    "class_rng",
    "split_counts",
    "split_items",
    "check_caps",
    "reorder_tasks",
    "make_tasks",
]


# --------------------------------------------------------------------------------------------- data classes


@dataclass(frozen=True)
class Example:
    """One labelled example.

    ``label`` is a *global* class id (index into ``TaskStream.class_names``). Text streams fill ``text``; vision
    streams fill ``pixels`` with a ``(C, H, W)`` float32 array. ``answer`` is set only by instruction-format
    JSONL streams, where it holds the reference answer verbatim.
    """

    text: str | None
    label: int
    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)
    answer: str | None = None


@dataclass
class Task:
    """One task of a stream: its global class ids (sorted), its fixed train/test examples and, for built-in
    streams whose tasks are grouped (WordNet: living, physical, abstract, verbs), its family — the ground truth a
    similarity tree is measured against. A task without a family is its own."""

    name: str
    classes: list[int]
    train: list[Example]
    test: list[Example]
    family: str = ""

    @property
    def family_name(self) -> str:
        """The family, or the task's own name when it has none."""
        return self.family or self.name


@dataclass
class TaskStream:
    """An ordered sequence of tasks sharing one global class list.

    ``readable_names`` (optional) gives each class a natural-language form used as the answer of causal-LM
    instruction pairs; ``instruction`` is the question put before each input.
    """

    name: str
    modality: str
    class_names: list[str]
    tasks: list[Task]
    readable_names: list[str] | None = None
    instruction: str = "Classify the text."

    def num_classes(self) -> int:
        """Number of global classes (the size of a class-incremental head)."""
        return len(self.class_names)

    def readable(self, class_id: int) -> str:
        """The readable answer string of a global class id."""
        names = self.readable_names or self.class_names
        return names[class_id]

    def instruction_pairs(self, task_index: int, split: str) -> list[tuple[str, str]]:
        """(prompt, answer) pairs of one task's split, for causal LMs.

        For classification streams the prompt states the instruction, the allowed answers of that task and the
        input, and ends with ``"Answer:"``; the answer is the class's readable name (feed
        ``prompt + " " + answer``). Instruction-format JSONL examples are returned unchanged.
        """
        if self.modality != "text":
            raise ValueError(f"stream {self.name!r} is {self.modality}: it has no text to build prompts from")
        if not 0 <= task_index < len(self.tasks):
            raise ValueError(f"task_index {task_index} out of range: stream {self.name!r} has {len(self.tasks)} tasks")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        task = self.tasks[task_index]
        options = ", ".join(self.readable(c) for c in task.classes)
        pairs: list[tuple[str, str]] = []
        for ex in getattr(task, split):
            if ex.answer is not None:
                pairs.append((ex.text or "", ex.answer))
            else:
                prompt = f"{self.instruction}\nOptions: {options}.\nText: {ex.text}\nAnswer:"
                pairs.append((prompt, self.readable(ex.label)))
        return pairs


# --------------------------------------------------------------------------------------------- split helpers


def class_rng(seed: int, key: str) -> np.random.Generator:
    """A generator fixed by (seed, key) only, so a class's split ignores order and grouping."""
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def split_counts(n: int, train_per_class: int, test_per_class: int) -> tuple[int, int]:
    """How many of n examples go to (train, test), keeping the requested proportion when n is short."""
    if n >= train_per_class + test_per_class:
        return train_per_class, test_per_class
    if test_per_class == 0:
        return n, 0
    n_test = max(1, round(n * test_per_class / (train_per_class + test_per_class))) if n > 1 else 0
    return n - n_test, n_test


def split_items(items: Sequence, seed: int, key: str, train_per_class: int, test_per_class: int) -> tuple[list, list]:
    """Deterministically shuffle ``items`` and cut test first, then train."""
    perm = class_rng(seed, key).permutation(len(items))
    n_train, n_test = split_counts(len(items), train_per_class, test_per_class)
    test = [items[i] for i in perm[:n_test]]
    train = [items[i] for i in perm[n_test : n_test + n_train]]
    return train, test


def check_caps(train_per_class: int, test_per_class: int) -> None:
    """Reject per-class caps that are not positive ints (built-in streams need both)."""
    if not isinstance(train_per_class, int) or train_per_class < 1:
        raise ValueError(f"train_per_class must be a positive int, got {train_per_class!r}")
    if not isinstance(test_per_class, int) or test_per_class < 1:
        raise ValueError(f"test_per_class must be a positive int, got {test_per_class!r}")


def reorder_tasks(tasks: list[Task], order: list[int] | None, num_tasks: int | None, stream: str) -> list[Task]:
    """Apply ``order`` (a permutation of task indices) and then truncate to ``num_tasks``."""
    if order is not None:
        order = [int(i) for i in order]
        if sorted(order) != list(range(len(tasks))):
            raise ValueError(
                f"order must be a permutation of 0..{len(tasks) - 1} for stream {stream!r} "
                f"({len(tasks)} tasks), got {order}"
            )
        tasks = [tasks[i] for i in order]
    if num_tasks is not None:
        if not isinstance(num_tasks, int) or not 1 <= num_tasks <= len(tasks):
            raise ValueError(f"num_tasks must be an int in 1..{len(tasks)} for stream {stream!r}, got {num_tasks!r}")
        tasks = tasks[:num_tasks]
    return tasks


def make_tasks(
    groups: Sequence[tuple[str, Sequence[int]]],
    per_class: dict[int, tuple[list[Example], list[Example]]],
    family: Callable[[str], str] | None = None,
) -> list[Task]:
    """Tasks from ``(name, class ids)`` groups and each class's (train, test) examples, classes in id order;
    ``family(name)`` names each task's family (none by default)."""
    tasks = []
    for name, classes in groups:
        cs = sorted(classes)
        train = [ex for c in cs for ex in per_class[c][0]]
        test = [ex for c in cs for ex in per_class[c][1]]
        tasks.append(Task(name=name, classes=cs, train=train, test=test, family=family(name) if family else ""))
    return tasks
