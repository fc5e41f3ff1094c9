"""Per-message overhead of a fresh client process: what a deployed SuperNode pays before training starts.

In deployment Flower starts a new ``flwr-clientapp`` process for every message (``train``, ``query``,
``evaluate``), so a client re-does, every time, what the simulation engine does once per worker: import
torch/transformers/peft/flwr and our packages, load the task stream, load the backbone (from site-packages or
the local safetensors cache; nothing is downloaded), wrap it with LoRA and build the learner, then load its
own state from ``<state-dir>/c<id>/state.pt``. This script times exactly that path in a fresh ``python -c``
process, ``--reps`` times per backbone, with a state file written beforehand by one real in-process round
(``server.local_grid.LocalGrid`` + the real ClientApp), and reports the stages and the total from process
launch to "ready to train".

    python -m simulations.deploy.bench_process_overhead                       # minilm and tiny-bert, 3 reps
    python -m simulations.deploy.bench_process_overhead --backbones tiny-bert --reps 5 --json out.json

It measures the ClientApp's own work; Flower's part (SuperNode pulling the message — it polls every 3 s when
idle —, starting ``flwr-clientapp``, unpacking the FAB, reading the message over the Runtime API) comes on top
and is measured end to end by the deployment tests (see README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What the child process runs: the ClientApp's path up to the first training step, timed per stage.
CHILD = r"""
import json, os, sys, time
t_launch = float(sys.argv[1]); rc = json.loads(sys.argv[2]); state_dir = sys.argv[3]
marks = {"interpreter": time.time() - t_launch}
import torch, transformers, peft  # noqa: E401  third-party stack
marks["import_torch_transformers_peft"] = time.time() - t_launch
import flwr.clientapp  # noqa: F401
import client.client_app  # noqa: F401  the ClientApp module flwr-clientapp loads
marks["import_flwr_and_app"] = time.time() - t_launch
import client.node as node_mod
import treelora.backbones as bb
from client.node_settings import NodeSettings
from treelora.fed.settings import FedSettings
stage = {}
def timed(name, fn):
    def wrapper(*a, **k):
        t0 = time.perf_counter(); out = fn(*a, **k); stage[name] = stage.get(name, 0.0) + time.perf_counter() - t0
        return out
    return wrapper
bb.load_backbone = timed("load_backbone", bb.load_backbone)
node_mod._stream = timed("load_stream", node_mod._stream)
fed = FedSettings.from_run_config(rc)
ns = NodeSettings.from_node_config({"partition-id": 0, "num-partitions": 1, "state-dir": state_dir}, fed)
t0 = time.perf_counter()
node = node_mod.ClientNode(fed, ns)
learner, initial = node_mod._learner(fed, ns.device)
total_learner = time.perf_counter() - t0
marks["stream_backbone_learner"] = time.time() - t_launch
t0 = time.perf_counter()
state = node._load(learner, initial)
stage["load_state"] = time.perf_counter() - t0
assert state["last_round"] >= 1, "the prepared state was not found"
marks["ready_to_train"] = time.time() - t_launch
import resource
ru = resource.getrusage(resource.RUSAGE_SELF)
marks["cpu_s"] = ru.ru_utime + ru.ru_stime
stage["build_learner"] = total_learner - stage["load_backbone"] - stage["load_stream"]
print("BENCH " + json.dumps({"marks": marks, "stages": stage, "torch_threads": torch.get_num_threads()}))
"""

PREPARE = r"""
import json, sys
from client.client_app import app
from treelora.fed.settings import FedSettings
from server.local_grid import LocalGrid
from server.loop import run
rc = json.loads(sys.argv[1])
grid = LocalGrid(app, 1, run_config=rc, state_dir=sys.argv[2])
run(grid, FedSettings.from_run_config(rc), progress=False)
"""


def run_config(backbone: str, out: Path) -> dict:
    """A small run config over the backbone's default stream (WordNet for MiniLM, synthetic text for tiny-bert)."""
    rc = {"backbone": backbone, "num-rounds": 1, "tasks-per-client": 1, "rounds-per-task": 1, "local-steps": 1,
          "batch-size": 8, "out-dir": str(out / "server"), "threads": 0}
    if backbone == "minilm":
        rc.update({"stream": "wordnet", "train-per-class": 32, "test-per-class": 16})
    else:
        rc.update({"stream": "synthetic-text", "train-per-class": 64, "test-per-class": 8, "regularizer": "l1-grad-fd"})
    return rc


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env() -> dict[str, str]:
    e = dict(os.environ, FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", HF_HUB_OFFLINE="1",
             TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.setdefault("FLWR_HOME", str(Path(tempfile.gettempdir()) / "treelora-bench-flwr-home"))
    return e


def bench(backbone: str, reps: int, workdir: Path) -> dict:
    rc = run_config(backbone, workdir / backbone)
    state_dir = workdir / backbone / "clients"
    subprocess.run([sys.executable, "-c", PREPARE, json.dumps(rc), str(state_dir)], check=True, cwd=ROOT, env=env(),
                   stdout=subprocess.DEVNULL)
    runs = []
    for _ in range(reps):
        t_launch = time.time()
        proc = subprocess.run([sys.executable, "-c", CHILD, repr(t_launch), json.dumps(rc), str(state_dir)],
                              cwd=ROOT, env=env(), capture_output=True, text=True, check=True)
        wall = time.time() - t_launch
        line = next(l for l in proc.stdout.splitlines() if l.startswith("BENCH "))
        data = json.loads(line[6:])
        data["process_wall_incl_exit"] = wall
        runs.append(data)
    ready = [r["marks"]["ready_to_train"] for r in runs]
    cpu = [r["marks"]["cpu_s"] for r in runs]
    return {"backbone": backbone, "stream": rc["stream"], "reps": runs,
            "ready_to_train_s": {"mean": statistics.mean(ready), "min": min(ready), "max": max(ready)},
            "cpu_s": {"mean": statistics.mean(cpu), "min": min(cpu), "max": max(cpu)}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", nargs="+", default=["minilm", "tiny-bert"])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", default=None, help="write the raw timings here")
    args = p.parse_args(argv)
    results = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="treelora-bench-") as tmp:
        for backbone in args.backbones:
            results.append(bench(backbone, args.reps, Path(tmp)))
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
               "processor": _cpu_model(), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
               "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    print(f"machine: {machine}")
    print("(loadavg above ~0.5 means other processes competed for the CPU: compare cpu_s, which they barely move)")
    stages = ["interpreter", "import_torch_transformers_peft", "import_flwr_and_app", "stream_backbone_learner",
              "ready_to_train", "cpu_s"]
    print("| backbone | rep | " + " | ".join(stages) + " | load_stream | load_backbone | build_learner | load_state |")
    print("|---" * (len(stages) + 6) + "|")
    for res in results:
        for i, r in enumerate(res["reps"]):
            m, s = r["marks"], r["stages"]
            print(f"| {res['backbone']} | {i + 1} | " + " | ".join(f"{m[k]:.2f}" for k in stages) + " | "
                  + " | ".join(f"{s[k]:.2f}" for k in ("load_stream", "load_backbone", "build_learner", "load_state"))
                  + " |")
        t = res["ready_to_train_s"]
        c = res["cpu_s"]
        print(f"{res['backbone']}: launch → ready to train {t['mean']:.2f} s (min {t['min']:.2f}, max {t['max']:.2f}); "
              f"CPU {c['mean']:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
