"""API tests for rnnkit.server.app with FastAPI's TestClient, including every error path."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import time
import tomllib
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from rnnkit.parameters import formula_count
from rnnkit.server import Limits, create_app
from rnnkit.server.explore import EMBEDDING_ROWS, build_layer
from rnnkit.tasks import resolve_settings, task_module, training_settings, translate
from rnnkit.training import Trainer

PLOTLY_SHA256 = "79542150855a52c567260e3137095dbe2b744e6d702a5cabe67da246942fba7a"


def local_client(app) -> TestClient:
    """A test client that asks for the server by a loopback address, as a browser on this machine does (the
    server refuses other Host names: see tests/test_server_security.py)."""
    return TestClient(app, base_url="http://127.0.0.1:8000")


def make_translate_run(run_dir: Path) -> Path:
    """A tiny translate run (a few seconds): the server only needs something real to load."""
    settings = resolve_settings("translate", {
        "data": "dates:n_train=200,n_valid=20,n_test=20", "hidden_size": 16, "max_steps": 20,
        "eval_every": 10, "checkpoint_every": 10, "eval_examples": 10})
    task, run_config = translate.prepare(settings, run_dir)
    Trainer(task, run_dir, training_settings(settings), run_config=run_config).train(overwrite=True)
    return run_dir


@pytest.fixture(scope="session")
def translate_run(tmp_path_factory) -> Path:
    return make_translate_run(tmp_path_factory.mktemp("server") / "dates")


@pytest.fixture()
def client(translate_run) -> TestClient:
    return local_client(create_app([translate_run], Limits(max_input_chars=200, max_beam=8, max_jobs=1)))


def test_models_lists_the_run_with_its_task_and_metrics(client, translate_run):
    models = client.get("/api/models").json()
    assert [m["name"] for m in models] == ["dates"]
    assert models[0]["task"] == "translate"
    assert models[0]["config"]["hidden_size"] == 16
    evals = [json.loads(line) for line in (translate_run / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e.get("event") == "eval"]
    assert models[0]["metrics"] == evals[-1]["metrics"]


def test_translate_returns_the_runners_n_best_with_attention(client, translate_run):
    response = client.post("/api/translate", json={"text": "3 May 2020", "beam_size": 4, "n_best": 3})
    assert response.status_code == 200, response.text
    got = response.json()["hypotheses"]
    expected = translate.load(translate_run).translate(["3 May 2020"], beam_size=4, n_best=3)[0]
    assert [h["text"] for h in got] == [h["text"] for h in expected]
    assert [h["score"] for h in got] == pytest.approx([h["score"] for h in expected])
    assert len(got) == 3
    assert got[0]["score"] >= got[1]["score"] >= got[2]["score"]
    for h in got:
        attention = torch.tensor(h["attention"])  # (L, S)
        assert attention.shape == (len(h["tokens"]), len(h["source_tokens"]))
        assert torch.allclose(attention.sum(dim=1), torch.ones(len(h["tokens"])), atol=1e-4)


def test_translate_error_paths(client):
    unknown = client.post("/api/translate", json={"text": "1 May 2020", "model": "nope"})
    assert unknown.status_code == 404 and "unknown model 'nope'" in unknown.json()["detail"]
    too_long = client.post("/api/translate", json={"text": "x" * 201})
    assert too_long.status_code == 413 and "max_input_chars" in too_long.json()["detail"]
    big_beam = client.post("/api/translate", json={"text": "1 May 2020", "beam_size": 9, "n_best": 1})
    assert big_beam.status_code == 422 and "max_beam" in big_beam.json()["detail"]
    n_best = client.post("/api/translate", json={"text": "1 May 2020", "beam_size": 2, "n_best": 3})
    assert n_best.status_code == 422 and "n_best" in n_best.json()["detail"]
    empty = client.post("/api/translate", json={"text": ""})
    assert empty.status_code == 422


def test_generate_and_predict_name_the_task_they_need(client):
    wrong = client.post("/api/generate", json={"prompt": "a", "model": "dates"})
    assert wrong.status_code == 400 and "translate run" in wrong.json()["detail"] and "lm" in wrong.json()["detail"]
    none = client.post("/api/generate", json={"prompt": "a"})
    assert none.status_code == 404 and "task lm" in none.json()["detail"]
    too_long = client.post("/api/generate", json={"prompt": "a", "length": 10_000})
    assert too_long.status_code == 422 and "max_generation" in too_long.json()["detail"]
    predict = client.post("/api/predict", json={"lines": ["a b"], "model": "dates"})
    assert predict.status_code == 400 and "classify or tag" in predict.json()["detail"]
    lines = client.post("/api/predict", json={"lines": ["a"] * 65})
    assert lines.status_code == 413 and "max_lines" in lines.json()["detail"]


def test_request_timeout_is_a_4xx_naming_the_limit(translate_run):
    client = local_client(create_app([translate_run], Limits(request_timeout=1e-6)))
    response = client.post("/api/translate", json={"text": "1 May 2020", "beam_size": 8, "n_best": 1})
    assert response.status_code == 408 and "request_timeout" in response.json()["detail"]


@pytest.mark.parametrize("cell,layer_norm,bidirectional,layers", [
    ("rnn", False, False, 1), ("lstm", False, True, 2), ("gru", False, False, 2), ("lstm", True, False, 1),
    ("gru", True, True, 1)])
def test_explore_counts_match_the_formula_and_torch(client, cell, layer_norm, bidirectional, layers):
    body = {"cell": cell, "layer_norm": layer_norm, "bidirectional": bidirectional, "num_layers": layers,
            "input_size": 5, "hidden_size": 7, "sentence": "hello world"}
    result = client.post("/api/explore", json=body).json()
    counts = result["parameters"]
    assert counts["formula"] == formula_count(cell, 5, 7, num_layers=layers, bidirectional=bidirectional,
                                              layer_norm=layer_norm)
    if not layer_norm:  # the reference written by others: torch.nn's own layer
        reference = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](5, 7, layers, bidirectional=bidirectional)
        assert counts["model"] == sum(p.numel() for p in reference.parameters())
    # by hand: G[n(d+n)+n] for layer 0 (d=5, n=7), deeper layers read 7 or 14 features
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    directions = 2 if bidirectional else 1
    by_hand = sum(directions * gates * (7 * ((5 if k == 0 else 7 * directions) + 7) + 7) for k in range(layers))
    assert counts["formula"] == by_hand + (0 if not layer_norm else directions * layers * 7 * (10 if cell == "lstm"
                                                                                              else 6))
    assert len(result["hidden"]) == len(result["hidden_norms"]) == len("hello world")
    assert len(result["hidden"][0]) == 7 * directions
    norms = torch.tensor(result["hidden"]).norm(dim=1)
    assert torch.allclose(norms, torch.tensor(result["hidden_norms"]), atol=1e-5)
    expected_gates = {"rnn": set(), "lstm": {"input_gate", "forget_gate", "output_gate"},
                      "gru": {"reset_gate", "update_gate"}}[cell]
    assert set(result["gates"]) == expected_gates
    # per layer-direction: the formula with its numbers filled in, and the gates of every layer-direction
    assert len(counts["layers"]) == len(result["layers"]) == layers * directions
    assert sum(row["actual"] for row in counts["layers"]) == counts["model"]
    assert sum(row["torch_formula"] for row in counts["layers"]) == counts["formula_torch"]
    assert counts["layers"][0]["formula_text"] == (f"{gates}[7(5 + 7) + 7]" if gates > 1 else "7(5 + 7) + 7")
    for entry in result["layers"]:
        assert set(entry["gates"]) == expected_gates
        assert all(len(values) == len("hello world") and len(values[0]) == 7 for values in entry["gates"].values())
        assert all(0 < v < 1 for values in entry["gates"].values() for row in values for v in row)
    assert result["gates"] == result["layers"][0]["gates"]


def test_explore_lstm_gates_follow_the_equations_of_torch_lstm_cell(client):
    """Recompute i_t, f_t, o_t and h_t with torch.nn.LSTMCell holding the explorer's weights."""
    sentence, d, n = "abc d", 4, 3
    result = client.post("/api/explore", json={"cell": "lstm", "input_size": d, "hidden_size": n,
                                               "sentence": sentence, "seed": 3}).json()
    torch.manual_seed(3)  # the explorer's order: layer, then embedding
    layer = build_layer("lstm", d, n, 1, False, False, True)
    embedding = nn.Embedding(EMBEDDING_ROWS, d)
    reference = nn.LSTMCell(d, n)
    reference.load_state_dict({"weight_ih": layer.weight_ih_l0, "weight_hh": layer.weight_hh_l0,
                               "bias_ih": layer.bias_ih_l0, "bias_hh": layer.bias_hh_l0})
    h, c = torch.zeros(1, n), torch.zeros(1, n)
    with torch.no_grad():
        for t, ch in enumerate(sentence):
            x = embedding(torch.tensor([ord(ch) % EMBEDDING_ROWS]))  # (1, d)
            pre = x @ reference.weight_ih.T + reference.bias_ih + h @ reference.weight_hh.T + reference.bias_hh
            i, f, _, o = torch.sigmoid(pre).chunk(4, dim=1)
            h, c = reference(x, (h, c))
            assert result["gates"]["input_gate"][t] == pytest.approx(i[0].tolist(), abs=1e-5)
            assert result["gates"]["forget_gate"][t] == pytest.approx(f[0].tolist(), abs=1e-5)
            assert result["gates"]["output_gate"][t] == pytest.approx(o[0].tolist(), abs=1e-5)
            assert result["hidden"][t] == pytest.approx(h[0].tolist(), abs=1e-5)


