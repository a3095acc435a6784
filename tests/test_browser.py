"""A person's view of GET /: headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium) opens the
page of a real server on 127.0.0.1, types a headline, presses Enter and reads the label and the four score bars.
Skipped, with the reason, only where Chromium or its driver is not installed (.ci/run installs both)."""
import os, shutil

import httpx
import pytest

from distrinews.servebench import serve_in_subprocess
from distrinews.config import LABELS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
                                reason=f"Chromium not installed ({CHROMIUM}, {DRIVER}): apt-get install chromium chromium-driver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def url(ckpt):
    with serve_in_subprocess("distrinews", ckpt) as u:
        yield u


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _classify(browser, text):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    box = browser.find_element(By.ID, "text")
    box.clear()
    browser.execute_script("document.getElementById('label').textContent = ''")
    box.send_keys(text + Keys.ENTER)
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "label").text or d.find_element(By.ID, "error").text)
    label, error = browser.find_element(By.ID, "label").text, browser.find_element(By.ID, "error").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#bars .row") if label else []   # hidden after an error
    return label, error, {r.find_element(By.CLASS_NAME, "name").text: float(r.find_element(By.CLASS_NAME, "score").text)
                          for r in rows}


def test_type_a_headline_and_read_the_label(browser, url):
    from selenium.webdriver.common.by import By
    browser.get(url + "/")
    assert "distrinews" in browser.title
    for text, expected in [("The Yankees rallied past the league leaders in overtime.", "Sports"),
                           ("Oil prices tumbled after weak sales on Wall Street.", "Business")]:
        label, error, scores = _classify(browser, text)
        api = httpx.post(url + "/predict", json={"text": text}).json()
        assert error == "" and label == api["label"] == expected
        assert list(scores) == list(LABELS)
        for k in LABELS: assert abs(scores[k] - api["scores"][k]) < 1e-3     # shown with 3 decimals
        widths = {r.find_element(By.CLASS_NAME, "name").text: r.find_element(By.CLASS_NAME, "bar").size["width"]
                  for r in browser.find_elements(By.CSS_SELECTOR, "#bars .row")}
        assert max(widths, key=widths.get) == expected            # the longest bar is the predicted label
    label, error, _ = _classify(browser, "   ")                    # a blank headline: the API's message is shown
    assert label == "" and "empty or whitespace-only" in error and "422" in error
