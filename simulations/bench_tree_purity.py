"""Tree purity (issue 12): does the server's tree put the same stream task's leaves together, and do warm starts
find them? Offline, on scenarios with known ground truth, over seeds, signatures, DP noise levels and split rules.

For each scenario and seed the leaves' raw signatures come from :mod:`simulations.purity_signatures` (the
expensive part, cached under ``--cache``). Then, per signature (``live``: the running gradient at the client's
own adapter, as today; ``probe-grad`` / ``probe-fisher`` / ``probe-input``: the shared probe of
:mod:`treelora.probe`; each ``--probe-norms`` setting side by side, as ``probe-norm`` scales it) and per DP
noise multiplier σ (0 = no DP), every leaf is released as a client releases it (:func:`treelora.privacy.
gaussian_release`, clip = the median joint L2 norm of that signature over the leaves, before sketching), sketched
as the server receives it (``sketch-dim`` Cauchy coordinates per layer, ``sketch-seed``), and for every split rule
the server's own :class:`server.global_tree.GlobalTree` is bulk-loaded with the leaves (in finishing order) and
measured with :func:`treelora.tree_quality.tree_quality`. Warm starts are leave-one-out: each leaf's query (a
fresh release of its probe; for ``live`` the one-batch gradient at the live adapter before the task, today's
probe) is routed by :meth:`GlobalTree.nearest_leaf` in the tree of all other leaves; a hit is a leaf of the same
stream task. ε is one Gaussian release's at δ (Flower's RDP accountant) and the per-client total of the scenario
(the sketch releases a client makes for its tasks). DP noise here is seeded (reproducible); a client's is not.

    python -m simulations.bench_tree_purity            # full: 3 scenarios x 3 seeds (signatures cached)
    # the shared probes alone (no training, no live signature), at the online purity preset's data size
    python -m simulations.bench_tree_purity --probes-only --set train_per_class=24 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from simulations.bench_common import Machine, machine_line, md_table, write_json
from simulations.purity_signatures import SCENARIOS, leaf_signatures

__all__ = ["main", "measure"]

KINDS = ("live", "probe-grad", "probe-fisher", "probe-input", "probe-input-grad")
SPLITS = ("l1-median", "dot-consecutive", "bisect", "average-linkage", "bisect-linkage")


def epsilon(noise: float, releases: int, delta: float) -> float | None:
    """ε after ``releases`` Gaussian releases of noise multiplier ``noise`` (None without noise)."""
    if noise <= 0:
        return None
    from flwr.serverapp import GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod

    acc = RdpAccountant(PrivacyConfig(target_delta=delta, population_size=1,
                                      neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                      sampling_method=SamplingMethod.NO_AMPLIFICATION))
    acc.compose(GaussianPrivacyEvent(noise, 1, 1), count=releases)
    return float(acc.get_epsilon(delta))


def _release(sig: list[torch.Tensor], clip: float, noise: float, sketcher: Any, gen: torch.Generator
             ) -> list[torch.Tensor]:
    from treelora.privacy import gaussian_release

    if noise > 0:
        sig = gaussian_release(sig, clip=clip, noise_multiplier=noise, generator=gen)
    return sketcher.sketch(sig)


def measure(data: dict[str, Any], kind: str, noise: float, splits: list[str], *, sketch_dim: int, seed: int,
            estimator: str = "geomean", probe_norm: str = "none") -> list[dict[str, Any]]:
    """One row per split for one (scenario, seed) data set, signature kind and noise multiplier; a shared probe's
    layers are first scaled as a client's ``probe-norm`` scales them (:func:`treelora.probe.normalise_layers`)."""
    from server.global_tree import GlobalTree
    from treelora.fed.settings import FedSettings
    from treelora.sketch import LayerSketcher
    from treelora.tree_quality import hit_rate, spread_cut_ari, tree_quality

    st = data["settings"]
    truth, order, sigs = data["truth"], data["order"], data["signatures"]
    if kind != "live":
        from treelora.probe import normalise_layers

        sigs = {k: {kind: normalise_layers(sigs[k][kind], probe_norm)} for k in order}
    leaf_task = {k: truth[k][0] for k in order}
    leaf_family = {k: truth[k][1] for k in order}
    dims = [v.numel() for v in sigs[order[0]][kind]]
    sketcher = LayerSketcher(dims, out_dim=sketch_dim, kind="cauchy", seed=st["sketch_seed"])
    norms = [float(torch.sqrt(sum((v.double() ** 2).sum() for v in sigs[k][kind]))) for k in order]
    clip = statistics.median(norms) if noise > 0 else 0.0
    gen = torch.Generator().manual_seed(1000 * seed + int(noise * 1000) + KINDS.index(kind))
    leaves = {k: _release(sigs[k][kind], clip, noise, sketcher, gen) for k in order}
    query_kind = "live_query" if kind == "live" else kind
    queries = {k: _release(sigs[k][query_kind], clip, noise, sketcher, gen) for k in order}
    L = len(dims)
    rows = []
    for split in splits:
        fed = FedSettings(tree_split=split, sketch_dim=sketch_dim, sketch_seed=st["sketch_seed"],
                          tree_estimator=estimator)
        t0 = time.perf_counter()
        index = GlobalTree(fed)
        index.bulk_load([(k, leaves[k], 1.0) for k in order], L)
        quality = tree_quality(index.tree, leaf_task, leaf_family)
        build_s = time.perf_counter() - t0
        events = []
        for q in order:
            loo = GlobalTree(fed)
            loo.bulk_load([(k, leaves[k], 1.0) for k in order if k != q], L)
            chosen = loo.nearest_leaf(queries[q])
            existed = any(leaf_task[k] == leaf_task[q] and k.split("/")[0] != q.split("/")[0] for k in order)
            events.append((leaf_task[q], chosen, existed))
        pos = {k: "verb" if f == "verbs" else "noun" for k, f in leaf_family.items()}
        if st.get("stream") == "wordnet" and len(set(pos.values())) > 1:  # WordNet's own coarsest grouping
            quality["spread_cut_ari_pos"] = spread_cut_ari(index.tree, pos)
        quality.pop("levels", None)
        rows.append({"split": split, "signature": kind, "probe_norm": None if kind == "live" else probe_norm,
                     "noise": noise, "clip": clip, "build_s": build_s,
                     **quality, "warm_start": hit_rate(events, leaf_task)})
    return rows


