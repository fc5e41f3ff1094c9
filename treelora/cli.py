"""``treelora`` command line: train task streams centrally and compare runs.

    treelora train --method treelora seqlora --stream wordnet --backbone minilm --seeds 0 1 2 --out runs/table
    treelora compare runs/table
    treelora list
    treelora check-stream my_stream.jsonl
    treelora export runs/table                 # every task's adapter in peft's format, with its head
    treelora report runs/table                 # one self-contained HTML page

``train`` writes ``<out>/<method>/seed<k>/`` per run (results.json, metrics.csv, accuracy_matrix.png, tree.png and
tree.txt for methods that select from their tree, adapters/ with every task's snapshot) and ``<out>/summary.md`` +
``summary.json`` + ``acc.png`` over all of them. Any config field can be
set with ``--set key=value`` (see ``treelora.config.LearnerConfig``; dashes allowed in keys; the value is a TOML
literal or a bare string, see ``treelora.overrides``).
"""

from __future__ import annotations

import os

# OpenMP's default active wait made 2-thread steps 4x slower on a shared CPU (BENCHMARKS.md); set before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .config import METHODS, LearnerConfig, config_fields, make_config
from .overrides import coerce, parse_pairs


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set key=value`` items → ``{LearnerConfig field: typed value}``; a bad item exits naming it."""
    try:
        return coerce(LearnerConfig, parse_pairs(items), kebab=True)
    except ValueError as exc:
        raise SystemExit(f"--set: {exc}") from None


DEFAULT_SIZES = {"train_per_class": 64, "test_per_class": 16, "num_tasks": None, "data_seed": None}


def train_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config overrides, stream sizes)`` of ``train``: the ``--preset`` file's, then ``--set`` on top (config);
    explicit stream options over the preset's ``[stream]`` over :data:`DEFAULT_SIZES` (stream)."""
    from .presets import load_preset

    config: dict[str, Any] = {}
    preset_sizes: dict[str, Any] = {}
    if getattr(args, "preset", None):
        try:
            config, preset_sizes = load_preset(args.preset)
        except (ValueError, FileNotFoundError) as exc:
            raise SystemExit(f"--preset: {exc}") from None
    config.update(parse_overrides(args.set or []))
    sizes = {k: getattr(args, k) if getattr(args, k, None) is not None else preset_sizes.get(k, default)
             for k, default in DEFAULT_SIZES.items()}
    return config, sizes


