"""Relative error of the Cauchy sketch's L1 estimate, and bytes per sketch vs the raw signature.

DESIGN.md §6 target: median relative error <= 10% at s = 256.

    python -m simulations.bench_sketch                 # s in 32..1024, p = 6144, real MiniLM gradients + random
    python -m simulations.bench_sketch --steps 0       # random vectors only (no model)

**Vectors.** (1) *Real LoRA gradients*: a few MiniLM steps (LoRA r = 8 on query/value: 12 layers x p = 6144) of
``seqlora`` on the WordNet stream, read through the learner's ``on_step`` hook (the per-layer flattened
``[dL/dA, dL/dB]`` that the ``grad`` signature averages); pairs are two steps' gradients of the same layer — the
difference the bandit's xi and the tree's splits measure. (2) *Random*: dense Gaussian, sparse (1% non-zeros)
and heavy-tailed (symmetric Pareto, tail index 1.5) vectors of the same p.

**Seeds.** ``treelora/sketch.py`` explains that with one fixed matrix (one seed, as in a run) the estimates of
many dense differences share a multiplicative per-matrix factor, so one seed's median error can sit above or
below the pooled figure. Each s is therefore measured over ``--seeds`` sketch seeds and reported three ways:
pooled over every seed and pair; the spread of the per-seed median (min / median / max over seeds); and the
per-seed error after dividing out that seed's common factor (median of est / exact), which is what the tree
split and the bandit see, since they only compare distances measured with the same layer's matrix.

**Bytes.** A sketch travels as s float32 values (``LinearSketch.nbytes``); the raw signature is p float32.
"""

from __future__ import annotations

import simulations.bench_common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulations.bench_common import BENCH_DIR, Machine, fmt_bytes, machine_line, md_table, write_json
from treelora.sketch import LinearSketch, clear_sketch_cache, exact_l1