def _f(x: Any, pct: bool = True) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.0f}%" if pct else f"{x:.2f}"


def summarize(rows: list[dict[str, Any]]) -> str:
    """Markdown: per scenario, signature, noise and split, the mean over seeds (and each seed's value)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["scenario"], r["signature"], r.get("probe_norm"), r["noise"], r["split"]), []).append(r)

    def cell(rs: list[dict[str, Any]], get: Any, pct: bool = True) -> str:
        vals = [get(r) for r in rs]
        ok = [v for v in vals if v is not None]
        mean = sum(ok) / len(ok) if ok else None
        return f"{_f(mean, pct)} ({'/'.join(_f(v, pct) for v in vals)})"

    out = []
    for (scen, kind, norm, noise, split), rs in groups.items():
        eps = rs[0].get("epsilon_per_client")
        sigma = "–" if noise == 0 else f"{noise:g} (ε {eps:.3g})" if eps else f"{noise:g}"
        out.append([scen, kind, norm or "–", sigma, split,
                    cell(rs, lambda r: r["clade_purity"]["rate"]), cell(rs, lambda r: r["sibling_rate"]["rate"]),
                    cell(rs, lambda r: r["nn_purity"]["overall"]["rate"]),
                    cell(rs, lambda r: r["top_levels_ari_family"], pct=False),
                    cell(rs, lambda r: r.get("spread_cut_ari_family"), pct=False),
                    cell(rs, lambda r: r.get("spread_cut_ari_pos"), pct=False),
                    cell(rs, lambda r: r["lca_depth"]["same_task"], pct=False),
                    cell(rs, lambda r: r["lca_depth"]["different_task"], pct=False),
                    cell(rs, lambda r: r["warm_start"]["rate"])])
    return md_table(["scenario", "signature", "probe-norm", "DP σ", "split", "clade purity", "sibling rate",
                     "NN purity", "family ARI (top)", "family ARI (spread cut)", "noun/verb ARI (spread cut)",
                     "LCA depth same", "LCA depth diff",
                     "warm-start hit"], out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--signatures", nargs="+", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--splits", nargs="+", default=list(SPLITS))
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.001, 0.003, 0.01, 0.1],
                    help="DP noise multipliers σ of a sketch release (0 = no DP)")
    ap.add_argument("--noise-signatures", nargs="+", default=["probe-grad"],
                    help="signatures measured under DP noise (all are measured without)")
    ap.add_argument("--dp-delta", type=float, default=1e-5)
    ap.add_argument("--sketch-dim", type=int, default=256)
    ap.add_argument("--tree-estimator", default="geomean",
                    help="the server tree's sketch L1 estimator (geomean, the default | median)")
    ap.add_argument("--probe-norms", nargs="+", default=["l1", "none"], choices=["l1", "none"],
                    help="probe-norm settings measured side by side for the shared-probe signatures")
    ap.add_argument("--probes-only", action="store_true",
                    help="compute the shared probes alone, without training (no live signature): seconds a seed")
    ap.add_argument("--cache", default="runs/tree_purity")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="run-config overrides of the scenarios (FedSettings field names, e.g. backbone=tiny-bert)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="simulations/results")
    ap.add_argument("--name", default="tree_purity", help="the summary JSON's name (<out>/<name>.json)")
    args = ap.parse_args(argv)
    from treelora.fed.settings import FedSettings
    from treelora.overrides import coerce

    overrides = coerce(FedSettings, dict(kv.split("=", 1) for kv in args.set), kebab=False) if args.set else {}
    machine = Machine(threads=args.threads)
    rows: list[dict[str, Any]] = []
    sig_s: dict[str, float] = {}
    for scen in args.scenarios:
        for seed in args.seeds:
            data = leaf_signatures(scen, seed, Path(args.cache), log=lambda m: print(m, file=sys.stderr, flush=True),
                                   probes_only=args.probes_only, **overrides)
            sig_s[f"{scen}/{seed}"] = data["seconds"]
            st = data["settings"]
            tasks_per_client = st["tasks_per_client"]
            for kind in args.signatures:
                if kind == "live" and args.probes_only:
                    continue
                # releases per client: probes (query + leaf) per task; live: one sketch per round + the final + query
                per_task = 2 if kind != "live" else st["rounds_per_task"] + 2
                for norm, noise in itertools.product(["none"] if kind == "live" else args.probe_norms, args.noise):
                    if noise > 0 and kind not in args.noise_signatures:
                        continue
                    t0 = time.perf_counter()
                    for r in measure(data, kind, noise, args.splits, sketch_dim=args.sketch_dim, seed=seed,
                                     estimator=args.tree_estimator, probe_norm=norm):
                        rows.append({"scenario": scen, "seed": seed, "leaves": len(data["order"]),
                                     "epsilon_one_release": epsilon(noise, 1, args.dp_delta),
                                     "epsilon_per_client": epsilon(noise, per_task * tasks_per_client, args.dp_delta),
                                     **r})
                    print(f"[{scen} seed {seed}] {kind} ({norm}) σ={noise:g}: {time.perf_counter() - t0:.1f}s",
                          file=sys.stderr, flush=True)
    table = summarize(rows)
    m = machine.finish()
    payload = {"machine": m, "signature_seconds": sig_s, "scenarios": {s: SCENARIOS[s] for s in args.scenarios},
               "overrides": overrides, "tree_estimator": args.tree_estimator, "rows": rows}
    path = write_json(args.name, payload, args.out)
    print(machine_line(m))
    print(table)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