def test_explore_error_paths(client):
    bad_cell = client.post("/api/explore", json={"cell": "transformer", "sentence": "a"})
    assert bad_cell.status_code == 422 and "cell" in json.dumps(bad_cell.json()["detail"])
    rnn_ln = client.post("/api/explore", json={"cell": "rnn", "layer_norm": True, "sentence": "a"})
    assert rnn_ln.status_code == 422 and "layer_norm" in rnn_ln.json()["detail"]
    wide = client.post("/api/explore", json={"hidden_size": 10_000, "sentence": "a"})
    assert wide.status_code == 422 and "max_hidden" in wide.json()["detail"]
    deep = client.post("/api/explore", json={"num_layers": 9, "sentence": "a"})
    assert deep.status_code == 422 and "max_layers" in deep.json()["detail"]
    long = client.post("/api/explore", json={"sentence": "a" * 201})
    assert long.status_code == 413 and "max_input_chars" in long.json()["detail"]


def read_events(client: TestClient, job_id: str) -> tuple[list[dict], dict]:
    events, end, kind = [], None, "message"
    with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: "):])
                if kind == "end":
                    end = data
                else:
                    events.append(data)
                kind = "message"
    return events, end


def test_job_streams_loss_and_gradient_norms_per_step(client):
    start = client.post("/api/jobs", json={"experiment": "adding", "cell": "gru", "steps": 5, "seq_len": 12,
                                           "hidden_size": 8})
    assert start.status_code == 201, start.text
    events, end = read_events(client, start.json()["id"])
    assert [e["step"] for e in events] == [1, 2, 3, 4, 5]
    assert all(len(e["grad_norms"]) == 12 and math.isfinite(e["loss"]) for e in events)
    assert end["status"] == "finished"
    assert client.get(f"/api/jobs/{start.json()['id']}").json()["history"] == events


