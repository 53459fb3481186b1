"""End-to-end in headless Chromium: the report opens from disk, the service page segments an upload.

Drives a system Chromium through Playwright's Python package; never downloads a browser.
Chromium is `$PIXELWISE_CHROMIUM` when set, else the first of chromium, chromium-browser,
google-chrome, google-chrome-stable on PATH. The rule (README, "Tests"): when the CI
environment variable is set (anything but empty, 0, false, no), a missing Chromium or
Playwright FAILS these tests; only outside CI do they skip, with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = [pytest.mark.browser]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find_chromium() -> str | None:
    """$PIXELWISE_CHROMIUM when set (it must then exist), else the first known name on PATH."""
    override = os.environ.get("PIXELWISE_CHROMIUM")
    if override:
        return override if os.path.isfile(override) and os.access(override, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def missing(reason: str) -> None:
    """Fail in CI, skip elsewhere: CI must never pass with the browser tests silently skipped."""
    if in_ci():
        pytest.fail(f"{reason}; CI={os.environ['CI']!r} is set, so the browser tests must run (see README, Tests)",
                    pytrace=False)
    pytest.skip(f"{reason} (outside CI this skips; with CI set it fails)")


@pytest.fixture(scope="module")
def browser():
    chromium = find_chromium()
    if chromium is None:
        where = (f"PIXELWISE_CHROMIUM={os.environ['PIXELWISE_CHROMIUM']} is not an executable file"
                 if os.environ.get("PIXELWISE_CHROMIUM") else f"none of {', '.join(CHROMIUM_NAMES)} is on PATH")
        missing(f"no Chromium: {where} (install Debian's chromium package; no browser is downloaded)")
    try:
        from playwright import sync_api
    except ImportError:
        missing("the playwright Python package is not installed (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def _image_widths(page) -> list[int]:
    return page.eval_on_selector_all("img", "imgs => imgs.map(i => (i.complete ? i.naturalWidth : -1))")


def test_report_renders_with_images_and_numbers(browser, tmp_path):
    from test_report import PER_CLASS, make_run

    from pixelwise.report import write_report

    path = write_report(make_run(tmp_path))
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    assert page.title().startswith("pixelwise report")
    widths = _image_widths(page)
    assert len(widths) == 9 and all(w > 0 for w in widths), widths
    # Numbers as the browser shows them, not just as written in the source.
    rows = page.eval_on_selector_all(
        "#per-class-table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))")
    by_name = {row[0]: row[1:] for row in rows}
    assert set(by_name) == set(PER_CLASS)
    assert by_name["road"][:2] == ["0.6543", "0.7910"]
    assert by_name["boat"][:4] == ["n/a"] * 4
    miou_text = page.inner_text("#miou-table")
    assert "0.5722" in miou_text and "0.4412" in miou_text and "0.6633" in miou_text
    for heading in ("Run summary", "Training curves", "Per-class scores", "Confusion matrix", "Best and worst"):
        assert page.get_by_role("heading", name=re.compile(heading)).count() == 1
    assert errors == []
    page.close()


@pytest.mark.slow
def test_service_page_upload_shows_overlay_and_legend(browser, tmp_path):
    from pixelwise.bench.bench_serve import serving, tiny_checkpoint

    from pixelwise.inference.predictor import Predictor
    from pixelwise.serve import create_app

    predictor = Predictor.from_checkpoint(tiny_checkpoint(tmp_path), device="cpu", precision="fp32")
    upload = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(upload)
    with serving(create_app(predictor, name="tiny")) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#legend li")  # filled from GET /model
        page.set_input_files("#file", str(upload))
        page.wait_for_function(
            "() => { const i = document.getElementById('overlay'); return i.complete && i.naturalWidth > 0; }",
            timeout=60_000)
        assert page.eval_on_selector("#overlay", "i => [i.naturalWidth, i.naturalHeight]") == [64, 48]
        assert page.inner_text("#status").startswith("Done")
        names = page.eval_on_selector_all("#legend .class-name", "els => els.map(e => e.textContent)")
        assert names == ["a", "b", "c"]
        shares = page.eval_on_selector_all("#legend .share", "els => els.map(e => parseFloat(e.textContent))")
        assert len(shares) == 3 and sum(shares) == pytest.approx(100, abs=0.5)

        # A drop of a non-image shows the service's message instead of an overlay.
        page.evaluate("""async () => {
            const data = new DataTransfer();
            data.items.add(new File(['not an image'], 'notes.txt', {type: 'text/plain'}));
            document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true}));
        }""")
        page.wait_for_function("() => document.getElementById('status').className === 'error'", timeout=30_000)
        assert "415" in page.inner_text("#status") and "not an image" in page.inner_text("#status")
        page.close()
