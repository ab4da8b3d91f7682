"""Drive the OHIF v3 viewer that monailabel ships (`/ohif/`, MONAI Label mode) in Debian's Chromium through
Playwright: open a study, wait for the CT to be drawn, connect the MONAI Label panel, type the free-text prompt
into the `seer` options, run it, and wait for the segment to be drawn. Used by tests/test_ohif_browser.py and
bench/bench_ohif.py.

Pixels are read from the axial viewport's canvas (cornerstone copies its WebGL output into a 2D canvas): CT is
grey, so "overlay drawn" means coloured pixels that were not there before Run. The segment's name and voxel
count are read from OHIF's own segmentation service (`window.services.segmentationService`).
"""

from __future__ import annotations

import base64
import io
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

CHROMIUM = "/usr/bin/chromium"
AXIAL = '[data-viewport-uid="mpr-axial"]'
CANVAS = f"{AXIAL} canvas.cornerstone-canvas"
ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]

SEGMENTS_JS = """(name) => {
  const service = window.services && window.services.segmentationService;
  if (!service) return [];
  const found = [];
  for (const seg of service.getSegmentations() || []) {
    let counts = {};
    try {
      const data = service.getLabelmapVolume(seg.segmentationId).voxelManager.getCompleteScalarDataArray();
      for (let i = 0; i < data.length; i++) if (data[i]) counts[data[i]] = (counts[data[i]] || 0) + 1;
    } catch (e) {}
    for (const s of Object.values(seg.segments || {})) {
      if (s && s.label && s.label.toLowerCase().includes(name))
        found.push({label: s.label, index: s.segmentIndex, voxels: counts[s.segmentIndex] || 0});
    }
  }
  return found;
}"""


def chromium_available() -> bool:
    return Path(CHROMIUM).exists()


@contextmanager
def browser_page(width: int = 1600, height: int = 1000):
    """A headless Chromium page (WebGL through SwiftShader); console errors collected in `page.seer_console`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_context(viewport={"width": width, "height": height}).new_page()
            page.set_default_timeout(30_000)
            page.seer_console = []
            page.on("console", lambda m: page.seer_console.append(m.text[:300]) if m.type == "error" else None)
            yield page
        finally:
            browser.close()


def canvas_rgb(page) -> np.ndarray:
    """(rows, columns, 3) int16 pixels of the axial viewport."""
    from PIL import Image

    data_url = page.eval_on_selector(CANVAS, "c => c.toDataURL('image/png')")
    image = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB")
    return np.asarray(image).astype(np.int16)


def coloured(pixels: np.ndarray) -> np.ndarray:
    return (pixels.max(axis=2) - pixels.min(axis=2)) > 40


def wait_until(page, check, timeout_s: float, what: str):
    """Poll `check()` with page.wait_for_timeout (time.sleep would stop Playwright delivering events)."""
    deadline = time.time() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            raise TimeoutError(f"{what}: not seen within {timeout_s:.0f} s")
        page.wait_for_timeout(300)


def open_study(page, server: str, study_uid: str, timeout_s: float = 120) -> float:
    """Open the study in the MONAI Label mode; returns seconds until the CT is drawn in the axial viewport."""
    started = time.time()
    page.goto(f"{server.rstrip('/')}/ohif/monai-label?StudyInstanceUIDs={study_uid}", wait_until="domcontentloaded")
    page.wait_for_selector(CANVAS, state="attached", timeout=timeout_s * 1000)
    wait_until(page, lambda: (canvas_rgb(page).max(axis=2) > 30).sum() > 5000, timeout_s, "the CT in the viewport")
    return time.time() - started


def run_prompt(page, server: str, model: str, prompt: str, segment: str, timeout_s: float = 300) -> dict:
    """Connect the MONAI Label panel, type `prompt` into the model's options, press Run and wait for the
    overlay. Returns seconds from Run to the infer reply and to the overlay, pixel counts and OHIF's segments whose
    name contains `segment`."""
    banner = page.locator('[data-cy="confirm-and-hide-button"]')
    if banner.count() and banner.is_visible():
        banner.click()
    panel = page.locator(".monaiLabelPanel")
    if not panel.is_visible():
        page.click('[data-cy="monailabel-btn"]')
    panel.wait_for(state="visible")
    options = panel.locator("a", has_text="Options / Configurations")
    if not options.is_visible():  # the panel's default server is port 8000 of the page's host
        page.fill("#monailabelServerURL", server.rstrip("/") + "/")
        panel.locator(".settingsTable button.actionButton").click()
        options.wait_for(state="visible")
    auto = panel.locator("div.tab", has=page.locator("label.tab-label", has_text="Auto-Segmentation"))
    if not auto.locator("input.tab-switch").is_checked():
        auto.locator("label.tab-label").click()
    auto.locator(".modelSelector select").select_option(model)
    options.click()
    dialog = page.locator(".optionsForm")
    dialog.wait_for(state="visible")
    dialog.locator('select[name="selectSection"]').select_option("infer")
    dialog.locator('select[name="selectName"]').select_option(model)
    page.locator(f"#infer{model}prompt").fill(prompt)  # the field's id: section + model + config key
    page.get_by_role("button", name="Confirm").click()
    dialog.wait_for(state="detached")
    page.wait_for_timeout(1200)  # the panel sets segment colours on a 1 s timer after connecting

    before = canvas_rgb(page)
    replies: list[tuple[float, int]] = []
    page.on("response", lambda r: replies.append((time.time(), r.status)) if f"/infer/{model}" in r.url else None)
    started = time.time()
    auto.locator(".modelSelector button", has_text="Run").click()
    reply_at, status = wait_until(page, lambda: replies[0] if replies else None, timeout_s, "the infer reply")
    if status != 200:
        return {"status": status, "console": page.seer_console[-10:]}

    def drawn():
        after = canvas_rgb(page)
        changed = (np.abs(after - before).sum(axis=2) > 30) & coloured(after)
        return int(changed.sum()) if changed.sum() > 200 else None

    changed = wait_until(page, drawn, 60, "the segment overlay")
    overlay_s = time.time() - started
    name = segment.lower()
    return {"status": status, "reply_s": reply_at - started, "overlay_s": overlay_s,
            "coloured_before": int(coloured(before).sum()), "changed_coloured": changed,
            "segments": page.evaluate(SEGMENTS_JS, name), "console": page.seer_console[-10:]}
