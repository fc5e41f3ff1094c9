"""treelora export: adapters a run leaves behind load with peft alone and predict what this project predicts.

Centralized: ``treelora train`` (tiny-bert, synthetic text, task-aware scoring) saves every task's snapshot; the
export of task 0 — whose snapshot differs from the final live adapter — loaded with ``PeftModel.from_pretrained`` on
a fresh backbone plus a plain ``torch.nn.Linear`` head gives the predictions of the project's own task-aware
evaluation, and its accuracy is the run's R[T-1][0]. Federated (in-process LocalGrid): a client's exported live
adapter reproduces the server's final evaluation of that client, and a leaf's export holds the leaf's adapter.
"""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from treelora.backbones import load_backbone
from treelora.cli import main
from treelora.config import make_config
from treelora.learner import ContinualLearner
from treelora.streams import load_stream

TRAIN = ["--stream", "synthetic-text", "--backbone", "tiny-bert", "--epochs", "1", "--num-tasks", "2",
         "--train-per-class", "8", "--test-per-class", "6"]


def peft_predict(folder, texts, allowed=None):
    """Predictions from the exported folder with peft, transformers and torch only (what a user would write)."""
    info = json.loads((folder / "info.json").read_text())
    backbone = load_backbone(info["backbone"], seed=0)  # a fresh copy of the (seeded, random) tiny backbone
    model = PeftModel.from_pretrained(backbone.model, str(folder)).eval()
    head = torch.nn.Linear(info["hidden_size"], info["num_classes"])
    head.load_state_dict(load_file(str(folder / info["head"])))
    enc = backbone.tokenizer(texts, padding=True, truncation=True, max_length=info["max_length"], return_tensors="pt")
    with torch.no_grad():
        h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        logits = head((h * mask).sum(1) / mask.sum(1))
    classes = torch.tensor(allowed if allowed is not None else info["classes"])
    return classes[logits[:, classes].argmax(-1)], logits[:, classes]


def project_predict(method, adapter, examples, classes, **cfg):
    """What this project's evaluation predicts with ``adapter`` loaded (the learner's own path)."""
    config = make_config(method, seed=0, progress=False, **cfg)
    stream = load_stream("synthetic-text", seed=0, train_per_class=8, test_per_class=6)
    learner = ContinualLearner(load_backbone("tiny-bert", seed=0, attn_implementation=config.attn_implementation),
                               stream.num_classes(), config)
    learner.load_adapter(adapter)
    learner.model.eval()
    enc = learner.encode(examples)
    with torch.no_grad():
        logits = learner.model(enc)[:, torch.tensor(classes)]
        return learner.model.predict(enc, torch.tensor(classes)), logits


def test_centralized_export_loads_with_peft_alone(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--method", "treelora", *TRAIN, "--set", "batch_size=8", "--set", "progress=False",
                 "--set", "task_aware=true", "--no-plots", "--out", str(out)]) == 0
    run = out / "treelora" / "seed0"
    assert sorted(p.name for p in (run / "adapters").iterdir()) == ["config.json", "t0.safetensors", "t1.safetensors"]
    assert set(load_file(str(run / "adapters" / "t0.safetensors"))) >= {"0.A", "0.B", "head.weight", "head.bias"}
    capsys.readouterr()
    assert main(["export", str(run)]) == 0
    assert "2 task adapters" in capsys.readouterr().out
    folder = run / "export" / "t0"
    assert {"adapter_config.json", "adapter_model.safetensors", "head.safetensors", "info.json"} <= {
        p.name for p in folder.iterdir()}

    task = load_stream("synthetic-text", seed=0, train_per_class=8, test_per_class=6).tasks[0]
    pred, logits = peft_predict(folder, [e.text for e in task.test])
    ours, our_logits = project_predict("treelora", load_file(str(run / "adapters" / "t0.safetensors")), task.test,
                                       task.classes, task_aware=True)
    assert torch.equal(pred, ours)
    assert torch.allclose(logits, our_logits, atol=1e-4)
    labels = torch.tensor([e.label for e in task.test])
    results = json.loads((run / "results.json").read_text())
    assert float((pred == labels).float().mean()) == pytest.approx(results["accuracy_matrix"][-1][0])
    # the final live adapter is task 1's snapshot, not task 0's: the export did use the task's own snapshot
    t1 = load_file(str(run / "adapters" / "t1.safetensors"))
    assert not torch.equal(t1["0.A"], load_file(str(run / "adapters" / "t0.safetensors"))["0.A"])


