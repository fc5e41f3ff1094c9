"""The measurements of ``python -m simulations.gpu_check`` (:mod:`simulations.gpu_check`), one function each.

- :func:`step_times`: the step-time benchmark of :mod:`simulations.bench_step` (called, not copied) for one backbone,
  SeqLoRA and TreeLoRA in fp32 and under bf16 autocast (the learner's ``precision`` knob).
- :func:`l1_grad_attention`: treelora's exact ``l1-grad`` (a double backward through attention) on the device, with
  the first attention kernel that supports it: SDPA as loaded, SDPA restricted to its math kernel, eager.
- :func:`federated_run`: a short in-process federation (``server.local_grid.LocalGrid`` + the real ClientApp +
  ``server.loop.run``) whose clients' node config says ``device=<device> precision=bf16``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from simulations import bench_step
from simulations.variants import Variant

__all__ = ["step_times", "l1_grad_attention", "federated_run"]

#: Variants of bench_step's table for this check: its baseline ``seqlora`` in fp32, then bf16 autocast, and treelora
#: (exact l1-grad, eager attention as bench_step runs it) in both. ``lm_mode=head``: bench_step builds its learners
#: without the stream, which a causal LM's generate mode needs (SmolLM2 gets a class head, as encoders have).
PRECISION_VARIANTS: dict[str, Variant] = {
    "seqlora": Variant("seqlora", {"precision": "fp32", "lm_mode": "head"}, role="baseline"),
    "seqlora-bf16": Variant("seqlora", {"precision": "bf16", "lm_mode": "head"}, role="baseline"),
    "treelora-fp32": Variant("treelora", {"precision": "fp32", "lm_mode": "head"}),
    "treelora-bf16": Variant("treelora", {"precision": "bf16", "lm_mode": "head"}),
}


@contextlib.contextmanager
def _variants(extra: dict[str, Variant]):
    """bench_step's variant table with ``extra`` in it (its baseline ``seqlora`` replaced) for one call."""
    saved = dict(bench_step.VARIANTS)
    bench_step.VARIANTS.update(extra)
    try:
        yield
    finally:
        bench_step.VARIANTS.clear()
        bench_step.VARIANTS.update(saved)


def step_times(backbone: str, stream: str, sizes: dict[str, int]) -> dict[str, Any]:
    """bench_step's rows (median step, ratio to fp32 SeqLoRA, CPU time) for the four precision variants."""
    with tempfile.TemporaryDirectory() as tmp, _variants(PRECISION_VARIANTS):
        argv = ["--backbone", backbone, "--stream", stream, "--variants", *PRECISION_VARIANTS,
                "--batch-size", str(sizes["batch_size"]), "--max-length", str(sizes["max_length"]),
                "--task-steps", str(sizes["task_steps"]), "--warmup", str(sizes["warmup"]),
                "--steps", str(sizes["steps"]), "--train-per-class", str(sizes["train_per_class"]),
                "--threads", str(sizes["threads"]), "--breakdown-reps", "0", "--omp-compare", "0",
                "--out", tmp, "--name", "step"]
        log = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            rc = bench_step.main(argv)
        if rc != 0:
            raise RuntimeError(f"bench_step exited {rc}: {log.getvalue()[-2000:]}")
        data = json.loads((Path(tmp) / "step.json").read_text())
    rows = [{k: v for k, v in r.items() if k not in ("times", "cpu_times")} for r in data["rows"]]
    for r in rows:
        r["precision"] = r["overrides"].get("precision", "auto")
    return {"status": "ok", "backbone": backbone, "stream": stream, "sizes": sizes, "rows": rows,
            "table_md": data["table_md"], "wall_s": round(time.perf_counter() - t0, 1)}


