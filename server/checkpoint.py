"""The server's checkpoint: the whole state after a round, written atomically, and resume from it.

``checkpoint.pb`` is a :class:`protos.treelora_fed_pb2.Checkpoint`: the round and run id, the run config (a resume
with a different config is refused, except for the keys that may change between attempts), the leaf records, a
torch-serialized blob (the tree without the leaf sketches, which live in the leaf files; shares; current-task
sketches; the tree's node centres by reference into ``tree_centres/`` segments, :mod:`server.centre_store`) and a
JSON blob (clients, bandit statistics, accounting). Leaf files and centre segments are durable before a checkpoint
refers to them, and unused segments are deleted only after it, so a crash at any moment leaves a consistent set.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from protos import treelora_fed_pb2 as pb
from protos.wire import make_checkpoint, parse_checkpoint, serialize
from treelora.fed.settings import FedSettings
from treelora.io import write_bytes_atomic

if TYPE_CHECKING:
    from .state import GlobalState

__all__ = ["CHECKPOINT", "MAY_CHANGE_ON_RESUME", "write_checkpoint", "read_checkpoint"]

CHECKPOINT = "checkpoint.pb"
MAY_CHANGE_ON_RESUME = ("resume", "num_rounds", "out_dir", "timeout_s", "eval_every", "threads", "allow_rebind")


def write_checkpoint(state: GlobalState) -> Path:
    """Write ``<out-dir>/checkpoint.pb`` durably; returns its path."""
    blob, meta, leaves = state.strategy.state_dict()
    pool = state.strategy.pool
    pool_blob, pool_meta = pool.state_dict() if pool is not None else ({}, {})
    buf = io.BytesIO()
    torch.save({**blob, "shares": state.shares, "prototype_pool": pool_blob}, buf)
    meta = {
        **meta, "prototype_pool": pool_meta, "partners": state.strategy.partners,
        "num_layers": state.num_layers, "adapter_shapes": state.adapter_shapes,
        "clients": {c: asdict(i) for c, i in state.clients.items()},
        "acc_rows": state.acc_rows, "view_rows": state.view_rows, "history": state.history, "errors": state.errors,
        "evaluations": state.evaluations,
        "model_bytes": state.model_bytes, "privacy": state.privacy.state_dict(), "audit": state.audit.state(),
    }
    msg = make_checkpoint(
        round=state.round, run_id=state.run_id, tree=buf.getvalue(), bandit=json.dumps(meta).encode(),
        created_unix=time.time(), leaves=leaves, config={k: str(v) for k, v in asdict(state.fed).items()},
    )
    path = write_bytes_atomic(state.out_dir / CHECKPOINT, serialize(msg))
    state.strategy.after_checkpoint()
    return path


def read_checkpoint(cls: type[GlobalState], fed: FedSettings, out_dir: str | Path) -> GlobalState:
    """A :class:`~server.state.GlobalState` rebuilt from ``out_dir/checkpoint.pb``."""
    from .state import ClientInfo

    path = Path(out_dir) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; start without resume")
    msg = parse_checkpoint(path.read_bytes())
    saved = dict(msg.config)
    for key, value in asdict(fed).items():
        if key in MAY_CHANGE_ON_RESUME:
            continue
        if key in saved and saved[key] != str(value):
            raise ValueError(f"resume: run-config {key.replace('_', '-')}={value!r} differs from the "
                             f"checkpoint's {saved[key]!r}")
    state = cls(fed, out_dir, run_id=msg.run_id)
    state.round = int(msg.round)
    meta: dict[str, Any] = json.loads(msg.bandit.decode())
    state.num_layers = meta["num_layers"]
    state.adapter_shapes = [tuple(tuple(s) for s in pair) for pair in meta["adapter_shapes"]]
    blob = torch.load(io.BytesIO(msg.tree), weights_only=False)
    leaves = [{f.name: getattr(r, f.name) for f in pb.LeafRecord.DESCRIPTOR.fields} for r in msg.leaves]
    state.strategy.load_state_dict(blob, meta, leaves, state.num_layers)
    if state.strategy.pool is not None:
        state.strategy.pool.load_state_dict(blob["prototype_pool"], meta["prototype_pool"])
    state.strategy.partners = meta.get("partners", {})
    state.shares = blob["shares"]
    state.clients = {c: ClientInfo(**i) for c, i in meta["clients"].items()}
    state.acc_rows, state.history, state.errors = meta["acc_rows"], meta["history"], meta["errors"]
    state.evaluations = meta.get("evaluations", [])
    state.view_rows = meta.get("view_rows", {})
    state.model_bytes = meta["model_bytes"]
    state.privacy.load_state_dict(meta.get("privacy", {}))
    state.audit.load(meta.get("audit", {}))
    return state
