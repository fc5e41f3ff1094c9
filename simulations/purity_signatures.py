"""The expensive part of ``simulations.bench_tree_purity``: every (client, task) leaf's signatures, cached.

For a scenario with known ground truth (:func:`treelora.fed.scenarios.leaf_truth`) every client is simulated on
its own, as a federated client trains without sharing (no warm start, no shared layers: the tree is what is
measured, not what it would have changed): its continual learner (the run config's ``learner_config()``) trains
each task of its schedule on its shard (:func:`treelora.fed.scenarios.shard`) for ``rounds-per-task`` rounds of
``local-steps`` steps, an epoch boundary every round, as ``client.node.ClientNode`` does. Per leaf it records:

* ``live``: the running signature at the task's end (what ``final.<l>`` sketches today);
* ``live_query``: the one-batch gradient at the live adapter just before the task starts (today's warm-start
  probe, ``ClientNode.probe``);
* ``probe-grad`` / ``probe-fisher`` / ``probe-input``: the shared-probe signatures (:mod:`treelora.probe`;
  ``probe-batches`` batches; the same value serves as leaf and as warm-start query, as in the federation).

Raw signatures (not sketches) are cached in ``runs/tree_purity/<scenario>-seed<k>.pt``, so sketching, DP noise
and trees are re-done cheaply. A shared probe does not depend on training (it is taken at the reference point), so
a probe kind missing from an older cache is filled in without retraining.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["SCENARIOS", "scenario_settings", "leaf_signatures"]

#: name -> run-config overrides (the similar-clients preset otherwise: MiniLM, WordNet, 2 rounds x 8 steps)
SCENARIOS: dict[str, dict[str, Any]] = {
    "families3-6c": {"scenario": "families", "families": 3, "clients": 6, "tasks_per_client": 3},
    "families4-8c": {"scenario": "families", "families": 4, "clients": 8, "tasks_per_client": 2},
    "conflicting3-6c": {"scenario": "conflicting", "families": 3, "clients": 6, "tasks_per_client": 3},
}
BASE: dict[str, Any] = {"method": "treelora", "stream": "wordnet", "backbone": "minilm", "rounds_per_task": 2,
                        "local_steps": 8, "batch_size": 16, "train_per_class": 48, "test_per_class": 16,
                        "probe_batches": 4}


def scenario_settings(name: str, seed: int, **overrides: Any) -> tuple[Any, int]:
    """(FedSettings, number of clients) of a named scenario at a seed."""
    from treelora.fed.settings import FedSettings

    spec = {**BASE, **SCENARIOS[name], **overrides}
    clients = int(spec.pop("clients"))
    return FedSettings(**spec, seed=seed), clients


def _one_batch_grad(learner: Any, encoded: dict[str, torch.Tensor], classes: list[int], batch_size: int, pos: int
                    ) -> list[torch.Tensor]:
    from treelora.data import iterate_batches

    batch = next(iterate_batches(encoded, batch_size, shuffle=True, seed=pos))
    learner.model.train()
    learner.optimizer.zero_grad(set_to_none=True)
    batch = {k: v.to(learner.device) for k, v in batch.items()}
    learner.model.loss(batch, torch.tensor(classes, device=learner.device)).backward()
    vectors = learner.signature.probe_vectors(learner.lora.grad_vectors())
    learner.optimizer.zero_grad(set_to_none=True)
    return [v.detach().to("cpu", torch.float32, copy=True) for v in vectors]


def _train_task(learner: Any, encoded: dict[str, torch.Tensor], classes: list[int], fed: Any, pos: int) -> None:
    """Task ``pos`` trained as ``client.node.ClientNode`` trains it without sharing: ``rounds-per-task`` rounds of
    ``local-steps`` steps, an epoch boundary every round."""
    from treelora.data import iterate_batches

    learner.begin_task(f"t{pos}", classes)
    for r in range(fed.rounds_per_task):
        rnd = pos * fed.rounds_per_task + r + 1
        learner.start_epoch(fed.local_steps)
        done, epoch = 0, 0
        while done < fed.local_steps:
            for batch in iterate_batches(encoded, fed.batch_size, shuffle=True, seed=hash((rnd, epoch)) & 0xFFFF):
                learner.train_step(batch)
                done += 1
                if done >= fed.local_steps:
                    break
            epoch += 1
    learner.end_task()


def leaf_signatures(name: str, seed: int, cache_dir: Path, log: Any = print, *, probes_only: bool = False,
                    **overrides: Any) -> dict[str, Any]:
    """``{"truth": {leaf: (task, family)}, "order": [leaf, ...] (finishing order), "signatures": {leaf: {kind:
    [L tensors]}}, "settings": {...}, "seconds": float}``, computed once per (scenario, seed, overrides) and cached.

    ``probes_only`` computes the shared-probe kinds alone, without training (a probe is taken at the reference
    point, and the finishing order follows from the schedules): seconds instead of minutes, cached apart; a full
    cache of the same scenario, when there is one, is used instead."""
    from treelora.backbones import load_backbone
    from treelora.fed.keys import client_id, task_key
    from treelora.fed.scenarios import holders, leaf_truth, make_schedule, shard
    from treelora.learner import ContinualLearner
    from treelora.probe import PROBE_KINDS

    fed, n_clients = scenario_settings(name, seed, **overrides)
    tag = "" if not overrides else "-" + "-".join(f"{k}{v}" for k, v in sorted(overrides.items()))
    path = Path(cache_dir) / f"{name}-seed{seed}{tag}.pt"
    if probes_only and not path.exists():
        path = path.with_name(path.stem + "-probes.pt")
    cached = torch.load(path, weights_only=False) if path.exists() else None
    if cached is not None and all(k in e for e in cached["signatures"].values() for k in PROBE_KINDS):
        return cached
    t0 = time.perf_counter()
    stream = fed.load_stream()
    T = len(stream.tasks)
    truth = leaf_truth(fed.scenario, n_clients, stream.tasks, fed.tasks_per_client, fed.rounds_per_task,
                       families=fed.families)
    cfg = fed.learner_config(device="cpu", precision="fp32")
    backbone = load_backbone(fed.backbone, seed=fed.seed, attn_implementation=cfg.attn_implementation, device="cpu")
    learner = ContinualLearner(backbone, stream.num_classes(), cfg, stream=stream)
    initial = learner.state_dict()
    sigs: dict[str, dict[str, list[torch.Tensor]]] = {}
    finish: list[tuple[int, int, str]] = []
    for c in range(n_clients):
        learner.load_state_dict(initial)
        sched = make_schedule(fed.scenario, c, n_clients, T, fed.tasks_per_client, fed.rounds_per_task,
                              families=fed.families)
        for pos, t in enumerate(sched.tasks):
            task = stream.tasks[t]
            owners = holders(t, fed.scenario, n_clients, T, fed.tasks_per_client, fed.rounds_per_task,
                             families=fed.families)
            part = shard(task.train, owners.index(c), len(owners), fed.seed)
            encoded = learner.encode(part)
            key = task_key(client_id(c), pos)
            if cached is not None:  # only the missing probe kinds: they need no training
                entry = cached["signatures"][key]
                for kind in PROBE_KINDS:
                    if kind not in entry:
                        entry[kind] = learner.probe_signature(part, task.classes, batches=fed.probe_batches,
                                                              kind=kind, seed=fed.seed)
                continue
            entry = {} if probes_only else {"live_query": _one_batch_grad(learner, encoded, task.classes,
                                                                          fed.batch_size, pos)}
            for kind in PROBE_KINDS:
                entry[kind] = learner.probe_signature(part, task.classes, batches=fed.probe_batches, kind=kind,
                                                      seed=fed.seed)
            if not probes_only:
                _train_task(learner, encoded, task.classes, fed, pos)
                entry["live"] = [v.clone() for v in learner.tree.entries[f"t{pos}"].signature]
                log(f"[{name} seed {seed}] {key} = {truth[key][0]} done ({time.perf_counter() - t0:.0f}s)")
            sigs[key] = entry
            finish.append(((pos + 1) * fed.rounds_per_task, c, key))
    if cached is not None:
        cached["seconds_probes_added"] = time.perf_counter() - t0
        torch.save(cached, path)
        return cached
    out = {"truth": truth, "order": [k for _, _, k in sorted(finish)], "signatures": sigs,
           "settings": {**dataclasses.asdict(fed), "clients": n_clients}, "seconds": time.perf_counter() - t0}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return out
