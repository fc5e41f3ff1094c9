"""Each client's task stream in a scenario: which task it trains in which round, and its share of the data.

A scenario is fully determined by the run config, so a client process can recompute its schedule from its
partition id alone (in deployment every message runs in a new process). Scenarios:

* ``staggered`` (default preset): client c trains the stream's tasks starting at task ``c·shift`` and walking
  forward cyclically, so clients meet the same tasks at different rounds.
* ``families``: clients are split into ``families`` groups; the clients of one family share a task sequence (a
  rotation of the stream), so their task families overlap and sharing should pay.
* ``identical``: every client has the same sequence (the FedAvg-friendly case).
* ``conflicting``: families that train the *same inputs with different labels* (concept shift, the setting of
  IFCA's label-swapped benchmarks): the stream is widened by :func:`scenario_stream` to ``families`` copies of
  itself, copy f of each task relabelled by a cyclic shift of f within the task's classes (copy 0 is the original),
  and family f walks its own copies. Every pair of families disagrees on every class of every task, so averaging
  (adapters, heads or class means) across families hurts and partner choice has something to win.

Data: every task's training examples are split into disjoint, seeded shards per class among the clients whose
schedules hold that task (non-IID only in which tasks a client meets, IID within a task); each client holds one
shard of each task it trains. The test split is shared, so per-client scores are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..streams.base import TaskStream

from .keys import client_id, task_key

__all__ = ["SCENARIOS", "ClientSchedule", "make_schedule", "holders", "shard", "leaf_truth", "scenario_stream"]

SCENARIOS = ("staggered", "families", "identical", "conflicting")


@dataclass(frozen=True)
class ClientSchedule:
    """Task indices (into the stream) a client trains, in order, each for ``rounds_per_task`` rounds."""

    client: int
    tasks: tuple[int, ...]
    rounds_per_task: int

    @property
    def total_rounds(self) -> int:
        return len(self.tasks) * self.rounds_per_task

    def position(self, server_round: int) -> tuple[int, bool] | None:
        """(position in ``tasks``, is this the task's last round) for a 1-based round; None after the stream."""
        if server_round < 1:
            raise ValueError(f"rounds are 1-based, got {server_round}")
        pos = (server_round - 1) // self.rounds_per_task
        if pos >= len(self.tasks):
            return None
        return pos, (server_round % self.rounds_per_task == 0)


def make_schedule(
    scenario: str,
    client: int,
    num_clients: int,
    num_stream_tasks: int,
    tasks_per_client: int,
    rounds_per_task: int,
    *,
    families: int = 2,
) -> ClientSchedule:
    """The schedule of ``client`` (0-based partition id) in a scenario."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if not 0 <= client < num_clients:
        raise ValueError(f"client {client} is outside 0..{num_clients - 1}")
    if not 1 <= tasks_per_client <= num_stream_tasks:
        raise ValueError(f"tasks-per-client must be in 1..{num_stream_tasks}, got {tasks_per_client}")
    if rounds_per_task < 1:
        raise ValueError(f"rounds-per-task must be >= 1, got {rounds_per_task}")
    if scenario == "identical":
        start = 0
    elif scenario == "staggered":
        shift = max(1, num_stream_tasks // max(num_clients, 1))
        start = (client * shift) % num_stream_tasks
    else:
        if families < 1:
            raise ValueError(f"families must be >= 1, got {families}")
        if scenario == "conflicting":
            _check_conflicting(num_stream_tasks, tasks_per_client, families)
        start = ((client % families) * (num_stream_tasks // families)) % num_stream_tasks
    tasks = tuple((start + k) % num_stream_tasks for k in range(tasks_per_client))
    return ClientSchedule(client, tasks, rounds_per_task)


def holders(stream_task: int, scenario: str, num_clients: int, num_stream_tasks: int, tasks_per_client: int,
            rounds_per_task: int, *, families: int = 2) -> list[int]:
    """The clients (partition ids, ascending) whose schedules hold ``stream_task``: they share its data."""
    return [
        c for c in range(num_clients)
        if stream_task in make_schedule(scenario, c, num_clients, num_stream_tasks, tasks_per_client,
                                        rounds_per_task, families=families).tasks
    ]


def shard(examples: list, client: int, num_clients: int, seed: int) -> list:
    """Client ``client``'s disjoint share of ``examples``, balanced per class (seeded, order-independent)."""
    by_class: dict[int, list[int]] = {}
    for i, e in enumerate(examples):
        by_class.setdefault(int(e.label), []).append(i)
    keep: list[int] = []
    for label, idx in sorted(by_class.items()):
        rng = np.random.default_rng([seed, label, 7919])
        perm = rng.permutation(len(idx))
        keep += [idx[j] for j in perm[client::num_clients]]
    return [examples[i] for i in sorted(keep)]


def leaf_truth(scenario: str, num_clients: int, tasks: list, tasks_per_client: int, rounds_per_task: int, *,
               families: int = 2) -> dict[str, tuple[str, str]]:
    """Ground truth of every leaf a scenario can produce: ``{"c<k>/t<j>": (stream task name, its family)}``.

    ``tasks`` is the stream's task list (each with ``name`` and ``family_name``). The truth follows from the run
    config and the number of clients alone, so the server computes it without any client telling it; it is used
    to measure the tree (``treelora.tree_quality``), never to build it."""
    out: dict[str, tuple[str, str]] = {}
    for c in range(num_clients):
        sched = make_schedule(scenario, c, num_clients, len(tasks), tasks_per_client, rounds_per_task,
                              families=families)
        for pos, t in enumerate(sched.tasks):
            out[task_key(client_id(c), pos)] = (tasks[t].name, tasks[t].family_name)
    return out


def _check_conflicting(num_stream_tasks: int, tasks_per_client: int, families: int) -> None:
    """The widened stream holds ``families`` equal blocks, and a family never walks into the next one's."""
    if families < 2:
        raise ValueError(f"scenario=conflicting needs families >= 2 (one family has nobody to conflict with), "
                         f"got {families}")
    if num_stream_tasks % families:
        raise ValueError(f"scenario=conflicting: {num_stream_tasks} stream tasks are not {families} copies of one "
                         f"stream (load it with scenario_stream)")
    if tasks_per_client > num_stream_tasks // families:
        raise ValueError(f"scenario=conflicting: tasks-per-client={tasks_per_client} exceeds the "
                         f"{num_stream_tasks // families} tasks of one family's copy of the stream")


def scenario_stream(stream: TaskStream, scenario: str, families: int) -> TaskStream:
    """The stream a scenario's clients draw their tasks from: ``stream`` itself, except for ``conflicting``.

    ``conflicting`` returns ``families`` copies of the stream's tasks, family-major. Copy f of a task has the same
    inputs and classes; its example of class ``classes[i]`` is labelled ``classes[(i + f) % n]``; its name and family
    carry ``+shift<f>`` (copy 0 is the task unchanged). A task with fewer classes than ``families`` cannot give
    every family its own labelling and is refused."""
    if scenario != "conflicting":
        return stream
    if families < 2:
        raise ValueError(f"scenario=conflicting needs families >= 2, got {families}")
    tasks = []
    for f in range(families):
        for task in stream.tasks:
            n = len(task.classes)
            if n < families:
                raise ValueError(f"scenario=conflicting: task {task.name!r} has {n} classes, fewer than "
                                 f"families={families}, so two families would label it alike")
            if f == 0:
                tasks.append(task)
                continue
            relabel = {c: task.classes[(i + f) % n] for i, c in enumerate(task.classes)}
            tasks.append(replace(
                task, name=f"{task.name}+shift{f}", family=f"{task.family_name}+shift{f}",
                train=[replace(e, label=relabel[e.label]) for e in task.train],
                test=[replace(e, label=relabel[e.label]) for e in task.test]))
    return replace(stream, tasks=tasks)
