"""Smoke tests of the benchmark scripts (simulations/bench_*.py) at tiny sizes: each runs end to end, prints its
markdown table and writes its JSON with the machine record. The figures themselves are in BENCHMARKS.md."""

from __future__ import annotations

import json

import pytest

from simulations import bench_comm, bench_scale, bench_search, bench_sketch, bench_step


def _json(path) -> dict:
    data = json.loads(path.read_text())
    m = data["machine"]
    for key in ("date_utc", "nproc", "cpu_model", "torch_threads", "command", "gpu", "loadavg_start"):
        assert key in m, key
    return data


def test_bench_search_tiny(tmp_path, capsys):
    rc = bench_search.main([
        "--sketch-sizes", "40", "--exact-sizes", "20", "--layers", "3", "--p", "64", "--sketch-dim", "16",
        "--clusters", "4", "--rank", "4", "--steps", "6", "--repeats", "1", "--c", "2", "--inserts", "1",
        "--out", str(tmp_path),
    ])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| exact | 20 |" in out and "| sketch | 40 |" in out
    data = _json(tmp_path / "bench_search.json")
    rows = data["rows"]
    assert [r["leaves"] for r in rows] == [20, 40]
    for r in rows:
        assert r["tree"]["distance_evals_median"] == 3 and r["flat"]["distance_evals_median"] == 3
        assert r["scan"]["distance_evals_median"] == 3 * r["leaves"]
        assert 0 <= r["scan"]["hit_rate"] <= 1 and r["build_s"] >= 0


def test_bench_sketch_tiny(tmp_path, capsys):
    rc = bench_sketch.main([
        "--dims", "16", "64", "--p", "96", "--seeds", "2", "--steps", "2", "--tasks", "1", "--backbone", "tiny-bert",
        "--stream", "synthetic-text", "--train-per-class", "8", "--batch-size", "4", "--pairs", "10",
        "--random", "gaussian", "--random-pairs", "10", "--grad-cache", "", "--out", str(tmp_path),
    ])
    assert rc == 0
    assert "| tiny-bert-grad | 16 |" in capsys.readouterr().out
    data = _json(tmp_path / "bench_sketch.json")
    assert {(r["vectors"], r["s"]) for r in data["rows"]} == {
        ("tiny-bert-grad", 16), ("tiny-bert-grad", 64), ("gaussian", 16), ("gaussian", 64)}
    for r in data["rows"]:
        assert r["sketch_bytes"] == 4 * r["s"] and 0 <= r["pooled_median"] < 1


def test_bench_step_tiny(tmp_path, capsys):
    rc = bench_step.main([
        "--backbone", "tiny-bert", "--stream", "synthetic-text", "--variants", "seqlora", "treelora",
        "treelora-official", "--batch-size", "4", "--max-length", "8", "--task-steps", "1", "--warmup", "0",
        "--steps", "2", "--breakdown-reps", "1", "--train-per-class", "8", "--threads", "1", "--omp-compare", "0",
        "--out", str(tmp_path),
    ])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| treelora | eager |" in out and "double backward" in out
    data = _json(tmp_path / "bench_step.json")
    by = {r["variant"]: r for r in data["rows"]}
    assert by["seqlora"]["ratio_to_seqlora"] == pytest.approx(1.0)
    assert by["treelora"]["reg_s_mean"] > 0  # the regulariser was active after two finished tasks


def test_bench_comm_tiny(tmp_path, capsys):
    rc = bench_comm.main([
        "--backbones", "tiny-bert", "--measured-backbone", "tiny-bert", "--stream", "synthetic-text",
        "--methods", "treelora", "--clients", "2", "--local-steps", "1", "--batch-size", "4",
        "--train-per-class", "8", "--threads", "1", "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path),
    ])
    assert rc == 0
    assert "full-model FedAvg" in capsys.readouterr().out
    data = _json(tmp_path / "bench_comm.json")
    meas = data["measured"][0]
    assert meas["errors"] == 0 and meas["client_rounds"] == 8
    # the bytes counted message by message agree with the server's own accounting
    assert meas["up_per_client_round"] == pytest.approx(meas["server_reported_up_per_client_round"])
    built = data["built"][0]
    assert built["layers"] == 4 and built["references"]["fedavg_lora_fp32"] == 4 * built["lora_params"]


