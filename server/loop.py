"""The federated round loop over a Flower ``Grid`` (the ServerApp's ``@app.main()`` calls :func:`run`).

Per round: probe the clients that are about to start a task (``query``), build each node's ``train`` message
one by one (Flower's FedAvg would share one RecordDict across nodes), send and receive, validate and ingest
each reply (a bad reply is rejected with a logged reason and changes nothing), aggregate the shared layers for
the next round, checkpoint atomically. Every ``eval-every`` rounds, and at the end, an ``evaluate`` round
collects each client's scores on every task it has finished. Results go to ``<out-dir>/results.json`` with
plots beside it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

from protos.envelope import content_nbytes, pack, unpack
from protos.wire import ProtocolError, parse_eval
from treelora.fed.keys import owns
from treelora.fed.settings import FedSettings

from .checkpoint import CHECKPOINT
from .state import GlobalState
from .tree_audit import load_truth

log = logging.getLogger("treelora.server")


@dataclass
class RoundLog:
    """Per-round accounting, written to the results."""

    round: int
    bytes_down: int = 0
    bytes_up: int = 0
    replies: int = 0
    rejected: int = 0
    server_s: float = 0.0
    leaves: int = 0
    shared_layers: int = 0


def _send(grid: Grid, messages: list[Message], timeout: float | None) -> list[Message]:
    if not messages:
        return []
    return list(grid.send_and_receive(messages, timeout=timeout or None))


def _client_of(state: GlobalState, node_id: int) -> str | None:
    for c, info in state.clients.items():
        if info.node_id == node_id:
            return c
    return None


def run(grid: Grid, fed: FedSettings, *, out_dir: str | Path | None = None, run_id: str = "",
        progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a federation to the end of every client's stream; returns the results dict."""
    from tqdm.auto import tqdm

    out = Path(out_dir or fed.out_dir)
    if fed.resume and (out / CHECKPOINT).exists():
        state = GlobalState.resume(fed, out)
        log.info("resumed from round %d with %d leaves", state.round, len(state.strategy.known_leaves()))
    else:
        state = GlobalState(fed, out, run_id=run_id)
    node_ids = sorted(grid.get_node_ids())
    if not node_ids:
        raise RuntimeError("no client nodes are connected")
    if not state.audit.truth:  # ground truth for the tree-quality figures: from the scenario, not from clients
        state.audit.truth = load_truth(fed, len(node_ids))
    state.strategy.start(state, len(node_ids))
    timeout = fed.timeout_s or None
    total = state.max_rounds()
    bar = tqdm(total=total, initial=state.round, desc=f"federation ({fed.method})", unit="round", disable=not progress)
    while state.round < total:
        rnd = state.round + 1
        node_ids = sorted(grid.get_node_ids()) or node_ids  # nodes may join or come back with a new id
        t_server = 0.0
        rec = RoundLog(rnd)
        # --- reuse: probe clients about to start a task
        probes = []
        for nid in node_ids:
            client = _client_of(state, nid)
            if client is not None and state.wants_probe(client):
                content = pack(state.control(client, rnd))
                rec.bytes_down += content_nbytes(content)
                probes.append(Message(content, dst_node_id=nid, message_type="query", group_id=str(rnd)))
        for reply in _send(grid, probes, timeout):
            nid = reply.metadata.src_node_id
            if not reply.has_content():
                state.record_error(rnd, nid, RuntimeError(f"probe failed: {reply.error.reason}"))
                continue
            rec.bytes_up += content_nbytes(reply.content)
            try:
                control, arrays = unpack(reply.content)
                state.ingest_probe(_client_of(state, nid) or "", rnd, control, arrays)
            except ProtocolError as exc:
                state.record_error(rnd, nid, exc)
        # --- train
        t0 = time.perf_counter()
        messages = []
        for nid in node_ids:
            client = _client_of(state, nid)
            if client is not None and state.clients[client].done:
                continue
            if client is None:
                assignment, arrays = state.assignment(f"?{nid}", rnd)
                assignment.client_id = ""
            else:
                assignment, arrays = state.assignment(client, rnd)
            content = pack(assignment, arrays)
            rec.bytes_down += content_nbytes(content)
            messages.append(Message(content, dst_node_id=nid, message_type="train", group_id=str(rnd)))
        t_server += time.perf_counter() - t0
        if not messages:
            break
        expected_nodes = {m.metadata.dst_node_id for m in messages}
        replies = _send(grid, messages, timeout)
        answered = {r.metadata.src_node_id for r in replies if r.has_content()}
        for nid in sorted(expected_nodes - answered):
            reasons = [r.error.reason for r in replies if not r.has_content() and r.metadata.src_node_id == nid]
            state.record_error(rnd, nid, RuntimeError(f"no reply: {reasons[0] if reasons else 'timed out'}"))
            rec.rejected += 1
        for reply in replies:
            nid = reply.metadata.src_node_id
            if not reply.has_content():
                continue
            rec.bytes_up += content_nbytes(reply.content)
            t0 = time.perf_counter()
            try:
                control, arrays = unpack(reply.content)
                state.ingest(_client_of(state, nid), nid, rnd, control, arrays, live_nodes=node_ids)
                rec.replies += 1
            except ProtocolError as exc:
                state.record_error(rnd, nid, exc)
                rec.rejected += 1
            t_server += time.perf_counter() - t0
        t0 = time.perf_counter()
        rec.shared_layers = state.aggregate()
        rec.leaves = len(state.strategy.known_leaves())
        state.round = rnd
        rec.server_s = t_server + time.perf_counter() - t0
        state.history.append(vars(rec))
        _save_tree_snapshot(state, rnd)
        state.checkpoint()
        bar.update(1)
        bar.set_postfix(leaves=rec.leaves, rejected=rec.rejected)
        if fed.eval_every and rnd % fed.eval_every == 0 and rnd < total:
            state.evaluations.append(evaluate(grid, state, node_ids, timeout))
        if state.clients and all(i.done for i in state.clients.values()):
            break
    bar.close()
    final_eval = evaluate(grid, state, node_ids, timeout)
    state.evaluations.append(final_eval)
    results = state.results()
    results["final_evaluation"] = final_eval
    results["evaluations"] = state.evaluations  # every eval-every round's scores, the final one last
    return results


