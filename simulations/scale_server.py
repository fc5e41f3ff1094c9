"""The ``server`` part of ``simulations.bench_scale``: server time per round as the global tree grows.

Synthetic, fully valid MiniLM-shaped reports (12 layers, bf16 adapters, 256-float sketches;
``simulations.bench_common.SynthFed``) are ingested into a real ``server.state.GlobalState`` until it holds N
leaves (the first ``--grow-ingest`` through the real ingest path, the rest bulk-loaded and built once), then
``--server-rounds`` rounds are timed with ``--server-clients`` active clients: ``assignment()`` per client,
``ingest()`` of each reply (half of the clients finish a task), ``aggregate()`` and the atomic ``checkpoint()``.
With ``--breakdown`` each round also reports its parts (``simulations.step_timer``: validation, encoding, locates,
nearest searches, leaf files, inserts, bandit updates, the strategy's configure/aggregate).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from simulations.bench_common import SynthFed, dir_bytes, fmt_bytes, fmt_s, rss_mib
from simulations.step_timer import StepTimer

__all__ = ["run_server"]


def run_server(args: argparse.Namespace, work: Path, log: Any) -> list[dict[str, Any]]:
    import torch

    from treelora.fed.settings import FedSettings

    shapes = [((8, 384), (384, 8))] * 12  # MiniLM, LoRA r = 8 on query/value of 6 blocks
    rows = []
    for n_leaves in args.leaves:
        d = work / f"server-{n_leaves}"
        # the synthetic clients finish a task as often as every round: a schedule of one round per task, long enough
        fed = FedSettings(method="treelora", backbone="minilm", out_dir=str(d), local_steps=8, rounds_per_task=1,
                          tasks_per_client=10**6, tree_split=args.tree_split,
                          tree_estimator=getattr(args, "tree_estimator", "geomean"),
                          share_groups=getattr(args, "share_groups", "running"))
        synth = SynthFed(fed, d, shapes, seed=0, clusters=16, model_bytes=4 * 22_713_216)
        st = synth.state
        C = args.server_clients
        clients = [f"c{i}" for i in range(C)]
        # grow the tree: the first --grow-ingest leaves through the real ingest path (validation, leaf file,
        # incremental insert and the periodic full rebuild), the rest bulk-loaded + one build (faster to set up;
        # --grow-ingest N grows all N leaves through ingest)
        t0 = time.perf_counter()
        grow_times = []
        rnd = 1
        made = 0
        n_ingest = max(1, min(n_leaves, args.grow_ingest))  # the first report teaches the server the shapes
        while made < n_ingest:
            for i, c in enumerate(clients):
                if made >= n_ingest:
                    break
                ctl, arrays = synth.report(c, rnd, finished=True)
                g0 = time.perf_counter()
                st.ingest(c if c in st.clients else None, i + 1, rnd, ctl, arrays)
                grow_times.append(time.perf_counter() - g0)
                made += 1
            st.round_adapters = {}
            rnd += 1
        ingest_grow_s = time.perf_counter() - t0
        b0 = time.perf_counter()
        bulk = 0
        entries = []
        while made < n_leaves:
            for c in clients:
                if made >= n_leaves:
                    break
                pos = synth.tasks.get(c, 0)
                key = f"{c}/t{pos}"
                synth.tasks[c] = pos + 1
                entries.append((key, synth.sketch(synth.cluster_of(key)), 8.0))
                st.strategy.leaves.records[key] = {
                    "key": key, "client_id": c, "task_key": key, "task_index": pos,
                    "adapter_file": key.replace("/", "__") + ".safetensors", "num_examples": 64}
                made += 1
                bulk += 1
        if bulk:
            st.strategy.index.bulk_load(entries, synth.L)  # as if that build had been the server's last rebuild
        bulk_s = time.perf_counter() - b0
        st.round = max(rnd - 1, *synth.tasks.values())  # bulk-loaded tasks count as rounds played (1 per task)
        grow_s = time.perf_counter() - t0
        log(f"[server n={n_leaves}] {n_ingest} leaves ingested in {ingest_grow_s:.1f}s (last inserts "
            f"{fmt_s(statistics.median(grow_times[-20:]))}), {bulk} bulk-loaded + build in {bulk_s:.1f}s")
        # timed rounds: every client gets an assignment, replies (half finish a task), aggregate, checkpoint
        per_round = []
        timer = _breakdown_timer(st) if getattr(args, "breakdown", False) else None
        for r in range(args.server_rounds):
            rnd = st.round + 1
            t_assign = t_ingest = 0.0
            replies = []
            for i, c in enumerate(clients):
                a0 = time.perf_counter()
                msg, _arrays = st.assignment(c, rnd)
                t_assign += time.perf_counter() - a0
                finished = (i + r) % 2 == 0
                replies.append((c, i + 1, synth.report(c, rnd, finished=finished, pulls=synth.pulls_for(msg))))
            for c, nid, (ctl, arrays) in replies:
                i0 = time.perf_counter()
                st.ingest(c, nid, rnd, ctl, arrays)
                t_ingest += time.perf_counter() - i0
            g0 = time.perf_counter()
            shared = st.aggregate()
            t_agg = time.perf_counter() - g0
            st.round = rnd
            c0 = time.perf_counter()
            path = st.checkpoint()
            t_ckpt = time.perf_counter() - c0
            centre_bytes = _centre_bytes(st)
            per_round.append({"assign_s": t_assign, "ingest_s": t_ingest, "aggregate_s": t_agg,
                              "checkpoint_s": t_ckpt, "checkpoint_bytes": path.stat().st_size,
                              "centre_store_bytes": centre_bytes,
                              "server_s": t_assign + t_ingest + t_agg, "shares": shared,
                              "leaves_after": len(st.strategy.leaves)})
            log(f"[server n={n_leaves}] round {r + 1}: assign {t_assign:.2f}s, ingest {t_ingest:.2f}s, aggregate "
                f"{t_agg:.2f}s, checkpoint {t_ckpt:.2f}s ({fmt_bytes(path.stat().st_size)}; centre segments "
                f"{fmt_bytes(centre_bytes)})")
            if timer is not None:
                per_round[-1]["parts"] = parts = timer.take()
                log(f"[server n={n_leaves}]   parts: " + ", ".join(
                    f"{k} {v['s']:.3f}s/{v['calls']}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]["s"])))
        if timer is not None:
            timer.restore()
        # the cost hidden in assignment(): bandit refresh after the tree changed
        b = next(iter(st.strategy.bandits.values()))
        f0 = time.perf_counter()
        b.refresh()
        refresh_s = time.perf_counter() - f0
        rows.append({"leaves": n_leaves, "clients": C, "tree_split": args.tree_split,
                     "share_groups": fed.share_groups,
                     "tree_estimator": fed.tree_estimator, "grow_s": grow_s,
                     "ingested": n_ingest, "bulk_loaded": bulk,
                     "bulk_build_s": bulk_s, "ingest_grow_s": ingest_grow_s,
                     "insert_s_last20_median": statistics.median(grow_times[-20:]),
                     "rounds": per_round, "bandit_refresh_s": refresh_s, "rss_mib": rss_mib(),
                     "leaf_store_bytes": dir_bytes(d / "leaves") if (d / "leaves").exists() else 0})
        del synth, st
        import shutil

        shutil.rmtree(d, ignore_errors=True)
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return rows


def _centre_bytes(st: Any) -> int:
    """Bytes of the tree's centre segments on disk (0 where the checkpoint holds the centres itself)."""
    centres = getattr(getattr(st.strategy, "index", None), "centres", None)
    return centres.nbytes() if centres is not None else 0


