"""`umm serve`: the web demo shows a tab per capability, and a real server on 127.0.0.1 answers a prompt with
images and the judge's verdicts (driven by the Gradio client; by headless Chromium too where it is
installed, which also writes the screenshot the README shows)."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

gradio = pytest.importorskip("gradio")  # the optional umm[demo] extra; scripts/bootstrap.sh installs it

import umm  # noqa: E402
from umm.serve import build_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return umm.train("test_transfusion", tmp_path_factory.mktemp("serve") / "run", train={"steps": 3}) / "model"


def _tabs(app) -> list[str]:
    return [block.label for block in app.blocks.values() if isinstance(block, gradio.Tab)]


def test_the_app_has_a_tab_for_each_capability_and_no_other(model_dir):
    pipe = umm.load(model_dir)
    assert pipe.trained == ("t2i", "caption")  # test_transfusion's tasks, read from the recipe beside the model
    assert _tabs(build_app(pipe)) == ["Text → image", "Image → caption"]  # no QA task in the recipe: no QA tab
    pipe.trained = None  # a model without its recipe: every capability
    assert _tabs(build_app(pipe)) == ["Text → image", "Image → caption", "Ask about an image"]
    pipe.system.capabilities = ("caption",)  # what a captioning-only system would show
    assert _tabs(build_app(pipe)) == ["Image → caption"]
    pipe.system.capabilities = ("t2i", "caption", "qa", "interleaved")
    pipe.trained = ("t2i",)  # a text-to-image-only recipe (the demo's): its untrained captioner gets no tab
    assert _tabs(build_app(pipe)) == ["Text → image"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_served_model_answers_a_prompt_with_images_and_verdicts(model_dir, tmp_path):
    # UMM_SERVE_MODEL=runs/demo/run/model UMM_WRITE_DOCS=1 pytest -m slow tests/test_serve.py: docs/serve.png
    model_dir = os.environ.get("UMM_SERVE_MODEL", model_dir)
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "-m", "umm.cli", "serve", str(model_dir), "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                time.sleep(0.5)
        from gradio_client import Client

        gallery, verdicts = Client(url, verbose=False).predict("a red circle", 2, 0, 4, 1.5, fn_index=0)
        assert len(gallery) == 2 and all(Path(item["image"]).is_file() for item in gallery)
        assert verdicts.count("| ") >= 2 * 3 and ("satisfies the prompt" in verdicts or "does not" in verdicts)
        chrome = shutil.which("chromium") or shutil.which("chromium-browser")
        if chrome and shutil.which("chromedriver"):
            _screenshot(url, tmp_path / "serve.png")
            assert (tmp_path / "serve.png").stat().st_size > 10_000
    finally:
        server.terminate()
        server.wait(timeout=30)


def _screenshot(url: str, out: Path) -> None:
    """Drive the page from headless Chromium: type a prompt, press Generate, wait for the images."""
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options)
    try:
        driver.get(url)
        box = WebDriverWait(driver, 60).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#prompt textarea")))
        box.clear()
        box.send_keys("a red circle")
        driver.find_element(By.CSS_SELECTOR, "#generate").click()
        WebDriverWait(driver, 120).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#samples img")))
        time.sleep(1)
        driver.save_screenshot(str(out))
        if os.environ.get("UMM_WRITE_DOCS"):
            shutil.copy(out, ROOT / "docs" / "serve.png")
    finally:
        driver.quit()
