"""The ``synthetic-text`` stream: generated, three tasks of two classes, for fast tests.

A class is a keyword family (fruit, vehicles, ...) placed in neutral filler text, so a tiny model learns it in a
few steps. Each class draws its distinct texts from its own seeded generator (:func:`~.base.class_rng`), test
first, so the split does not depend on the task order.
"""

from __future__ import annotations

from .base import Example, TaskStream, class_rng, make_tasks

__all__ = ["SYNTHETIC_FAMILIES", "load_synthetic"]


#: Keyword families of the ``synthetic-text`` stream; task i holds families 2i and 2i+1.
SYNTHETIC_FAMILIES: list[tuple[str, list[str]]] = [
    ("fruit", ["apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach"]),
    ("vehicle", ["car", "bus", "train", "truck", "bicycle", "boat", "plane", "taxi"]),
    ("color", ["red", "green", "blue", "yellow", "purple", "pink", "brown", "white"]),
    ("animal", ["dog", "cat", "horse", "cow", "sheep", "lion", "tiger", "rabbit"]),
    ("weather", ["rain", "snow", "wind", "storm", "cloud", "fog", "thunder", "frost"]),
    ("music", ["guitar", "piano", "drum", "violin", "flute", "trumpet", "song", "melody"]),
]
_SYNTHETIC_FILLER = "the a this that one some we saw there here today again near with about over".split()


def load_synthetic(seed: int, train_per_class: int, test_per_class: int) -> TaskStream:
    """The ``synthetic-text`` stream: task i holds families 2i and 2i+1."""
    per_class: dict[int, tuple[list[Example], list[Example]]] = {}
    for c, (family, words) in enumerate(SYNTHETIC_FAMILIES):
        rng = class_rng(seed, "synthetic:" + family)
        texts: dict[str, None] = {}
        want = train_per_class + test_per_class
        for _ in range(50 * want):
            if len(texts) == want:
                break
            filler = list(rng.choice(_SYNTHETIC_FILLER, size=4))
            keywords = list(rng.choice(words, size=2, replace=False))
            tokens = filler[:2] + [keywords[0]] + filler[2:] + [keywords[1]]
            texts.setdefault(" ".join(tokens), None)
        items = list(texts)
        test, train = items[:test_per_class], items[test_per_class:]
        per_class[c] = ([Example(t, c) for t in train], [Example(t, c) for t in test])
    names = [f for f, _ in SYNTHETIC_FAMILIES]
    groups = [(f"{names[2 * i]}-vs-{names[2 * i + 1]}", [2 * i, 2 * i + 1]) for i in range(len(names) // 2)]
    return TaskStream(
        name="synthetic-text",
        modality="text",
        class_names=names,
        tasks=make_tasks(groups, per_class),
        instruction="Which kind of word does the text mention?",
    )
