"""Step time of TreeLoRA and the baselines at equal batch, as a ratio to SeqLoRA, measured interleaved.

DESIGN.md §6 target: ``treelora-official`` <= 1.15x SeqLoRA; report ``l1-grad``'s honest cost.

    python -m simulations.bench_step                           # MiniLM, 32 x 32 tokens, 2 threads, ~5-8 min
    python -m simulations.bench_step --steps 4 --warmup 1      # quick

**Protocol.** One process, MiniLM (LoRA r = 8 on query/value), the WordNet stream, batches of exactly
``--batch-size`` x ``--max-length`` tokens (not cut to the longest gloss, so every method sees the same work).
Each variant gets its own backbone copy and :class:`treelora.learner.ContinualLearner`, trains two short tasks
(``--task-steps`` steps each, then ``end_task``) so that the tree has leaves, the bandit selects and the
regulariser is active (O-LoRA has a frozen earlier LoRA, EWC a Fisher), then opens task 3. After ``--warmup``
steps each, the variants take ``--steps`` ``train_step`` calls in round-robin on the same batches (variant A
step 1, variant B step 1, ..., so load spikes hit every variant alike); the table reports each variant's median
step time and its ratio to SeqLoRA's median, plus the per-round paired ratio (median and interquartile range).

Variants: ``seqlora`` (SDPA attention, the baseline), ``seqlora-eager`` (same with eager attention: isolates the
attention kernel's cost from the double backward's), ``treelora`` (paper: grad signatures, tree LCB, exact
``l1-grad`` by double backward; needs eager attention), ``treelora-fd`` (``regularizer=l1-grad-fd``, SDPA),
``treelora-every4`` / ``treelora-every5`` (``l1-grad`` every 4th / 5th step), ``treelora-top2/3/4``
(``l1-grad-top``: the regulariser and its Hessian block on the top 2 / 3 / 4 layers only),
``treelora-official``, ``olora``, ``ewc``.

**Where treelora's time goes.** The learner's per-task records (``search_time_s``: selection + update;
``reg_time_s``: the regularised forward/backward) are read per step, and a separate breakdown replays
``train_step``'s pieces on the ``treelora`` learner with timers (forward; ``autograd.grad`` with
``create_graph``; the regulariser's double backward; signature + observed xi + bandit update), next to a plain
eager forward/backward on the same learner.
"""

from __future__ import annotations

import simulations.bench_common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import statistics
import sys
import time
from typing import Any

import torch

from simulations.bench_common import Machine, fmt_s, machine_line, md_table, quantile, write_json
from simulations.variants import STEP_DEFAULT, VARIANTS, attention_of


