"""``python -m simulations.gpu_check``: without a GPU it says what it found and fails, unless ``--allow-cpu``; with
it, the whole path (bench_step's precision variants, the l1-grad attention probe, a federation whose node config
names the device and bf16) runs on the CPU, tiny, and writes the JSON and the BENCHMARKS.md section."""

from __future__ import annotations

import json

import pytest
import torch

from simulations import bench_step, gpu_check

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: run gpu_check for real")


def test_without_gpu_it_says_so_and_fails(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert out.out.startswith("no GPU: torch ") and "torch.cuda.is_available() is False" in out.out
    assert "--allow-cpu" in out.err and not list(tmp_path.iterdir())


def test_allow_cpu_runs_the_same_path(tmp_path, capsys):
    variants = dict(bench_step.VARIANTS)
    backbones = ["tiny-bert"] + (["smollm2"] if gpu_check.smollm2_status() != "installed" else [])
    assert gpu_check.main(["--allow-cpu", "--out", str(tmp_path), "--backbones", *backbones]) == 0
    printed = capsys.readouterr().out
    assert bench_step.VARIANTS == variants  # the precision variants were only lent to bench_step
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["ok"] and data["device"]["cuda_available"] is False
    rows = {r["variant"]: r for r in data["step_time"]["tiny-bert"]["rows"]}
    assert set(rows) == {"seqlora", "seqlora-bf16", "treelora-fp32", "treelora-bf16"}
    assert {rows[v]["precision"] for v in rows} == {"fp32", "bf16"} and rows["seqlora"]["ratio_to_seqlora"] == 1.0
    if "smollm2" in backbones:
        assert data["step_time"]["smollm2"]["status"].startswith("not installed")
        assert "smollm2: not installed" in printed
    l1 = data["l1_grad"]
    assert l1["ok"] and l1["attention"] in ("sdpa", "sdpa-math", "eager")
    assert l1["attempts"][-1]["kernel"] == l1["attention"] and l1["attempts"][-1]["regularised"]
    assert all(not a["ok"] and a["error"] for a in l1["attempts"][:-1])  # every kernel before it refused, said why
    fed = data["federated"]
    assert fed["ok"] and fed["rounds"] == 2 and fed["leaves"] == 4 and not fed["errors"]
    assert {x["autocast"] for x in fed["learners"]} == {"torch.bfloat16"}  # node config precision=bf16 arrived
    section = (tmp_path / "gpu_check.md").read_text()
    assert section.startswith("## GPU check") and section.strip() in printed
    assert "| treelora-bf16 | treelora | bf16 |" in section and "attention kernel used" in section
