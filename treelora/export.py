"""A run's adapters in peft's own format, to use outside this project (``treelora export RUN_DIR``).

What a run keeps, and what export writes from it:

- **centralized** (``treelora train``): :func:`save_task_adapters` writes ``<run>/adapters/t<k>.safetensors`` — task
  k's snapshot as the learner stored it in its tree (``"<l>.A"``, ``"<l>.B"`` per LoRA layer, ``"head.weight"``,
  ``"head.bias"``) — and ``<run>/adapters/config.json`` (backbone, LoRA r/alpha/dropout, target modules,
  lora_depth, the stream's class and task names). Export writes ``<out>/t<k>/`` per task.
- **federated**: the server's leaf adapters ``<out-dir>/leaves/<c>__t<k>.safetensors`` (``<l>.A``, ``<l>.B``,
  ``sketch.<l>``; no head: the head never leaves a client) → ``<out>/leaves/<c>__t<k>/``; each client's final live
  adapter and head from ``<state-dir>/c<k>/state.pt`` → ``<out>/clients/c<k>/``.

Each exported folder is what ``PeftModel.from_pretrained(backbone, folder)`` loads (``adapter_config.json`` +
``adapter_model.safetensors``, written by :meth:`treelora.adapters.LayerwiseLoRA.save_peft`), with
``head.safetensors`` (``weight``, ``bias`` of a ``torch.nn.Linear(hidden, num_classes)``) beside it where there is a
head, and ``info.json`` saying how this project turns the model's output into a class: the mean of the last hidden
state over the attention mask, the head, then the argmax over the allowed classes (``classes``: the task's own for
a task's adapter, every class the client has seen for a client's live adapter). ``<out>/export.json`` lists them all.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from .io import write_bytes_atomic, write_json_atomic

__all__ = ["ADAPTERS", "save_task_adapters", "export_run", "export_runs", "HOW_TO_LOAD"]

ADAPTERS = "adapters"
CONFIG = "config.json"
POOLING = "mean of the last hidden state over the attention mask, then head(features), argmax over `classes`"
HOW_TO_LOAD = """\
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModel
model = PeftModel.from_pretrained(AutoModel.from_pretrained(BACKBONE_DIR), FOLDER).eval()
head = torch.nn.Linear(HIDDEN, NUM_CLASSES); head.load_state_dict(load_file(FOLDER + "/head.safetensors"))
h = model(input_ids=ids, attention_mask=mask).last_hidden_state
logits = head((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
pred = torch.tensor(CLASSES)[logits[:, CLASSES].argmax(-1)]
"""


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save

    return write_bytes_atomic(path, save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}))


def save_task_adapters(learner: Any, run_dir: str | Path, *, backbone: str, stream: Any) -> Path:
    """Write every finished task's snapshot (the tree entry's payload) and the adapter config under
    ``<run_dir>/adapters/``; returns that folder. What :func:`export_run` needs of a centralized run."""
    out = Path(run_dir) / ADAPTERS
    cfg = learner.cfg
    tasks = []
    for j, task in enumerate(stream.tasks):
        key = f"t{j}"
        if key not in learner.tree:
            continue
        payload = learner.tree.entry_of(key).payload
        if payload is None:
            continue
        _save_tensors(out / f"{key}.safetensors", payload)
        tasks.append({"key": key, "name": task.name, "family": task.family_name, "classes": list(task.classes),
                      "file": f"{key}.safetensors"})
    head = getattr(learner.model, "head", None)
    write_json_atomic(out / CONFIG, {
        "format": 1,
        "backbone": backbone,
        "seed": cfg.seed,
        "method": cfg.method,
        "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                 "target_modules": None if cfg.target_modules is None else list(cfg.target_modules),
                 "lora_depth": cfg.lora_depth, "modules": list(learner.lora.names)},
        "max_length": cfg.max_length,
        "head": None if head is None else {"in_features": head.in_features, "out_features": head.out_features},
        "class_names": list(stream.class_names),
        "tasks": tasks,
    })
    return out


def _lora(backbone: str, seed: int, lora: dict[str, Any]) -> tuple[Any, Any]:
    """The backbone wrapped as at training time (same modules), to write peft folders from snapshots."""
    from .adapters import LayerwiseLoRA
    from .backbones import load_backbone

    model = load_backbone(backbone, seed=seed)
    wrapped = LayerwiseLoRA(model.model, r=int(lora["r"]), alpha=float(lora["alpha"]), dropout=float(lora["dropout"]),
                            target_modules=lora.get("target_modules"), lora_depth=int(lora.get("lora_depth", 0)),
                            seed=seed)
    if lora.get("modules") and list(lora["modules"]) != list(wrapped.names):
        raise ValueError(f"backbone {backbone!r} now has LoRA modules {wrapped.names}, the run had {lora['modules']}")
    return wrapped, model


def _write_folder(lora: Any, folder: Path, snapshot: dict[str, torch.Tensor], info: dict[str, Any]) -> dict:
    lora.save_peft(folder, {k: v for k, v in snapshot.items() if not k.startswith(("head.", "sketch."))})
    if "head.weight" in snapshot:
        _save_tensors(folder / "head.safetensors", {"weight": snapshot["head.weight"], "bias": snapshot["head.bias"]})
        info = dict(info, head="head.safetensors")
    write_json_atomic(folder / "info.json", info)
    return dict(info, path=str(folder))


def _export_centralized(run_dir: Path, results: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    src = run_dir / ADAPTERS
    if not (src / CONFIG).exists():
        raise FileNotFoundError(f"{run_dir}: no {ADAPTERS}/{CONFIG}; this run was written before `treelora train` "
                                "saved its task adapters; train it again to export it")
    conf = json.loads((src / CONFIG).read_text())
    lora, model = _lora(conf["backbone"], int(conf["seed"]), conf["lora"])
    from safetensors.torch import load_file

    done = []
    for task in conf["tasks"]:
        snapshot = load_file(str(src / task["file"]))
        info = {"kind": "task", "key": task["key"], "task": task["name"], "family": task["family"],
                "method": conf["method"], "backbone": conf["backbone"], "hidden_size": model.hidden_size,
                "num_classes": (conf["head"] or {}).get("out_features", len(conf["class_names"])),
                "classes": task["classes"],
                "class_names": [conf["class_names"][c] for c in task["classes"]], "max_length": conf["max_length"],
                "predict": POOLING, "head": None}
        done.append(_write_folder(lora, out / task["key"], snapshot, info))
    return done


def _fed_settings(config: dict[str, Any]) -> Any:
    from .fed.settings import FedSettings

    known = {f.name for f in fields(FedSettings)}
    return FedSettings(**{k: v for k, v in config.items() if k in known})


def _stream_names(fed: Any) -> tuple[list[str], list[Any]]:
    """(class names, tasks) of a federated run's stream, or empty lists where it cannot be loaded here."""
    try:
        s = fed.load_stream()
        return list(s.class_names), list(s.tasks)
    except (FileNotFoundError, ValueError, OSError):
        return [], []


def _export_federated(run_dir: Path, results: dict[str, Any], out: Path, state_dir: Path | None) -> list[dict]:
    from safetensors.torch import load_file

    fed = _fed_settings(results["config"])
    cfg = fed.learner_config(device="cpu")
    lora_conf = {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                 "target_modules": cfg.target_modules, "lora_depth": cfg.lora_depth}
    lora, model = _lora(fed.backbone, fed.seed, lora_conf)
    class_names, stream_tasks = _stream_names(fed)
    leaf_tasks = results.get("leaf_tasks") or {}
    common = {"method": results["method"], "backbone": fed.backbone, "hidden_size": model.hidden_size,
              "max_length": fed.max_length, "predict": POOLING}
    done = []
    for key in results.get("leaves") or []:
        path = run_dir / "leaves" / (key.replace("/", "__") + ".safetensors")
        if not path.exists():
            raise FileNotFoundError(f"leaf {key!r}: its adapter file {path} is missing")
        info = dict(common, kind="leaf", key=key, task=(leaf_tasks.get(key) or {}).get("task", ""),
                    family=(leaf_tasks.get(key) or {}).get("family", ""), head=None,
                    note="no head: the head never leaves a client; use the head of its client's export")
        done.append(_write_folder(lora, out / "leaves" / key.replace("/", "__"), load_file(str(path)), info))
    for state_file in _client_states(run_dir, fed, state_dir):
        learner = torch.load(state_file, map_location="cpu", weights_only=False)["learner"]
        client, adapter = state_file.parent.name, learner["adapter"]
        seen = sorted(int(c) for c in learner.get("seen_classes", []))
        info = dict(common, kind="client", key=client, client=client, classes=seen,
                    num_classes=int(adapter["head.weight"].shape[0]) if "head.weight" in adapter else None,
                    class_names=[class_names[c] for c in seen] if class_names else [],
                    tasks=[f"{client}/{k}" for k in learner.get("records", {})], head=None)
        done.append(_write_folder(lora, out / "clients" / client, adapter, info))
    return done


def _client_states(run_dir: Path, fed: Any, state_dir: Path | None) -> list[Path]:
    """The clients' state files: under ``state_dir`` when given, else ``<run>/clients`` (a simulation's default),
    else the run config's ``state-dir``; none where no such folder exists here (deployed clients keep theirs on
    their own nodes: export there with ``--state-dir``)."""
    roots = [state_dir] if state_dir else [run_dir / "clients"] + ([Path(fed.state_dir)] if fed.state_dir else [])
    for root in roots:
        if root.is_dir():
            return sorted(root.glob("c*/state.pt"))
    return []


def export_run(run_dir: str | Path, out: str | Path | None = None, *, state_dir: str | Path | None = None
               ) -> list[dict[str, Any]]:
    """Export one run directory (holding results.json) into ``out`` (default ``<run_dir>/export``); returns one
    info dict per folder written (also in ``<out>/export.json``)."""
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"no results.json in {run_dir}")
    results = json.loads(path.read_text())
    out = Path(out) if out is not None else run_dir / "export"
    if "per_client" in results:
        done = _export_federated(run_dir, results, out, Path(state_dir) if state_dir else None)
    else:
        done = _export_centralized(run_dir, results, out)
    write_json_atomic(out / "export.json", {"run": str(run_dir), "how_to_load": HOW_TO_LOAD, "folders": done})
    return done


def export_runs(paths: list[str | Path], out: str | Path | None = None, *, state_dir: str | Path | None = None
                ) -> dict[Path, tuple[Path, list[dict[str, Any]]]]:
    """Every run under ``paths`` (each directory holding a results.json), each into ``<run>/export`` or, with
    ``out``, into ``out/<run's path relative to the given directory>``; returns run → (its export folder, infos)."""
    done: dict[Path, tuple[Path, list[dict[str, Any]]]] = {}
    for p in map(Path, paths):
        runs = [p] if (p / "results.json").exists() else sorted(f.parent for f in p.rglob("results.json")
                                                                   if "export" not in f.parts)
        if not runs:
            raise FileNotFoundError(f"no results.json under {p}")
        for run in runs:
            target = run / "export" if out is None else Path(out) / run.relative_to(p)
            done[run] = (target, export_run(run, target, state_dir=state_dir))
    return done
