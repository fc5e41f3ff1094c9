"""SmolLM2-135M-Instruct on the WordNet stream read as instructions (prompt → answer), scored by greedy decoding.

A small, CPU-sized run of the causal-LM instruction mode (:mod:`treelora.lm`): the learner trains LoRA on the
attention q/v projections of all 30 blocks (60 "layers") on ``prompt + " " + answer + eos`` and scores each task
by greedy decoding mapped to the task's readable class names ("noun animal", ...). Results go to
``<out>/<method><suffix>/seed<k>/`` through :func:`treelora.results.write_run` (results.json, metrics.csv, plots).

    # the measured run (about 10 minutes on 2 busy cores)
    nice -n 5 python simulations/smollm2_instruction.py --methods seqlora treelora --threads 1
    # TreeLoRA with the finite-difference regulariser (sdpa attention, one extra forward/backward)
    python simulations/smollm2_instruction.py --methods treelora --set regularizer=l1-grad-fd --suffix=-fd
    # time a few steps per method (task 1 has no regulariser, task 2 does) and exit
    python simulations/smollm2_instruction.py --measure-steps 3

``--backbone tiny-llama --stream synthetic-text`` runs the same plumbing in seconds. Exact ``l1-grad`` needs eager
attention (double backward); every other regulariser runs with PyTorch's SDPA kernel.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from treelora.backbones import load_backbone
from treelora.config import METHODS, LearnerConfig, make_config
from treelora.data import iterate_batches
from treelora.learner import ContinualLearner
from treelora.overrides import coerce, parse_pairs
from treelora.results import write_run
from treelora.streams import load_stream


def build(args: argparse.Namespace, method: str, stream, overrides: dict):
    defaults = {"seed": args.seed, "epochs": args.epochs, "batch_size": args.batch_size,
                "eval_batch_size": args.eval_batch_size, "lm_mode": "generate", "progress": not args.no_progress}
    cfg = make_config(method, **{**defaults, **overrides})  # --set wins over the flags' values
    attn = cfg.attn_implementation
    t0 = time.perf_counter()
    backbone = load_backbone(args.backbone, seed=args.seed, attn_implementation=attn)
    learner = ContinualLearner(backbone, stream.num_classes(), cfg, stream=stream)
    print(f"   {args.backbone} ({attn} attention) + LoRA on {learner.lora.num_layers} modules, "
          f"loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    return learner


def measure(learner: ContinualLearner, stream, steps: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per step, first step of each task excluded, on tasks 1 and 2 (the latter regularised).

    The process CPU time is the fairer figure on a shared machine: wall time grows with other load."""
    out = []
    for j, task in enumerate(stream.tasks[:2]):
        encoded = learner.encode(task.train)
        learner.begin_task(f"t{j}", task.classes)
        learner.start_epoch(steps + 1)
        times = []
        for i, batch in enumerate(iterate_batches(encoded, learner.cfg.batch_size, shuffle=True, seed=j)):
            if i > steps:
                break
            t0, c0 = time.perf_counter(), time.process_time()
            learner.train_step(batch)
            times.append((time.perf_counter() - t0, time.process_time() - c0))
        learner.end_task()
        n = max(1, len(times) - 1)
        out.append((sum(w for w, _ in times[1:]) / n, sum(c for _, c in times[1:]) / n))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["seqlora", "treelora"], choices=METHODS)
    p.add_argument("--backbone", default="smollm2")
    p.add_argument("--stream", default="wordnet")
    p.add_argument("--num-tasks", type=int, default=3)
    p.add_argument("--train-per-class", type=int, default=12)
    p.add_argument("--test-per-class", type=int, default=8)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-batch-size", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    p.add_argument("--suffix", default="", help="appended to the method name in the output path and results")
    p.add_argument("--zero-shot", action="store_true", help="also score every task before training")
    p.add_argument("--measure-steps", type=int, default=0, help="only time N steps per task on 2 tasks, then exit")
    p.add_argument("--out", default="runs/smollm2")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    try:
        overrides = coerce(LearnerConfig, parse_pairs(args.set or []), kebab=True)
    except ValueError as exc:
        p.error(f"--set: {exc}")
    if args.threads:
        torch.set_num_threads(args.threads)
    stream = load_stream(
        args.stream,
        seed=args.seed,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        num_tasks=args.num_tasks,
    )
    n_train, n_test = sum(len(t.train) for t in stream.tasks), sum(len(t.test) for t in stream.tasks)
    print(f"{stream.name}: {len(stream.tasks)} tasks, {n_train} train / {n_test} test examples; "
          f"torch threads {torch.get_num_threads()}", flush=True)
    t_all = time.perf_counter()
    for method in args.methods:
        label = method + args.suffix
        print(f"== {label}", flush=True)
        learner = build(args, method, stream, overrides)
        if args.measure_steps:
            (plain, plain_cpu), (reg, reg_cpu) = measure(learner, stream, args.measure_steps)
            print(f"   step wall (CPU): task 1 {plain:.2f} s ({plain_cpu:.2f} s), task 2 {reg:.2f} s ({reg_cpu:.2f} s, "
                  f"{learner.cfg.regularizer}) -> x{reg_cpu / plain_cpu:.2f} CPU", flush=True)
            continue
        zero_shot = None
        if args.zero_shot:
            zero_shot = [learner.evaluate(task) for task in stream.tasks]  # task-free: the tasks' own classes
            print("   zero-shot:", " ".join(f"{100 * a:.1f}" for a in zero_shot), flush=True)
        t0 = time.perf_counter()
        results = learner.run_stream(stream)
        results["wall_time_s"] = time.perf_counter() - t0
        results["label"] = label
        results["lm_mode"] = "generate (greedy decoding)"
        results["zero_shot_accuracy"] = zero_shot
        run_dir = write_run(results, Path(args.out) / label / f"seed{args.seed}", plots=not args.no_plots)
        m = results["metrics"]
        print("   R =", [[None if x is None else round(100 * x, 1) for x in row] for row in results["accuracy_matrix"]])
        print(
            f"   ACC {100 * m['acc']:.2f}%  BWT {100 * m['bwt']:.2f}%  forgetting {100 * m['forgetting']:.2f}%  "
            f"step {results['step_time_s']:.2f} s  wall {results['wall_time_s']:.0f} s  -> {run_dir}",
            flush=True,
        )
    print(f"total {time.perf_counter() - t_all:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
