"""Reliability of ``rnnkit serve`` under hostile or heavy use: schemathesis against the OpenAPI spec (no 5xx
for any generated request, valid or not), oversized inputs refused with 413/422 before any work, run files
that cannot be read outside the run directories, and a small loopback load test (no errors, bounded memory).

The runs are untrained (prepare + initial weights): the server does the same work on them as on trained ones.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from rnnkit.cancel import Cancelled
from rnnkit.checkpoint import save_checkpoint
from rnnkit.data.vocab import EOS_ID
from rnnkit.server import Limits, create_app
from rnnkit.server import app as app_module
from rnnkit.tasks import resolve_settings, task_module
from tests.test_server_api import local_client
from tests.test_server_browser import free_port

ROOT = Path(__file__).resolve().parent.parent
SMALL = Limits(max_input_chars=200, max_lines=8, max_generation=20, max_beam=4, max_hidden=32, max_layers=2,
               max_job_steps=20, max_seq_len=20, max_jobs=1, request_timeout=20.0)


def make_runs(root: Path) -> list[Path]:
    text = root / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 20, encoding="utf-8")
    labelled = root / "labels.tsv"
    labelled.write_text("pos\tgood fine\nneg\tbad poor\n" * 10, encoding="utf-8")
    tagged = root / "tags.tsv"
    tagged.write_text("the\tDET\ndog\tNOUN\nruns\tVERB\n\na\tDET\ncat\tNOUN\n\n" * 5, encoding="utf-8")
    pairs = root / "pairs.tsv"
    pairs.write_text("ab\tba\nabc\tcba\nbca\tacb\n" * 5, encoding="utf-8")
    runs = []
    for task, source in (("lm", text), ("classify", labelled), ("tag", tagged), ("translate", pairs)):
        settings_ = resolve_settings(task, {"data": str(source), "valid": str(source), "hidden_size": 8})
        run_dir = root / "runs" / task
        model_task, run_config = task_module(task).prepare(settings_, run_dir)
        save_checkpoint(run_dir, model_task.model, run_config, name="best")
        (run_dir / "metrics.jsonl").write_text(json.dumps({"event": "eval", "step": 1, "metrics": {"loss": 1.0}})
                                               + "\n", encoding="utf-8")
        (run_dir / "report.md").write_text("# report\n", encoding="utf-8")
        runs.append(run_dir)
    return runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    return make_runs(tmp_path_factory.mktemp("reliability"))


@pytest.fixture(scope="module")
def app(runs):
    return create_app(runs, SMALL)


@pytest.fixture()
def client(app) -> TestClient:
    return local_client(app)


# ----------------------------------------------------------------------------------------------------------
# schemathesis: no request the spec allows (or nearly allows) makes the server fail
# ----------------------------------------------------------------------------------------------------------

EXAMPLES_PER_OPERATION = 60  # per generation mode (valid and invalid data)


def with_model(case, name: str | None):
    """The case with its body's ``model`` set to a loaded run (or left out: the server picks one)."""
    if isinstance(case.body, dict) and "model" in case.operation.definition.raw.get("requestBody", {}).get(
            "content", {}).get("application/json", {}).get("schema", {}).get("properties", {"model": 1}):
        body = {k: v for k, v in case.body.items() if k != "model"}
        if name is not None:
            body["model"] = name
        case.body = body
    return case


def test_schemathesis_finds_no_server_error(app, capsys):
    # requests name the server as a browser on this machine does (any other Host is refused unread)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Host": "127.0.0.1:8000"})
    names = sorted(app.state.runs)
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE, "known models"):
            if mode == "known models":  # valid bodies that name a loaded run, so the runners do real work
                strategy = operation.as_strategy(generation_mode=GenerationMode.POSITIVE).flatmap(
                    lambda case: st.sampled_from([None, *names]).map(lambda name, c=case: with_model(c, name)))
            else:
                strategy = operation.as_strategy(generation_mode=mode)

            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=strategy)
            def no_server_error(case):
                response = case.call(base_url="http://127.0.0.1:8000")
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} {case.body!r:.300} -> "
                                    f"{response.status_code} {response.text[:300]}")

            try:
                no_server_error()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body): nothing to send
                assert mode is GenerationMode.NEGATIVE
    assert operations >= 10
    assert not failures, "\n".join(failures[:20])
    assert sum(statuses.values()) >= operations * EXAMPLES_PER_OPERATION  # operations without inputs send fewer
    with capsys.disabled():
        print(f"\n[schemathesis] {operations} operations, {sum(statuses.values())} requests, "
              f"status codes {dict(sorted(statuses.items()))}, 5xx: {len(failures)}")


