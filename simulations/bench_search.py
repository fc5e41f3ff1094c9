"""Similarity search per assignment: TreeLCBBandit descent vs FlatLCBBandit vs an exact nearest scan.

DESIGN.md §6 target: at 10^5 leaves the tree descent is >= 50x faster per assignment than the flat scan, with
the same chosen-arm quality.

    python -m simulations.bench_search                       # 10^2..10^5 leaves, ~6-10 min on 2 cores
    python -m simulations.bench_search --sketch-sizes 100 1000 --exact-sizes 100 --steps 50   # quick

**Synthetic problem at real signature sizes.** MiniLM with LoRA r = 8 on query/value has L = 12 layers whose
``grad`` signature holds p = 6144 floats. Per layer, ``--clusters`` random centres ``c_j ~ N(0, I_p)``; leaf i of
cluster j has ``G_i = c_j + sigma_w * W_i B`` (B: a fixed ``--rank`` x p Gaussian bank, ``W_i ~ N(0, I/rank)``,
so every leaf is a dense p-vector). The query task sits near one random leaf i*: ``q = G_i* + sigma_q * eps``;
at step t the client's gradient is ``g_t = q + s_t * sigma_s * eps_t`` with a per-step scale
``s_t ~ LogNormal(0, 0.3)``, so the observed loss xi = ||g_t - G_k||_1 / p of a pulled arm is noisy.

**Two storage modes.**
* ``exact`` (the centralised learner): the tree stores the p = 6144 signatures, distances are exact L1 and
  xi = ||g_t - G_k||_1 / p, as in ``ContinualLearner._observed_distances``. Sizes ``--exact-sizes``: 10^5 exact
  leaves would need 10^5 x 12 x 6144 x 4 B = 29 GB, more than this machine's RAM.
* ``sketch`` (what the federated server stores): s = ``--sketch-dim`` Cauchy sketches of the same vectors
  (``treelora.sketch.LinearSketch``, the server's seed), the tree splits with the median estimator, and xi is
  the estimate / p as in ``client.node.CandidateProbe``. Leaf sketches are built through linearity
  (``S(c_j + W B) = S(c_j) + W S(B)``), which is exact, so no 10^5 x 12 x 6144 matrix is ever formed.
  The exact scan at these sizes compares sketches too.

Quality is always judged against the *exact* p-dimensional distances ``d_k = ||q - G_k||_1 / p``: per layer the
true nearest arm k*, the regret of a pull ``d_k - d_k*``, its normalised form (0 = always the nearest, 1 = as
bad as a uniformly random arm), the hit rate (pull == k*), the same-cluster rate and, at the end of the run,
whether each layer's most-pulled arm is k*. The bandits run T = ``--steps`` assignments; one assignment is one
selection for all L layers (``select_all``), the L observed xi (the distance evaluations), and ``update_all``.
The exact scan computes xi to every arm of every layer and takes the argmin (its quality does not depend on
history, so it runs on a time-budgeted subset of the steps). Tree and flat steps are interleaved one by one so
their times see the same machine load.

**Building the tree.** Leaves are bulk-loaded into ``TaskTree.entries`` (exactly what ``TaskTree.from_dict``
does) and the tree is built once with ``TaskTree.build()``; the build time is reported. Then ``--inserts``
extra leaves go through the incremental ``TaskTree.add`` path and the median insert time at that size is
reported, together with the ``TreeLCBBandit.refresh()`` that every bandit pays after the tree changes (measured
on a bandit that has made ``--steps`` assignments, so that it has pulled arms to recount).
"""

from __future__ import annotations

import simulations.bench_common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import sys
import time
from typing import Any

import numpy as np
import torch

from simulations.bench_common import (
    Machine,
    fmt_s,
    machine_line,
    md_table,
    median,
    quantile,
    write_json,
)
from simulations.search_problem import Problem, Quality, bulk_tree
from treelora.bandit import FlatLCBBandit, TreeLCBBandit
from treelora.tree import TaskTree
from treelora.tree_splits import weighted


