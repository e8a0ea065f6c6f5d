"""Browser tests: the page in real headless Chromium (Debian's ``chromium``, driven by Playwright).

The server runs under uvicorn in a background thread on a free 127.0.0.1 port, with a tiny translate run and a
tiny language-model run trained here (a few seconds). Each test drives one view as a user would (type, click,
wait for the plot), checks that plotly drew the data it was given (its SVG, the heatmap image, one line per
series), that the console has no errors and that no request left the server, and keeps a screenshot in its
tmp dir. Without /usr/bin/chromium the tests FAIL (run ``scripts/install_browser.sh``); Playwright's own browser
download is never used.

Environment:
    RNNKIT_SCREENSHOTS=DIR   also keep the screenshots there (CI artifacts; docs/screenshots for the README)
    RNNKIT_BROWSER_RUNS=DIR[:DIR...]   serve these run directories instead of the tiny ones (for README
        screenshots of trained models: the first translate run and the first lm run among them are used)
    RNNKIT_BROWSER_STEPS=N   training steps of each job the dynamics view compares (default 12: quick)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from rnnkit.checkpoint import read_config
from rnnkit.parameters import formula_count
from rnnkit.server import Limits, create_app
from rnnkit.tasks import task_module, translate
from tests.test_server_api import make_small_run, make_translate_run

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}

# What plotly drew into one plot element: its traces' data, its SVG, heatmap images, drawn line paths.
PLOTTED = """(selector) => {
  const el = typeof selector === "string" ? document.querySelector(selector) : selector;
  if (!el || !el.data || !el._fullLayout) return null;
  return {
    traces: el.data.map((d) => ({type: d.type, name: d.name || null,
                                 shape: d.type === "heatmap" ? [d.z.length, d.z[0].length] : [d.y.length]})),
    svg: el.querySelectorAll("svg.main-svg").length,
    heatmap_images: el.querySelectorAll(".hm image").length,
    lines: [...el.querySelectorAll(".scatterlayer .trace path.js-line")]
             .filter((p) => (p.getAttribute("d") || "").length > 10).length,
    title: el._fullLayout.title ? el._fullLayout.title.text : "",
    x_title: el._fullLayout.xaxis ? el._fullLayout.xaxis.title.text : "",
    y_title: el._fullLayout.yaxis ? el._fullLayout.yaxis.title.text : "",
    y_type: el._fullLayout.yaxis ? el._fullLayout.yaxis.type : "",
  };
}"""


def plotted(page, selector: str) -> dict:
    """Wait until plotly has drawn into ``selector``, then describe what it drew."""
    page.wait_for_function(f"({PLOTTED})({json.dumps(selector)}) !== null")
    return page.evaluate(PLOTTED, selector)


def assert_heatmap(page, selector: str, shape: tuple[int, int]) -> dict:
    drawn = plotted(page, selector)
    assert drawn["traces"] == [{"type": "heatmap", "name": None, "shape": list(shape)}], drawn
    assert drawn["svg"] >= 1 and drawn["heatmap_images"] == 1, drawn  # the colour cells are one image
    assert drawn["x_title"] and drawn["y_title"], drawn  # labelled axes
    return drawn


def screenshot(page, tmp_path: Path, name: str, max_height: int | None = None, element=None) -> Path:
    """Save a full-page (or one element's) screenshot in the test's tmp dir, and in $RNNKIT_SCREENSHOTS if set."""
    path = tmp_path / f"{name}.png"
    # A viewport as tall as the page, rather than full_page=True: that resizes the window while it captures,
    # and plotly's responsive plots may be caught half-way through their relayout.
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(height, max_height or height)})
    page.wait_for_function("[...document.querySelectorAll('.view.active .js-plotly-plot')]"
                           ".every((p) => Math.abs(p._fullLayout.width - p.clientWidth) < 4)")
    if element is not None:
        element.screenshot(path=str(path))
    else:
        page.screenshot(path=str(path))
    page.set_viewport_size(VIEWPORT)
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


def _given_runs() -> list[Path] | None:
    given = os.environ.get("RNNKIT_BROWSER_RUNS")
    return [Path(p).resolve() for p in given.split(os.pathsep) if p] if given else None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run_dirs = _given_runs()
    if run_dirs is None:
        root = tmp_path_factory.mktemp("browser")
        run_dirs = [make_translate_run(root / "dates"), make_small_run("lm", root)]
    tasks = {path: read_config(path)["task"] for path in run_dirs}
    translate_run = next(path for path in run_dirs if tasks[path] == "translate")
    lm_run = next(path for path in run_dirs if tasks[path] == "lm")
    port = free_port()
    app = create_app(run_dirs, Limits(max_jobs=2, max_hidden=128))
    names = {run.path: name for name, run in app.state.runs.items()}
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "translate_run": translate_run, "lm_run": lm_run,
           "translate_name": names[translate_run], "lm_name": names[lm_run]}
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
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Every request must stay on the local server: no CDN, no outside fonts.
    outside: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(server["url"]) else outside.append(request.url))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.expected_errors = []  # substrings of console errors a test provokes on purpose
    page.goto(server["url"] + "/")
    yield page
    unexpected = [e for e in errors if not any(allowed in e for allowed in page.expected_errors)]
    assert unexpected == [], f"console errors: {unexpected}"
    assert outside == [], f"requests left the server: {outside}"
    assert server["url"] + "/static/vendor/plotly-cartesian.min.js" in requested  # the plots' library: local
    context.close()


def test_architecture_explorer(page, tmp_path):
    # The page runs the default configuration on load; now choose a 2-layer bidirectional GRU.
    page.wait_for_selector("#param-model")
    page.select_option("#explore-form select[name=cell]", "gru")
    page.select_option("#explore-form select[name=reset_after]", "false")  # Cho et al. 2014
    page.fill("#explore-form input[name=num_layers]", "2")
    page.check("#explore-form input[name=bidirectional]")
    page.fill("#explore-form input[name=input_size]", "6")
    page.fill("#explore-form input[name=hidden_size]", "10")
    page.fill("#explore-form input[name=sentence]", "hello rnn")  # typing runs the forward pass by itself
    expected = formula_count("gru", 6, 10, num_layers=2, bidirectional=True)
    page.wait_for_function(f"document.getElementById('param-formula').textContent === '{expected}'")
    torch_layout = formula_count("gru", 6, 10, num_layers=2, bidirectional=True, second_bias=True)
    assert page.inner_text("#param-model") == str(torch_layout) == page.inner_text("#param-formula-torch")
    # each layer-direction's formula with its numbers, next to the count of the model
    table = page.inner_text("#param-table")
    assert "3[10(6 + 10) + 10] = 510" in table and "3[10(20 + 10) + 10] = 930" in table
    assert page.locator("#param-table td.ok").count() == 5 and page.locator("#param-table td.bad").count() == 0
    assert "reset before" in page.inner_text("#equations")
    # the diagram: 2 layers x 2 directions x 5 shown characters, the first five characters as inputs
    assert page.locator("#diagram rect.cell-box").count() == 2 * 2 * 5
    assert page.locator("#diagram rect.cell-box.backward").count() == 2 * 5
    assert "“h”" in page.inner_text("#diagram") and "layer 1 backward" in page.inner_text("#diagram")
    # plots: ||h_t|| per layer-direction, the hidden state (20 units x 9 characters), one heatmap per GRU gate
    norms = plotted(page, "#norm-plot")
    assert [t["shape"] for t in norms["traces"]] == [[9]] * 4 and norms["lines"] == 4
    assert norms["x_title"] == "character read at step t"
    assert_heatmap(page, "#hidden-heatmap", (20, 9))
    gates = page.locator("#gate-heatmaps .gate-heatmap")
    assert sorted(gates.evaluate_all("els => els.map(e => e.dataset.gate)")) == ["reset_gate", "update_gate"]
    for gate in ("reset_gate", "update_gate"):
        assert_heatmap(page, f"#gate-heatmaps [data-gate={gate}]", (10, 9))
    page.select_option("#gate-layer", label="layer 1 backward")
    page.wait_for_function("document.querySelector('#gate-heatmaps [data-gate=reset_gate]')"
                           "._fullLayout.title.text.includes('layer 1 backward')")
    screenshot(page, tmp_path, "explorer", max_height=2300)
    # over a limit: the server's 4xx names it, and the page shows it (the browser logs the failed request)
    page.expected_errors.append("status of 422")
    page.fill("#explore-form input[name=hidden_size]", "500")
    page.wait_for_function("document.getElementById('explore-error').textContent.includes('max_hidden')")
    assert "at most 128" in page.inner_text("#explore-error")


def test_training_dynamics_live_compare_and_cancel(page, tmp_path):
    page.click("nav .tab[data-view=dynamics]")
    page.select_option("#job-form select[name=experiment]", "vanishing")
    steps = int(os.environ.get("RNNKIT_BROWSER_STEPS", "12"))
    page.fill("#job-form input[name=steps]", str(steps))
    page.fill("#job-form input[name=seq_len]", "20")
    page.click("#job-compare")  # RNN, then LSTM, then GRU
    page.wait_for_function("[...document.querySelectorAll('#job-table .job-state')].map(e => e.textContent)"
                           ".join() === 'finished,finished,finished'", timeout=max(60_000, 2_000 * steps))
    assert [t.upper() for t in page.locator("#job-table tr td:nth-child(2)").all_inner_texts()] == ["RNN", "LSTM",
                                                                                                   "GRU"]
    page.wait_for_function(f"({PLOTTED})('#loss-plot').lines === 4")  # three jobs + the no-memory baseline
    loss = plotted(page, "#loss-plot")
    assert [t["shape"] for t in loss["traces"][:3]] == [[steps]] * 3 and loss["y_type"] == "log"
    assert "no memory" in loss["traces"][3]["name"]
    grads = plotted(page, "#grad-plot")
    assert [t["shape"] for t in grads["traces"]] == [[20]] * 3 and grads["lines"] == 3 and grads["y_type"] == "log"
    assert grads["x_title"].startswith("time step t")
    screenshot(page, tmp_path, "dynamics")
    # a long LSTM job, cancelled from the page while it runs
    page.select_option("#job-form select[name=cell]", "lstm")
    page.fill("#job-form input[name=steps]", "2000")
    page.click("#job-start")
    page.wait_for_function("document.getElementById('job-status').textContent.includes('step ')", timeout=60_000)
    page.click("#job-cancel")
    page.wait_for_function("document.getElementById('job-status').textContent.includes('cancelled')",
                           timeout=60_000)
    page.wait_for_function(f"({PLOTTED})('#loss-plot').traces.length === 5")
    drawn = plotted(page, "#loss-plot")["traces"][3]["shape"][0]
    assert 0 < drawn < 2000
    assert page.locator("#job-table .job-state").all_inner_texts()[-1] == "cancelled"
    assert page.is_disabled("#job-cancel")
    screenshot(page, tmp_path, "dynamics-cancelled")


def test_translation_demo(page, server, tmp_path):
    page.click("nav .tab[data-view=translate]")
    page.wait_for_function("document.querySelectorAll('#translate-model option').length >= 1")
    page.fill("#translate-text", "7 June 2019")
    page.fill("#translate-form input[name=beam_size]", "4")
    page.fill("#translate-form input[name=n_best]", "3")
    page.click("#translate-run")
    page.wait_for_selector("#nbest tr.hypothesis")
    shown = [t.strip() for t in page.locator("#nbest .hyp-text").all_inner_texts()]
    expected = translate.load(server["translate_run"]).translate(["7 June 2019"], beam_size=4, n_best=3)[0]
    assert shown == [h["text"] for h in expected]
    scores = [float(s) for s in page.locator("#nbest tr.hypothesis td:nth-child(3)").all_inner_texts()]
    assert scores == pytest.approx([h["score"] for h in expected], abs=1e-3)
    first = assert_heatmap(page, "#attention-heatmap", (len(expected[0]["tokens"]), len(expected[0]["source_tokens"])))
    assert first["x_title"] == "source token" and first["y_title"] == "output token"
    page.click("#nbest tr.hypothesis:nth-child(3)")  # the second hypothesis (row 1 is the header)
    assert "chosen" in page.get_attribute("#nbest tr.hypothesis:nth-child(3)", "class")
    page.wait_for_function("document.getElementById('attention-heatmap')._fullLayout.title.text"
                           ".startsWith('Attention of hypothesis 2')")
    assert_heatmap(page, "#attention-heatmap", (len(expected[1]["tokens"]), len(expected[1]["source_tokens"])))
    page.click("#nbest tr.hypothesis:nth-child(2)")
    page.wait_for_function("document.getElementById('attention-heatmap')._fullLayout.title.text"
                           ".startsWith('Attention of hypothesis 1')")
    screenshot(page, tmp_path, "translate")
    # over a limit: the message names it
    page.expected_errors.append("status of 422")
    page.fill("#translate-form input[name=beam_size]", "99")
    page.click("#translate-run")
    page.wait_for_function("document.getElementById('translate-error').textContent.includes('max_beam')")


def test_runs_view_streams_generation_and_diagnoses(page, server, tmp_path):
    page.click("nav .tab[data-view=runs]")
    lm_card, translate_card = (f".run[data-run='{server[key]}']" for key in ("lm_name", "translate_name"))
    page.wait_for_selector(translate_card + " h3")
    assert "(translate)" in page.inner_text(translate_card + " h3")
    assert str(server["translate_run"]) not in page.inner_text(translate_card)  # names, not filesystem paths
    curves = plotted(page, translate_card + " .run-plot")
    assert [t["name"] for t in curves["traces"]] == ["training loss", "validation loss"] and curves["lines"] == 2
    # a language model's text, streamed token by token (greedy, so it can be checked against the runner)
    page.fill(lm_card + " .generate-form input[name=prompt]", "the ")
    page.fill(lm_card + " .generate-form input[name=length]", "40")
    page.fill(lm_card + " .generate-form input[name=temperature]", "0")
    page.click(lm_card + " .generate-run")
    page.wait_for_function(f"document.querySelector(\"{lm_card} .generated\").dataset.tokens === '40' && "
                           f"!document.querySelector(\"{lm_card} .generated\").classList.contains('streaming')")
    expected = task_module("lm").load(server["lm_run"]).generate("the ", length=40, temperature=0.0)
    assert page.eval_on_selector(lm_card + " .generated", "e => e.textContent") == expected
    # diagnostics of one input to the translation model: gradient norms, gates, attention
    page.fill(translate_card + " .diagnose-form input[name=text]", "7 June 2019")
    page.click(translate_card + " .diagnose-run")
    page.wait_for_selector(translate_card + " .diagnose-summary b")
    greedy = translate.load(server["translate_run"]).translate(["7 June 2019"], beam_size=1)[0][0]
    assert f"'{greedy['text']}'" in page.inner_text(translate_card + " .diagnose-summary")
    grads = plotted(page, translate_card + " .diagnose-grad")  # the encoder's, both directions
    assert [t["shape"] for t in grads["traces"]] == [[len("7 June 2019")]] * 2 and grads["y_type"] == "log"
    assert page.locator(translate_card + " .diagnose-grad").count() == 2  # encoder and decoder
    gate = page.locator(translate_card + " .diagnose-gates .gate-heatmap")
    model = read_config(server["translate_run"])["model"]
    hidden = model["hidden_size"] // 2 if model["bidirectional"] else model["hidden_size"]  # per encoder direction
    assert_heatmap(page, translate_card + " .diagnose-gates .gate-heatmap", (hidden, len("7 June 2019")))
    assert gate.get_attribute("data-gate") in ("reset", "input")
    assert_heatmap(page, translate_card + " .diagnose-attention", (len(greedy["tokens"]), len("7 June 2019")))
    screenshot(page, tmp_path, "diagnostics", element=page.locator(translate_card + " .diagnose"))
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, tmp_path, "runs", max_height=2000)
    # a report file opens from the list
    with page.expect_navigation():
        page.click(translate_card + " .files a:text('config.json')")
    assert '"task": "translate"' in page.inner_text("body")
