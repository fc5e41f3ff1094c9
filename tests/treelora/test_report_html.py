"""``treelora report``: one self-contained HTML page over centralized and federated runs, opened in a real
headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by selenium): every figure renders with a
non-zero size, the console has no error, the page fetches nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from treelora.cli import main
from treelora.report_html import build_report, flatten_numbers, write_report

TREE = {"depth": 0, "tasks": ["c0/t0", "c1/t0", "c0/t1", "c1/t1"], "children": [
    {"depth": 1, "tasks": ["c0/t0", "c1/t0"], "children": [
        {"depth": 2, "tasks": ["c0/t0"], "children": []}, {"depth": 2, "tasks": ["c1/t0"], "children": []}]},
    {"depth": 1, "tasks": ["c0/t1", "c1/t1"], "children": []}]}


def federated_results(method: str = "treelora", tree: bool = True) -> dict:
    """A federated results.json as server/results.py writes it (plus leaf_tasks and tree_quality)."""
    per_client = {c: {"tasks": [f"{c}/t0", f"{c}/t1"], "accuracy_matrix": [[0.8, None], [0.6, 0.7]],
                      "metrics": {"acc": 0.65 + 0.01 * k, "bwt": -0.2, "bwt_clipped": -0.2, "forgetting": 0.2}}
                  for k, c in enumerate(("c0", "c1"))}
    history = [{"round": r, "bytes_down": 1000 * r, "bytes_up": 4096, "replies": 2, "rejected": 0, "server_s": 0.01,
                "leaves": 2 * (r // 2), "shared_layers": 1} for r in (1, 2, 3, 4)]
    res = {"method": method, "config": {"stream": "wordnet", "backbone": "minilm", "scenario": "staggered"},
           "rounds": 4, "per_client": per_client,
           "metrics": {"acc": {"mean": 0.655, "std": 0.007}, "bwt": {"mean": -0.2, "std": 0.0}},
           "bytes_up_total": 16384, "bytes_down_total": 10000, "bytes_up_per_client_round": 2048.0,
           "bytes_down_per_client_round": 1250.0, "full_model_bytes": 10**7, "up_vs_full_model": 2e-4,
           "history": history, "errors": [{"round": 3, "node_id": 1, "code": "bad-value", "reason": "xi < 0"}],
           "leaves": list(TREE["tasks"]) if tree else [], "tree": TREE if tree else None,
           "final_evaluation": {"round": 4, "per_client": {}, "mean_accuracy": 0.7}}
    if tree:
        res["leaf_tasks"] = {"c0/t0": {"task": "noun.animal", "family": "living"},
                             "c1/t0": {"task": "noun.plant", "family": "living"},
                             "c0/t1": {"task": "verb.motion", "family": "verbs"},
                             "c1/t1": {"task": "verb.contact", "family": "verbs"}}
        res["tree_quality"] = {"purity": 0.75, "per_depth": {"1": 1.0, "2": 0.5}, "families": 2}
    return res


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    assert main(["train", "--method", "treelora", "seqlora", "--stream", "synthetic-text", "--backbone", "tiny-bert",
                 "--epochs", "1", "--num-tasks", "2", "--train-per-class", "8", "--test-per-class", "4",
                 "--seeds", "0", "1", "--set", "batch_size=8", "--set", "progress=False", "--no-plots",
                 "--out", str(root / "central")]) == 0
    for method, tree in (("treelora", True), ("fedavg-lora", False)):
        (root / "fed" / method).mkdir(parents=True)
        (root / "fed" / method / "results.json").write_text(json.dumps(federated_results(method, tree)))
    return root


def test_page_is_self_contained_and_complete(runs, capsys):
    capsys.readouterr()
    assert main(["report", str(runs / "central"), str(runs / "fed"), "--out", str(runs / "report.html")]) == 0
    assert "report: " in capsys.readouterr().out
    page = (runs / "report.html").read_text()
    assert not re.search(r"<script|<img|<iframe|@import|url\(http|(src|href)=\"?https?:", page)
    for section in ("Summary", "ACC and BWT per method", "Accuracy matrices", "Over rounds", "Trees", "Tree purity",
                    "Rejected replies"):
        assert f"<h2>{section}</h2>" in page
    assert "noun.animal (t0)" in page and "verb.contact" in page  # heatmap ticks and tree leaves: task names
    assert "task family" in page and "living" in page  # the tree's family legend
    assert "per_depth.2" in page and "bad-value" in page
    assert page.count("<svg") == _expected_figures()


def _expected_figures() -> int:
    # bars: ACC + BWT (centralized) + ACC + BWT (federated); matrices: 2 centralized methods + 2 runs x 2 clients;
    # rounds: up, down, leaves, accuracy; trees: centralized treelora (seqlora has none) + federated treelora
    return 4 + (2 + 4) + 4 + 2


def test_one_directory_report_goes_next_to_it(runs):
    assert main(["report", str(runs / "fed" / "treelora")]) == 0
    assert (runs / "fed" / "treelora" / "report.html").exists()


def test_flatten_numbers_and_empty():
    assert flatten_numbers({"a": 1, "b": {"c": [0.5, True]}, "s": "x"}) == [("a", 1.0), ("b.c[0]", 0.5),
                                                                             ("b.c[1]", 1.0)]
    with pytest.raises(ValueError):
        build_report([])


def _browser() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/lib/chromium/chromedriver"
                                              if os.path.exists("/usr/lib/chromium/chromedriver") else None)
    return (chromium, driver) if chromium and driver else None


def test_report_renders_in_headless_chromium(runs, tmp_path):
    found = _browser()
    if found is None:
        pytest.skip("no Chromium: `apt-get install -y chromium chromium-driver` (.ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the test extra) is not installed")
    from selenium.webdriver.chrome.service import Service

    page = write_report([runs / "central", runs / "fed"], tmp_path / "report.html")
    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=found[1]))
    try:
        driver.set_page_load_timeout(60)
        driver.get(page.resolve().as_uri())
        sizes = driver.execute_script(
            "return Array.from(document.querySelectorAll('figure > svg')).map(function (e) {"
            " var r = e.getBoundingClientRect(); return [r.width, r.height]; });")
        assert len(sizes) == _expected_figures()
        assert all(w > 50 and h > 50 for w, h in sizes), sizes
        assert driver.execute_script("return document.querySelectorAll('svg text').length") > 100  # text drawn
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0  # no fetch
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        errors = [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
        assert not errors, errors
        assert driver.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").stat().st_size > 10_000
    finally:
        driver.quit()
