"""``rnnkit serve`` against a hostile web page: DNS rebinding is refused by the Host check, and no answer carries
an absolute filesystem path.

DNS rebinding: a page the user visits (attacker.example) points its name at 127.0.0.1 after loading; the browser
then lets that page read this server's answers as same-origin, but still sends ``Host: attacker.example``. A
server that answers any Host has handed its API (run listings, training jobs) to every web page.
"""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from rnnkit import cli
from rnnkit.server import Limits, create_app
from rnnkit.server import app as app_module
from tests.test_server_api import local_client
from tests.test_server_browser import free_port
from tests.test_server_reliability import make_runs

FOREIGN = ["attacker.example", "attacker.example:8000", "127.0.0.1.nip.io", "localhost.attacker.example",
           "10.1.2.3", "[::2]:8000", "evil.localhost.example", "127.0.0.1@attacker.example"]
LOCAL = ["localhost", "localhost:8000", "LOCALHOST.", "127.0.0.1", "127.0.0.1:8000", "127.1.2.3:9",
         "[::1]", "[::1]:8000", "app.localhost:8000"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    return make_runs(tmp_path_factory.mktemp("security"))


def client_for(app, host: str) -> TestClient:
    return TestClient(app, base_url="http://127.0.0.1:8000", headers={"host": host})


@pytest.mark.parametrize("host", FOREIGN)
def test_a_foreign_host_is_refused_before_any_work(runs, host):
    app = create_app(runs, Limits(max_jobs=1))
    client = client_for(app, host)
    for method, url, body in (("GET", "/api/runs", None), ("GET", "/", None), ("GET", "/openapi.json", None),
                              ("POST", "/api/jobs", {"steps": 5}), ("GET", "/api/runs/lm/files/config.json", None)):
        response = client.request(method, url, json=body)
        assert response.status_code == 400, (host, url, response.status_code)
        assert "--allow-host" in response.json()["detail"]
    assert app.state.jobs == {}  # the job was never started


@pytest.mark.parametrize("host", LOCAL)
def test_loopback_names_and_addresses_are_served(runs, host):
    response = client_for(create_app(runs), host).get("/api/runs")
    assert response.status_code == 200, (host, response.text[:200])


def test_allow_host_adds_names_and_subdomains(runs):
    app = create_app(runs, allow_hosts=["box.lan", ".example.org"])
    for host in ("box.lan", "box.lan:8000", "example.org", "a.b.example.org:80", "localhost"):
        assert client_for(app, host).get("/api/models").status_code == 200, host
    for host in ("attacker.example", "box.lan.attacker.example", "badexample.org", "example.org.evil"):
        assert client_for(app, host).get("/api/models").status_code == 400, host
    anything = create_app(runs, allow_hosts=["*"])
    assert client_for(anything, "attacker.example").get("/api/models").status_code == 200


def test_the_bound_address_is_served(runs):
    lan = create_app(runs, host="192.168.1.5")
    assert client_for(lan, "192.168.1.5:8000").get("/api/models").status_code == 200
    assert client_for(lan, "192.168.1.6:8000").get("/api/models").status_code == 400
    # bound to every interface: any address literal (a rebinding page sends a name, never an address), no names
    everywhere = create_app(runs, host="0.0.0.0")
    assert client_for(everywhere, "192.168.1.6:8000").get("/api/models").status_code == 200
    assert client_for(everywhere, "attacker.example:8000").get("/api/models").status_code == 400


def test_serve_passes_allow_host_on(runs, monkeypatch):
    given = {}
    monkeypatch.setattr(app_module, "serve_main", lambda run_dirs, **kwargs: given.update(kwargs))
    assert cli.main(["serve", str(runs[0]), "--allow-host", "box.lan", "--allow-host", ".example.org"]) == 0
    assert given == {"host": "127.0.0.1", "port": 8000, "allow_hosts": ["box.lan", ".example.org"]}


def test_a_real_server_refuses_a_rebound_name(runs):
    """Over a socket, as a browser would send it after the rebinding: the name in Host, 127.0.0.1 connected."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(runs), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
        time.sleep(0.05)
    try:
        answers = {}
        for host in (f"attacker.example:{port}", f"127.0.0.1:{port}", None):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.putrequest("GET", "/api/runs", skip_host=True)
            if host is not None:
                connection.putheader("Host", host)
            connection.endheaders()
            answers[host] = connection.getresponse().status
            connection.close()
        assert answers == {f"attacker.example:{port}": 400, f"127.0.0.1:{port}": 200, None: 400}
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# ----------------------------------------------------------------------------------------------------------
# No absolute filesystem paths in any answer
# ----------------------------------------------------------------------------------------------------------


def absolute_paths(value) -> list[str]:
    """Every string in a JSON value that is an absolute path."""
    if isinstance(value, str):
        return [value] if value.startswith("/") and len(value) > 1 else []
    if isinstance(value, dict):
        return [p for item in value.values() for p in absolute_paths(item)]
    if isinstance(value, list):
        return [p for item in value for p in absolute_paths(item)]
    return []


def test_no_answer_carries_an_absolute_path(runs, tmp_path):
    root = runs[0].parent.parent
    assert str(root) in (runs[0] / "config.json").read_text()  # the runs were trained on files under root
    with (runs[0] / "metrics.jsonl").open("a", encoding="utf-8") as log:  # someone logged a path
        log.write(json.dumps({"event": "note", "file": str(root / "notes.txt")}) + "\n")
    broken = tmp_path / "broken"  # a run whose weights are damaged: its error names the file
    shutil.copytree(runs[0], broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 16)
    client = local_client(create_app([*runs, broken], Limits(max_jobs=1)))
    answers = {
        "models": client.get("/api/models"),
        "runs": client.get("/api/runs"),
        "limits": client.get("/api/limits"),
        "generate": client.post("/api/generate", json={"prompt": "the", "length": 5, "model": "lm"}),
        "predict": client.post("/api/predict", json={"lines": ["good"], "model": "classify"}),
        "translate": client.post("/api/translate", json={"text": "abc", "beam_size": 2, "n_best": 1}),
        "diagnostics": client.post("/api/diagnostics", json={"text": "the dog", "model": "lm"}),
        "explore": client.post("/api/explore", json={"sentence": "abc", "hidden_size": 4}),
        "job": client.post("/api/jobs", json={"steps": 2, "seq_len": 5, "hidden_size": 4}),
        "broken run": client.post("/api/generate", json={"prompt": "the", "length": 5, "model": "broken"}),
        "unknown run": client.get("/api/runs/nope/files/x.json"),
    }
    assert answers["broken run"].status_code == 422 and "model.safetensors" in answers["broken run"].text
    for name, response in answers.items():
        assert response.status_code < 500, (name, response.text[:300])
        assert str(root) not in response.text and str(tmp_path) not in response.text, (name, response.text[:300])
        assert absolute_paths(response.json()) == [], name
    listing = {run["name"]: run for run in answers["runs"].json()}
    assert listing["lm"]["config"]["data"] == "text.txt"  # the file's name, not where it lies
    assert {"event": "note", "file": "notes.txt"} in listing["lm"]["records"]


def test_a_cross_site_form_or_text_post_starts_nothing(runs):
    """A page elsewhere may make the browser POST a form or text/plain body to 127.0.0.1 without a CORS
    preflight (and with a Host the server accepts); only application/json bodies are read, which a cross-site
    request can send only after a preflight the server never grants."""
    app = create_app(runs, Limits(max_jobs=1))
    client = local_client(app)
    body = json.dumps({"steps": 5, "seq_len": 5, "hidden_size": 4})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        response = client.post("/api/jobs", content=body, headers={"content-type": content_type})
        assert response.status_code == 422, (content_type, response.status_code)
    assert app.state.jobs == {}
    preflight = client.options("/api/jobs", headers={"origin": "http://attacker.example",
                                                     "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
