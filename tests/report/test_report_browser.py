"""The HTML report opened in a real headless Chromium (Debian's `chromium`, driven by Playwright): every image
loads, every table has rows, the page logs no console error. scripts/install.sh installs both."""

import json
import os
import shutil

import pytest

from report_fixture import Results, bernoulli
from snrtune.report.report import build_report

CHROMIUM = os.environ.get("SNRTUNE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# CI installs both (scripts/install.sh), so there a missing browser is a failure, never a silent skip
if os.environ.get("CI"):
    from playwright import sync_api  # noqa: E402
    assert os.path.exists(CHROMIUM), f"no Chromium at {CHROMIUM}: scripts/install.sh should have installed it"
else:
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright not installed (scripts/install.sh installs it)")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (scripts/install.sh installs Debian's chromium)",
                    allow_module_level=True)


def _snr(model):
    modules = [{"name": f"model.layers.{l}.{t}", "param": f"model.layers.{l}.{t}.weight", "type": t, "layer": l,
                "expert": None, "snr": 0.1 * (l + 1) + 0.01 * i, "status": "ok"}
               for l in range(4) for i, t in enumerate(["self_attn.q_proj", "mlp.down_proj"])]
    return {"model": model, "method": "gram", "modules": modules, "parameters": {}, "total_params": 1000,
            "not_scannable": []}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    res = Results(root)
    for i, model in enumerate(("model-a", "model-b")):
        res.add(model, "base", bernoulli(0.1, 60, 10 * i))
        for seed in (0, 1):
            res.add(model, "full", bernoulli(0.8 - 0.3 * i, 60, 10 * i + seed + 1), seed=seed)
            res.add(model, "spectrum", bernoulli(0.7 - 0.3 * i, 60, 10 * i + seed + 3), t=25, seed=seed)
            res.add(model, "spectrum-random", bernoulli(0.5 - 0.3 * i, 60, 10 * i + seed + 5), t=25, seed=seed)
            res.add(model, "lora", bernoulli(0.6, 60, 10 * i + seed + 7), seed=seed, learns=False)
        (root / f"{model}-snr.json").write_text(json.dumps(_snr(model)))
    return build_report(root, tmp_path_factory.mktemp("out") / "report")


def test_report_renders_in_headless_chromium(report):
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page()
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto((report / "report.html").as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({alt: e.alt, complete: e.complete, width: e.naturalWidth}))")
            tables = page.eval_on_selector_all(
                "table", "els => els.map(t => t.querySelectorAll('tbody tr').length)")
            headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
        finally:
            browser.close()
    assert len(images) == len(list(report.glob("*.png"))) >= 10  # per model: 4 plots + a heatmap
    assert all(img["complete"] and img["width"] > 0 for img in images), images
    # per model: scores, comparisons, selection criteria (spectrum-random against spectrum), settings
    assert len(tables) == 8 and all(rows > 0 for rows in tables), tables
    assert headings == ["model-a", "model-b"]
    assert errors == []