def fixed_batches(learner: Any, task: Any, batch_size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Batches of exactly batch_size x max_length tokens (padding kept), cycling through the task's examples."""
    enc = learner.encode(task.train)
    n = int(enc["labels"].shape[0])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out = []
    for start in range(0, n - batch_size + 1, batch_size):
        idx = order[start:start + batch_size]
        out.append({k: v[idx] for k, v in enc.items()})
    if not out:  # fewer examples than one batch: repeat them
        idx = order.repeat(batch_size // n + 1)[:batch_size]
        out.append({k: v[idx] for k, v in enc.items()})
    return out


def make_learner(name: str, stream: Any, args: argparse.Namespace) -> Any:
    from treelora.backbones import load_backbone
    from treelora.config import make_config
    from treelora.learner import ContinualLearner

    variant = VARIANTS[name]
    method, overrides, attn = variant.method, variant.overrides, attention_of(variant)
    cfg = make_config(method, batch_size=args.batch_size, max_length=args.max_length, progress=False,
                      seed=args.seed, threads=args.threads, **overrides)
    return ContinualLearner(load_backbone(args.backbone, seed=args.seed, attn_implementation=attn),
                            stream.num_classes(), cfg)


def prepare(learner: Any, stream: Any, args: argparse.Namespace) -> list[dict[str, torch.Tensor]]:
    """Two short finished tasks, then task 3 opened; returns task 3's fixed batches."""
    for j in range(2):
        task = stream.tasks[j]
        learner.begin_task(f"t{j}", task.classes)
        batches = fixed_batches(learner, task, args.batch_size, args.seed + j)
        learner.start_epoch(args.task_steps)
        for i in range(args.task_steps):
            learner.train_step(batches[i % len(batches)])
        learner.end_task()
    task = stream.tasks[2]
    learner.begin_task("t2", task.classes)
    learner.start_epoch(10_000)  # one long epoch: the released regulariser's lambda ramp is > 0 after step 1
    return fixed_batches(learner, task, args.batch_size, args.seed + 2)


def breakdown(learner: Any, batches: list[dict[str, torch.Tensor]], reps: int) -> dict[str, float]:
    """Replay train_step's pieces on a treelora learner with timers (medians over ``reps``)."""
    from treelora.regularizers import _layer_vectors

    cfg = learner.cfg
    rec = learner.current
    lora = learner.lora
    params = lora.parameters()
    head = learner._head_params()
    classes = torch.tensor(rec.classes)
    parts: dict[str, list[float]] = {k: [] for k in (
        "forward", "grad_create_graph", "double_backward", "selection", "signature_xi_update", "plain_fwd_bwd",
        "clip_adam")}
    for r in range(reps):
        batch = batches[r % len(batches)]
        t = learner._step_in_task + 1
        learner.optimizer.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss = learner.model.loss(batch, classes).float()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        parts["plain_fwd_bwd"].append(t2 - t0)
        learner.optimizer.zero_grad(set_to_none=True)
        # the l1-grad path, piece by piece
        t0 = time.perf_counter()
        choices = learner.selector.select_all(t, learner._step_in_epoch + 1)
        targets = [learner.tree.entries[k].signature[l] for l, k in enumerate(choices)]
        t1 = time.perf_counter()
        parts["selection"].append(t1 - t0)
        t0 = time.perf_counter()
        loss = learner.model.loss(batch, classes).float()
        t1 = time.perf_counter()
        grads = torch.autograd.grad(loss, params + head, create_graph=True, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params + head, grads)]
        layer_g = _layer_vectors(grads[: len(params)])
        t2 = time.perf_counter()
        reg = cfg.lam * torch.stack([(g - x).abs().sum() for g, x in zip(layer_g, targets)]).sum()
        reg_grads = torch.autograd.grad(reg, params, allow_unused=True)
        for p, g, rg in zip(params, grads, reg_grads):
            p.grad = g.detach() + (rg.detach() if rg is not None else 0.0)
        for p, g in zip(head, grads[len(params):]):
            p.grad = g.detach()
        t3 = time.perf_counter()
        parts["forward"].append(t1 - t0)
        parts["grad_create_graph"].append(t2 - t1)
        parts["double_backward"].append(t3 - t2)
        t0 = time.perf_counter()
        detached = [g.detach() for g in layer_g]
        learner.signature.observe(detached)
        xi = learner.selector.observed_distances(targets, learner.signature.step_vectors(detached))
        learner.selector.update_all(choices, xi, t)
        t1 = time.perf_counter()
        parts["signature_xi_update"].append(t1 - t0)
        t0 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params + head, cfg.grad_clip)
        learner.optimizer.step()
        parts["clip_adam"].append(time.perf_counter() - t0)
        learner._step_in_task += 1
    return {k: statistics.median(v) for k, v in parts.items()}


def omp_child(args: argparse.Namespace) -> None:
    """Child process of --omp-compare: time ``--omp-steps`` seqlora steps, print the step times as JSON."""
    import json

    from treelora.streams import load_stream

    stream = load_stream(args.stream, seed=args.seed, train_per_class=args.train_per_class, test_per_class=4)
    lr = make_learner("seqlora", stream, args)
    lr.begin_task("t0", stream.tasks[0].classes)
    lr.start_epoch(1000)
    batches = fixed_batches(lr, stream.tasks[0], args.batch_size, args.seed)
    lr.train_step(batches[0])  # warm-up
    out = []
    for i in range(args.omp_steps):
        t0 = time.perf_counter()
        lr.train_step(batches[(i + 1) % len(batches)])
        out.append(time.perf_counter() - t0)
    print(json.dumps(out))


