"""Centralized benchmark that can tell methods apart (issue 13): variants × paired seeds on a regime preset.

    python -m simulations.bench_central --preset stress --seeds 0 1 2          # the committed table (see BENCHMARKS.md)
    python -m simulations.bench_central --preset converged --variants seqlora treelora-sqrt ewc --seeds 0 1

**Protocol.** For every seed ``k`` the stream is drawn with data seed ``k`` and every variant trains on it with
training seed ``k``: variants are paired by seed. Each run is :meth:`ContinualLearner.run_stream` under the
preset (``simulations/presets/centralized/<preset>.toml``, :mod:`treelora.presets`) with the variant's overrides
on top, evaluated with the three views of :mod:`treelora.evaluation` (CIL, TIL, task inference) from one
forward pass per test set. Each run's ``results.json`` is written under ``--runs`` (a run already there is read
back, not retrained: an interrupted benchmark resumes). The table gives, per metric (CIL ACC, TIL ACC, TIL BWT,
...), every variant's per-seed values, mean ± sd, and the mean paired difference to ``seqlora`` with its 95%
Student-t interval and whether it separates (:mod:`treelora.paired`).

**Reference rows**, not competitors: ``head-only`` (LoRA frozen: what the backbone and the head give without any
adapter) and ``oracle`` (``task_aware``: each task scored with its own stored snapshot and its own classes; its
TIL BWT and forgetting are 0 by construction).
"""

from __future__ import annotations

import simulations.bench_common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from simulations.bench_common import Machine, machine_line, write_json
from simulations.variants import VARIANTS

DEFAULT_VARIANTS = ["seqlora", "treelora-sqrt", "ewc", "olora", "head-only", "oracle"]
METRICS = {  # key in treelora.evaluation.flat_view_metrics -> title
    "cil_acc": "CIL ACC", "til_acc": "TIL ACC", "til_bwt": "TIL BWT", "cil_bwt": "CIL BWT",
    "til_forgetting": "TIL forgetting", "task_inference_acc": "task-inference ACC",
}
LOWER_IS_BETTER = {"til_forgetting"}
REFERENCE = "seqlora"


READBACK_IGNORED = ("threads", "progress")  # config keys that do not change a run's results


def run_one(variant: str, seed: int, preset: dict[str, Any], sizes: dict[str, Any], args: argparse.Namespace,
            run_dir: Path) -> dict[str, Any]:
    """Train ``variant`` on seed ``seed`` (or read its results back) and return its results dict.

    A run read back must have been trained with the configuration this call would use (``--set`` and
    ``--variant-set`` included, ``threads``/``progress`` aside): a run directory left by another configuration is
    refused with the keys that differ, so a table never mixes configurations under one name. The backbone, the
    stream and its sizes are checked the same way (``bench_data`` in the run's results)."""
    from dataclasses import asdict

    from treelora.config import make_config

    method, overrides = VARIANTS[variant].method, VARIANTS[variant].overrides
    extra = args.variant_overrides.get(variant, {})
    cfg = make_config(method, **{**preset, **overrides, **extra, "seed": seed, "progress": False,
                                 "threads": args.threads})
    path = run_dir / "results.json"
    data = {"backbone": args.backbone, "stream": args.stream, **sizes}  # what the config does not hold
    if path.is_file():
        results = json.loads(path.read_text())
        stored, wanted = results.get("config", {}), asdict(cfg)
        # runs written before the data record was kept have none: their config is still checked
        stored, wanted = {**stored, **results.get("bench_data", {})}, {**wanted, **data}
        differ = sorted(k for k in stored.keys() & wanted.keys() if k not in READBACK_IGNORED
                        and json.loads(json.dumps(stored[k])) != json.loads(json.dumps(wanted[k])))
        if differ:
            what = ", ".join(f"{k}: {stored[k]!r} there, {wanted[k]!r} now" for k in differ)
            raise SystemExit(f"{path} was trained with another configuration ({what}); "
                             "use another --runs directory or delete it")
        return results
    from treelora.backbones import load_backbone
    from treelora.learner import ContinualLearner
    from treelora.results import write_run
    from treelora.streams import load_stream

    stream = load_stream(args.stream, seed=seed, train_per_class=sizes["train_per_class"],
                         test_per_class=sizes["test_per_class"], num_tasks=sizes.get("num_tasks"))
    backbone = load_backbone(args.backbone, seed=seed, attn_implementation=cfg.attn_implementation)
    learner = ContinualLearner(backbone, stream.num_classes(), cfg, stream=stream)
    t0 = time.perf_counter()
    results = learner.run_stream(stream)
    results["label"] = variant
    results["bench_data"] = data
    results["wall_time_s"] = time.perf_counter() - t0
    write_run(results, run_dir, plots=False)
    return results


