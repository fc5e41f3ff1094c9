"""Durable file writes: every file the project writes for later (results, checkpoints, leaf adapters, client state)
goes through one helper, so they all have the same crash guarantee.

A write goes to a temporary file in the target's directory, is flushed and ``fsync``-ed, renamed over the target
(atomic on POSIX), and the directory is ``fsync``-ed so the rename itself survives a power loss. A crash at any point
leaves either the old file or the new one, never half of one. The temporary file is removed when the write fails.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["write_bytes_atomic", "write_text_atomic", "write_json_atomic", "save_torch_atomic"]

_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` durably and atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes the file 0600; a results file is as readable as any other
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """UTF-8 text, written as :func:`write_bytes_atomic` does."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """JSON (indented; numpy scalars and other numbers through ``float``), written as :func:`write_bytes_atomic`."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=float))


def save_torch_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)``, written as :func:`write_bytes_atomic` does."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_bytes_atomic(path, buf.getvalue())