def parse_epochs(text: str) -> tuple[int | None, list[int] | None]:
    """``"2"`` → (2, None); ``"2,1,3"`` → (None, [2, 1, 3]) per task."""
    parts = [int(x) for x in text.split(",") if x.strip()]
    if not parts or any(p < 1 for p in parts):
        raise SystemExit(f"--epochs must be positive integers, got {text!r}")
    return (parts[0], None) if len(parts) == 1 else (None, parts)


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .backbones import load_backbone
    from .evaluation import flat_view_metrics
    from .export import save_task_adapters
    from .learner import ContinualLearner
    from .plots import plot_metric_bars
    from .results import compare_runs, find_results, markdown_table, write_json_atomic, write_run
    from .streams import load_stream

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides, sizes = train_settings(args)
    epochs, per_task = parse_epochs(args.epochs) if args.epochs else (None, None)
    if epochs is not None:
        overrides["epochs"] = epochs
    out = Path(args.out)
    order = [int(x) for x in args.order.split(",")] if args.order else None
    for seed in args.seeds:
        stream = load_stream(
            args.stream,
            seed=sizes["data_seed"] if sizes["data_seed"] is not None else seed,
            order=order,
            train_per_class=sizes["train_per_class"],
            test_per_class=sizes["test_per_class"],
            num_tasks=sizes["num_tasks"],
        )
        for method in args.method:
            cfg = make_config(method, seed=seed, **overrides)
            print(f"== {method} seed {seed}: {len(stream.tasks)} tasks of {stream.name} on {args.backbone}", flush=True)
            backbone = load_backbone(args.backbone, seed=seed, attn_implementation=cfg.attn_implementation,
                                     device=cfg.device)
            learner = ContinualLearner(backbone, stream.num_classes(), cfg, stream=stream)
            t0 = time.perf_counter()
            results = learner.run_stream(stream, epochs=per_task)
            results["label"] = args.label or method
            results["task_families"] = [t.family_name for t in stream.tasks]  # for figures (treelora.task_labels)
            results["wall_time_s"] = time.perf_counter() - t0
            run_dir = write_run(results, out / (args.label or method) / f"seed{seed}", plots=not args.no_plots)
            save_task_adapters(learner, run_dir, backbone=args.backbone, stream=stream)  # for `treelora export`
            m, v = results["metrics"], flat_view_metrics(results)
            print(
                f"   ACC {100 * m['acc']:.2f}%  BWT {100 * m['bwt']:.2f}%  forgetting {100 * m['forgetting']:.2f}%"
                f"  | CIL {100 * v['cil_acc']:.2f}%  TIL {100 * v['til_acc']:.2f}% (BWT {100 * v['til_bwt']:.2f})"
                f"  task-inference {100 * v['task_inference_acc']:.2f}%{'  [ORACLE]' if cfg.task_aware else ''}"
                f"  step {1000 * results['step_time_s']:.1f} ms  -> {run_dir}",
                flush=True,
            )
    table = compare_runs(find_results([out]))
    md = markdown_table(table)
    (out / "summary.md").write_text(md + "\n")
    write_json_atomic(out / "summary.json", table)
    if not args.no_plots:
        plot_metric_bars(table, "acc", out / "acc.png", percent=True)
    print(md)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .results import compare_runs, find_results, markdown_table

    md = markdown_table(compare_runs(find_results(args.runs)))
    print(md)
    if args.out:
        Path(args.out).write_text(md + "\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_runs

    for run, (where, folders) in export_runs(args.runs, args.out, state_dir=args.state_dir).items():
        counts = {k: sum(f["kind"] == k for f in folders) for k in ("task", "leaf", "client")}
        kinds = ", ".join(f"{n} {k} adapter{'s' if n > 1 else ''}" for k, n in counts.items() if n)
        print(f"{run}: {kinds or 'nothing to export'} -> {where} (peft folders; how to load: {where}/export.json)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report_html import write_report

    if args.out:
        out = Path(args.out)
    else:
        first = Path(args.runs[0])
        out = (first if first.is_dir() else first.parent) / "report.html" if len(args.runs) == 1 else Path(
            "report.html")
    print(f"report: {write_report(args.runs, out, title=args.title).resolve()}")
    return 0


def cmd_check_stream(args: argparse.Namespace) -> int:
    import json

    from .stream_check import describe_stream, render_stream_summary
    from .streams import load_jsonl_stream

    path = args.file[len("jsonl:"):] if args.file.startswith("jsonl:") else args.file
    stream = load_jsonl_stream(path, train_per_class=args.train_per_class, test_per_class=args.test_per_class)
    desc = describe_stream(stream)
    print(json.dumps(desc, indent=2) if args.json else render_stream_summary(desc))
    return 0


def cmd_list(_: argparse.Namespace) -> int:
    from .backbones import list_backbones
    from .streams import list_streams

    print("methods:  ", ", ".join(METHODS))
    print("streams:  ", ", ".join(list_streams()), "(or jsonl:/path/file.jsonl: your own tasks, one JSON object a "
          "line; the format is in README.md, 'Your own task stream'; check a file with `treelora check-stream FILE`)")
    print("backbones:", ", ".join(list_backbones()), "(or a local model directory)")
    print("config:   ", ", ".join(f.name for f in config_fields()))
    from .presets import list_presets

    print("presets:  ", ", ".join(list_presets()), "(treelora train --preset NAME|FILE)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="treelora", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a task stream with one or more methods and seeds")
    t.add_argument("--method", nargs="+", default=["treelora"], choices=METHODS)
    t.add_argument("--stream", default="wordnet")
    t.add_argument("--backbone", default="minilm")
    t.add_argument("--seeds", nargs="+", type=int, default=[0])
    t.add_argument("--data-seed", type=int, default=None, help="fix the train/test draw across seeds")
    t.add_argument("--epochs", default=None, help="epochs per task: N, or a comma list per task")
    t.add_argument("--order", default=None, help="task order as a comma list of indices")
    t.add_argument("--num-tasks", type=int, default=None)
    t.add_argument("--train-per-class", type=int, default=None, help="default: the preset's, else 64")
    t.add_argument("--test-per-class", type=int, default=None, help="default: the preset's, else 16")
    t.add_argument("--preset", default=None, metavar="NAME|FILE",
                   help="a regime preset (simulations/presets/centralized/NAME.toml or a TOML file); --set wins")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    t.add_argument("--label", default=None, help="name of this variant in the results (default: the method)")
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--no-plots", action="store_true")
    t.add_argument("--out", default="runs/latest")
    t.set_defaults(func=cmd_train)
    c = sub.add_parser("compare", help="mean ± std table over runs (directories or results.json files)")
    c.add_argument("runs", nargs="+")
    c.add_argument("--out", default=None, help="also write the markdown table here")
    c.set_defaults(func=cmd_compare)
    ex = sub.add_parser("export", help="every task's / client's adapter in peft's format (PeftModel.from_pretrained)")
    ex.add_argument("runs", nargs="+", help="run directories (each with results.json, or folders of them)")
    ex.add_argument("--out", default=None, help="where to write (default: <run>/export)")
    ex.add_argument("--state-dir", default=None, help="federated: the clients' state root (default <run>/clients)")
    ex.set_defaults(func=cmd_export)
    rp = sub.add_parser("report", help="one self-contained HTML page (figures inline) over runs")
    rp.add_argument("runs", nargs="+", help="run directories or results.json files (centralized and federated)")
    rp.add_argument("--out", default=None, help="default: <RUN_DIR>/report.html for one directory, else ./report.html")
    rp.add_argument("--title", default=None)
    rp.set_defaults(func=cmd_report)
    cs = sub.add_parser("check-stream", help="validate a JSONL task stream; print its tasks, classes and counts")
    cs.add_argument("file", help="the JSONL file (or jsonl:FILE)")
    cs.add_argument("--train-per-class", type=int, default=None, help="cap, as treelora train would apply it")
    cs.add_argument("--test-per-class", type=int, default=None)
    cs.add_argument("--json", action="store_true", help="the summary as JSON")
    cs.set_defaults(func=cmd_check_stream)
    ls = sub.add_parser("list", help="known methods, streams, backbones and config keys")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``treelora`` console script."""
    from .logs import quiet_third_party

    quiet_third_party()  # other packages' deprecation notices off; ours stay (treelora/logs.py)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as exc:
        print(f"treelora: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
