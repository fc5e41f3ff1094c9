"""Who may report what: the checks of a reply against the server's own book-keeping, before anything changes.

The wire validators (:mod:`protos.report_validation`) check a report against what the server sent (round, steps,
offered candidates) and against fixed bounds; this module checks it against what the server knows of the client:

* **Binding.** A node is bound to the client it first reported as in this run, and a client to that node. A node
  reporting as another client, or a new node reporting as a known client, is ``bad-identity`` — a replayed or
  impersonating report cannot take a client over (it would receive that client's shares and candidates). Without
  node authentication a restarted SuperNode comes back with a new node id: with ``allow-rebind = true`` a known
  client may move to a new node, but only once its old node has left the grid, and the move is logged.
* **One report per client per round** (``duplicate``).
* **Task progress.** The task key is the client's own (``c<k>/t<index>``); the index never goes back, a finished
  task is never reported again, and no client is ahead of the schedule (index ≤ (round − 1) // rounds-per-task,
  < tasks-per-client). A done reply (``stream_done``) is accepted only after the schedule's last round.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

from protos import treelora_fed_pb2 as pb
from protos.wire import ProtocolError
from treelora.fed.keys import is_valid_client_id, task_key

if TYPE_CHECKING:
    from .state import ClientInfo, GlobalState

log = logging.getLogger("treelora.server")

__all__ = ["check_identity", "check_progress", "check_done"]


def check_identity(state: GlobalState, report: pb.ClientReport, client_hint: str | None, node_id: int, rnd: int,
                   live_nodes: Collection[int] | None) -> ClientInfo | None:
    """The client's record (None for a new client) if ``node_id`` may report as ``report.client_id`` in ``rnd``."""
    cid = report.client_id
    if not is_valid_client_id(cid):
        raise ProtocolError("malformed", f"bad client id {cid!r}")
    if client_hint is not None and cid != client_hint:
        raise ProtocolError("bad-identity", f"node {node_id} is {client_hint!r} but reported as {cid!r}")
    info = state.clients.get(cid)
    if info is not None and info.node_id != node_id:
        old_gone = live_nodes is not None and info.node_id not in live_nodes
        if not (state.fed.allow_rebind and old_gone):
            why = "allow-rebind is off" if not state.fed.allow_rebind else f"node {info.node_id} is still connected"
            raise ProtocolError("bad-identity", f"client {cid!r} is bound to node {info.node_id}; node {node_id} may "
                                f"not report as it ({why})")
        log.warning("round %d: client %s moves from node %d (gone) to node %d (allow-rebind)", rnd, cid,
                    info.node_id, node_id)
    if info is not None and info.last_round == rnd:
        raise ProtocolError("duplicate", f"client {cid!r} already reported in round {rnd}")
    return info


def check_progress(state: GlobalState, report: pb.ClientReport, info: ClientInfo | None, rnd: int) -> None:
    """The report's task is the client's own, does not go back, is not finished twice, is within the schedule."""
    cid, index = report.client_id, int(report.task_index)
    if report.task_key != task_key(cid, index):
        raise ProtocolError("malformed", f"task key {report.task_key!r} is not {cid!r}'s task {index}")
    ahead = min(state.fed.tasks_per_client - 1, (rnd - 1) // state.fed.rounds_per_task)
    if index > ahead:
        raise ProtocolError("bad-value", f"task {index} in round {rnd} is ahead of the schedule (at most {ahead})")
    if info is not None and info.task_index >= 0:
        if index < info.task_index:
            raise ProtocolError("bad-value", f"task {index} goes back (the client is at task {info.task_index})")
        if index == info.task_index and info.finished_last:
            raise ProtocolError("malformed", f"task {report.task_key!r} already finished")


def check_done(state: GlobalState, rnd: int) -> None:
    """A done reply is due only after the last round of every client's schedule."""
    last = state.fed.tasks_per_client * state.fed.rounds_per_task
    if rnd <= last:
        raise ProtocolError("bad-value", f"stream_done in round {rnd}: the schedule runs to round {last}")