# ----------------------------------------------------------------------------------------------------------
# Oversized and out-of-range inputs: refused with 413 / 422 before any work, naming the limit
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, body, status, limit", [
    ("/api/translate", {"text": "a" * 201}, 413, "max_input_chars"),
    ("/api/translate", {"text": "a" * 100_001}, 422, "text"),
    ("/api/translate", {"text": "abc", "beam_size": 5, "n_best": 1}, 422, "max_beam"),
    ("/api/generate", {"prompt": "a" * 201}, 413, "max_input_chars"),
    ("/api/generate", {"prompt": "a", "length": 21}, 422, "max_generation"),
    ("/api/generate", {"prompt": "a", "seed": 2**70}, 422, "seed"),
    ("/api/generate/stream", {"prompt": "a", "length": 21}, 422, "max_generation"),
    ("/api/predict", {"lines": ["a"] * 9}, 413, "max_lines"),
    ("/api/predict", {"lines": ["a" * 150, "b" * 51]}, 413, "max_input_chars"),
    ("/api/diagnostics", {"text": "a" * 201}, 413, "max_input_chars"),
    ("/api/explore", {"sentence": "a b", "hidden_size": 33}, 422, "max_hidden"),
    ("/api/explore", {"sentence": "a b", "num_layers": 3}, 422, "max_layers"),
    ("/api/explore", {"sentence": "a b", "seed": -1}, 422, "seed"),
    ("/api/jobs", {"steps": 21}, 422, "max_job_steps"),
    ("/api/jobs", {"seq_len": 21, "steps": 5}, 422, "max_seq_len"),
])
def test_over_a_limit_is_a_4xx_naming_it(client, url, body, status, limit):
    response = client.post(url, json=body)
    assert response.status_code == status, response.text
    assert limit in response.text