def _attempt(learner: Any, batches: list[dict[str, torch.Tensor]], kernel: str, reps: int) -> dict[str, Any]:
    """``reps`` treelora steps with attention ``kernel``; their times, or the error that stopped the first."""
    model = learner.lora.model.get_base_model()
    model.set_attn_implementation("eager" if kernel == "eager" else "sdpa")
    ctx = contextlib.nullcontext()
    if kernel == "sdpa-math":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        ctx = sdpa_kernel(SDPBackend.MATH)
    sync = torch.cuda.synchronize if learner.device.type == "cuda" else (lambda: None)
    times = []
    reg0 = learner.current.reg_time_s
    try:
        with ctx:
            for i in range(reps):
                sync()
                t0 = time.perf_counter()
                loss = learner.train_step(batches[i % len(batches)])
                sync()
                times.append(time.perf_counter() - t0)
    except RuntimeError as exc:
        return {"kernel": kernel, "ok": False, "error": str(exc).strip().splitlines()[0][:300]}
    finite = all(torch.isfinite(p).all() for p in learner.lora.parameters())
    ran = learner.current.reg_time_s > reg0  # the regulariser (the double backward) ran, not the plain step
    return {"kernel": kernel, "ok": bool(finite and ran and loss == loss), "regularised": ran,
            "finite": bool(finite), "step_s_median": statistics.median(times), "steps": len(times)}


def l1_grad_attention(backbone: str, stream_name: str, device: str, precision: str, sizes: dict[str, int]
                      ) -> dict[str, Any]:
    """The exact l1-grad step on ``device``: tries SDPA, then SDPA's math kernel, then eager; records each."""
    from treelora.backbones import load_backbone
    from treelora.config import make_config
    from treelora.learner import ContinualLearner
    from treelora.streams import load_stream

    stream = load_stream(stream_name, seed=0, train_per_class=sizes["train_per_class"], test_per_class=4)
    cfg = make_config("treelora", device=device, precision=precision, batch_size=sizes["batch_size"],
                      max_length=sizes["max_length"], progress=False, lm_mode="head")
    learner = ContinualLearner(load_backbone(backbone, seed=0, attn_implementation="sdpa"), stream.num_classes(), cfg)
    args = argparse.Namespace(batch_size=sizes["batch_size"], task_steps=sizes["task_steps"], seed=0)
    batches = bench_step.prepare(learner, stream, args)  # two finished tasks (the targets), task 3 open
    attempts = []
    for kernel in ("sdpa", "sdpa-math", "eager"):
        attempts.append(_attempt(learner, batches, kernel, sizes["l1_reps"]))
        if attempts[-1]["ok"]:
            break
    chosen = next((a["kernel"] for a in attempts if a["ok"]), None)
    return {"backbone": backbone, "device": str(learner.device), "precision": precision,
            "autocast": str(learner.autocast_dtype), "attention": chosen, "ok": chosen is not None,
            "attempts": attempts}


def federated_run(device: str, precision: str, run_config: dict[str, Any], clients: int) -> dict[str, Any]:
    """A few rounds in process, every client on ``device`` with ``precision``; what the run and its learners did."""
    from client import learner_cache
    from client.client_app import app as client_app
    from server.local_grid import LocalGrid
    from server.loop import run
    from treelora.fed.settings import FedSettings

    with tempfile.TemporaryDirectory() as tmp:
        rc = dict(run_config, **{"out-dir": str(Path(tmp) / "server")})
        grid = LocalGrid(client_app, clients, run_config=rc, state_dir=str(Path(tmp) / "clients"),
                         node_config={n: {"device": device, "precision": precision} for n in range(1, clients + 1)})
        fed = FedSettings.from_run_config(rc)
        t0 = time.perf_counter()
        try:
            results = run(grid, fed, progress=False)
        except Exception as exc:  # noqa: BLE001 - reported in the JSON, the check fails
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]}
        wall = time.perf_counter() - t0
    # the clients' learners: the cached ones built from this run config and node config (device, precision)
    want = fed.learner_config(device=device, precision=precision).to_dict()
    learners = [{"device": str(lr.device), "autocast": str(lr.autocast_dtype)}
                for lr, _ in learner_cache._LEARNERS.values() if lr.cfg.to_dict() == want]
    acc = results["metrics"].get("acc", {})
    return {"ok": not results["errors"] and bool(learners), "rounds": results["rounds"],
            "leaves": len(results["leaves"]), "errors": results["errors"], "acc_mean": acc.get("mean"),
            "acc_std": acc.get("std"), "wall_s": round(wall, 1),
            "s_per_round": round(wall / max(1, results["rounds"]), 2),
            "bytes_up_per_client_round": results["bytes_up_per_client_round"], "learners": learners,
            "run_config": run_config, "clients": clients, "device": device, "precision": precision}
