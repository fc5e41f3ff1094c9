"""A server crash in tests: the run raises right after its N-th checkpoint is on disk."""

from __future__ import annotations

from typing import Any

import pytest

from server.loop import run
from server.state import GlobalState


class Crash(Exception):
    """The simulated server crash."""


def run_until_crash(grid: Any, fed: Any, *, after_checkpoints: int = 2) -> None:
    """Run the federation and crash it once ``after_checkpoints`` checkpoints were written (the patch is undone)."""
    original, calls = GlobalState.checkpoint, {"n": 0}

    def crashing_checkpoint(self: GlobalState) -> Any:
        path = original(self)
        calls["n"] += 1
        if calls["n"] == after_checkpoints:
            raise Crash()
        return path

    GlobalState.checkpoint = crashing_checkpoint  # type: ignore[method-assign]
    try:
        with pytest.raises(Crash):
            run(grid, fed, progress=False)
    finally:
        GlobalState.checkpoint = original  # type: ignore[method-assign]
