"""Bytes up and down per client-round, from real message contents, vs full-model FedAvg and FedAvg-LoRA.

DESIGN.md §6 target: bytes up per client-round <= 1% of full-model FedAvg.

    python -m simulations.bench_comm                   # measured MiniLM rounds + MiniLM/SmolLM2 message builds
    python -m simulations.bench_comm --no-measured     # message builds only (no training)

**Measured (MiniLM).** A real in-process federation: the real ``ClientApp`` and server loop over
``server.local_grid.LocalGrid`` (no Ray, no SuperLink), tiny sizes (``--clients`` clients, 2 tasks of 2 rounds,
``--local-steps`` steps), for ``treelora`` and this project's ``fedavg-lora``. Every message the grid carried is
counted: ``protos.envelope.content_nbytes`` (array payloads as Flower stores them — .npy bytes — plus the protobuf
control bytes; the figure the server logs) and the size of Flower's own serialized ``RecordDict`` protobuf
(``flwr.common.serde.recorddict_to_proto(...).ByteSize()``: what a gRPC message would carry), with a breakdown
by tensor kind (``adapter.*``, ``sketch.*``, ``final.*``, ``cand.*``, ``share.*``, ``warm.*``) and control.

**Built (MiniLM and SmolLM2).** The same messages built by the real server state (``server.state.GlobalState``:
``assignment()``, ``ingest()``, ``aggregate()``) from synthetic but fully valid client reports with the
backbone's real adapter shapes (``treelora.adapters.LayerwiseLoRA`` on ``load_backbone(name)``): a mid-task
round, a task-end round (final sketch + accuracy row) and a task-start round (warm-start adapter down), with one
candidate leaf per layer and every layer shared (the most the server ever sends besides the warm start).

**References.** Full-model FedAvg: every parameter of the learner's model (backbone + LoRA + head) as float32,
up and down each round. FedAvg-LoRA (plain): the LoRA A and B matrices only, float32 (and bf16), up and down.
"""

from __future__ import annotations

import simulations.bench_common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from simulations.bench_common import (
    Machine,
    SynthFed,
    fmt_bytes,
    lora_shapes,
    machine_line,
    md_table,
    write_json,
)

KINDS = ("adapter", "sketch", "final", "cand", "share", "warm")
NUM_CLASSES = {"wordnet": 41}


def flower_bytes(content: Any) -> int:
    """Size of Flower's serialized RecordDict protobuf (the message body on the wire)."""
    from flwr.common.serde import recorddict_to_proto

    return int(recorddict_to_proto(content).ByteSize())


def breakdown(content: Any) -> dict[str, int]:
    """Bytes per tensor kind plus control, from a message's RecordDict."""
    from flwr.app import ArrayRecord, ConfigRecord

    out: dict[str, int] = defaultdict(int)
    for _, record in content.items():
        if isinstance(record, ArrayRecord):
            for name, arr in record.items():
                kind = name.split(".", 1)[0]
                out[kind if kind in KINDS else "other"] += len(arr.data)
        elif isinstance(record, ConfigRecord):
            out["control"] += sum(len(v) if isinstance(v, bytes) else 8 for v in record.values())
    return dict(out)