def _save_tree_snapshot(state: GlobalState, rnd: int) -> None:
    """The global tree as it grows: ``<out>/trees/round_XXX.txt`` whenever it has leaves."""
    tree = state.strategy.results()["tree"]
    if not tree or not tree["tasks"]:
        return
    from treelora.plots import render_tree_text

    path = state.out_dir / "trees" / f"round_{rnd:03d}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = {k: f"{v[0]} ({k})" for k, v in state.audit.truth.items()}  # the leaf's stream task beside its key
    path.write_text(render_tree_text(tree, labels) + "\n")


def evaluate(grid: Grid, state: GlobalState, node_ids: Iterable[int], timeout: float | None) -> dict[str, Any]:
    """Ask every known client for its scores on the tasks it has finished (live adapter, task-free)."""
    messages = []
    for nid in node_ids:
        client = _client_of(state, nid)
        if client is not None:
            messages.append(Message(pack(state.strategy.configure_evaluate(state, client)), dst_node_id=nid,
                                    message_type="evaluate", group_id=f"eval-{state.round}"))
    scores: dict[str, Any] = {}
    for reply in _send(grid, messages, timeout):
        if not reply.has_content():
            continue
        nid = reply.metadata.src_node_id
        try:
            control, _ = unpack(reply.content)
            ev = parse_eval(control)
            client = _client_of(state, nid)
            if ev.client_id != client:
                raise ProtocolError("bad-identity", f"node {nid} is {client!r} but its scores are for {ev.client_id!r}")
            foreign = [k for k in ev.task_keys if not owns(client, k)]
            if foreign:
                raise ProtocolError("bad-value", f"scores of {client!r} name other clients' tasks {foreign}")
        except ProtocolError as exc:
            state.record_error(state.round, nid, exc)
            continue
        scores[ev.client_id] = dict(zip(ev.task_keys, ev.accuracies))
    return state.strategy.aggregate_evaluate(state, scores)