def table(values: dict[str, dict[int, float]], metric: str) -> tuple[list[dict[str, Any]], str]:
    """Paired rows vs seqlora and their markdown (values in %)."""
    from treelora.paired import markdown_paired, paired_table

    rows = paired_table(values, REFERENCE)
    for r in rows:
        r["role"] = VARIANTS[r["method"]].role
    md = markdown_paired(rows, REFERENCE, metric=f"{METRICS[metric]} %")
    lines = md.splitlines()
    lower = metric in LOWER_IS_BETTER
    for i, r in enumerate(rows):  # mark the reference rows in the method column
        r["lower_is_better"] = lower
        if r["role"] == "reference":
            lines[i + 2] = lines[i + 2].replace(f"| {r['method']} |", f"| {r['method']} (reference) |", 1)
        if lower:  # paired.markdown_paired names the sign; for forgetting a lower value is the better one
            lines[i + 2] = lines[i + 2].replace("| yes, better |", "| yes, higher (worse) |").replace(
                "| yes, worse |", "| yes, lower (better) |")
    return rows, "\n".join(lines)


def head_to_head(values: dict[str, dict[str, dict[int, float]]], variants: list[str]) -> list[dict[str, Any]]:
    """Every ``method`` variant against every ``baseline`` variant on CIL ACC, TIL ACC and TIL BWT."""
    from treelora.paired import paired_difference

    out = []
    for v in (x for x in variants if VARIANTS[x].role == "method"):
        for b in (x for x in variants if VARIANTS[x].role == "baseline"):
            for m in ("cil_acc", "til_acc", "til_bwt"):
                seeds = sorted(set(values[m][v]) & set(values[m][b]))
                if seeds:
                    diff = paired_difference([values[m][v][s] for s in seeds], [values[m][b][s] for s in seeds])
                    out.append({"variant": v, "vs": b, "metric": m, "seeds": seeds, "diff": diff})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="stress", help="a preset name or TOML file (treelora.presets)")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=sorted(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--stream", default="wordnet")
    p.add_argument("--backbone", default="minilm")
    p.add_argument("--num-tasks", type=int, default=None, help="default: the preset's, else all")
    p.add_argument("--train-per-class", type=int, default=None, help="default: the preset's")
    p.add_argument("--test-per-class", type=int, default=None, help="default: the preset's")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, all variants")
    p.add_argument("--variant-set", action="append", default=[], metavar="VARIANT:KEY=VALUE",
                   help="config override for one variant (e.g. its tuned lr: seqlora:lr=5e-4)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", default=None, help="run directories (default runs/central/<preset>)")
    p.add_argument("--out", default="simulations/results")
    p.add_argument("--tag", default="", help="suffix of the output name: central_<preset>[-TAG].json/.md")
    args = p.parse_args(argv)
    if REFERENCE not in args.variants:
        raise SystemExit(f"--variants must include {REFERENCE} (the paired reference)")
    machine = Machine(args.threads)

    from treelora.config import LearnerConfig
    from treelora.evaluation import flat_view_metrics
    from treelora.overrides import coerce, parse_pairs
    from treelora.presets import load_preset, preset_path

    preset, preset_sizes = load_preset(args.preset)
    preset.update(coerce(LearnerConfig, parse_pairs(args.set), kebab=True))
    args.variant_overrides = {}
    for item in args.variant_set:
        variant, sep, pair = item.partition(":")
        if not sep or variant not in VARIANTS:
            p.error(f"--variant-set {item!r}: expected VARIANT:KEY=VALUE with VARIANT one of {', '.join(VARIANTS)}")
        args.variant_overrides.setdefault(variant, {}).update(coerce(LearnerConfig, parse_pairs([pair]), kebab=True))
    sizes = {"train_per_class": 64, "test_per_class": 16, "num_tasks": None, **preset_sizes}
    for key in ("num_tasks", "train_per_class", "test_per_class"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    name = preset_path(args.preset).stem
    runs = Path(args.runs) if args.runs else Path("runs") / "central" / name
    values: dict[str, dict[str, dict[int, float]]] = {m: {v: {} for v in args.variants} for m in METRICS}
    per_run = []
    for seed in args.seeds:  # seed-major: a cut-short benchmark still has every variant on the first seeds
        for variant in args.variants:
            t0 = time.perf_counter()
            res = run_one(variant, seed, preset, sizes, args, runs / variant / f"seed{seed}")
            flat = flat_view_metrics(res)
            for m in METRICS:
                values[m][variant][seed] = flat[m]
            per_run.append({"variant": variant, "seed": seed, **flat, "step_time_s": res["step_time_s"],
                            "wall_time_s": res.get("wall_time_s"), "accuracy_matrices": {
                                v: b["accuracy_matrix"] for v, b in res["views"].items()}})
            print(f"{variant} seed {seed}: CIL {100 * flat['cil_acc']:.2f} TIL {100 * flat['til_acc']:.2f} "
                  f"TIL BWT {100 * flat['til_bwt']:.2f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr,
                  flush=True)
    tables, md = {}, [f"# Centralized benchmark, preset {name} ({args.stream}, {args.backbone})", ""]
    for m in METRICS:
        rows, text = table(values[m], m)
        tables[m] = rows
        md += [f"## {METRICS[m]}", "", text, ""]
    h2h = head_to_head(values, args.variants)
    if h2h:
        md += ["## TreeLoRA variants against every baseline (paired over common seeds, 95% interval)", "",
               "| variant | vs | metric | n | Δ mean | 95% CI | separates |", "|---|---|---|---|---|---|---|"]
        for r in h2h:
            d = r["diff"]
            ci = "-" if d["low"] is None else f"[{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]"
            md.append(f"| {r['variant']} | {r['vs']} | {METRICS[r['metric']]} | {d['n']} | {100 * d['mean']:+.2f} | "
                      f"{ci} | {d['verdict']} |")
        md.append("")
    steps = {v: sum(r["step_time_s"] for r in per_run if r["variant"] == v) / len(args.seeds) for v in args.variants}
    md += ["## Step time (mean over seeds; shared machine, ratios only)", "",
           "| variant | step s | × seqlora |", "|---|---|---|"]
    md += [f"| {v} | {s:.3f} | {s / steps[REFERENCE]:.2f} |" for v, s in steps.items()]
    m = machine.finish()
    md += ["", f"Machine: {machine_line(m)}", f"Command: `{m['command']}`"]
    payload = {"machine": m, "preset": name, "config_overrides": preset, "sizes": sizes, "stream": args.stream,
               "backbone": args.backbone, "seeds": args.seeds,
               "variants": {v: [VARIANTS[v].method, VARIANTS[v].overrides, VARIANTS[v].role] for v in args.variants},
               "variant_overrides": args.variant_overrides,
               "reference": REFERENCE, "tables": tables, "head_to_head": h2h, "runs": per_run, "step_time_s": steps}
    stem = f"central_{name}" + (f"-{args.tag}" if args.tag else "")
    path = write_json(stem, payload, args.out)
    (Path(args.out) / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