def measure_federation(method: str, args: argparse.Namespace, work: Path, log: Any) -> dict[str, Any]:
    """One in-process federation over LocalGrid with the real ClientApp; per-message byte accounting."""
    from client.client_app import app as client_app
    from protos.envelope import content_nbytes
    from server.local_grid import LocalGrid
    from server.loop import run
    from treelora.fed.settings import FedSettings

    rc = {"method": method, "stream": args.stream, "backbone": args.measured_backbone, "tasks-per-client": 2,
          "rounds-per-task": 2,
          "local-steps": args.local_steps, "batch-size": args.batch_size, "train-per-class": args.train_per_class,
          "test-per-class": 2, "regularizer": "l1-grad-fd", "threads": args.threads,
          "out-dir": str(work / method / "server")}
    grid = LocalGrid(client_app, args.clients, run_config=rc, state_dir=str(work / method / "clients"))
    fed = FedSettings.from_run_config(rc)
    t0 = time.perf_counter()
    res = run(grid, fed, progress=False)
    wall = time.perf_counter() - t0
    log(f"[measured {method}] {res['rounds']} rounds, {len(res['errors'])} errors, {wall:.0f}s")
    msgs = []
    for direction, items in (("down", grid.sent), ("up", grid.received)):
        for m in items:
            mtype = m.metadata.message_type
            content = m.content
            msgs.append({"direction": direction, "type": mtype, "group": m.metadata.group_id,
                         "bytes": content_nbytes(content), "flower_bytes": flower_bytes(content),
                         "parts": breakdown(content)})
    train_up = [m for m in msgs if m["direction"] == "up" and m["type"] == "train"]
    train_down = [m for m in msgs if m["direction"] == "down" and m["type"] == "train"]
    query = [m for m in msgs if m["type"] == "query"]
    client_rounds = len(train_up)
    up_total = sum(m["bytes"] for m in train_up + [q for q in query if q["direction"] == "up"])
    down_total = sum(m["bytes"] for m in train_down + [q for q in query if q["direction"] == "down"])
    parts_up: dict[str, int] = defaultdict(int)
    parts_down: dict[str, int] = defaultdict(int)
    for m in train_up:
        for k, v in m["parts"].items():
            parts_up[k] += v
    for m in train_down:
        for k, v in m["parts"].items():
            parts_down[k] += v
    return {
        "method": method, "clients": args.clients, "rounds": res["rounds"], "errors": len(res["errors"]),
        "wall_s": wall, "client_rounds": client_rounds,
        "up_per_client_round": up_total / max(client_rounds, 1),
        "down_per_client_round": down_total / max(client_rounds, 1),
        "flower_up_per_client_round": sum(m["flower_bytes"] for m in train_up
                                          + [q for q in query if q["direction"] == "up"]) / max(client_rounds, 1),
        "flower_down_per_client_round": sum(m["flower_bytes"] for m in train_down
                                            + [q for q in query if q["direction"] == "down"]) / max(client_rounds, 1),
        "probe_up_total": sum(q["bytes"] for q in query if q["direction"] == "up"),
        "probes": sum(1 for q in query if q["direction"] == "up"),
        "up_train_max": max(m["bytes"] for m in train_up), "up_train_min": min(m["bytes"] for m in train_up),
        "down_train_max": max(m["bytes"] for m in train_down), "down_train_min": min(m["bytes"] for m in train_down),
        "parts_up_per_client_round": {k: v / max(client_rounds, 1) for k, v in parts_up.items()},
        "parts_down_per_client_round": {k: v / max(client_rounds, 1) for k, v in parts_down.items()},
        "server_reported_up_per_client_round": res["bytes_up_per_client_round"],
        "server_reported_down_per_client_round": res["bytes_down_per_client_round"],
        "full_model_bytes": res["full_model_bytes"], "server_up_vs_full_model": res["up_vs_full_model"],
        "messages": msgs,
    }