def real_gradients(
    steps: int,
    tasks: int,
    train_per_class: int,
    batch_size: int,
    seed: int,
    log: Any,
    backbone: str = "minilm",
    stream_name: str = "wordnet",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """(n_steps, L, p) LoRA gradients of a backbone on a stream, from the learner's on_step hook."""
    from treelora.backbones import load_backbone
    from treelora.config import make_config
    from treelora.data import iterate_batches
    from treelora.learner import ContinualLearner
    from treelora.streams import load_stream

    t0 = time.perf_counter()
    stream = load_stream(stream_name, seed=seed, train_per_class=train_per_class, test_per_class=4)
    cfg = make_config("seqlora", batch_size=batch_size, max_length=32, progress=False, seed=seed)
    learner = ContinualLearner(load_backbone(backbone, seed=seed), stream.num_classes(), cfg)
    grads: list[torch.Tensor] = []
    learner.on_step = lambda g: grads.append(torch.stack([x.detach().float().cpu() for x in g]))
    per_task = max(1, steps // tasks)
    for j, task in enumerate(stream.tasks[:tasks]):
        learner.begin_task(f"t{j}", task.classes)
        enc = learner.encode(task.train)
        done, epoch = 0, 0
        while done < per_task:
            learner.start_epoch(per_task)
            for batch in iterate_batches(enc, batch_size, shuffle=True, seed=epoch):
                learner.train_step(batch)
                done += 1
                if done >= per_task:
                    break
            epoch += 1
        learner.end_task()
    g = torch.stack(grads)
    info = {
        "steps": int(g.shape[0]),
        "layers": int(g.shape[1]),
        "p": int(g.shape[2]),
        "tasks": tasks,
        "train_per_class": train_per_class,
        "batch_size": batch_size,
        "seconds": time.perf_counter() - t0,
        "stream": stream_name,
        "backbone": backbone,
        "method": "seqlora",
    }
    log(f"collected {g.shape[0]} steps x {g.shape[1]} layers x {g.shape[2]} gradients in {info['seconds']:.1f}s")
    return g, info


def random_vectors(kind: str, n: int, p: int, gen: torch.Generator) -> torch.Tensor:
    if kind == "gaussian":
        return torch.randn(n, p, generator=gen)
    if kind == "sparse":
        return torch.randn(n, p, generator=gen) * (torch.rand(n, p, generator=gen) < 0.01)
    if kind == "heavy":
        u = torch.rand(n, p, generator=gen).clamp_min(1e-12)
        sign = torch.where(torch.rand(n, p, generator=gen) < 0.5, -1.0, 1.0)
        return sign * u.pow(-1.0 / 1.5)
    raise ValueError(kind)


def pair_sets(args: argparse.Namespace, real: torch.Tensor | None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (x, y) with x, y of shape (pairs, p): the differences whose L1 norm is estimated."""
    gen = torch.Generator().manual_seed(args.seed)
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if real is not None:
        n, L, _ = real.shape
        idx = [(l, i, j) for l in range(L) for i in range(n) for j in range(i + 1, n)]
        pick = torch.randperm(len(idx), generator=gen)[: args.pairs].tolist()
        sel = [idx[k] for k in pick]
        out[f"{args.backbone}-grad"] = (
            torch.stack([real[i, l] for l, i, _ in sel]),
            torch.stack([real[j, l] for l, _, j in sel]),
        )
    for kind in args.random:
        v = random_vectors(kind, 2 * args.random_pairs, args.p, gen)
        out[kind] = (v[: args.random_pairs], v[args.random_pairs :])
    return out


def measure(x: torch.Tensor, y: torch.Tensor, s: int, seeds: list[int]) -> dict[str, Any]:
    exact = exact_l1(x, y)
    per_seed_med, per_seed_norm_med, pooled, pooled_norm = [], [], [], []
    for seed in seeds:
        sk = LinearSketch(x.shape[-1], s, "cauchy", seed)
        est = sk.l1_distance(sk.apply(x), sk.apply(y)).double()
        ratio = est / exact
        rel = (ratio - 1).abs()
        factor = ratio.median()
        rel_norm = (ratio / factor - 1).abs()
        per_seed_med.append(float(rel.median()))
        per_seed_norm_med.append(float(rel_norm.median()))
        pooled.append(rel)
        pooled_norm.append(rel_norm)
    allrel = torch.cat(pooled)
    allnorm = torch.cat(pooled_norm)
    return {
        "pooled_median": float(allrel.median()),
        "pooled_p90": float(torch.quantile(allrel, 0.9)),
        "per_seed_median_min": min(per_seed_med),
        "per_seed_median_med": float(np.median(per_seed_med)),
        "per_seed_median_max": max(per_seed_med),
        "seeds_over_10pct": int(sum(m > 0.10 for m in per_seed_med)),
        "factor_removed_pooled_median": float(allnorm.median()),
        "factor_removed_per_seed_max": max(per_seed_norm_med),
        "theory_median": 0.674 * math.pi / (2 * math.sqrt(s)),
        "per_seed_medians": per_seed_med,
        "pairs": int(x.shape[0]),
        "seeds": len(seeds),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024], help="sketch sizes s")
    ap.add_argument("--p", type=int, default=6144, help="random-vector size (MiniLM r=8 grad signature: 6144)")
    ap.add_argument("--seeds", type=int, default=16, help="sketch seeds pooled per s")
    ap.add_argument("--steps", type=int, default=24, help="MiniLM training steps to collect (0 = no model)")
    ap.add_argument("--tasks", type=int, default=2, help="tasks the steps are spread over")
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--stream", default="wordnet")
    ap.add_argument("--train-per-class", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--pairs", type=int, default=400, help="real-gradient pairs (same layer, two steps)")
    ap.add_argument("--random", nargs="*", default=["gaussian", "sparse", "heavy"])
    ap.add_argument("--random-pairs", type=int, default=200)
    ap.add_argument(
        "--grad-cache",
        default=str(BENCH_DIR / "minilm_wordnet_grads.pt"),
        help="reuse collected gradients from this file when its settings match ('' = never)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--name", default="bench_sketch")
    args = ap.parse_args(argv)
    machine = Machine(args.threads)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    real, real_info = None, None
    if args.steps > 0:
        key = {
            "steps": args.steps,
            "tasks": args.tasks,
            "train_per_class": args.train_per_class,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "backbone": args.backbone,
            "stream": args.stream,
        }
        cache = Path(args.grad_cache) if args.grad_cache else None
        if cache is not None and cache.exists():
            blob = torch.load(cache, weights_only=False)
            if blob.get("key") == key:
                real, real_info = blob["grads"], {**blob["info"], "from_cache": str(cache)}
                log(f"gradients from {cache}")
        if real is None:
            real, real_info = real_gradients(
                args.steps,
                args.tasks,
                args.train_per_class,
                args.batch_size,
                args.seed,
                log,
                args.backbone,
                args.stream,
            )
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"key": key, "grads": real, "info": real_info}, cache)
        real_info["zero_fraction"] = float((real == 0).float().mean())
        real_info["grad_l1_median"] = float(real.abs().sum(-1).median())
    sets = pair_sets(args, real)
    rows = []
    for s in args.dims:
        for name, (x, y) in sets.items():
            t0 = time.perf_counter()
            r = measure(x, y, s, list(range(args.seeds)))
            raw = x.shape[-1] * 4
            rows.append(
                {
                    "vectors": name,
                    "s": s,
                    "p": int(x.shape[-1]),
                    **r,
                    "sketch_bytes": s * 4,
                    "raw_bytes_fp32": raw,
                    "compression": raw / (s * 4),
                    "seconds": time.perf_counter() - t0,
                }
            )
        clear_sketch_cache()
        log(f"s={s} done")
    m = machine.finish()
    headers = [
        "vectors",
        "s",
        "pooled median rel. err",
        "p90",
        "per-seed median (min / med / max)",
        "seeds > 10%",
        "factor removed: pooled median (worst seed)",
        "theory",
        "bytes / sketch",
        "raw fp32",
        "ratio",
    ]
    table = [
        [
            r["vectors"],
            r["s"],
            f"{100 * r['pooled_median']:.1f}%",
            f"{100 * r['pooled_p90']:.1f}%",
            f"{100 * r['per_seed_median_min']:.1f} / {100 * r['per_seed_median_med']:.1f} / "
            f"{100 * r['per_seed_median_max']:.1f}%",
            f"{r['seeds_over_10pct']}/{r['seeds']}",
            f"{100 * r['factor_removed_pooled_median']:.1f}% ({100 * r['factor_removed_per_seed_max']:.1f}%)",
            f"{100 * r['theory_median']:.1f}%",
            fmt_bytes(r["sketch_bytes"]),
            fmt_bytes(r["raw_bytes_fp32"]),
            f"{r['compression']:.0f}x",
        ]
        for r in rows
    ]
    md = md_table(headers, table)
    print(f"Machine: {machine_line(m)}\nCommand: `{m['command']}`\n")
    if real_info:
        print(
            f"Real gradients: {real_info['steps']} steps x {real_info['layers']} layers x p={real_info['p']} "
            f"({real_info['backbone']}, seqlora, {real_info['stream']}, {real_info['tasks']} tasks); "
            f"{min(args.pairs, len(sets.get(args.backbone + '-grad', ([],))[0]))} same-layer step pairs.\n"
        )
    print(md)
    path = write_json(
        args.name,
        {
            "benchmark": "sketch",
            "machine": m,
            "args": vars(args),
            "real_gradients": real_info,
            "rows": rows,
            "table_md": md,
        },
        args.out,
    )
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
