"""End to end in a real headless browser: Debian's Chromium driven by chromedriver through selenium loads the page of
a running ``ansm serve``, uploads a synthetic forgery, waits for both masks, attacks it in the page, and saves a
screenshot to ``runs/serve/page.png`` (git-ignored). Skipped, naming the install line, without Chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("ANSM_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = os.environ.get("ANSM_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOT = REPO / "runs" / "serve" / "page.png"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.is_file() and Path(CHROMEDRIVER).is_file()),
    reason=f"needs {CHROMIUM} and chromedriver: apt-get install chromium chromium-driver")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1500,1750", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _loaded(driver, element_id: str) -> bool:
    """An ``<img>`` showing a decoded PNG from the server (not merely a src attribute)."""
    return bool(driver.execute_script(
        "const im = document.getElementById(arguments[0]);"
        "return im && im.src.startsWith('data:image/png') && im.complete && im.naturalWidth > 0;", element_id))


def test_page_shows_both_masks_and_the_attack(browser, live_server: str, forged_png: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(live_server)
    wait = WebDriverWait(browser, 120, poll_frequency=0.2)
    wait.until(lambda d: "downscaled to 256 px" in d.find_element(By.ID, "limits").text)
    assert browser.find_element(By.ID, "flag").text == "no detector configured"
    browser.find_element(By.ID, "file").send_keys(str(forged_png))
    wait.until(lambda d: _loaded(d, "clean-mask-nodef") and _loaded(d, "clean-mask-def"))
    assert browser.find_element(By.ID, "status").get_attribute("data-state") == "done"
    for element_id in ("clean-image", "clean-mask-nodef", "clean-mask-def", "clean-perturbation"):
        img = browser.find_element(By.ID, element_id)
        assert img.is_displayed() and img.size["width"] >= 96, element_id
    assert "mask without ANSM (red):" in browser.find_element(By.ID, "clean-nodef-cap").text
    assert "mask with ANSM (red):" in browser.find_element(By.ID, "clean-def-cap").text

    browser.find_element(By.ID, "steps").clear()
    browser.find_element(By.ID, "steps").send_keys("10")
    browser.find_element(By.ID, "run-attack").click()
    wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "busy"
               or _loaded(d, "attacked-mask-def"))
    wait.until(lambda d: _loaded(d, "attacked-mask-nodef") and _loaded(d, "attacked-mask-def")
               and d.find_element(By.ID, "status").get_attribute("data-state") == "done")
    assert "PGD, eps 8/255" in browser.find_element(By.ID, "attacked-title").text
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT)) and SCREENSHOT.stat().st_size > 10_000

    # a bad upload is a message in the page, not a broken page
    bad = forged_png.parent / "notes.png"
    bad.write_bytes(b"this is text, not a picture")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "error")
    assert "not an image" in browser.find_element(By.ID, "status").text
