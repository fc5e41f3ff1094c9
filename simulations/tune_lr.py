"""Tune a method's LoRA learning rate (or any numeric knob) on a validation split carved from the training split —
never the test split.

    python -m simulations.tune_lr --preset stress --method seqlora treelora --lrs 1e-3 2e-3 5e-3 --seeds 0
    # a regulariser's weight instead of the lr: --knob names a LearnerConfig field, --lrs its values
    python -m simulations.tune_lr --preset stress --method ewc --knob ewc_lambda --lrs 1e3 5e3 2e4 --seeds 0 1

**Protocol.** For each seed the stream is drawn as in ``bench_central`` (data seed = seed, the same sizes, so the
training examples are the benchmark's);
then, per class, the last ``--val-fraction`` of its *training* examples (at least one) becomes that task's
validation set and only the rest is trained on; the test split is not read at all. Every (method, lr) pair runs
the whole stream and is scored on the validation sets with the three views (:mod:`treelora.evaluation`). The
chosen value maximises the mean over seeds of ``--select`` (default TIL ACC on validation); ties go to the smaller
one. Output: ``<out>/tune_lr_<preset>.json`` (``tune_<knob>_<preset>.json`` for another knob; ``--name`` names it)
and a markdown table.
"""

from __future__ import annotations

import simulations.bench_common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import copy
import statistics
import sys
from typing import Any

from simulations.bench_common import Machine, machine_line, md_table, write_json


def validation_stream(stream: Any, fraction: float) -> Any:
    """A copy of ``stream`` whose tasks train on the first ``1 − fraction`` of each class's training examples and
    are scored (as ``test``) on the rest; the original test split is dropped."""
    out = copy.copy(stream)
    out.tasks = []
    for task in stream.tasks:
        train, val = [], []
        for c in task.classes:
            items = [e for e in task.train if e.label == c]
            k = max(1, round(fraction * len(items))) if len(items) > 1 else 0
            train += items[: len(items) - k]
            val += items[len(items) - k:]
        t = copy.copy(task)
        t.train, t.test = train, val
        out.tasks.append(t)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="stress")
    p.add_argument("--method", nargs="+", default=["seqlora"])
    p.add_argument("--lrs", "--values", dest="lrs", nargs="+", type=float, default=[1e-3, 2e-3, 5e-3],
                   help="the values of --knob to try")
    p.add_argument("--knob", default="lr", help="the LearnerConfig field tuned (default lr)")
    p.add_argument("--name", default=None, help="output name (default tune_lr_<preset>, tune_<knob>_<preset>)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--stream", default="wordnet")
    p.add_argument("--backbone", default="minilm")
    p.add_argument("--num-tasks", type=int, default=None)
    p.add_argument("--train-per-class", type=int, default=None)
    p.add_argument("--test-per-class", type=int, default=None, help="as the benchmark draws it (never read)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--select", default="til_acc", help="a key of treelora.evaluation.flat_view_metrics")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="simulations/results")
    args = p.parse_args(argv)
    machine = Machine(args.threads)

    from treelora.backbones import load_backbone
    from treelora.config import LearnerConfig, make_config
    from treelora.evaluation import flat_view_metrics
    from treelora.learner import ContinualLearner
    from treelora.overrides import coerce, parse_pairs
    from treelora.presets import load_preset, preset_path
    from treelora.streams import load_stream

    preset, sizes = load_preset(args.preset)
    preset.update(coerce(LearnerConfig, parse_pairs(args.set), kebab=True))
    train_pc = args.train_per_class or sizes.get("train_per_class", 64)
    num_tasks = args.num_tasks or sizes.get("num_tasks")
    test_pc = args.test_per_class or sizes.get("test_per_class", 16)  # the same draw as the benchmark's train split
    knob = args.knob
    kind = type(getattr(LearnerConfig(), knob, None))  # a field's default says its type (bool, str, None: refused)
    if kind not in (int, float):
        p.error(f"--knob {knob!r} is not a numeric LearnerConfig field")
    if kind is int:  # an int knob (reg_every, reg_top_layers, ...) gets ints
        if any(v != int(v) for v in args.lrs):
            p.error(f"--knob {knob} takes whole numbers, got {args.lrs}")
        args.lrs = [int(v) for v in args.lrs]
    rows, chosen = [], {}
    for method in args.method:
        scores: dict[float, list[float]] = {v: [] for v in args.lrs}
        for seed in args.seeds:
            base = load_stream(args.stream, seed=seed, train_per_class=train_pc, test_per_class=test_pc,
                               num_tasks=num_tasks)
            stream = validation_stream(base, args.val_fraction)
            for value in args.lrs:
                cfg = make_config(method, **{**preset, knob: value, "seed": seed, "progress": False,
                                             "threads": args.threads})
                backbone = load_backbone(args.backbone, seed=seed, attn_implementation=cfg.attn_implementation)
                res = ContinualLearner(backbone, stream.num_classes(), cfg, stream=stream).run_stream(stream)
                flat = flat_view_metrics(res)
                scores[value].append(flat[args.select])
                rows.append({"method": method, "seed": seed, knob: value, **flat})
                print(f"{method} seed {seed} {knob} {value:g}: val {args.select} {100 * flat[args.select]:.2f}",
                      file=sys.stderr, flush=True)
        means = {v: statistics.mean(s) for v, s in scores.items()}
        chosen[method] = max(sorted(means), key=lambda v: (means[v], -v))
    m = machine.finish()
    name = preset_path(args.preset).stem
    out_name = args.name or (f"tune_lr_{name}" if knob == "lr" else f"tune_{knob}_{name}")
    path = write_json(out_name, {"machine": m, "preset": name, "select": args.select, "knob": knob,
                                 "overrides": preset, "val_fraction": args.val_fraction, "rows": rows,
                                 "chosen": chosen}, args.out)
    print(md_table(["method", knob, f"validation {args.select} % (per seed)", "chosen"],
                   [[r["method"], f"{r[knob]:g}", f"{100 * r[args.select]:.2f} (seed {r['seed']})",
                     "yes" if chosen[r["method"]] == r[knob] else ""] for r in rows]))
    print(f"\nmachine: {machine_line(m)}\n-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