def test_bench_scale_tiny(tmp_path, capsys):
    row = bench_scale.run_local_child({
        "run_config": dict(bench_scale.TINY, **{"train-per-class": 8, "test-per-class": 2, "local-steps": 1}),
        "clients": 2, "threads": 1, "work": str(tmp_path / "local")})
    assert row["rounds"] == 2 and row["errors"] == 0 and row["leaves"] == 4
    assert row["peak_rss_mib"] > 0 and len(row["train_phase_s"]) == 2
    rc = bench_scale.main([
        "--parts", "server", "--leaves", "6", "--server-clients", "3", "--server-rounds", "1", "--grow-ingest", "3",
        "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path), "--breakdown",
    ])
    assert rc == 0
    assert "| 6 | 3 | 1 (6 leaves) |" in capsys.readouterr().out
    data = _json(tmp_path / "bench_scale.json")
    srv = data["parts"]["server"][0]
    assert srv["ingested"] == 3 and srv["bulk_loaded"] == 3 and srv["rounds"][0]["leaves_after"] >= 6
    parts = srv["rounds"][0]["parts"]  # --breakdown: 3 reports validated, 3 assignments encoded, nearest searched
    assert parts["validate"]["calls"] == 3 and parts["encode"]["calls"] == 3 and parts["nearest"]["calls"] >= 3
    assert all(v["s"] >= 0 for v in parts.values()) and parts["leaf_files"]["calls"] >= 1
    import server.state

    assert not hasattr(server.state.validate_report, "__wrapped__")  # the timers are gone after the run
    assert "| 6 |" in bench_scale.render({"server": data["parts"]["server"]})


def test_bench_fed_accuracy_tiny_pairs_seeds_and_bounds_by_the_oracle(tmp_path, capsys):
    from simulations import bench_fed_accuracy

    rc = bench_fed_accuracy.main([
        "--preset", "scale", "--clients", "2", "--seeds", "0", "1",
        "--methods", "local-only", "fedavg-lora", "oracle-sharing", "--reference", "local-only",
        "--set", "scenario=identical", "--set", "train-per-class=16", "--out", str(tmp_path),
    ])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Δ vs local-only (95% CI)" in out and "share of the oracle's gain" in out
    data = _json(tmp_path / "fed_accuracy.json")
    assert data["seeds"] == [0, 1] and len(data["summary"]["fedavg-lora"]["per_seed_acc"]) == 2
    assert {r["method"] for r in data["paired"]} == {"local-only", "fedavg-lora", "oracle-sharing"}
    saved = tmp_path / "fedavg-lora" / "seed1" / "bench_run.json"
    assert saved.exists()
    stamp = saved.stat().st_mtime_ns
    rc = bench_fed_accuracy.main([
        "--preset", "scale", "--clients", "2", "--seeds", "1", "--methods", "fedavg-lora", "--reference",
        "fedavg-lora", "--set", "scenario=identical", "--set", "train-per-class=16", "--out", str(tmp_path),
        "--resume",
    ])
    assert rc == 0 and saved.stat().st_mtime_ns == stamp  # read back, not re-run
    again = _json(tmp_path / "fed_accuracy.json")
    assert again["summary"]["fedavg-lora"]["per_seed_acc"] == data["summary"]["fedavg-lora"]["per_seed_acc"][1:]
    rc = bench_fed_accuracy.main([
        "--preset", "scale", "--clients", "2", "--seeds", "1", "--methods", "fedavg-lora", "--reference",
        "fedavg-lora", "--set", "scenario=identical", "--set", "train-per-class=16", "--out", str(tmp_path),
        "--resume", "--method-set", "fedavg-lora:local-steps=1",
    ])
    assert rc == 0 and saved.stat().st_mtime_ns != stamp  # another preset for that method: run again
    assert _json(tmp_path / "fed_accuracy.json")["method_overrides"] == {"fedavg-lora": {"local-steps": 1}}
    with pytest.raises(SystemExit):
        bench_fed_accuracy.main(["--preset", "scale", "--methods", "fedavg-lora", "--method-set", "treelora:lr=1"])