def omp_compare(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    """SeqLoRA steps with OMP_WAIT_POLICY=ACTIVE (OpenMP's default) vs PASSIVE, child processes alternated."""
    import json
    import os
    import subprocess

    from simulations.bench_common import ROOT

    res: dict[str, list[float]] = {"ACTIVE": [], "PASSIVE": []}
    for k in range(args.omp_compare):
        for policy in ("ACTIVE", "PASSIVE") if k % 2 == 0 else ("PASSIVE", "ACTIVE"):
            cmd = [sys.executable, "-m", "simulations.bench_step", "--omp-child", "--backbone", args.backbone,
                   "--stream", args.stream, "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                   "--threads", str(args.threads), "--omp-steps", str(args.omp_steps),
                   "--train-per-class", str(args.train_per_class)]
            env = dict(os.environ, OMP_WAIT_POLICY=policy)
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                log(proc.stderr[-2000:])
                continue
            times = json.loads(proc.stdout.strip().splitlines()[-1])
            res[policy] += times
            log(f"OMP_WAIT_POLICY={policy}: seqlora steps {[round(t, 2) for t in times]}")
    med = {k: statistics.median(v) if v else float("nan") for k, v in res.items()}
    return {"steps": res, "median_s": med, "active_over_passive": med["ACTIVE"] / med["PASSIVE"]}


def render(rows: list[dict[str, Any]], parts: dict[str, float] | None,
           omp: dict[str, Any] | None) -> tuple[str, str, str]:
    """The three markdown tables (step times, treelora's pieces, OpenMP wait policy)."""
    table = []
    for r in rows:
        cpu_mean = r.get("cpu_mean_ratio_to_seqlora")
        if cpu_mean is None and r.get("cpu_times"):
            base = next(x for x in rows if x["variant"] == "seqlora")
            cpu_mean = statistics.mean(r["cpu_times"]) / statistics.mean(base["cpu_times"])
        table.append([
            r["variant"], r["attention"], fmt_s(r["step_s_median"]),
            f"{fmt_s(r['step_s_p25'])} - {fmt_s(r['step_s_p75'])}", f"{r['ratio_to_seqlora']:.2f}x",
            f"{r['paired_ratio_median']:.2f}x ({r['paired_ratio_p25']:.2f}-{r['paired_ratio_p75']:.2f})",
            fmt_s(r["cpu_s_median"]), f"{r['cpu_ratio_to_seqlora']:.2f}x / {r['paired_cpu_ratio_median']:.2f}x",
            f"{cpu_mean:.2f}x", fmt_s(r["search_s_median"]), fmt_s(r["reg_s_mean"])])
    md = md_table(["variant", "attention", "step (median)", "IQR", "vs seqlora (medians)", "paired ratio (IQR)",
                   "CPU time / step (median)", "CPU vs seqlora: medians / paired", "CPU vs seqlora: means",
                   "selection+update / step", "regularised fwd+bwd / step (mean)"], table)
    md_parts = ""
    if parts:
        total = sum(v for k, v in parts.items() if k != "plain_fwd_bwd")
        prow = [[k.replace("_", " "), fmt_s(v), f"{100 * v / total:.0f}%"] for k, v in parts.items()
                if k != "plain_fwd_bwd"]
        prow.append(["sum of the pieces", fmt_s(total), "100%"])
        prow.append(["(plain eager forward + backward on the same learner)", fmt_s(parts["plain_fwd_bwd"]),
                     f"{100 * parts['plain_fwd_bwd'] / total:.0f}%"])
        md_parts = md_table(["treelora (l1-grad) step piece", "median", "share"], prow)
    md_omp = ""
    if omp:
        md_omp = md_table(["OMP_WAIT_POLICY", "seqlora step (median)", "steps timed"], [
            [k, fmt_s(omp["median_s"][k]), len(omp["steps"][k])] for k in ("ACTIVE", "PASSIVE")])
        md_omp += f"\n\nACTIVE / PASSIVE: {omp['active_over_passive']:.2f}x"
    return md, md_parts, md_omp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=STEP_DEFAULT, choices=list(VARIANTS))
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--stream", default="wordnet")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--task-steps", type=int, default=3, help="steps of each of the two warm-up tasks")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant on task 3")
    ap.add_argument("--steps", type=int, default=16, help="timed round-robin steps per variant")
    ap.add_argument("--breakdown-reps", type=int, default=5, help="replays of treelora's pieces (0 = skip)")
    ap.add_argument("--train-per-class", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--omp-compare", type=int, default=2,
                    help="pairs of child processes timing seqlora steps under OMP_WAIT_POLICY=ACTIVE vs PASSIVE "
                         "(0 = skip)")
    ap.add_argument("--omp-steps", type=int, default=4, help="timed steps per --omp-compare child")
    ap.add_argument("--omp-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--render-only", default=None, metavar="JSON",
                    help="print the tables of an earlier run's JSON (no measurement)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--name", default="bench_step")
    args = ap.parse_args(argv)
    if args.omp_child:
        torch.set_num_threads(args.threads)
        omp_child(args)
        return 0
    if args.render_only:
        import json
        from pathlib import Path

        data = json.loads(Path(args.render_only).read_text())
        for t in render(data["rows"], data.get("treelora_breakdown_s"), data.get("omp_compare")):
            if t:
                print(t + "\n")
        return 0
    if "seqlora" not in args.variants:
        args.variants = ["seqlora"] + args.variants
    machine = Machine(args.threads)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    from treelora.streams import load_stream

    stream = load_stream(args.stream, seed=args.seed, train_per_class=args.train_per_class, test_per_class=4)
    learners, batches = {}, {}
    t_setup = time.perf_counter()
    for name in args.variants:
        t0 = time.perf_counter()
        learners[name] = make_learner(name, stream, args)
        batches[name] = prepare(learners[name], stream, args)
        for i in range(args.warmup):
            learners[name].train_step(batches[name][i % len(batches[name])])
        log(f"{name}: ready in {time.perf_counter() - t0:.1f}s (tree {len(learners[name].tree)} leaves)")
    setup_s = time.perf_counter() - t_setup
    times: dict[str, list[float]] = {n: [] for n in args.variants}
    cpu: dict[str, list[float]] = {n: [] for n in args.variants}  # process CPU time: robust to other tenants
    search: dict[str, list[float]] = {n: [] for n in args.variants}
    reg: dict[str, list[float]] = {n: [] for n in args.variants}
    for i in range(args.steps):
        order = args.variants if i % 2 == 0 else list(reversed(args.variants))  # alternate the order too
        for name in order:
            lr = learners[name]
            b = batches[name][(args.warmup + i) % len(batches[name])]
            s0, r0 = lr.current.search_time_s, lr.current.reg_time_s
            c0 = time.process_time()
            t0 = time.perf_counter()
            lr.train_step(b)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            search[name].append(lr.current.search_time_s - s0)
            reg[name].append(lr.current.reg_time_s - r0)
        log(f"round {i + 1}/{args.steps}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in args.variants))
    base = statistics.median(times["seqlora"])
    base_cpu = statistics.median(cpu["seqlora"])
    rows = []
    for name in args.variants:
        med = statistics.median(times[name])
        paired = [a / b for a, b in zip(times[name], times["seqlora"])]
        paired_cpu = [a / b for a, b in zip(cpu[name], cpu["seqlora"])]
        rows.append(
            {
                "variant": name,
                "method": VARIANTS[name].method,
                "overrides": VARIANTS[name].overrides,
                "attention": attention_of(VARIANTS[name]),
                "step_s_median": med,
                "step_s_p25": quantile(times[name], 0.25),
                "step_s_p75": quantile(times[name], 0.75),
                "ratio_to_seqlora": med / base,
                "paired_ratio_median": statistics.median(paired),
                "paired_ratio_p25": quantile(paired, 0.25),
                "paired_ratio_p75": quantile(paired, 0.75),
                "search_s_median": statistics.median(search[name]),
                "reg_s_median": statistics.median(reg[name]),
                "reg_s_mean": statistics.mean(reg[name]),
                "times": times[name],
                "cpu_times": cpu[name],
                "cpu_s_median": statistics.median(cpu[name]),
                "cpu_ratio_to_seqlora": statistics.median(cpu[name]) / base_cpu,
                "paired_cpu_ratio_median": statistics.median(paired_cpu),
                "cpu_mean_ratio_to_seqlora": statistics.mean(cpu[name]) / statistics.mean(cpu["seqlora"]),
            }
        )
    parts = None
    if args.breakdown_reps > 0 and "treelora" in learners:
        parts = breakdown(learners["treelora"], batches["treelora"], args.breakdown_reps)
    del learners, batches
    omp = omp_compare(args, log) if args.omp_compare > 0 else None
    m = machine.finish()
    md, md_parts, md_omp = render(rows, parts, omp)
    print(f"Machine: {machine_line(m)}\nCommand: `{m['command']}`\n")
    print(
        f"{args.backbone}, {args.stream}, batch {args.batch_size} x {args.max_length} tokens, {args.threads} threads, "
        f"{args.steps} interleaved steps per variant after 2 finished tasks and {args.warmup} warm-up steps.\n"
    )
    print(md)
    if md_parts:
        print("\n" + md_parts)
    if md_omp:
        print("\n" + md_omp)
    path = write_json(
        args.name,
        {
            "benchmark": "step",
            "machine": m,
            "args": vars(args),
            "rows": rows,
            "treelora_breakdown_s": parts,
            "setup_s": setup_s,
            "table_md": md,
            "breakdown_md": md_parts,
            "omp_compare": omp,
            "omp_md": md_omp,
        },
        args.out,
    )
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