def test_vanishing_gradients_decay_for_the_rnn(client):
    """Bengio et al. 1994: at initialisation ||dL/dh_t|| of a tanh RNN shrinks going back from t = T."""
    start = client.post("/api/jobs", json={"experiment": "vanishing", "cell": "rnn", "steps": 1, "seq_len": 60,
                                           "hidden_size": 16})
    events, _ = read_events(client, start.json()["id"])
    norms = events[0]["grad_norms"]
    assert all(n > 0 for n in norms)  # the total gradient reaches every step through the recurrence
    assert norms[0] < 0.01 * norms[-1]


def test_grad_norms_are_the_total_gradient_through_time():
    """Reference: torch.nn.RNNCell stepped by hand with the same weights, gradients by torch.autograd.grad."""
    from rnnkit.server.dynamics import Regressor, make_batch

    torch.manual_seed(0)
    model = Regressor("rnn", 5)
    x, target = make_batch("adding", 3, 7, torch.Generator().manual_seed(1))
    prediction, hidden = model(x)
    for h_t in hidden:
        h_t.retain_grad()
    torch.mean((prediction - target) ** 2).backward()
    reference = nn.RNNCell(2, 5)
    reference.load_state_dict({"weight_ih": model.rnn.weight_ih_l0, "weight_hh": model.rnn.weight_hh_l0,
                               "bias_ih": model.rnn.bias_ih_l0, "bias_hh": model.rnn.bias_hh_l0})
    states, h = [], torch.zeros(3, 5)
    for t in range(7):
        h = reference(x[:, t], h)
        states.append(h)
    loss = torch.mean((model.head(states[-1]).squeeze(1) - target) ** 2)
    expected = torch.autograd.grad(loss, states)
    for got, want in zip(hidden, expected, strict=True):
        assert torch.allclose(got.grad, want, atol=1e-6)


