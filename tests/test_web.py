"""The demo page and `byoc lambda-local`: the adapter on its own, then the page in headless Chromium
against the real serving container (a person picks a photo; the test saves a screenshot)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request

import pytest

from byoc.local import runtime as local_runtime
from byoc.local.web import dev_server
from tests import dockerutil as du
from tests import netutil
from tests.helpers.serving import container_predictions, held_out_images
from tests.helpers.standins import StandIn

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# The serving container behind the page: the `server` fixture (tests/helpers/serving.py), one worker.
SERVER_ENV = {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}
# The flags Debian's chromium needs as root in a container, and none of its background traffic.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--disable-default-apps",
    "--disable-extensions",
    "--window-size=900,700",
)


def post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_dev_server_serves_the_page_and_turns_posts_into_function_url_events(monkeypatch):
    stand_in = StandIn()
    runtime, runtime_url = local_runtime.start_in_thread({"byoc-dev": stand_in.url})
    for key, value in {
        "ENDPOINT_NAME": "byoc-dev",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": runtime_url,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }.items():
        monkeypatch.setenv(key, value)
    function = dev_server.load_function(dev_server.default_function())
    seen = []
    real_handler = function.lambda_handler
    monkeypatch.setattr(function, "lambda_handler", lambda event, ctx: seen.append(event) or real_handler(event, ctx))
    server = dev_server.make_server(function)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/", timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/html")
            assert b'<input id="file" type="file" accept="image/*">' in resp.read()
        status, body = post(f"{base}/predict?top_k=1", b"\x89PNG fake", "image/png")
        assert status == 200 and body == {"predictions": [{"label": "zero", "index": 0, "score": 0.75}]}
        assert function.event_kind(seen[-1]) == "function-url" and seen[-1]["isBase64Encoded"]
        assert stand_in.requests[-1]["headers"]["X-Amzn-SageMaker-Custom-Attributes"] == "top_k=1"
        status, body = post(f"{base}/predict", b"bad", "image/png")
        assert status == 400 and body["error"].startswith("cannot decode the image")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{base}/secrets.txt", timeout=10)
        assert caught.value.code == 404
    finally:
        function.sagemaker_client.cache_clear()
        for s in (server, runtime):
            s.shutdown()
            s.server_close()
        stand_in.close()


def ensure_chromium() -> None:
    """Debian's chromium and chromedriver, installed with apt when missing (as the Docker engine is)."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = [
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=300",
            "install",
            "-y",
            "--no-install-recommends",
            "chromium",
            "chromium-driver",
        ]
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=900)
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if du.IN_CI:
            pytest.fail("CI=true but chromium/chromium-driver are missing and apt-get could not install them")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def lambda_local(server):
    """`byoc lambda-local --container URL`: the page, the Lambda and a local runtime, as a user starts them,
    on the port it chose (--port 0), read from the line it prints once listening."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "byoc.cli", "lambda-local", "--port", "0", "--container", server["url"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = netutil.Output(proc.stdout)
        yield output.wait_for(r"demo page and Lambda on (http://127\.0\.0\.1:\d+/)", timeout=60)[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def browser(tmp_path):
    ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def pick_and_wait(driver, page: str, path) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(page)
    driver.find_element(By.ID, "file").send_keys(str(path))  # what choosing a file in the dialog does
    WebDriverWait(driver, 60).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error")
    )
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")


@pytest.mark.container
def test_page_shows_top_classes_with_bars_in_chromium(browser, lambda_local, server, tmp_path):
    from selenium.webdriver.common.by import By

    photo = held_out_images(server)[7]
    expected = container_predictions(server["url"], photo.read_bytes(), 3)
    assert pick_and_wait(browser, lambda_local, photo) == "done", browser.find_element(By.ID, "status").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#predictions li")
    assert [r.find_element(By.CLASS_NAME, "label").text for r in rows] == [p["label"] for p in expected]
    for row, p in zip(rows, expected, strict=True):
        assert row.find_element(By.CLASS_NAME, "score").text == f"{p['score'] * 100:.1f}%"
        width = row.find_element(By.CSS_SELECTOR, ".bar > div").value_of_css_property("width")
        total = row.find_element(By.CLASS_NAME, "bar").value_of_css_property("width")
        assert abs(float(width[:-2]) / float(total[:-2]) - p["score"]) < 0.01
    shot = tmp_path / "web-demo.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 5000
    print(f"screenshot: {shot}")

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"just text")
    assert pick_and_wait(browser, lambda_local, not_an_image) == "error"
    assert browser.find_element(By.ID, "status").text.startswith("Error 400: ")
    assert browser.find_elements(By.CSS_SELECTOR, "#predictions li") == []
    browser.save_screenshot(str(tmp_path / "web-demo-error.png"))
