"""What the server chose with its global tree, against the ground truth of the scenario: the tree-quality figures.

The ground truth of every leaf (which stream task, which family) follows from the run config and the number of
clients (:func:`treelora.fed.scenarios.leaf_truth`); the server never builds anything from it. It only records,
round by round, what it chose — each warm-start leaf, each layer's candidates, each layer's sharing groups — with
the true task of the client it chose for, and at the end computes (``treelora.tree_quality``): the tree's own
figures (clade purity, sibling rate, LCA depths, nearest-neighbour purity, ARI/NMI of each level against tasks and
families), the warm-start and candidate hit rates, and each layer's sharing-group precision/recall against the
true co-task pairs. A client's "current task" in a round is the one its schedule trains in that round.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from treelora.fed.keys import owner, task_key
from treelora.fed.settings import FedSettings
from treelora.tree import TaskTree

__all__ = ["TreeAudit", "load_truth"]


def load_truth(fed: FedSettings, num_clients: int) -> dict[str, tuple[str, str]]:
    """``{leaf key: (stream task, family)}`` of this run's scenario (empty when the stream cannot be loaded)."""
    from treelora.fed.scenarios import leaf_truth
    try:
        stream = fed.load_stream()
        return leaf_truth(fed.scenario, num_clients, stream.tasks, fed.tasks_per_client, fed.rounds_per_task,
                          families=fed.families)
    except (ValueError, FileNotFoundError):
        return {}


class TreeAudit:
    """The ground truth of every leaf and the record of the server's tree-guided choices."""

    def __init__(self, fed: FedSettings, truth: dict[str, tuple[str, str]] | None = None) -> None:
        self.fed = fed
        self.truth: dict[str, tuple[str, str]] = dict(truth or {})
        self.warm: list[tuple[str, str, bool]] = []  # (query's task, chosen leaf, a same-task leaf existed)
        self.candidates: list[tuple[str, list[str], bool]] = []  # (client's task, one layer's candidates, existed)
        self.groups: dict[int, dict[str, int]] = {}  # layer -> summed pair counts over rounds

    def task_of(self, key: str) -> str | None:
        """The stream task of a leaf key (None when unknown)."""
        return self.truth[key][0] if key in self.truth else None

    def current_task(self, client: str, rnd: int) -> str | None:
        """The stream task ``client``'s schedule trains in round ``rnd``."""
        return self.task_of(task_key(client, (rnd - 1) // self.fed.rounds_per_task))

    def _exists(self, task: str | None, leaves: Iterable[str], client: str) -> bool:
        return task is not None and any(self.task_of(k) == task for k in leaves if owner(k) != client)

    def record_warm(self, client: str, key: str, chosen: str, leaves: Iterable[str]) -> None:
        """A warm start: ``client``'s next task ``key`` was given leaf ``chosen`` among ``leaves``."""
        task = self.task_of(key)
        if self.truth and task is not None:
            self.warm.append((task, chosen, self._exists(task, leaves, client)))

    def record_candidates(self, client: str, rnd: int, per_layer: list[list[str]], leaves: Iterable[str]) -> None:
        """One assignment's candidates, per layer."""
        task = self.current_task(client, rnd)
        if not self.truth or task is None:
            return
        existed = self._exists(task, list(leaves), client)
        self.candidates += [(task, list(c), existed) for c in per_layer if c]

    def record_groups(self, rnd: int, groups: dict[tuple[int, str], list[str]]) -> None:
        """One round's sharing groups: (layer, group id) -> clients."""
        from treelora.tree_quality import group_precision_recall

        if not self.truth:
            return
        layers: dict[int, list[list[tuple[str, str]]]] = {}
        for (layer, _), members in groups.items():
            layers.setdefault(layer, []).append([(c, self.current_task(c, rnd)) for c in members])
        active = sorted({c for members in groups.values() for c in members})
        for layer, gs in layers.items():
            pr = group_precision_recall(gs, [(c, self.current_task(c, rnd)) for c in active])
            acc = self.groups.setdefault(layer, {"predicted_pairs": 0, "true_pairs": 0, "correct_pairs": 0})
            for k in acc:
                acc[k] += pr[k]

    def summary(self, tree: TaskTree | None) -> dict[str, Any] | None:
        """The figures against the ground truth (None without one): each layer's sharing-group precision/recall,
        and with a tree its own figures and the warm-start and candidate hit rates."""
        if not self.truth:
            return None
        sharing = {}
        for layer, c in sorted(self.groups.items()):
            sharing[str(layer)] = {
                **c,
                "precision": c["correct_pairs"] / c["predicted_pairs"] if c["predicted_pairs"] else None,
                "recall": c["correct_pairs"] / c["true_pairs"] if c["true_pairs"] else None,
            }
        out: dict[str, Any] = {"sharing": sharing}
        if tree is None or len(tree) == 0:
            return out
        from treelora.tree_quality import candidate_hit_rate, hit_rate, tree_quality

        leaf_task = {k: v[0] for k, v in self.truth.items()}
        leaf_family = {k: v[1] for k, v in self.truth.items()}
        out.update({
            "tree": tree_quality(tree, leaf_task, leaf_family),
            "warm_start": hit_rate(self.warm, leaf_task),
            "candidates": candidate_hit_rate(self.candidates, leaf_task),
        })
        return out

    def leaf_tasks(self, leaves: Iterable[str]) -> dict[str, dict[str, str]]:
        """``{leaf: {"task", "family"}}`` for results.json (pictures and reports label leaves with it)."""
        return {k: {"task": self.truth[k][0], "family": self.truth[k][1]} for k in leaves if k in self.truth}

    # ------------------------------------------------------------------ checkpoint
    def state(self) -> dict[str, Any]:
        return {"warm": self.warm, "candidates": self.candidates, "groups": {str(k): v for k, v in self.groups.items()}}

    def load(self, state: dict[str, Any]) -> None:
        self.warm = [tuple(x) for x in state.get("warm", [])]
        self.candidates = [(t, list(c), e) for t, c, e in state.get("candidates", [])]
        self.groups = {int(k): v for k, v in state.get("groups", {}).items()}
