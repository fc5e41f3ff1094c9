"""Regime presets as TOML files: ``treelora train --preset NAME|FILE`` (issue 13).

A preset names a regime, not a method: the :class:`~treelora.config.LearnerConfig` fields at the top level of the
file (checked and typed by the project's one override parser, :func:`treelora.overrides.coerce`) and, in a
``[stream]`` table, the stream's sizes (``train_per_class``, ``test_per_class``, ``num_tasks``, ``data_seed``).
Built-in presets live in ``simulations/presets/centralized/`` (``default``, ``converged``, ``stress``, ...);
any other path is read as a file. Precedence, lowest first: the method's preset, the regime preset, then
``--epochs`` / ``--set`` and explicit stream options on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .overrides import coerce, tomllib

PRESET_DIR = Path(__file__).resolve().parent.parent / "simulations" / "presets" / "centralized"
STREAM_KEYS = ("train_per_class", "test_per_class", "num_tasks", "data_seed")

__all__ = ["PRESET_DIR", "STREAM_KEYS", "preset_path", "load_preset", "list_presets"]


def list_presets() -> list[str]:
    """Names of the built-in presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml")) if PRESET_DIR.is_dir() else []


def preset_path(name: str | Path) -> Path:
    """A built-in preset's file by name, else ``name`` as a path; FileNotFoundError naming both otherwise."""
    p = Path(name)
    if p.is_file():
        return p
    builtin = PRESET_DIR / f"{name}.toml"
    if builtin.is_file():
        return builtin
    raise FileNotFoundError(f"no preset {str(name)!r}: not a file, and not one of {', '.join(list_presets())}")


def load_preset(name: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """``(config overrides, stream sizes)`` of a preset; ValueError naming the file and the bad key or value."""
    from .config import LearnerConfig

    path = preset_path(name)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"preset {path}: {exc}") from None
    stream = doc.pop("stream", {})
    doc.pop("description", None)
    if not isinstance(stream, dict):
        raise ValueError(f"preset {path}: [stream] must be a table")
    bad = sorted(set(stream) - set(STREAM_KEYS))
    if bad:
        raise ValueError(f"preset {path}: unknown [stream] key(s) {', '.join(bad)}; known: {', '.join(STREAM_KEYS)}")
    for key, value in stream.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "data_seed" else 1):
            raise ValueError(f"preset {path}: [stream] {key}={value!r} must be a positive integer")
    try:
        config = coerce(LearnerConfig, doc, kebab=True)
    except ValueError as exc:
        raise ValueError(f"preset {path}: {exc}") from None
    return config, dict(stream)
