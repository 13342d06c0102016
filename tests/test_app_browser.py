"""Browser test of the app: Playwright driving Debian's Chromium (``apt-get install chromium``).

Types a prompt and generates on the Text-to-video tab, then uploads an image on the Cinemagraph tab,
brushes a stroke on the editor canvas and generates. Each step waits for the result <video> to get a src.
``LUMIERE_SCREENSHOT=1`` saves assets/screenshots/app.png (for the README; regenerate it with the bundled
model: ``LUMIERE_SCREENSHOT=1 pytest tests/test_app_browser.py``).
Without Chromium the test skips locally but FAILS when ``CI`` is set.
"""
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOT = ROOT / "assets" / "screenshots" / "app.png"
GENERATION_TIMEOUT_MS = 180_000


def chromium_path() -> str:
    for candidate in (os.environ.get("CHROMIUM_PATH"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    message = "Chromium not found: apt-get install -y chromium (or set CHROMIUM_PATH)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def served(app_server):
    """(url, manager) of one app launched for this module."""
    return app_server


@pytest.fixture(scope="module")
def page(served):
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed")
        pytest.skip("playwright is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(served[0])
        try:
            yield page
        finally:
            browser.close()


def visible_button(page, name: str):
    return page.get_by_role("button", name=name, exact=True).locator("visible=true").first


def wait_for_result(page, tab: str) -> str:
    video = page.locator(f"#{tab}-result video[src]")
    video.wait_for(state="attached", timeout=GENERATION_TIMEOUT_MS)
    src = video.get_attribute("src")
    assert src and ".mp4" in src
    return src


def save_screenshot(page) -> None:
    from PIL import Image

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=False)
    image = Image.open(SCREENSHOT).convert("RGB")
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(SCREENSHOT, optimize=True)
    assert SCREENSHOT.stat().st_size < 300_000


def test_text_to_video_in_browser(page):
    page.locator("#t2v-prompt textarea").fill("a red circle bouncing on the grass")
    visible_button(page, "Generate").click()
    src = wait_for_result(page, "text_to_video")
    assert "seed" in src
    seed_text = page.get_by_label("Seed used").locator("visible=true").first.input_value()
    assert seed_text.isdigit() and seed_text in src
    if os.environ.get("LUMIERE_SCREENSHOT") == "1":
        save_screenshot(page)


def test_cinemagraph_brush_in_browser(page):
    page.get_by_role("tab", name="Cinemagraph").click()
    editor = page.locator("#cinemagraph-editor")
    editor.locator("input[type=file]").set_input_files(str(ROOT / "assets" / "examples" / "yellow_circle_night.png"))
    canvas = editor.locator("canvas").first
    canvas.wait_for(state="visible")
    page.wait_for_timeout(1000)  # the editor sizes the image onto the canvas
    brush = editor.get_by_role("button", name="Brush", exact=True)
    if brush.count():
        brush.first.click()
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 40, cy - 20)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(cx - 40 + 8 * step, cy - 20 + 4 * step, steps=2)
    page.mouse.up()
    page.locator("#cinemagraph-editor").page.get_by_placeholder("a yellow circle bouncing").fill(
        "a yellow circle bouncing at night")
    visible_button(page, "Generate").click()
    wait_for_result(page, "cinemagraph")


def test_stop_button_stops_a_running_generation(page, served):
    import time

    manager = served[1]
    page.get_by_role("tab", name="Text to video").click()
    page.get_by_text("Advanced (all tabs)").click()
    steps = page.get_by_label("number input for Denoising steps")
    steps.fill("100")
    steps.press("Enter")
    try:
        page.locator("#t2v-prompt textarea").fill("a blue square moving left in the sky")
        visible_button(page, "Generate").click()
        page.get_by_text("Denoising (step").first.wait_for(timeout=GENERATION_TIMEOUT_MS)
        assert manager.busy
        visible_button(page, "Stop").click()
        stopped = time.monotonic()
        while manager.busy and time.monotonic() - stopped < 20:
            time.sleep(0.05)
        assert not manager.busy, "the generation kept running after Stop"
        assert manager.last_outcome == "cancelled"
    finally:
        steps.fill("2")
        steps.press("Enter")
