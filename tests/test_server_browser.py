"""Browser tests: the page in real headless Chromium (Debian's ``chromium``, driven by Playwright).

The server runs under uvicorn in a background thread on a free 127.0.0.1 port. Each test drives one view as a
user would and keeps a screenshot in its tmp dir. Without /usr/bin/chromium the tests FAIL (run
``scripts/install_browser.sh``); Playwright's own browser download is never used. Set RNNKIT_SCREENSHOTS=DIR
to also keep the screenshots there (e.g. for the README or as CI artifacts).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from rnnkit.parameters import formula_count
from rnnkit.server import Limits, create_app
from rnnkit.tasks import translate
from tests.test_server_api import make_translate_run

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def screenshot(page, tmp_path: Path, name: str) -> Path:
    """Save a full-page screenshot in the test's tmp dir (and in $RNNKIT_SCREENSHOTS if set)."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("RNNKIT_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    assert path.stat().st_size > 10_000  # a real rendering, not a blank page
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run_dir = make_translate_run(tmp_path_factory.mktemp("browser") / "dates")
    port = free_port()
    config = uvicorn.Config(create_app([run_dir], Limits(max_jobs=2)), host="127.0.0.1", port=port,
                            log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "run_dir": run_dir}
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install_browser.sh (Debian chromium) first")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Every request must stay on the local server: no CDN, no outside fonts.
    outside: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(server["url"]) else outside.append(request.url))
    page.expected_errors = []  # substrings of console errors a test provokes on purpose
    page.goto(server["url"] + "/")
    yield page
    unexpected = [e for e in errors if not any(allowed in e for allowed in page.expected_errors)]
    assert unexpected == [], f"console errors: {unexpected}"
    assert outside == [], f"requests left the server: {outside}"
    context.close()


def test_architecture_explorer(page, tmp_path):
    # The page runs the default configuration on load; now choose a 2-layer bidirectional GRU.
    page.wait_for_selector("#param-model")
    page.select_option("#explore-form select[name=cell]", "gru")
    page.fill("#explore-form input[name=num_layers]", "2")
    page.check("#explore-form input[name=bidirectional]")
    page.fill("#explore-form input[name=input_size]", "6")
    page.fill("#explore-form input[name=hidden_size]", "10")
    page.fill("#explore-form input[name=sentence]", "hello rnn")
    page.click("#explore-run")
    expected = formula_count("gru", 6, 10, num_layers=2, bidirectional=True)
    page.wait_for_function(f"document.getElementById('param-formula').textContent === '{expected}'")
    torch_layout = formula_count("gru", 6, 10, num_layers=2, bidirectional=True, second_bias=True)
    assert page.inner_text("#param-model") == str(torch_layout)
    assert "GRU" in page.inner_text("#diagram")
    # heatmaps: hidden state 20 units x 9 characters, one gate heatmap per GRU gate (10 units x 9)
    assert page.get_attribute("#hidden-heatmap", "data-cells") == str(20 * 9)
    gates = page.query_selector_all("canvas.gate-heatmap")
    assert sorted(g.get_attribute("data-gate") for g in gates) == ["reset_gate", "update_gate"]
    assert all(g.get_attribute("data-cells") == str(10 * 9) for g in gates)
    assert page.get_attribute("#norm-plot", "data-points") == "9"
    screenshot(page, tmp_path, "explorer")
    # a user mistake is shown, not thrown: layer norm on a vanilla RNN (the browser logs the 422)
    page.expected_errors.append("status of 422")
    page.select_option("#explore-form select[name=cell]", "rnn")
    page.check("#explore-form input[name=layer_norm]")
    page.click("#explore-run")
    page.wait_for_function("document.getElementById('explore-error').textContent.includes('layer_norm')")


def test_training_dynamics_live_and_cancel(page, tmp_path):
    page.click("nav .tab[data-view=dynamics]")
    page.select_option("#job-form select[name=cell]", "rnn")
    page.fill("#job-form input[name=steps]", "15")
    page.fill("#job-form input[name=seq_len]", "20")
    page.click("#job-start")
    page.wait_for_function("document.getElementById('job-status').textContent.includes('finished after 15 steps')",
                           timeout=60_000)
    assert page.get_attribute("#loss-plot", "data-points") == "15"
    assert page.get_attribute("#grad-plot", "data-points") == "20"
    # a second, long job for the LSTM, cancelled from the page while it runs
    page.select_option("#job-form select[name=cell]", "lstm")
    page.fill("#job-form input[name=steps]", "2000")
    page.click("#job-start")
    page.wait_for_function("document.getElementById('job-status').textContent.includes('step ')", timeout=60_000)
    page.click("#job-cancel")
    page.wait_for_function("document.getElementById('job-status').textContent.includes('cancelled')",
                           timeout=60_000)
    drawn = int(page.get_attribute("#loss-plot", "data-points"))
    assert 15 < drawn < 15 + 2000
    assert page.get_attribute("#grad-plot", "data-points") == str(20 + 20)  # both jobs' ||dL/dh_t|| curves
    screenshot(page, tmp_path, "dynamics")


def test_translation_demo(page, server, tmp_path):
    page.click("nav .tab[data-view=translate]")
    page.wait_for_function("document.querySelectorAll('#translate-model option').length === 1")
    page.fill("#translate-text", "7 June 2019")
    page.fill("#translate-form input[name=beam_size]", "4")
    page.fill("#translate-form input[name=n_best]", "3")
    page.click("#translate-run")
    page.wait_for_selector("#nbest li")
    shown = [t.strip() for t in page.locator("#nbest .hyp-text").all_inner_texts()]
    expected = translate.load(server["run_dir"]).translate(["7 June 2019"], beam_size=4, n_best=3)[0]
    assert shown == [h["text"] for h in expected]
    first = expected[0]
    assert page.get_attribute("#attention-heatmap", "data-cells") == str(
        len(first["tokens"]) * len(first["source_tokens"]))
    page.click("#nbest li:nth-child(2)")
    assert "chosen" in page.get_attribute("#nbest li:nth-child(2)", "class")
    assert page.get_attribute("#attention-heatmap", "data-cells") == str(
        len(expected[1]["tokens"]) * len(expected[1]["source_tokens"]))
    screenshot(page, tmp_path, "translate")


def test_runs_view(page, server, tmp_path):
    page.click("nav .tab[data-view=runs]")
    page.wait_for_selector(".run h3")
    assert "dates" in page.inner_text(".run h3") and "translate" in page.inner_text(".run h3")
    assert str(server["run_dir"]) in page.inner_text(".run")
    assert int(page.get_attribute(".run-plot", "data-points")) > 0
    with page.expect_navigation():
        page.click(".run a:text('config.json')")
    assert '"task": "translate"' in page.inner_text("body")
    page.go_back()
    page.click("nav .tab[data-view=runs]")
    screenshot(page, tmp_path, "runs")