def _breakdown_timer(st: Any) -> StepTimer:
    """A :class:`StepTimer` on the server steps a round is made of (see the module docstring)."""
    import server.state as state_mod
    from treelora.bandit import TreeLCBBandit

    timer = StepTimer()
    timer.wrap(state_mod, "validate_report", "validate")
    timer.wrap(state_mod, "encode_tensors", "encode")
    timer.wrap(state_mod, "average_groups", "average")
    import server.strategies as strategies_mod

    if hasattr(strategies_mod, "running_groups"):  # share-groups=running: newer code
        timer.wrap(strategies_mod, "running_groups", "running_groups")
    timer.wrap(st.strategy, "configure_train", "configure_train")
    timer.wrap(st.strategy, "aggregate_train", "aggregate_train")
    timer.wrap(st.strategy, "ingest_train", "ingest_train")
    for attr in ("nearest_leaves", "nearest_leaf"):
        if hasattr(st.strategy.index, attr):  # nearest_leaves is newer: older code can be timed the same way
            timer.wrap(st.strategy.index, attr, "nearest")
    timer.wrap(st.strategy.index, "locate", "locate")
    timer.wrap(st.strategy.index, "add", "tree_insert")
    timer.wrap(st.strategy.leaves, "write", "leaf_files")
    timer.wrap(TreeLCBBandit, "update", "bandit_update")
    timer.wrap(st.audit, "record_candidates", "audit")
    return timer


# ----------------------------------------------------------------------------------------------- main
