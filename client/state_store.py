"""A client's state on disk, one file per client: its learner (adapter, head, optimiser, own tree, open task), the
last round it answered with that reply (so a replayed round is answered again, not trained twice), its accuracy
rows and the run it belongs to.

In deployment every message runs in a new process, so nothing survives in memory. The file is written durably
(:func:`treelora.io.save_torch_atomic`: fsync'd, atomic rename) after every round. A state left by another run is
archived next to it (``state.run-<id>.pt``), never reused; an unreadable file is an error, never silently replaced.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from treelora.io import save_torch_atomic
from treelora.learner import ContinualLearner

__all__ = ["STATE_FILE", "ClientStore"]

STATE_FILE = "state.pt"


class ClientStore:
    """Load and save one client's state file."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / STATE_FILE

    def _read(self) -> dict[str, Any]:
        try:
            return torch.load(self.path, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - a corrupt file must not be silently replaced
            raise RuntimeError(f"client state {self.path} is unreadable ({exc}); move it away to restart") from exc

    def load(self, learner: ContinualLearner, initial: dict[str, Any], run_id: str = "") -> dict[str, Any]:
        """This client's state, loaded into ``learner``; a fresh state (``initial`` learner) when there is none."""
        if self.path.exists() and run_id:
            previous = self._read().get("run_id", "")
            if previous and previous != run_id:
                os.replace(self.path, self.path.with_name(f"state.run-{previous}.pt"))
        if self.path.exists():
            state = self._read()
            learner.load_state_dict(state["learner"])
            return state
        learner.load_state_dict(initial)
        return {"last_round": 0, "last_reply": None, "eval_rows": [], "examples_seen": 0, "run_id": run_id}

    def save(self, learner: ContinualLearner, state: dict[str, Any]) -> None:
        """Write the state (with the learner's) durably."""
        state["learner"] = learner.state_dict()
        save_torch_atomic(state, self.path)