def test_too_many_jobs_then_cancel(client):
    first = client.post("/api/jobs", json={"steps": 2000, "seq_len": 50, "hidden_size": 32})
    assert first.status_code == 201
    second = client.post("/api/jobs", json={"steps": 5})
    assert second.status_code == 429 and "max_jobs" in second.json()["detail"]
    cancelled = client.delete(f"/api/jobs/{first.json()['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post("/api/jobs", json={"steps": 1, "seq_len": 5}).status_code == 201


def test_job_error_paths(client):
    assert client.get("/api/jobs/999").status_code == 404
    assert client.get("/api/jobs/999/events").status_code == 404
    assert client.delete("/api/jobs/999").status_code == 404
    steps = client.post("/api/jobs", json={"steps": 10**5})
    assert steps.status_code == 422 and "max_job_steps" in steps.json()["detail"]
    bad_cell = client.post("/api/jobs", json={"cell": "lstmm"})
    assert bad_cell.status_code == 422
    bad_experiment = client.post("/api/jobs", json={"experiment": "copy"})
    assert bad_experiment.status_code == 422


def test_runs_lists_metrics_and_serves_files_from_inside_only(client, translate_run):
    runs = client.get("/api/runs").json()
    records = [json.loads(line) for line in (translate_run / "metrics.jsonl").read_text().splitlines()]
    assert runs[0]["records"] == records
    assert "config.json" in runs[0]["files"]
    served = client.get("/api/runs/dates/files/config.json")
    assert served.status_code == 200 and served.json() == json.loads((translate_run / "config.json").read_text())
    secret = translate_run.parent / "secret.json"
    secret.write_text('{"secret": 1}')
    for attempt in ("..%2Fsecret.json", "%2E%2E/secret.json", "checkpoints/..%2F..%2Fsecret.json",
                    "%2Fetc%2Fpasswd"):
        response = client.get(f"/api/runs/dates/files/{attempt}")
        assert response.status_code in (403, 404), attempt
        assert "secret" not in response.text or "outside" in response.text
    assert client.get("/api/runs/dates/files/..%2Fsecret.json").status_code == 403
    assert client.get("/api/runs/dates/files/model.safetensors").status_code == 404  # not a report file
    missing = client.get("/api/runs/nope/files/config.json")
    assert missing.status_code == 404 and "unknown run 'nope'" in missing.json()["detail"]


def test_every_static_file_ships_in_the_package():
    """pyproject's package-data must cover the page: a non-editable install has nothing else to serve."""
    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    static = root / "rnnkit" / "server" / "static"
    files = [p.relative_to(static.parent).as_posix() for p in static.rglob("*") if p.is_file()]
    assert "static/vendor/plotly-cartesian.min.js" in files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pattern) and f.count("/") == pattern.count("/")
                                           for pattern in patterns["rnnkit.server"])]
    assert missing == []