def test_federated_export_of_clients_and_leaves(tmp_path, capsys):
    from client.client_app import app as client_app
    from server.local_grid import LocalGrid
    from server.loop import run
    from server.report import write_results
    from treelora.fed.scenarios import make_schedule
    from treelora.fed.settings import FedSettings

    rc = {"stream": "synthetic-text", "backbone": "tiny-bert", "tasks-per-client": 2, "rounds-per-task": 1,
          "local-steps": 2, "batch-size": 8, "train-per-class": 8, "test-per-class": 6, "regularizer": "l1-grad-fd",
          "sketch-dim": 32, "out-dir": str(tmp_path / "server")}
    grid = LocalGrid(client_app, 2, run_config=rc, state_dir=str(tmp_path / "clients"))
    fed = FedSettings.from_run_config(rc)
    results = run(grid, fed, progress=False)
    write_results(results, fed.out_dir, plots=False)
    capsys.readouterr()
    assert main(["export", fed.out_dir, "--state-dir", str(tmp_path / "clients")]) == 0
    assert "4 leaf adapters, 2 client adapters" in capsys.readouterr().out
    export = tmp_path / "server" / "export"

    stream = load_stream("synthetic-text", seed=0, train_per_class=8, test_per_class=6)
    sched = make_schedule(fed.scenario, 0, 2, len(stream.tasks), fed.tasks_per_client, fed.rounds_per_task,
                          families=fed.families)
    client = export / "clients" / "c0"
    info = json.loads((client / "info.json").read_text())
    assert info["tasks"] == ["c0/t0", "c0/t1"] and info["head"] == "head.safetensors"
    for pos, key in enumerate(info["tasks"]):
        task = stream.tasks[sched.tasks[pos]]
        pred, _ = peft_predict(client, [e.text for e in task.test])
        acc = float((pred == torch.tensor([e.label for e in task.test])).float().mean())
        assert acc == pytest.approx(results["final_evaluation"]["per_client"]["c0"][key])

    leaf = export / "leaves" / "c0__t0"
    assert json.loads((leaf / "info.json").read_text())["head"] is None and not (leaf / "head.safetensors").exists()
    stored = load_file(str(tmp_path / "server" / "leaves" / "c0__t0.safetensors"))
    loaded = PeftModel.from_pretrained(load_backbone("tiny-bert", seed=0).model, str(leaf))
    a0 = [m for n, m in loaded.named_modules() if hasattr(m, "lora_A") and n.endswith("query")][0]
    assert torch.equal(a0.lora_A["default"].weight, stored["0.A"].float())
    # the leaf with its client's head predicts what the project's learner predicts with the same adapter and head
    head = load_file(str(client / "head.safetensors"))
    task = stream.tasks[sched.tasks[0]]
    (leaf / "head.safetensors").write_bytes((client / "head.safetensors").read_bytes())
    leaf_info = json.loads((leaf / "info.json").read_text())
    (leaf / "info.json").write_text(json.dumps(dict(leaf_info, head="head.safetensors", num_classes=info["num_classes"],
                                                    classes=list(task.classes))))
    pred, logits = peft_predict(leaf, [e.text for e in task.test])
    adapter = {k: v.float() for k, v in stored.items() if not k.startswith("sketch.")}
    adapter.update({"head.weight": head["weight"], "head.bias": head["bias"]})
    ours, our_logits = project_predict("treelora", adapter, task.test, task.classes, regularizer="l1-grad-fd")
    assert torch.equal(pred, ours) and torch.allclose(logits, our_logits, atol=1e-4)
