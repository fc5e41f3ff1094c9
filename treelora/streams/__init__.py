"""Task streams for continual learning: a sequence of tasks, each with its own classes and fixed splits.

A :class:`TaskStream` is what the learner consumes: ``tasks[i]`` is the i-th task met, ``Task.classes`` lists the
*global* class ids that task uses (indices into ``TaskStream.class_names``). The learner derives both protocols
from that one field, so nothing else is needed here:

- *task-incremental*: at test time the task identity is known, logits are restricted to ``Task.classes``;
- *class-incremental* (the default, task-free inference): logits over every class seen so far; while training a
  task they are masked to ``Task.classes``.

Built-in streams (:func:`list_streams`), all offline (DESIGN.md §5), one module each:

``wordnet`` (default, :mod:`.wordnet`)
    WordNet 3.0 definition -> lexicographer class, 41 classes in eight tasks (:data:`WORDNET_TASKS`).
``synthetic-text`` (:mod:`.synthetic`)
    Generated keyword families in filler text, three tasks of two classes. For fast tests.
``digits``, ``fashion-mnist`` (:mod:`.vision`)
    scikit-learn's bundled 8x8 digits; Fashion-MNIST from Debian's ``dataset-fashion-mnist``. Five tasks of two.
``jsonl:/path/to/file.jsonl`` (:mod:`.jsonl`)
    A user stream; the format is described in :mod:`treelora.streams.jsonl`.

The data model and the seeded, order-independent split rule shared by all of them live in :mod:`.base`.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import Example, Task, TaskStream, check_caps, reorder_tasks
from .jsonl import load_jsonl_stream
from .synthetic import SYNTHETIC_FAMILIES, load_synthetic
from .vision import FASHION_MNIST_CLASSES, load_digits, load_fashion_mnist
from .wordnet import WORDNET_LEXNAMES, WORDNET_TASKS, find_wordnet_dir, load_wordnet

__all__ = [
    "Example",
    "Task",
    "TaskStream",
    "WORDNET_LEXNAMES",
    "WORDNET_TASKS",
    "SYNTHETIC_FAMILIES",
    "FASHION_MNIST_CLASSES",
    "list_streams",
    "load_stream",
    "load_jsonl_stream",
    "find_wordnet_dir",
]

#: Built-in streams by name: ``loader(seed, train_per_class, test_per_class)``, tasks in their natural order.
_LOADERS: dict[str, Callable[[int, int, int], TaskStream]] = {
    "wordnet": load_wordnet,
    "synthetic-text": load_synthetic,
    "digits": load_digits,
    "fashion-mnist": load_fashion_mnist,
}


def list_streams() -> list[str]:
    """Names of the built-in streams (``jsonl:/path/file.jsonl`` loads a user stream besides)."""
    return list(_LOADERS)


def load_stream(
    name: str = "wordnet",
    *,
    seed: int = 0,
    order: list[int] | None = None,
    train_per_class: int = 64,
    test_per_class: int = 16,
    num_tasks: int | None = None,
) -> TaskStream:
    """Load a task stream by name: a built-in (:func:`list_streams`) or ``"jsonl:/path/file.jsonl"``.

    ``seed`` fixes the per-class train/test draw (independent of ``order``); ``order`` permutes the tasks;
    ``num_tasks`` keeps the first tasks after ordering. For JSONL streams the caps apply per (task, class).
    """
    if name.startswith("jsonl:"):
        return load_jsonl_stream(
            name[len("jsonl:") :],
            seed=seed,
            order=order,
            train_per_class=train_per_class,
            test_per_class=test_per_class,
            num_tasks=num_tasks,
        )
    if name not in _LOADERS:
        raise ValueError(
            f"unknown stream {name!r}; known streams: {', '.join(list_streams())}, or 'jsonl:/path/to/file.jsonl'"
        )
    check_caps(train_per_class, test_per_class)
    stream = _LOADERS[name](seed, train_per_class, test_per_class)
    stream.tasks = reorder_tasks(stream.tasks, order, num_tasks, name)
    return stream