def test_a_body_over_max_body_bytes_is_413_before_it_is_parsed(client):
    huge = {"lines": ["x" * 1000] * 2000}  # 2 MB of JSON
    response = client.post("/api/predict", json=huge)
    assert response.status_code == 413 and "max_body_bytes" in response.text
    # Without a Content-Length (chunked upload) the bytes are counted as they arrive.
    def chunks():
        for _ in range(2000):
            yield b"x" * 1000

    response = client.post("/api/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "max_body_bytes" in response.text
    assert client.post("/api/predict", json={"lines": ["good fine"], "model": "classify"}).status_code == 200


# ----------------------------------------------------------------------------------------------------------
# Run files: nothing outside the given run directories, whatever the path looks like
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture()
def traps(runs, tmp_path):
    """Secrets beside and far from the run directories, and symlinks inside a run that point at them."""
    lm = runs[0]
    secret = lm.parent / "secret.json"
    secret.write_text('{"secret": "beside the runs"}', encoding="utf-8")
    far = tmp_path / "far.txt"
    far.write_text('{"event": "eval", "metrics": {"secret": 1}}\n', encoding="utf-8")
    links = {"link.json": secret, "far.txt": far, "metrics-link.jsonl": far}
    for name, target in links.items():
        (lm / name).unlink(missing_ok=True)
        os.symlink(target, lm / name)
    (lm / "outside_dir").unlink(missing_ok=True)
    os.symlink(tmp_path, lm / "outside_dir", target_is_directory=True)
    inner = lm / "inner.md"
    inner.unlink(missing_ok=True)
    os.symlink(lm / "report.md", inner)  # a symlink that stays inside is fine
    yield lm
    for name in [*links, "outside_dir", "inner.md"]:
        (lm / name).unlink(missing_ok=True)


ESCAPES = [
    "../secret.json", "..%2Fsecret.json", "%2E%2E/secret.json", "%2e%2e%2fsecret.json", "..%252Fsecret.json",
    "checkpoints/..%2F..%2Fsecret.json", "./../secret.json", "..\\secret.json", "..%5Csecret.json",
    "%2Fetc%2Fpasswd", "//etc/passwd", "/etc/passwd", "%2F%2Fetc%2Fpasswd", "....//secret.json",
    "link.json", "far.txt", "outside_dir/far.txt", "metrics-link.jsonl", "%00", "config.json%00.png",
    "a" * 5000, "%C0%AE%C0%AE/secret.json", "..%c0%afsecret.json", "%u002e%u002e/secret.json",
]


@pytest.mark.parametrize("path", ESCAPES)
def test_run_files_cannot_be_read_outside_the_run_directory(client, traps, path):
    response = client.get(f"/api/runs/lm/files/{path}")
    assert response.status_code in (403, 404), (path, response.status_code, response.text[:200])
    assert "secret" not in response.text.replace(repr(path), "").replace("secret.json", "")


def test_files_inside_are_served_and_listed_but_no_link_that_leads_out(client, traps):
    assert client.get("/api/runs/lm/files/report.md").text == "# report\n"
    assert client.get("/api/runs/lm/files/inner.md").text == "# report\n"  # a symlink within the run
    assert client.get("/api/runs/lm/files/config.json").json()["task"] == "lm"
    listing = {run["name"]: run for run in client.get("/api/runs").json()}
    files = listing["lm"]["files"]
    assert "report.md" in files and "inner.md" in files and "config.json" in files
    for name in ("link.json", "far.txt", "metrics-link.jsonl", "outside_dir/far.txt"):
        assert name not in files, name
    assert "secret" not in json.dumps(listing)


def test_a_metrics_file_that_links_outside_is_not_read(client, traps):
    metrics = traps / "metrics.jsonl"
    saved = metrics.read_bytes()
    metrics.unlink()
    os.symlink(traps / "metrics-link.jsonl", metrics)  # -> far.txt, outside
    try:
        listing = {run["name"]: run for run in client.get("/api/runs").json()}
        assert listing["lm"]["records"] == [] and "secret" not in json.dumps(listing)
        assert client.get("/api/models").status_code == 200
    finally:
        metrics.unlink()
        metrics.write_bytes(saved)


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8\n", b"[" * 100_000 + b"\n", b'{"event": "eval"}\n\x00\n'])
def test_a_damaged_metrics_file_does_not_break_the_listing(client, runs, content):
    metrics = runs[1] / "metrics.jsonl"
    saved = metrics.read_bytes()
    metrics.write_bytes(saved + content)
    try:
        for url in ("/api/runs", "/api/models"):
            response = client.get(url)
            assert response.status_code == 200, response.text[:300]
        listing = {run["name"]: run for run in client.get("/api/runs").json()}
        assert listing["classify"]["records"][0] == json.loads(saved)  # the good lines are still there
    finally:
        metrics.write_bytes(saved)


# ----------------------------------------------------------------------------------------------------------
# Job retention: finished jobs and their per-step history are capped, so memory levels off
# ----------------------------------------------------------------------------------------------------------


def kept_numbers(jobs) -> int:
    """Numbers the server holds for its jobs: one loss per step, plus every kept ||dL/dh_t||."""
    return sum(1 + len(event["grad_norms"] or ()) for job in jobs.values() for event in job.events)


def test_finished_jobs_and_their_history_are_capped_so_memory_levels_off(capsys):
    """18 jobs, 6 at a time: what the server keeps for its jobs stays at the cap (3 jobs: every step's loss,
    ||dL/dh_t|| of their last 4 steps) instead of growing with every job."""
    limits = Limits(max_jobs=1, max_kept_jobs=3, max_job_history=4)
    app = create_app([], limits)
    client = local_client(app)
    shown = client.get("/api/limits").json()
    assert (shown["max_kept_jobs"], shown["max_job_history"]) == (3, 4)
    steps, seq_len = 12, 20
    started, kept = [], []
    for _ in range(3):
        for _ in range(6):
            response = client.post("/api/jobs", json={"steps": steps, "seq_len": seq_len, "hidden_size": 4})
            assert response.status_code == 201, response.text
            started.append(response.json()["id"])
            app.state.jobs[started[-1]].thread.join(timeout=60)
        kept.append(kept_numbers(app.state.jobs))
    with capsys.disabled():
        print(f"\n[jobs] numbers kept after 6, 12, 18 jobs: {kept} (all of them would be "
              f"{[n * steps * (1 + seq_len) for n in (6, 12, 18)]})")
    assert list(app.state.jobs) == started[-3:]  # the newest three; the oldest finished went first
    assert kept == [3 * (steps + 4 * seq_len)] * 3
    history = client.get(f"/api/jobs/{started[-1]}").json()["history"]
    assert [event["step"] for event in history] == list(range(1, steps + 1))
    assert [event["grad_norms"] is not None for event in history] == [False] * (steps - 4) + [True] * 4
    assert all(len(event["grad_norms"]) == seq_len for event in history[-4:])
    evicted = client.get(f"/api/jobs/{started[0]}")
    assert evicted.status_code == 404 and "beyond the newest 3" in evicted.text


def test_limits_refuse_keeping_fewer_jobs_than_may_run():
    with pytest.raises(ValueError, match="max_kept_jobs"):
        Limits(max_jobs=3, max_kept_jobs=2)


# ----------------------------------------------------------------------------------------------------------
# Cancellation: a request answered 408, or whose client went away, stops its work within a step
# ----------------------------------------------------------------------------------------------------------


class SlowSteps:
    """Installed as ``model.step``: each decoding step sleeps first, and EOS is made all but impossible, so that
    the work would run for ``max_len`` steps (seconds) unless something stops it."""

    def __init__(self, model, seconds: float) -> None:
        self.original, self.seconds, self.calls = model.step, seconds, 0
        model.step = self

    def __call__(self, prev_tokens, state):
        self.calls += 1
        time.sleep(self.seconds)
        log_probs, state = self.original(prev_tokens, state)
        log_probs = log_probs.clone()
        log_probs[:, EOS_ID] = -1e4
        return log_probs, state


class Watched:
    """Wraps a function the server runs in a worker thread; records when and how it ended."""

    def __init__(self, fn) -> None:
        self.fn, self.ended, self.error = fn, threading.Event(), None

    def __call__(self, *args, **kwargs):
        try:
            return self.fn(*args, **kwargs)
        except BaseException as err:
            self.error = err
            raise
        finally:
            self.ended.set()


def slow_work(app, endpoint: str, monkeypatch) -> tuple[Watched, dict, list]:
    """Make ``endpoint``'s work take many seconds, a step at a time: (the watched function, the request body,
    a list whose length counts the steps done so far)."""
    if endpoint == "diagnostics":  # diagnostics record every time step of the LM's recurrent layer
        runner = app.state.runs["lm"].runner()
        recurrent = next(m for m in runner.model.modules() if hasattr(m, "cells"))
        cell_class = type(recurrent.cells[0])
        original, steps = cell_class.recur, []

        def slow_recur(self, *args):
            steps.append(1)
            time.sleep(0.05)
            return original(self, *args)

        monkeypatch.setattr(cell_class, "recur", slow_recur)
        watched = Watched(app_module.diagnose_input)
        monkeypatch.setattr(app_module, "diagnose_input", watched)
        return watched, {"text": "the quick brown fox " * 9, "model": "lm"}, steps
    name, method = ("lm", "generate") if endpoint.startswith("generate") else ("translate", "translate")
    runner = app.state.runs[name].runner()
    slow = SlowSteps(runner.model, 0.05)
    watched = Watched(getattr(runner, method))
    setattr(runner, method, watched)
    steps = type("Steps", (), {"__len__": lambda self: slow.calls})()
    body = {"prompt": "the", "length": 200, "model": "lm"} if name == "lm" else {"text": "abcab" * 8}
    return watched, body, steps


@pytest.mark.parametrize("endpoint", ["generate", "translate", "diagnostics"])
def test_a_timed_out_request_stops_its_work_within_a_second(runs, endpoint, monkeypatch):
    app = create_app(runs, Limits(request_timeout=0.5, max_generation=200, max_input_chars=200))
    watched, body, steps = slow_work(app, endpoint, monkeypatch)
    response = local_client(app).post(f"/api/{endpoint}", json=body)
    assert response.status_code == 408 and "request_timeout" in response.text
    assert watched.ended.wait(1.0), f"{len(steps)} steps done and still running 1 s after the 408"
    assert isinstance(watched.error, Cancelled) and "request_timeout" in str(watched.error)
    done = len(steps)
    time.sleep(0.2)
    assert len(steps) == done and done < 40  # of 200 (generate), 90 (translate), 180 (diagnostics)


def real_server(app) -> tuple[uvicorn.Server, threading.Thread, int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
        time.sleep(0.05)
    return server, thread, port


@pytest.mark.parametrize("endpoint", ["generate", "translate", "diagnostics", "generate/stream"])
def test_a_request_whose_client_disconnects_stops_its_work_within_a_second(runs, endpoint, monkeypatch):
    app = create_app(runs, Limits(request_timeout=60, max_generation=200, max_input_chars=200))
    watched, body, steps = slow_work(app, endpoint.split("/")[0], monkeypatch)
    server, thread, port = real_server(app)
    try:
        payload = json.dumps(body).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(f"POST /api/{endpoint} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                           + payload)
            deadline = time.monotonic() + 10
            while len(steps) < 3:  # the work has started
                assert time.monotonic() < deadline
                time.sleep(0.02)
        closed = len(steps)
        if endpoint == "generate/stream":  # a stream's steps are pulled one at a time: they simply stop
            time.sleep(1.0)
            done = len(steps)
            time.sleep(0.3)
            assert len(steps) == done < closed + 20
        else:
            assert watched.ended.wait(1.0), f"{len(steps)} steps done and still running 1 s after the disconnect"
            assert isinstance(watched.error, Cancelled) and "disconnected" in str(watched.error)
            assert len(steps) < closed + 20
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_deleted_job_stops_within_a_step():
    app = create_app([], Limits(max_jobs=1, max_job_steps=2000))
    client = local_client(app)
    job = client.post("/api/jobs", json={"steps": 2000, "seq_len": 20, "hidden_size": 4}).json()
    events = app.state.jobs[job["id"]].events
    while len(events) < 3:
        time.sleep(0.01)
    started = time.monotonic()
    answer = client.delete(f"/api/jobs/{job['id']}").json()
    assert time.monotonic() - started < 1.0 and not app.state.jobs[job["id"]].thread.is_alive()
    assert answer["status"] == "cancelled" and answer["events"] < 2000


# ----------------------------------------------------------------------------------------------------------
# Load on loopback: a real uvicorn server, concurrent requests, no errors, memory that does not run away
# ----------------------------------------------------------------------------------------------------------


def test_load_on_loopback_has_no_errors_and_bounded_memory(capsys):
    """The small version of ``python -m benchmarks.server_load`` (1,000 requests at 32 there). No timing is
    asserted: only that every request got its expected answer and the server's memory stayed put."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.server_load import markdown, run_load

    result = run_load(requests=300, concurrency=16, warmup=40)
    assert result.errors == 0, result.error_examples
    assert result.requests == 300
    assert result.rss_growth_mib < 64, f"server memory grew by {result.rss_growth_mib:.0f} MiB"
    assert {"POST /api/generate", "POST /api/translate", "POST /api/predict"} <= set(result.per_endpoint_ms)
    with capsys.disabled():
        print("\n[load] " + markdown(result).split("\n\n")[0].replace("\n", "; "))


def test_report_html_and_svg_are_sandboxed(client, runs):
    """A run directory from elsewhere may hold a report.html with a script: it must not run in the API's
    origin (where it could start jobs or read every run)."""
    planted = runs[0] / "evil.html"
    planted.write_text("<script>fetch('/api/jobs', {method: 'POST'})</script>", encoding="utf-8")
    (runs[0] / "evil.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
                                      encoding="utf-8")
    try:
        for name in ("evil.html", "evil.svg"):
            response = client.get(f"/api/runs/lm/files/{name}")
            assert response.status_code == 200
            assert response.headers["content-security-policy"] == "sandbox"
            assert response.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" not in client.get("/api/runs/lm/files/config.json").headers
    finally:
        planted.unlink()
        (runs[0] / "evil.svg").unlink()