def test_bench_tree_purity_tiny(tmp_path, capsys, monkeypatch):
    from simulations import bench_tree_purity, purity_signatures

    monkeypatch.setitem(purity_signatures.SCENARIOS, "tiny",
                        {"scenario": "families", "families": 2, "clients": 4, "tasks_per_client": 1})
    argv = ["--scenarios", "tiny", "--seeds", "0", "--noise", "0", "0.01", "--splits", "l1-median", "bisect",
            "--cache", str(tmp_path / "cache"), "--out", str(tmp_path), "--set", "backbone=tiny-bert",
            "stream=synthetic-text", "train_per_class=8", "local_steps=1", "rounds_per_task=1", "batch_size=4",
            "probe_batches=1", "max_length=12"]
    assert bench_tree_purity.main(argv) == 0
    assert "| tiny | probe-grad |" in capsys.readouterr().out
    data = _json(tmp_path / "tree_purity.json")
    rows = data["rows"]
    assert {(r["signature"], r["noise"], r["split"]) for r in rows} == {
        (k, 0.0, s) for k in ("live", "probe-grad", "probe-fisher", "probe-input", "probe-input-grad")
        for s in ("l1-median", "bisect")} | {
        ("probe-grad", 0.01, s) for s in ("l1-median", "bisect")}
    for r in rows:
        assert r["leaves"] == 4 and r["warm_start"]["total"] == 4 and 0 <= r["nn_purity"]["overall"]["rate"] <= 1
        assert (r["epsilon_per_client"] is None) == (r["noise"] == 0)
        assert -1 <= r["spread_cut_ari_family"] <= 1
        assert "spread_cut_ari_pos" not in r  # the noun/verb cut is WordNet's own grouping: not for other streams
    # every shared-probe row is measured under both probe-norm settings, side by side; live has none
    assert {(r["signature"], r["probe_norm"]) for r in rows if r["noise"] == 0 and r["split"] == "bisect"} == {
        ("live", None)} | {(k, n) for k in ("probe-grad", "probe-fisher", "probe-input", "probe-input-grad")
                           for n in ("l1", "none")}
    assert bench_tree_purity.main(argv) == 0  # the second run reads the cached signatures
    # a cache from before a probe kind existed gets it filled in (no retraining), the same values as a fresh one
    import torch

    (cache,) = (tmp_path / "cache").glob("*.pt")
    full = torch.load(cache, weights_only=False)
    old = {**full, "signatures": {k: {n: v for n, v in e.items() if n != "probe-input"}
                                  for k, e in full["signatures"].items()}}
    torch.save(old, cache)
    overrides = {"backbone": "tiny-bert", "stream": "synthetic-text", "train_per_class": 8, "local_steps": 1,
                 "rounds_per_task": 1, "batch_size": 4, "probe_batches": 1, "max_length": 12}
    again = purity_signatures.leaf_signatures("tiny", 0, tmp_path / "cache", log=lambda m: None, **overrides)
    assert "seconds_probes_added" in again
    for k, e in full["signatures"].items():
        assert all(torch.equal(a, b) for a, b in zip(again["signatures"][k]["probe-input"], e["probe-input"]))
        assert all(torch.equal(a, b) for a, b in zip(again["signatures"][k]["live"], e["live"]))
    # --probes-only: the same probes and finishing order without training, cached apart; no live rows
    probes = purity_signatures.leaf_signatures("tiny", 0, tmp_path / "probes", log=lambda m: None, probes_only=True,
                                               **overrides)
    assert probes["order"] == full["order"] and probes["truth"] == full["truth"]
    for k, e in full["signatures"].items():
        assert "live" not in probes["signatures"][k]
        for kind in ("probe-grad", "probe-fisher", "probe-input", "probe-input-grad"):
            assert all(torch.equal(a, b) for a, b in zip(probes["signatures"][k][kind], e[kind]))
    assert [p.name for p in (tmp_path / "probes").glob("*.pt")] == [cache.stem + "-probes.pt"]
    assert bench_tree_purity.main([*argv[:-len(overrides) - 1], "--probes-only", "--cache", str(tmp_path / "probes"),
                                   "--set", *argv[-len(overrides):]]) == 0
    assert {r["signature"] for r in _json(tmp_path / "tree_purity.json")["rows"]} == {
        "probe-grad", "probe-fisher", "probe-input", "probe-input-grad"}


