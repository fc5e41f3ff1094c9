"""The ``l1-grad`` regulariser's scale against the task gradient's, per ``l1_reduction`` (issue 13).

    python -m simulations.bench_reg_scale                       # MiniLM, WordNet, λ 0.5, 6 steps, ~2 min
    python -m simulations.bench_reg_scale --backbone tiny-bert --stream synthetic-text --steps 2   # smoke

**Protocol.** One learner (method ``treelora``, one seed) trains task 0 for ``--task0-steps`` steps and closes it,
so that its signature is stored; then task 1 opens and, on each of ``--steps`` batches, the step's task gradient
ĝ (all LoRA parameters) and the regulariser's gradient ``∇ λ·Σ_l red(‖ĝ_l − G_0[l]‖₁)`` (double backward, the
target being task 0's signature on every layer) are computed for every reduction at the same parameters, batch and
dropout masks: ``sum`` (Eq. 3 as written), ``mean`` (/ p, p = the layer's LoRA size) and ``sqrt`` (/ √p). The table
reports the median over steps of the ratio ``‖reg grad‖₂ / ‖task grad‖₂`` and the λ that would make it 1 (the
ratio is linear in λ). No optimiser step is taken between reductions, so they see identical states.
"""

from __future__ import annotations

import simulations.bench_common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import statistics
import sys
from typing import Any

import torch

from simulations.bench_common import Machine, machine_line, md_table, write_json

REDUCTIONS = ("sum", "mean", "sqrt")


def grad_ratio(learner: Any, task_loss: Any, targets: list[torch.Tensor], lam: float,
               reduction: str) -> dict[str, float]:
    """``‖∇reg‖, ‖ĝ‖`` and their ratio at the learner's current parameters (``task_loss``: the step's closure,
    which replays the same dropout masks on every call)."""
    from treelora.regularizers import _l1, _layer_vectors

    params = learner.lora.parameters()
    loss = task_loss()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    layer_g = _layer_vectors(list(grads))
    reg = lam * torch.stack([_l1(g - t.to(g.device, g.dtype), reduction) for g, t in zip(layer_g, targets)]).sum()
    reg_grads = torch.autograd.grad(reg, params, allow_unused=True)
    task_norm = float(torch.sqrt(sum((g.detach() ** 2).sum() for g in grads)))
    reg_norm = float(torch.sqrt(sum((g.detach() ** 2).sum() for g in reg_grads if g is not None)))
    return {"task_grad_norm": task_norm, "reg_grad_norm": reg_norm, "ratio": reg_norm / max(task_norm, 1e-30)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="minilm")
    p.add_argument("--stream", default="wordnet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=6, help="task-1 batches measured")
    p.add_argument("--task0-steps", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-per-class", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="simulations/results")
    args = p.parse_args(argv)
    machine = Machine(args.threads)

    from treelora.backbones import load_backbone
    from treelora.config import make_config
    from treelora.data import iterate_batches
    from treelora.learner import ContinualLearner
    from treelora.streams import load_stream

    stream = load_stream(args.stream, seed=args.seed, train_per_class=args.train_per_class, test_per_class=4)
    cfg = make_config("treelora", seed=args.seed, batch_size=args.batch_size, lam=args.lam, progress=False)
    backbone = load_backbone(args.backbone, seed=args.seed, attn_implementation="eager")
    learner = ContinualLearner(backbone, stream.num_classes(), cfg, stream=stream)
    t0, t1 = stream.tasks[0], stream.tasks[1]
    learner.begin_task("t0", t0.classes)
    enc0 = learner.encode(t0.train)
    learner.start_epoch(args.task0_steps)
    done = 0
    while done < args.task0_steps:
        for batch in iterate_batches(enc0, args.batch_size, shuffle=True, seed=done):
            learner.train_step(batch)
            done += 1
            if done >= args.task0_steps:
                break
    learner.end_task()
    targets = list(learner.tree.entries["t0"].signature)
    learner.begin_task("t1", t1.classes)
    learner.start_epoch(args.steps)
    classes = torch.tensor(learner.current.classes, device=learner.device)
    sizes = [int(t.numel()) for t in targets]
    rows: dict[str, list[dict[str, float]]] = {r: [] for r in REDUCTIONS}
    batches = list(iterate_batches(learner.encode(t1.train), args.batch_size, shuffle=True, seed=1))[: args.steps]
    for batch in batches:
        task_loss = learner._task_loss(learner._to_device(batch), classes)
        for reduction in REDUCTIONS:
            rows[reduction].append(grad_ratio(learner, task_loss, targets, args.lam, reduction))
            print(f"{reduction}: {rows[reduction][-1]}", file=sys.stderr, flush=True)
    summary = []
    for reduction in REDUCTIONS:
        ratios = [r["ratio"] for r in rows[reduction]]
        med = statistics.median(ratios)
        summary.append({"reduction": reduction, "lam": args.lam, "ratio_median": med, "ratio_min": min(ratios),
                        "ratio_max": max(ratios), "lam_for_ratio_1": args.lam / med if med > 0 else None,
                        "per_step": rows[reduction]})
    m = machine.finish()
    payload = {"machine": m, "backbone": args.backbone, "stream": args.stream, "seed": args.seed,
               "layer_sizes_p": sizes, "steps": len(batches), "rows": summary}
    path = write_json("reg_scale", payload, args.out)
    print(md_table(["reduction", "λ", "‖reg grad‖ / ‖task grad‖ (median)", "min – max", "λ for ratio 1"],
                   [[s["reduction"], s["lam"], f"{s['ratio_median']:.4g}",
                     f"{s['ratio_min']:.3g} – {s['ratio_max']:.3g}",
                     f"{s['lam_for_ratio_1']:.3g}" if s["lam_for_ratio_1"] else "-"] for s in summary]))
    print(f"\nlayer sizes p: {sorted(set(sizes))}; {len(batches)} steps; machine: {machine_line(m)}\n-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