def test_missing_run_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a run directory"):
        create_app([tmp_path / "missing"])


def test_page_assets_are_local_and_openapi_has_limits(client):
    page = client.get("/")
    assert page.status_code == 200 and "Architecture explorer" in page.text
    static = Path(__file__).resolve().parents[1] / "rnnkit" / "server" / "static"
    for path in static.iterdir():  # our own files name no outside URL (the vendored library: see below)
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert "http://" not in text and "https://" not in text and "//cdn" not in text, path.name
            assert client.get(f"/static/{path.name}").status_code == 200
    assert '<script src="/static/vendor/plotly-cartesian.min.js">' in page.text
    vendored = client.get("/static/vendor/plotly-cartesian.min.js")
    assert vendored.status_code == 200 and "window.Plotly = Plotly" in vendored.text
    # the file is plotly.js-cartesian-dist-min 4.1.1 as published (static/vendor/README.md)
    assert hashlib.sha256(vendored.content).hexdigest() == PLOTLY_SHA256
    assert client.get("/static/vendor/plotly.LICENSE").status_code == 200
    spec = client.get("/openapi.json").json()
    for route in ("/api/models", "/api/translate", "/api/generate", "/api/generate/stream", "/api/predict",
                  "/api/classify", "/api/tag", "/api/diagnostics", "/api/explore", "/api/jobs",
                  "/api/jobs/{job_id}/events", "/api/runs"):
        assert route in spec["paths"], route
    assert spec["components"]["schemas"]["ExploreRequest"]["properties"]["cell"]["enum"] == ["rnn", "lstm", "gru"]


SMALL_DATA = {
    "lm": ("text.txt", "the quick brown fox jumps over the lazy dog\n" * 50),
    "classify": ("labels.tsv", "pos\tgood great fine\nneg\tbad awful poor\n" * 30),
    "tag": ("tagged.txt", "the\tDET\ncat\tNOUN\nsat\tVERB\n\na\tDET\ndog\tNOUN\nran\tVERB\n\n" * 20),
}
SMALL_SETTINGS = {"lm": {"bptt": 16, "batch_size": 4}, "classify": {"pooling": "attention"},
                  "tag": {"min_freq": 1, "batch_size": 4}}


def make_small_run(task: str, root: Path) -> Path:
    """A tiny run of ``task`` (about a second) trained on a file written into ``root``."""
    name, text = SMALL_DATA[task]
    data = root / name
    data.write_text(text, encoding="utf-8")
    settings = resolve_settings(task, {"data": str(data), "valid": str(data), "hidden_size": 16, "max_steps": 5,
                                       "eval_every": 5, "checkpoint_every": 5, **SMALL_SETTINGS[task]})
    task_object, run_config = task_module(task).prepare(settings, root / task)
    Trainer(task_object, root / task, training_settings(settings), run_config=run_config).train(overwrite=True)
    return root / task


@pytest.fixture(scope="session")
def lm_and_classify_runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("server_more")
    return make_small_run("lm", root), make_small_run("classify", root)


@pytest.fixture(scope="session")
def tag_run(tmp_path_factory) -> Path:
    return make_small_run("tag", tmp_path_factory.mktemp("server_tag"))


def test_generate_and_predict_use_the_runners(translate_run, lm_and_classify_runs):
    lm_run, classify_run = lm_and_classify_runs
    client = local_client(create_app([translate_run, lm_run, classify_run]))
    assert [(m["name"], m["task"]) for m in client.get("/api/models").json()] == [
        ("dates", "translate"), ("lm", "lm"), ("classify", "classify")]
    generated = client.post("/api/generate", json={"prompt": "the", "length": 12, "temperature": 0.0})
    assert generated.status_code == 200, generated.text
    expected = task_module("lm").load(lm_run).generate("the", length=12, temperature=0.0)
    assert generated.json()["text"] == expected and generated.json()["model"] == "lm"
    predicted = client.post("/api/predict", json={"lines": ["good great", "bad awful"]})
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["predictions"] == task_module("classify").load(classify_run).predict(
        ["good great", "bad awful"])
    wrong = client.post("/api/translate", json={"text": "1 May 2020", "model": "lm"})
    assert wrong.status_code == 400 and "lm run" in wrong.json()["detail"]