def run_bandits(prob: Problem, tree: TaskTree, c: float, queries: list[int], args: argparse.Namespace,
                log: Any, do_scan: bool = True) -> dict[str, Any]:
    """Tree and flat LCB runs (interleaved step by step) and the exact scan, over ``queries``, at one ``c``."""
    n, mode = prob.n, prob.mode
    q_tree, q_flat, q_scan = Quality(prob), Quality(prob), Quality(prob)
    q_tree_paired = Quality(prob)  # the tree's pulls on the steps where the flat bandit also ran
    t_tree, t_flat, t_scan = [], [], []  # selection + update (the bandit's own work)
    x_tree, x_flat = [], []  # the L observed-xi evaluations of the pulled arms
    c_tree, c_flat = [], []  # selection + update, CPU time of this thread (robust to other tenants' load)
    paired: list[tuple[float, float, float, float, float, float]] = []  # steps where tree and flat both ran
    w_tree, w_flat = [], []
    e_tree, e_flat = [], []
    flat_steps = scan_steps = 0
    flat_spent = scan_spent = 0.0
    for rep, qseed in enumerate(queries):
        prob.new_query(qseed)
        tb = TreeLCBBandit(tree, c=c, seed=rep)
        fb = FlatLCBBandit(tree, c=c, seed=rep) if flat_spent < args.flat_budget_s else None
        scan_every = max(1, args.steps // max(1, args.scan_steps))
        for t in range(1, args.steps + 1):
            if fb is not None and flat_spent >= args.flat_budget_s and t > 1:
                fb = None  # budget spent: the rest of this run (and later runs) is tree only
            step: dict[str, tuple[float, float, float]] = {}
            for which, b, times, xtimes, ctimes, work, evals, qual in (
                    ("tree", tb, t_tree, x_tree, c_tree, w_tree, e_tree, q_tree),
                    ("flat", fb, t_flat, x_flat, c_flat, w_flat, e_flat, q_flat)):
                if b is None:
                    continue
                w0, e0 = b.work, b.evaluations
                c0 = time.thread_time()
                t0 = time.perf_counter()
                choices = b.select_all(t)
                t1 = time.perf_counter()
                c1 = time.thread_time()
                xis = [prob.xi(t - 1, l, k) for l, k in enumerate(choices)]
                c2 = time.thread_time()
                t2 = time.perf_counter()
                b.update_all(choices, xis, t)
                t3 = time.perf_counter()
                c3 = time.thread_time()
                dt = (t1 - t0) + (t3 - t2)
                times.append(dt)
                xtimes.append(t2 - t1)
                ctimes.append((c1 - c0) + (c3 - c2))
                step[which] = (dt, t2 - t1, ctimes[-1])
                work.append(b.work - w0)
                evals.append(b.evaluations - e0)
                arms = [int(k[1:]) for k in choices]
                qual.add(t - 1, arms)
                if which == "tree" and fb is not None:
                    q_tree_paired.add(t - 1, arms)
                if which == "flat":
                    flat_spent += t3 - t0
                    flat_steps += 1
            if "flat" in step:
                paired.append(step["tree"] + step["flat"])
            if do_scan and (t - 1) % scan_every == 0 and (scan_spent < args.scan_budget_s or scan_steps < 1):
                t0 = time.perf_counter()
                arms = prob.scan(t - 1)
                dt = time.perf_counter() - t0
                scan_spent += dt
                scan_steps += 1
                t_scan.append(dt)
                q_scan.add(t - 1, arms)
        q_tree.end_run()
        q_tree_paired.end_run()
        q_flat.end_run()
        log(f"[{mode} n={n} c={c}] repeat {rep}: tree {fmt_s(median(t_tree))}, flat {fmt_s(median(t_flat))}, "
            f"scan {fmt_s(median(t_scan))} per assignment")
    return {
        "tree": {
            "assign_s_median": median(t_tree),
            "assign_s_p90": quantile(t_tree, 0.9),
            "xi_s_median": median(x_tree),
            "cpu_s_median": median(c_tree),
            "total_s_median": median([a + b for a, b in zip(t_tree, x_tree)]),
            "bound_evals_median": median(w_tree),
            "distance_evals_median": median(e_tree),
            "repeats": len(queries),
            **q_tree.summary(),
        },
        "flat": {
            "assign_s_median": median(t_flat),
            "assign_s_p90": quantile(t_flat, 0.9),
            "xi_s_median": median(x_flat),
            "cpu_s_median": median(c_flat),
            "total_s_median": median([a + b for a, b in zip(t_flat, x_flat)]),
            "bound_evals_median": median(w_flat),
            "distance_evals_median": median(e_flat),
            "steps_run": flat_steps,
            **q_flat.summary(),
        },
        "tree_on_flat_steps": q_tree_paired.summary(),
        "scan": {
            "assign_s_median": median(t_scan),
            "distance_evals_median": n * prob.L,
            "steps": scan_steps,
            **q_scan.summary(),
        },
        "speedup_tree_vs_flat": median(t_flat) / median(t_tree),
        "paired_speedup_wall": median([f[0] / tr[0] for tr, f in ((p[:3], p[3:]) for p in paired)]),
        "paired_speedup_cpu": median([f[2] / max(tr[2], 1e-9) for tr, f in ((p[:3], p[3:]) for p in paired)]),
        "paired_speedup_with_xi": median(
            [(f[0] + f[1]) / (tr[0] + tr[1]) for tr, f in ((p[:3], p[3:]) for p in paired)]
        ),
        "paired_steps": len(paired),
        "speedup_tree_vs_flat_with_xi": median([a + b for a, b in zip(t_flat, x_flat)])
        / median([a + b for a, b in zip(t_tree, x_tree)]),
        "speedup_tree_vs_scan_with_xi": median(t_scan) / median([a + b for a, b in zip(t_tree, x_tree)]),
    }


def run_size(n: int, mode: str, args: argparse.Namespace, log: Any) -> list[dict[str, Any]]:
    t_all = time.perf_counter()
    prob = Problem(
        n,
        mode=mode,
        layers=args.layers,
        p=args.p,
        s=args.sketch_dim,
        clusters=args.clusters,
        rank=args.rank,
        sigma_w=args.sigma_w,
        sigma_q=args.sigma_q,
        sigma_s=args.sigma_s,
        steps=args.steps,
        seed=args.seed,
    )
    tree, build_s = bulk_tree(prob, args.leaf_size, args.split, args.tree_estimator)
    log(
        f"[{mode} n={n}] generated in {prob.gen_s:.1f}s, built in {build_s:.2f}s, depth {tree.depth()}, "
        f"{len(tree.leaves())} tree leaves"
    )
    sig_bytes = prob.sig.numel() * 4

    per_c = {}
    truth_s = []
    queries = []
    checks = []
    for rep in range(args.repeats):
        prob.new_query(args.seed * 1000 + 17 * rep + n)
        truth_s.append(prob.truth_s)
        checks.append(prob.truth_check)
        queries.append(args.seed * 1000 + 17 * rep + n)
    nearest = nearest_vs_flat(prob, tree, queries)
    log(f"[{mode} n={n}] nearest: tree {1e3 * nearest['tree_s_median']:.2f} ms, flat "
        f"{1e3 * nearest['flat_s_median']:.1f} ms ({nearest['speedup']:.0f}x), same answer "
        f"{nearest['same_as_flat']}/{len(queries)}, query's cluster {nearest['cluster_hits']}/{len(queries)}")
    scan = None
    for c in args.c:
        per_c[c] = run_bandits(prob, tree, c, queries, args, log, do_scan=scan is None)
        if scan is None:
            scan = (per_c[c]["scan"], per_c[c]["speedup_tree_vs_scan_with_xi"])
        else:  # the scan does not depend on c: measured once per size
            per_c[c]["scan"] = scan[0]
            tot = per_c[c]["tree"]["total_s_median"]
            per_c[c]["speedup_tree_vs_scan_with_xi"] = scan[0]["assign_s_median"] / tot
    # incremental inserts at this size, and the refresh they trigger in a bandit that has pulled arms (T
    # assignments with stand-in losses: a fresh bandit's refresh has nothing to recount)
    ins_s, refresh_s = [], []
    bandit = TreeLCBBandit(tree, c=args.c[0], seed=0)
    loss_rng = np.random.default_rng(args.seed + 98)
    for t in range(1, args.steps + 1):
        choices = bandit.select_all(t)
        bandit.update_all(choices, list(1.0 + loss_rng.random(len(choices))), t)
    pulled_arms = sum(1 for cnt in bandit.stats.cnt.values() if cnt.any())
    g = torch.Generator().manual_seed(args.seed + 99)
    for j in range(args.inserts):
        base = prob.sig[int(torch.randint(n, (1,), generator=g))]
        sig = list((base + 0.01 * base.abs().mean() * torch.randn(base.shape, generator=g)).unbind(0))
        t0 = time.perf_counter()
        tree.add(f"new{j}", sig)
        ins_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        bandit.refresh()
        refresh_s.append(time.perf_counter() - t0)
    base = {
        "mode": mode,
        "split": args.split,
        "tree_estimator": args.tree_estimator,
        "leaves": n,
        "signature_dim": prob.sig.shape[-1],
        "layers": prob.L,
        "signature_store_mib": sig_bytes / 2**20,
        "generate_s": prob.gen_s,
        "truth_s": median(truth_s),
        "build_s": build_s,
        "build_cpu_s": tree.build_cpu_s,
        "tree_depth": tree.depth(),
        "tree_leaves": len(tree.leaves()),
        "insert_s_median": median(ins_s),
        "refresh_s_median": median(refresh_s),
        "refresh_pulled_arms": pulled_arms,
        "incremental_build_estimate_s": median(ins_s) * n / 2,
        "truth_checks": checks,
        "nearest": nearest,
        "wall_s": time.perf_counter() - t_all,
    }
    rows = [{**base, "c": c, **res} for c, res in per_c.items()]
    del prob, tree
    return rows


def nearest_vs_flat(prob: Problem, tree: TaskTree, queries: list[int], chunk: int = 8192) -> dict[str, Any]:
    """``TaskTree.nearest`` (the federation's warm-start and candidate search under ``candidate-rule=nearest``)
    against the flat scan it replaces (the plain summed distance to every leaf, argmin), on each query of the
    size: medians of the wall times, how often both return the same leaf, how often the tree's is in the
    query's cluster."""
    tree_s, flat_s, same, hits = [], [], 0, 0
    ones = torch.ones(prob.L)
    for qseed in queries:
        prob.new_query(qseed)
        q = prob.q if prob.mode == "exact" else prob.q @ prob.sketch.matrix()
        t0 = time.perf_counter()
        got = tree.nearest(list(q.unbind(0)))
        tree_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        d = torch.cat([weighted(tree, ones, q.flatten(), prob.sig[i:i + chunk]) for i in range(0, prob.n, chunk)])
        best = int(torch.argmin(d))
        flat_s.append(time.perf_counter() - t0)
        assert got is not None
        same += got == f"k{best}"
        hits += int(prob.cluster[int(got[1:])] == prob.cluster[prob.istar])
    return {"tree_s_median": median(tree_s), "flat_s_median": median(flat_s),
            "speedup": median(flat_s) / median(tree_s), "same_as_flat": same, "cluster_hits": hits,
            "queries": len(queries)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sketch-sizes",
        type=int,
        nargs="*",
        default=[100, 1000, 10_000, 100_000],
        help="leaf counts for the sketch (federated server) mode",
    )
    ap.add_argument(
        "--exact-sizes",
        type=int,
        nargs="*",
        default=[100, 1000],
        help="leaf counts for the exact p-dim signature (centralised) mode",
    )
    ap.add_argument("--layers", type=int, default=12, help="L (MiniLM: 12 query/value LoRA layers)")
    ap.add_argument("--p", type=int, default=6144, help="grad signature size per layer (MiniLM r=8: 6144)")
    ap.add_argument("--sketch-dim", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=100)
    ap.add_argument("--rank", type=int, default=32, help="rank of the within-cluster variation bank")
    ap.add_argument("--sigma-w", type=float, default=0.3, help="within-cluster spread (centres are N(0, 1))")
    ap.add_argument("--sigma-q", type=float, default=0.05, help="query's offset from its nearest leaf")
    ap.add_argument("--sigma-s", type=float, default=0.5, help="per-step gradient noise")
    ap.add_argument("--steps", type=int, default=200, help="T assignments per bandit run")
    ap.add_argument("--repeats", type=int, default=3, help="bandit runs per size (new query leaf each)")
    ap.add_argument(
        "--c",
        type=float,
        nargs="+",
        default=[2.0, 0.2],
        help="LCB exploration constants to run (2 = the learner's and the server's default)",
    )
    ap.add_argument("--leaf-size", type=int, default=1)
    ap.add_argument("--split", default="l1-median", help="tree split rule (treelora.tree_splits)")
    ap.add_argument("--tree-estimator", default="median",
                    help="sketch mode: the L1 estimator the tree is built and routed with (server: tree-estimator)")
    ap.add_argument("--inserts", type=int, default=5, help="incremental inserts timed at each size")
    ap.add_argument("--scan-steps", type=int, default=20, help="steps at which the exact scan runs (max)")
    ap.add_argument(
        "--scan-budget-s",
        type=float,
        default=20.0,
        help="time budget of the exact scan per size (at least one step runs)",
    )
    ap.add_argument(
        "--flat-budget-s",
        type=float,
        default=30.0,
        help="flat-bandit time budget per size and c; once spent the runs continue with the tree only "
        "(the table's flat quality and the paired tree quality cover the same steps)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: the search is Python-bound; 2 threads oversubscribe a loaded 2-core box)",
    )
    ap.add_argument("--out", default=None, help="output directory (default runs/bench)")
    ap.add_argument("--name", default="bench_search")
    args = ap.parse_args(argv)
    machine = Machine(args.threads)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rows = []
    for mode, sizes in (("exact", args.exact_sizes), ("sketch", args.sketch_sizes)):
        for n in sizes:
            rows.extend(run_size(n, mode, args, log))
    m = machine.finish()
    headers = [
        "mode",
        "leaves",
        "c",
        "sig dim",
        "build (CPU)",
        "insert (+refresh)",
        "tree sel+upd",
        "flat sel+upd",
        "tree vs flat, paired: wall / CPU",
        "xi of L pulls",
        "tree vs flat incl. xi",
        "exact scan",
        "scan vs tree incl. xi",
        "dist evals tree/flat/scan",
        "bound evals tree/flat",
        "flat steps run",
        "norm. regret tree / tree on flat's steps / flat / scan",
        "hit rate tree/flat/scan",
        "most-pulled = nearest tree/flat",
    ]
    table = []
    for r in rows:
        tr, fl, sc = r["tree"], r["flat"], r["scan"]
        table.append(
            [
                r["mode"],
                f"{r['leaves']:,}",
                f"{r['c']:g}",
                r["signature_dim"],
                f"{fmt_s(r['build_s'])} ({fmt_s(r['build_cpu_s'])})",
                f"{fmt_s(r['insert_s_median'])} (+{fmt_s(r['refresh_s_median'])}, "
                f"{r.get('refresh_pulled_arms', '?')} arms)",
                fmt_s(tr["assign_s_median"]),
                fmt_s(fl["assign_s_median"]),
                f"{r['paired_speedup_wall']:.0f}x / {r['paired_speedup_cpu']:.0f}x",
                fmt_s(tr["xi_s_median"]),
                f"{r['paired_speedup_with_xi']:.1f}x",
                fmt_s(sc["assign_s_median"]),
                f"{r['speedup_tree_vs_scan_with_xi']:.0f}x",
                f"{tr['distance_evals_median']:.0f} / {fl['distance_evals_median']:.0f} / "
                f"{sc['distance_evals_median']:,}",
                f"{tr['bound_evals_median']:.0f} / {fl['bound_evals_median']:,.0f}",
                f"{fl['steps_run']}/{tr['repeats'] * args.steps}",
                f"{tr['norm_regret']:.3f} / {r['tree_on_flat_steps']['norm_regret']:.3f} / {fl['norm_regret']:.3f} / "
                f"{sc['norm_regret']:.3f}",
                f"{tr['hit_rate']:.2f} / {fl['hit_rate']:.2f} / {sc['hit_rate']:.2f}",
                f"{tr['final_pick_is_nearest']:.2f} / {fl['final_pick_is_nearest']:.2f}",
            ]
        )
    md = md_table(headers, table)
    print(f"Machine: {machine_line(m)}\nCommand: `{m['command']}`\n")
    print(md)
    path = write_json(
        args.name, {"benchmark": "search", "machine": m, "args": vars(args), "rows": rows, "table_md": md}, args.out
    )
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