def built_messages(backbone: str, args: argparse.Namespace, work: Path, log: Any) -> dict[str, Any]:
    """Typical messages of one client-round built by the real server state for a backbone's adapter shapes."""
    import numpy as np
    import torch

    from protos import SCHEMA_VERSION
    from protos import treelora_fed_pb2 as pb
    from protos.envelope import content_nbytes, pack
    from protos.wire import encode_tensors, serialize, sketch_name
    from treelora.fed.settings import FedSettings

    t0 = time.perf_counter()
    info = lora_shapes(backbone)
    head = info["hidden_size"] * NUM_CLASSES["wordnet"] + NUM_CLASSES["wordnet"]
    model_params = info["backbone_params"] + info["lora_params"] + head
    model_bytes = 4 * model_params
    # one round per task: the synthetic clients finish a task in round 1 and start the next in round 2
    fed = FedSettings(method="treelora", backbone=backbone, out_dir=str(work / f"built-{backbone}"), rounds_per_task=1)
    synth = SynthFed(fed, work / f"built-{backbone}", info["adapter_shapes"], seed=0, clusters=2,
                     model_bytes=model_bytes)
    st = synth.state
    clients = [f"c{i}" for i in range(4)]
    sizes: dict[str, dict[str, Any]] = {}

    def record(label: str, content: Any) -> None:
        sizes[label] = {"bytes": content_nbytes(content), "flower_bytes": flower_bytes(content),
                        "parts": breakdown(content)}

    # round 1: every client finishes its first task -> 4 leaves
    for i, c in enumerate(clients):
        ctl, arrays = synth.report(c, 1, finished=True, cluster=0)
        st.ingest(None, i + 1, 1, ctl, arrays)
        if i == 0:
            record("up: task end (adapter + sketch + final sketch + acc row)", pack(ctl, arrays))
    st.aggregate()
    st.round = 1
    # round 2 starts a task on every client: c0 is probed (query) and gets a warm start with its candidates
    probe_sk = synth.sketch(0)
    parr, pman = encode_tensors({sketch_name(l): s for l, s in enumerate(probe_sk)}, "float32")
    probe = pb.ClientReport(version=SCHEMA_VERSION, round=2, client_id="c0", task_key="c0/t1", task_index=1,
                            num_examples=fed.batch_size, manifest=pman, metrics={"probe": 1.0, "last_round": 1.0})
    record("down: probe request (query)", pack(st.control("c0", 2)))
    record("up: probe (query reply, task start)", pack(serialize(probe), parr))
    st.ingest_probe("c0", 2, serialize(probe), parr)
    msg0, arrays0 = st.assignment("c0", 2)
    record("down: task start (candidates + shares + warm start)", pack(msg0, arrays0))
    for i, c in enumerate(clients):
        ctl, arrays = synth.report(c, 2, finished=False, cluster=0)
        st.ingest(c, i + 1, 2, ctl, arrays)
    shared = st.aggregate()
    st.round = 2
    # round 3: mid-task on every client; shares follow the clients' tree paths
    msg1, arrays1 = st.assignment("c1", 3)
    record("down: mid-task (candidates + shares)", pack(msg1, arrays1))
    pulls = synth.pulls_for(msg1, steps=fed.local_steps)
    ctl, arrays = synth.report("c1", 3, finished=False, pulls=pulls, cluster=0)
    record("up: mid-task (adapter + sketch + pulls)", pack(ctl, arrays))
    # the most the server can send: a warm start, every layer shared and candidates on every layer
    per_layer_share = 2 * info["lora_params"] / info["layers"]  # bf16 A + B of one layer
    cand_bytes = sizes["down: mid-task (candidates + shares)"]["parts"].get("cand", 0)
    warm_bytes = sizes["down: task start (candidates + shares + warm start)"]["parts"].get("warm", 0)
    ctrl = sizes["down: task start (candidates + shares + warm start)"]["parts"].get("control", 0)
    down_max = cand_bytes + warm_bytes + ctrl + info["layers"] * (per_layer_share + 2 * 128)
    layers_shared = sum(1 for la in msg1.layers if la.shared)
    cands = sum(len(la.candidates) for la in msg1.layers)
    lora = info["lora_params"]
    refs = {
        "full_model_fp32": model_bytes,
        "fedavg_lora_fp32": 4 * lora,
        "fedavg_lora_bf16": 2 * lora,
    }
    log(f"[built {backbone}] {info['layers']} LoRA layers, {lora:,} LoRA params, {model_params:,} model params, "
        f"{time.perf_counter() - t0:.1f}s")
    del np, torch
    return {"backbone": backbone, "layers": info["layers"], "lora_params": lora, "model_params": model_params,
            "model_bytes_fp32": model_bytes, "sketch_dim": fed.sketch_dim, "wire_dtype": fed.wire_dtype,
            "layers_shared_in_mid_task_down": layers_shared, "candidates_in_mid_task_down": cands,
            "shares_computed": shared, "messages": sizes, "references": refs, "down_max_computed": down_max,
            "target_modules": info["target_modules"][:4] + (["..."] if info["layers"] > 4 else [])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["minilm", "smollm2"], help="backbones for built messages")
    ap.add_argument("--no-measured", action="store_true", help="skip the measured MiniLM federation")
    ap.add_argument("--methods", nargs="+", default=["treelora", "fedavg-lora"])
    ap.add_argument("--measured-backbone", default="minilm")
    ap.add_argument("--stream", default="wordnet", help="stream of the measured federation")
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--local-steps", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--train-per-class", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work-dir", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--name", default="bench_comm")
    args = ap.parse_args(argv)
    machine = Machine(args.threads)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    tmp = tempfile.TemporaryDirectory(prefix="bench_comm_") if args.work_dir is None else None
    work = Path(args.work_dir or tmp.name)
    measured = [] if args.no_measured else [measure_federation(m, args, work, log) for m in args.methods]
    built = [built_messages(b, args, work, log) for b in args.backbones]
    m = machine.finish()

    # table 1: per client-round, measured and built, against the references
    rows = []
    for r in measured:
        full = r["full_model_bytes"]
        rows.append(
            [
                f"{args.measured_backbone} (measured, {r['method']}, {r['clients']} clients x {r['rounds']} rounds)",
                fmt_bytes(r["up_per_client_round"]),
                fmt_bytes(r["flower_up_per_client_round"]),
                f"{fmt_bytes(r['up_train_min'])} - {fmt_bytes(r['up_train_max'])}",
                fmt_bytes(r["down_per_client_round"]),
                f"{fmt_bytes(r['down_train_min'])} - {fmt_bytes(r['down_train_max'])}",
                "-",
                fmt_bytes(full),
                f"{100 * r['up_per_client_round'] / full:.3f}%",
            ]
        )
    for b in built:
        msgs, full = b["messages"], b["model_bytes_fp32"]
        up = [v["bytes"] for k, v in msgs.items() if k.startswith("up: mid") or k.startswith("up: task end")]
        fl = [v["flower_bytes"] for k, v in msgs.items() if k.startswith("up: mid") or k.startswith("up: task end")]
        down = [v["bytes"] for k, v in msgs.items() if k.startswith("down: mid") or k.startswith("down: task start")]
        rows.append(
            [
                f"{b['backbone']} (built by GlobalState, treelora)",
                fmt_bytes(statistics.mean(up)),
                fmt_bytes(statistics.mean(fl)),
                f"{fmt_bytes(min(up))} - {fmt_bytes(max(up))}",
                fmt_bytes(statistics.mean(down)),
                f"{fmt_bytes(min(down))} - {fmt_bytes(max(down))}",
                fmt_bytes(b["down_max_computed"]),
                fmt_bytes(full),
                f"{100 * max(up) / full:.3f}% (max)",
            ]
        )
        for ref, label in (
            ("fedavg_lora_fp32", "FedAvg-LoRA plain, fp32"),
            ("fedavg_lora_bf16", "FedAvg-LoRA plain, bf16"),
            ("full_model_fp32", "full-model FedAvg, fp32"),
        ):
            v = b["references"][ref]
            rows.append(
                [
                    f"{b['backbone']} {label}",
                    fmt_bytes(v),
                    "-",
                    "-",
                    fmt_bytes(v),
                    "-",
                    "-",
                    fmt_bytes(full),
                    f"{100 * v / full:.3f}%",
                ]
            )
    headers = [
        "scheme",
        "up / client-round",
        "up (Flower protobuf)",
        "up range",
        "down / client-round",
        "down range",
        "down max (warm + every layer shared)",
        "full model fp32",
        "up vs full model",
    ]
    md1 = md_table(headers, rows)
    # table 2: message breakdown of the built messages
    rows2 = []
    for b in built:
        for label, v in b["messages"].items():
            parts = ", ".join(f"{k} {fmt_bytes(x)}" for k, x in sorted(v["parts"].items(), key=lambda kv: -kv[1]))
            rows2.append([b["backbone"], label, fmt_bytes(v["bytes"]), fmt_bytes(v["flower_bytes"]), parts])
    for r in measured:
        for d in ("up", "down"):
            parts = ", ".join(
                f"{k} {fmt_bytes(x)}"
                for k, x in sorted(r[f"parts_{d}_per_client_round"].items(), key=lambda kv: -kv[1])
            )
            rows2.append(
                [
                    f"{args.measured_backbone} measured {r['method']}",
                    f"{d}: train + probe, mean per client-round (breakdown: train messages)",
                    fmt_bytes(r[f"{d}_per_client_round"]),
                    fmt_bytes(r[f"flower_{d}_per_client_round"]),
                    parts,
                ]
            )
    md2 = md_table(["backbone", "message", "bytes", "Flower protobuf", "breakdown"], rows2)
    print(f"Machine: {machine_line(m)}\nCommand: `{m['command']}`\n")
    print(md1 + "\n\n" + md2)
    for r in measured:
        r.pop("messages_detail", None)
    path = write_json(
        args.name,
        {
            "benchmark": "comm",
            "machine": m,
            "args": vars(args),
            "measured": measured,
            "built": built,
            "table_md": md1,
            "breakdown_md": md2,
        },
        args.out,
    )
    print(f"\nJSON: {path}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