def test_runs_with_the_same_directory_name_get_distinct_names(translate_run):
    client = local_client(create_app([translate_run, translate_run]))
    assert [m["name"] for m in client.get("/api/models").json()] == ["dates", "dates-2"]


# -- streaming generation ------------------------------------------------------------------------------------

def read_sse(response) -> list[tuple[str, dict]]:
    """(event name, data) of each frame of a text/event-stream body."""
    frames = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        frames.append((fields.get("event", "message"), json.loads(fields["data"])))
    return frames


@pytest.mark.parametrize("temperature,seed", [(0.0, None), (1.0, 3)])
def test_generate_stream_sends_each_token_and_adds_up_to_generate(lm_and_classify_runs, temperature, seed):
    lm_run, _ = lm_and_classify_runs
    client = local_client(create_app([lm_run]))
    body = {"prompt": "the qu", "length": 20, "temperature": temperature, "top_k": 5, "seed": seed}
    response = client.post("/api/generate/stream", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = read_sse(response)
    assert [name for name, _ in frames] == ["token"] * 20 + ["done"]
    assert frames[-1][1] == {"count": 20}
    runner = task_module("lm").load(lm_run)
    expected = runner.generate("the qu", length=20, temperature=temperature, top_k=5, seed=seed)
    assert "the qu" + "".join(data["text"] for _, data in frames[:-1]) == expected
    assert [data["token"] for _, data in frames[:-1]] == [runner.vocab.id_to_token(d["id"]) for _, d in frames[:-1]]


def test_generate_stream_error_paths(translate_run, lm_and_classify_runs):
    lm_run, _ = lm_and_classify_runs
    client = local_client(create_app([translate_run, lm_run], Limits(max_input_chars=10, max_generation=100)))
    unknown = client.post("/api/generate/stream", json={"prompt": "a", "model": "nope"})
    assert unknown.status_code == 404 and "unknown model 'nope'" in unknown.json()["detail"]
    wrong = client.post("/api/generate/stream", json={"prompt": "a", "model": "dates"})
    assert wrong.status_code == 400 and "translate run" in wrong.json()["detail"]
    long_prompt = client.post("/api/generate/stream", json={"prompt": "a" * 11})
    assert long_prompt.status_code == 413 and "max_input_chars" in long_prompt.json()["detail"]
    too_many = client.post("/api/generate/stream", json={"prompt": "a", "length": 101})
    assert too_many.status_code == 422 and "max_generation" in too_many.json()["detail"]
    bad_temperature = client.post("/api/generate/stream", json={"prompt": "a", "temperature": -1})
    assert bad_temperature.status_code == 422
    only_translate = local_client(create_app([translate_run]))
    none = only_translate.post("/api/generate/stream", json={"prompt": "a"})
    assert none.status_code == 404 and "task lm" in none.json()["detail"]


def test_a_stream_past_request_timeout_ends_with_an_error_event():
    from rnnkit.server.app import until_deadline
    from rnnkit.streaming import sse_events

    def slow():
        for k in range(100):
            time.sleep(0.02)
            yield {"k": k}

    frames = list(sse_events(until_deadline(slow(), 0.1)))
    assert 1 <= len(frames) - 1 < 100
    assert frames[-1].startswith("event: error\n") and "request_timeout" in frames[-1]
    assert list(until_deadline(iter([1, 2, 3]), 10.0)) == [1, 2, 3]


# -- classify and tag ----------------------------------------------------------------------------------------

def test_classify_and_tag_endpoints_need_their_own_task(lm_and_classify_runs, tag_run):
    _, classify_run = lm_and_classify_runs
    client = local_client(create_app([classify_run, tag_run]))
    labels = client.post("/api/classify", json={"lines": ["good great", "bad awful"]})
    assert labels.status_code == 200, labels.text
    assert labels.json()["predictions"] == task_module("classify").load(classify_run).predict(["good great",
                                                                                                "bad awful"])
    tags = client.post("/api/tag", json={"lines": ["the cat sat", "a dog"]})
    assert tags.status_code == 200, tags.text
    assert tags.json()["predictions"] == task_module("tag").load(tag_run).predict(["the cat sat", "a dog"])
    assert [len(t) for t in tags.json()["predictions"]] == [3, 2]
    wrong = client.post("/api/tag", json={"lines": ["a"], "model": "classify"})
    assert wrong.status_code == 400 and "tag needs task tag" in wrong.json()["detail"]
    wrong = client.post("/api/classify", json={"lines": ["a"], "model": "tag"})
    assert wrong.status_code == 400 and "classify needs task classify" in wrong.json()["detail"]
    assert client.post("/api/classify", json={"lines": []}).status_code == 422
    assert client.post("/api/tag", json={"lines": ["a"], "model": "nope"}).status_code == 404


# -- diagnostics of one input --------------------------------------------------------------------------------

def test_diagnostics_of_a_language_model(lm_and_classify_runs):
    lm_run, _ = lm_and_classify_runs
    client = local_client(create_app([lm_run]))
    response = client.post("/api/diagnostics", json={"text": "the lazy dog"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["model"] == "lm" and result["task"] == "lm"
    runner = task_module("lm").load(lm_run)
    ids = runner.vocab.encode("the lazy dog")
    inputs, targets = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    with torch.no_grad():  # reference: the model's own forward pass and loss
        logits, _ = runner.model(inputs)
        loss = runner.model.loss(logits, targets)
        embedded = runner.model.embedding(inputs)
        outputs, _ = runner.model.recurrent(embedded)  # (1, T - 1, H)
    assert result["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert sum(result["token_loss"]) / len(result["token_loss"]) == pytest.approx(float(loss), rel=1e-5)
    assert result["inputs"] == list("the lazy do") and result["target"] == list("he lazy dog")
    (layer,) = result["layers"]
    assert layer["labels"] == list("the lazy do") and layer["steps"] == 11
    assert layer["hidden_norm"] == pytest.approx(outputs[0].norm(dim=1).tolist(), abs=1e-5)
    assert len(layer["grad_norm"]) == 11 and all(g > 0 for g in layer["grad_norm"])
    assert set(layer["gates"]) == {"input", "forget", "output"}  # the lm default cell is an LSTM
    assert len(layer["gates"]["forget"]["unit_mean"]) == 11 and len(layer["gates"]["forget"]["unit_mean"][0]) == 16
    assert result["attention"] is None
    assert result["parameters"]["total"] == sum(p.numel() for p in runner.model.parameters())


def test_diagnostics_of_a_classifier_with_attention_pooling(lm_and_classify_runs):
    _, classify_run = lm_and_classify_runs
    client = local_client(create_app([classify_run]))
    runner = task_module("classify").load(classify_run)
    predicted = runner.predict(["good great fine"])[0]
    result = client.post("/api/diagnostics", json={"text": "good great fine"}).json()
    assert result["target"] == predicted and result["inputs"] == ["good", "great", "fine"]
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert result["loss"] == pytest.approx(-math.log(result["probabilities"][predicted]), rel=1e-4)
    other = next(label for label in result["probabilities"] if label != predicted)
    against = client.post("/api/diagnostics", json={"text": "good great fine", "target": other}).json()
    assert against["loss"] == pytest.approx(-math.log(result["probabilities"][other]), rel=1e-4)
    assert result["attention"]["kind"] == "pooling"
    (weights,) = result["attention"]["weights"][0]
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0, abs=1e-5)
    assert all(layer["labels"] == ["good", "great", "fine"] for layer in result["layers"])
    unknown = client.post("/api/diagnostics", json={"text": "good", "target": "maybe"})
    assert unknown.status_code == 422 and "'maybe'" in unknown.json()["detail"] and "neg" in unknown.json()["detail"]


def test_diagnostics_of_a_tagger(tag_run):
    client = local_client(create_app([tag_run]))
    runner = task_module("tag").load(tag_run)
    result = client.post("/api/diagnostics", json={"text": "the dog sat"}).json()
    assert result["target"] == runner.predict(["the dog sat"])[0]
    assert [layer["name"] for layer in result["layers"]] == ["recurrent/l0", "recurrent/l0_reverse"]
    assert all(layer["labels"] == ["the", "dog", "sat"] for layer in result["layers"])
    given = client.post("/api/diagnostics", json={"text": "the dog sat", "target": "DET NOUN VERB"}).json()
    assert given["target"] == ["DET", "NOUN", "VERB"]
    count = client.post("/api/diagnostics", json={"text": "the dog sat", "target": "DET NOUN"})
    assert count.status_code == 422 and "3 tokens, got 2 tags" in count.json()["detail"]
    unknown = client.post("/api/diagnostics", json={"text": "the dog", "target": "DET ADJ"})
    assert unknown.status_code == 422 and "ADJ" in unknown.json()["detail"]


def test_diagnostics_of_a_translation_shows_the_attention_of_its_greedy_output(client, translate_run):
    result = client.post("/api/diagnostics", json={"text": "3 May 2020"})
    assert result.status_code == 200, result.text
    result = result.json()
    greedy = translate.load(translate_run).translate(["3 May 2020"], beam_size=1)[0][0]
    assert result["target_text"] == greedy["text"]
    assert result["target"] == greedy["tokens"] and result["inputs"] == greedy["source_tokens"]
    attention = result["attention"]
    assert attention["rows"] == greedy["tokens"] and attention["columns"] == list("3 May 2020")
    # teacher forcing on the greedy output feeds the decoder what greedy decoding fed it: the same weights
    assert torch.allclose(torch.tensor(attention["weights"][0]), torch.tensor(greedy["attention"]), atol=1e-5)
    names = [layer["name"] for layer in result["layers"]]
    assert any(n.startswith("encoder") for n in names) and any(n.startswith("decoder") for n in names)
    for layer in result["layers"]:
        expected = list("3 May 2020") if layer["module"].startswith("encoder") else ["<bos>"] + greedy["tokens"][:-1]
        assert layer["labels"] == expected, layer["name"]


def test_diagnostics_error_paths(client, translate_run, lm_and_classify_runs):
    unknown = client.post("/api/diagnostics", json={"text": "1 May 2020", "model": "nope"})
    assert unknown.status_code == 404 and "unknown model 'nope'" in unknown.json()["detail"]
    long = client.post("/api/diagnostics", json={"text": "x" * 201})
    assert long.status_code == 413 and "max_input_chars" in long.json()["detail"]
    long_target = client.post("/api/diagnostics", json={"text": "1 May 2020", "target": "x" * 195})
    assert long_target.status_code == 413 and "max_input_chars" in long_target.json()["detail"]
    assert client.post("/api/diagnostics", json={"text": ""}).status_code == 422
    lm_run, _ = lm_and_classify_runs
    lm_client = local_client(create_app([lm_run]))
    short = lm_client.post("/api/diagnostics", json={"text": "t"})
    assert short.status_code == 422 and "at least 2 tokens" in short.json()["detail"]
    target = lm_client.post("/api/diagnostics", json={"text": "the", "target": "he"})
    assert target.status_code == 422 and "leave target out" in target.json()["detail"]
    nothing = local_client(create_app([])).post("/api/diagnostics", json={"text": "a"})
    assert nothing.status_code == 404 and "no loaded run can diagnose" in nothing.json()["detail"]
    from rnnkit.probe import diagnose_input

    with pytest.raises(ValueError, match="forecast"):
        diagnose_input("forecast", None, "1 2 3")