def test_bench_central_tiny(tmp_path, capsys):
    from simulations import bench_central

    preset = tmp_path / "tiny.toml"
    preset.write_text("epochs = 1\nbatch_size = 8\nmax_length = 12\nlr = 5e-3\n"
                      "[stream]\ntrain_per_class = 8\ntest_per_class = 4\n")
    argv = ["--preset", str(preset), "--stream", "synthetic-text", "--backbone", "tiny-bert", "--num-tasks", "2",
            "--seeds", "0", "1", "--variants", "seqlora", "treelora-sqrt", "head-only", "oracle", "--threads", "1",
            "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)]
    assert bench_central.main(argv) == 0
    out = capsys.readouterr().out
    assert "| head-only (reference) |" in out and "| oracle (reference) |" in out and "TIL BWT" in out
    data = _json(tmp_path / "central_tiny.json")
    til = {r["method"]: r for r in data["tables"]["til_bwt"]}
    assert til["oracle"]["values"] == [0.0, 0.0]  # task-aware: BWT 0 by construction
    assert til["head-only"]["vs_reference"]["n"] == 2 and til["seqlora"]["vs_reference"] is None
    assert (tmp_path / "central_tiny.md").read_text().startswith("# Centralized benchmark")
    h2h = {(r["variant"], r["vs"], r["metric"]) for r in data["head_to_head"]}
    assert ("treelora-sqrt", "seqlora", "til_bwt") in h2h and all(r["diff"]["n"] == 2 for r in data["head_to_head"])
    assert bench_central.main(argv) == 0  # a second call reads the runs back (resume) and writes the same table
    assert _json(tmp_path / "central_tiny.json")["tables"] == data["tables"]
    # a run left by another configuration is refused, not read back under the same name
    with pytest.raises(SystemExit, match="lr: 0.005 there, 0.0005 now"):
        bench_central.main(argv + ["--variant-set", "seqlora:lr=5e-4"])
    with pytest.raises(SystemExit):
        bench_central.main(argv + ["--variant-set", "nope:lr=5e-4"])
    # so is one drawn with other sizes (the stream and backbone are not in the config: the run records them)
    with pytest.raises(SystemExit, match="test_per_class: 4 there, 5 now"):
        bench_central.main(argv + ["--test-per-class", "5"])


def test_bench_central_causal_lm_instruction_mode(tmp_path, capsys):
    """The ``lm`` preset's path: a causal LM answers by greedy decoding (no head), scored with the three views;
    tiny-llama on the synthetic stream stands in for SmolLM2 on WordNet."""
    from simulations import bench_central
    from treelora.presets import load_preset

    config, sizes = load_preset("lm")
    assert config["lm_mode"] == "generate" and sizes["num_tasks"] >= 3
    preset = tmp_path / "lm-tiny.toml"
    preset.write_text('epochs = 1\nbatch_size = 8\nlr = 5e-3\nlm_mode = "generate"\n'
                      "[stream]\ntrain_per_class = 6\ntest_per_class = 3\n")
    argv = ["--preset", str(preset), "--stream", "synthetic-text", "--backbone", "tiny-llama", "--num-tasks", "2",
            "--seeds", "0", "--variants", "seqlora", "treelora-sqrt", "oracle", "--threads", "1",
            "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)]
    assert bench_central.main(argv) == 0
    data = _json(tmp_path / "central_lm-tiny.json")
    assert data["backbone"] == "tiny-llama"
    assert {r["method"] for r in data["tables"]["til_acc"]} == {"seqlora", "treelora-sqrt", "oracle"}
    run = json.loads((tmp_path / "runs" / "seqlora" / "seed0" / "results.json").read_text())
    assert run["config"]["lm_mode"] == "generate" and set(run["views"]) >= {"cil", "til"}
    assert run["bench_data"]["backbone"] == "tiny-llama"


def test_bench_central_variant_set_applies_to_one_variant(tmp_path):
    from simulations import bench_central

    preset = tmp_path / "tiny.toml"
    preset.write_text("epochs = 1\nbatch_size = 8\nmax_length = 12\nlr = 5e-3\n"
                      "[stream]\ntrain_per_class = 6\ntest_per_class = 3\n")
    argv = ["--preset", str(preset), "--stream", "synthetic-text", "--backbone", "tiny-bert", "--num-tasks", "2",
            "--seeds", "0", "--variants", "seqlora", "ewc", "--threads", "1", "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path), "--variant-set", "ewc:lr=1e-3"]
    assert bench_central.main(argv) == 0
    lrs = {v: json.loads((tmp_path / "runs" / v / "seed0" / "results.json").read_text())["config"]["lr"]
           for v in ("seqlora", "ewc")}
    assert lrs == {"seqlora": 5e-3, "ewc": 1e-3}
    assert _json(tmp_path / "central_tiny.json")["variant_overrides"] == {"ewc": {"lr": 1e-3}}


def test_bench_reg_scale_tiny(tmp_path, capsys):
    from simulations import bench_reg_scale

    rc = bench_reg_scale.main(["--backbone", "tiny-bert", "--stream", "synthetic-text", "--steps", "2",
                               "--task0-steps", "2", "--train-per-class", "8", "--batch-size", "4", "--threads", "1",
                               "--out", str(tmp_path)])
    assert rc == 0
    assert "| sqrt |" in capsys.readouterr().out
    rows = {r["reduction"]: r for r in _json(tmp_path / "reg_scale.json")["rows"]}
    p = 512  # tiny-bert's LoRA layer size: sum / sqrt = √p, sqrt / mean = √p (same batch, same masks)
    assert rows["sum"]["ratio_median"] / rows["sqrt"]["ratio_median"] == pytest.approx(p ** 0.5, rel=1e-3)
    assert rows["sqrt"]["ratio_median"] / rows["mean"]["ratio_median"] == pytest.approx(p ** 0.5, rel=1e-3)


def test_tune_lr_never_reads_the_test_split(tmp_path, capsys):
    from simulations import tune_lr
    from treelora.streams import load_stream

    base = load_stream("synthetic-text", train_per_class=10, test_per_class=4)
    val = tune_lr.validation_stream(base, 0.2)
    test_texts = {e.text for t in base.tasks for e in t.test}
    for t, b in zip(val.tasks, base.tasks):
        assert {e.text for e in t.train} | {e.text for e in t.test} == {e.text for e in b.train}
        val_texts = {e.text for e in t.test}
        assert not (val_texts & test_texts) and not ({e.text for e in t.train} & val_texts)
    preset = tmp_path / "tiny.toml"
    preset.write_text("epochs = 1\nbatch_size = 8\nmax_length = 12\n"
                      "[stream]\ntrain_per_class = 8\ntest_per_class = 4\n")
    rc = tune_lr.main(["--preset", str(preset), "--stream", "synthetic-text", "--backbone", "tiny-bert", "--num-tasks",
                       "2", "--lrs", "1e-3", "5e-3", "--threads", "1", "--out", str(tmp_path)])
    assert rc == 0 and "| seqlora | 0.005 |" in capsys.readouterr().out
    data = _json(tmp_path / "tune_lr_tiny.json")
    assert data["chosen"]["seqlora"] in (1e-3, 5e-3) and len(data["rows"]) == 2
    rc = tune_lr.main(["--preset", str(preset), "--stream", "synthetic-text", "--backbone", "tiny-bert", "--num-tasks",
                       "2", "--method", "ewc", "--knob", "ewc_lambda", "--lrs", "10", "1e4", "--threads", "1",
                       "--out", str(tmp_path)])
    assert rc == 0 and "| ewc | 10000 |" in capsys.readouterr().out
    data = _json(tmp_path / "tune_ewc_lambda_tiny.json")
    assert data["knob"] == "ewc_lambda" and [r["ewc_lambda"] for r in data["rows"]] == [10, 1e4]
    for bad in (["--knob", "no_such_knob"], ["--knob", "regularizer"], ["--knob", "reg_every", "--values", "1.5"]):
        with pytest.raises(SystemExit):
            tune_lr.main(["--preset", str(preset), *bad, "--out", str(tmp_path)])


def test_one_variant_registry_for_step_time_and_accuracy():
    """bench_step and bench_central read the same registry, so a name is the same learner in both; the attention
    kernel follows the config except where a variant pins it."""
    from simulations import bench_central, bench_step, variants

    assert bench_step.VARIANTS is variants.VARIANTS and bench_central.VARIANTS is variants.VARIANTS
    assert set(variants.STEP_DEFAULT) <= set(variants.VARIANTS)
    assert variants.VARIANTS["treelora"] is variants.VARIANTS["treelora-sum"]
    kernels = {n: variants.attention_of(v) for n, v in variants.VARIANTS.items()}
    assert kernels["seqlora"] == "sdpa" and kernels["seqlora-eager"] == "eager"
    assert kernels["treelora-sqrt"] == kernels["treelora-top2"] == "eager"  # double backward through attention
    assert kernels["treelora-fd"] == "sdpa"
    with pytest.raises(ValueError, match="role"):
        variants.Variant("seqlora", role="winner")
