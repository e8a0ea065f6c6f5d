"""The FastAPI app behind ``rnnkit serve``: JSON API + one page (``/``) with four views.

Endpoints (OpenAPI spec at ``/openapi.json``, interactive docs at ``/docs``):

``GET  /api/models``              loaded runs: name, task, model settings, last evaluation metrics
``POST /api/translate``           n-best translations with scores, tokens and attention (L, S)
``POST /api/generate``            language-model continuation (temperature, top-k)
``POST /api/generate/stream``     the same, streamed as server-sent events: one ``token`` event per token as it is
                                  drawn ({"id", "token", "text"}), then ``done`` ({"count"}) or ``error``
``POST /api/predict``             classify / tag lines (``/api/classify`` and ``/api/tag``: the same, one task)
``POST /api/diagnostics``         one input through a loaded run's model: ||dL/dh_t||, hidden norms and gates per
                                  layer-direction, attention (see :mod:`rnnkit.probe`)
``POST /api/explore``             architecture explorer: parameter counts and a forward pass with gates
``POST /api/jobs``                start a small training job (adding / vanishing gradients)
``GET  /api/jobs/{id}``           its status and its events: every step's loss, ||dL/dh_t|| of the latest
                                  ``max_job_history`` steps (finished jobs beyond ``max_kept_jobs`` are dropped)
``GET  /api/jobs/{id}/events``    server-sent events: {"step", "loss", "grad_norms"} per step, then "end"
``DELETE /api/jobs/{id}``         cancel it
``GET  /api/runs``                run directories with their metrics.jsonl records and report files
``GET  /api/runs/{name}/files/{path}``  a file from inside that run directory (never outside it)

Limits (:class:`Limits`) are checked before any work; over a limit the answer is 413 (input too large),
422 (a value out of range) or 429 (too many jobs), with a message naming the limit. Slow requests end
with 408 after ``request_timeout`` seconds, and their work stops with them: it runs under a
:class:`rnnkit.cancel.CancelToken` that is cancelled then, or when the client disconnects, and decoding,
diagnostics and training jobs check it between steps, so the worker thread is free again within a step.

A web page the user visits can point its own domain name at 127.0.0.1 (DNS rebinding) and then talk to this
server as if it were its own origin. The browser still sends that domain in the ``Host`` header, so every
request whose Host is not this server's is refused with 400 before any work (:class:`HostCheck`, as Jupyter,
Django and the Vite dev server do); and no answer carries an absolute filesystem path (runs are named).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from rnnkit.cancel import Cancelled, CancelToken
from rnnkit.checkpoint import read_config
from rnnkit.checks import check_int
from rnnkit.probe import TASKS as DIAGNOSABLE_TASKS
from rnnkit.probe import diagnose_input
from rnnkit.server.dynamics import run_job
from rnnkit.server.explore import explore
from rnnkit.streaming import sse_events
from rnnkit.tasks import task_module

STATIC = Path(__file__).parent / "static"
REPORT_SUFFIXES = (".html", ".md", ".png", ".svg", ".json", ".jsonl", ".txt", ".csv")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. Each name appears in the error message when it is exceeded."""

    max_input_chars: int = 1000  # text / prompt / sentence / all predict lines together
    max_lines: int = 64  # lines in one predict request
    max_generation: int = 500  # tokens an LM may generate
    max_beam: int = 16  # beam size (n_best <= beam size)
    max_hidden: int = 256  # explorer / job hidden size
    max_layers: int = 4
    max_job_steps: int = 2000
    max_seq_len: int = 200  # job sequence length
    max_jobs: int = 2  # concurrent training jobs
    max_kept_jobs: int = 20  # jobs kept for GET /api/jobs/{id}, running ones included; the oldest finished go
    max_job_history: int = 100  # steps per job whose ||dL/dh_t|| are kept (the latest); the loss is kept for all
    request_timeout: float = 60.0  # seconds
    max_body_bytes: int = 1_000_000  # one request body; refused with 413 before it is read further

    def __post_init__(self) -> None:
        check_int("max_jobs", self.max_jobs, 1)
        check_int("max_kept_jobs (at least max_jobs)", self.max_kept_jobs, self.max_jobs)
        check_int("max_job_history", self.max_job_history, 1)


# -- request bodies ------------------------------------------------------------------------------------------

MAX_SEED = 2**63 - 1  # torch.manual_seed takes 64-bit integers; a larger seed is a 422, not a torch error


class TranslateRequest(BaseModel):
    text: str = Field(min_length=1, max_length=100_000, description="one source sentence")
    model: str | None = Field(None, description="run name from /api/models; default: the first translate run")
    beam_size: int = Field(5, ge=1, le=1000)
    n_best: int = Field(3, ge=1, le=1000)
    alpha: float | None = Field(None, ge=0.0, le=5.0, description="length normalisation exponent")


class GenerateRequest(BaseModel):
    prompt: str = Field("", max_length=100_000)
    model: str | None = None
    length: int = Field(100, ge=1, le=100_000)
    temperature: float = Field(0.8, ge=0.0, le=10.0)
    top_k: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)


class PredictRequest(BaseModel):
    lines: list[str] = Field(min_length=1, max_length=10_000)
    model: str | None = None


class DiagnosticsRequest(BaseModel):
    text: str = Field(min_length=1, max_length=100_000,
                      description="the input: text (lm, classify), whitespace tokens (tag), "
                                  "a source sentence (translate)")
    model: str | None = Field(None, description="run name from /api/models; default: the first lm, classify, tag "
                                                "or translate run")
    target: str | None = Field(None, max_length=100_000,
                               description="what the loss is measured against: a label (classify), tags separated "
                                           "by spaces (tag), a translation (translate); default: the model's own "
                                           "prediction. Not for lm: its target is the text itself")


class ExploreRequest(BaseModel):
    cell: Literal["rnn", "lstm", "gru"] = "lstm"
    layer_norm: bool = False
    reset_after: bool = Field(True, description="GRU: torch/cuDNN form; false = Cho et al. 2014")
    num_layers: int = Field(1, ge=1, le=64)
    bidirectional: bool = False
    input_size: int = Field(8, ge=1, le=100_000)
    hidden_size: int = Field(16, ge=1, le=100_000)
    sentence: str = Field(min_length=1, max_length=100_000)
    seed: int = Field(0, ge=0, le=MAX_SEED)


class JobRequest(BaseModel):
    experiment: Literal["adding", "vanishing"] = "adding"
    cell: Literal["rnn", "lstm", "gru"] = "lstm"
    steps: int = Field(100, ge=1, le=1_000_000)
    seq_len: int = Field(30, ge=2, le=100_000)
    hidden_size: int = Field(32, ge=1, le=100_000)
    seed: int = Field(0, ge=0, le=MAX_SEED)


def _over(limit: str, value: Any, maximum: Any, status: int = 413) -> HTTPException:
    return HTTPException(status, f"limit {limit} exceeded: got {value}, the server allows at most {maximum}")


def _check(limit: str, value: int | float, maximum: int | float, status: int = 413) -> None:
    if value > maximum:
        raise _over(limit, value, maximum, status)


def until_deadline(items: Iterable[Any], seconds: float) -> Iterator[Any]:
    """``items`` until ``seconds`` have passed; then a ValueError naming ``request_timeout``, which
    :func:`rnnkit.streaming.sse_events` sends as an ``error`` event (the 200 status is already out by then)."""
    deadline = time.monotonic() + seconds
    iterator = iter(items)
    while True:
        if time.monotonic() > deadline:
            raise ValueError(f"limit request_timeout exceeded: the stream ran longer than {seconds} s")
        try:
            item = next(iterator)
        except StopIteration:
            return
        yield item


async def client_gone(receive: Any) -> None:
    """Return once the client has closed the connection. Called after the request body has been read, so the
    only message still to come is ``http.disconnect`` (uvicorn sends it when the socket closes)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def abandon(work: asyncio.Future, token: CancelToken, reason: str) -> None:
    """Cancel the work behind ``work`` (it stops at its next check point) and let it end unobserved."""
    token.cancel(reason)
    work.add_done_callback(lambda task: task.cancelled() or task.exception())  # its Cancelled is expected


# -- runs and jobs -------------------------------------------------------------------------------------------

class Run:
    """A run directory the server was given; its runner is loaded on first use."""

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, path
        self.config = read_config(path)
        self.task = str(self.config.get("task", "?"))
        self._runner = None
        self._lock = threading.Lock()

    def runner(self):
        with self._lock:
            if self._runner is None:
                self._runner = task_module(self.task).load(self.path)
            return self._runner

    def inside(self, path: Path) -> Path | None:
        """``path`` resolved (symlinks followed) if it is a file inside this run directory, else None."""
        try:
            target = path.resolve()
            return target if target.is_relative_to(self.path) and target.is_file() else None
        except (OSError, ValueError, RuntimeError):  # NUL bytes, names too long, symlink loops
            return None

    def metrics(self) -> list[dict[str, Any]]:
        path = self.inside(self.path / "metrics.jsonl")
        if path is None:
            return []
        records = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue  # a line being written by a live trainer, or damaged
            if isinstance(record, dict):
                records.append(record)
        return records

    def last_eval(self) -> dict[str, Any]:
        evals = [r for r in self.metrics() if r.get("event") == "eval"]
        return evals[-1].get("metrics", {}) if evals else {}

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*")
                      if p.suffix in REPORT_SUFFIXES and self.inside(p) is not None)

    def summary(self) -> dict[str, Any]:
        settings = self.config.get("settings", {})
        keys = ("cell", "hidden_size", "embedding_size", "num_layers", "attention", "level", "data")
        return {"name": self.name, "task": self.task,
                "config": without_paths({k: settings[k] for k in keys if k in settings}),
                "metrics": without_paths(self.last_eval())}


def without_paths(value: Any) -> Any:
    """A JSON value from a run's files with every absolute filesystem path cut to its last component (a
    config's training-data path, a path someone logged): answers name files, they do not locate them."""
    if isinstance(value, str):
        return Path(value).name if Path(value).is_absolute() else value
    if isinstance(value, dict):
        return {key: without_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_paths(item) for item in value]
    return value


def without_run_paths(message: str, runs: dict[str, Run]) -> str:
    """``message`` with each served run directory's absolute path replaced by the run's name."""
    for run in sorted(runs.values(), key=lambda r: len(str(r.path)), reverse=True):
        message = message.replace(str(run.path), run.name)
    return message


class Job:
    """A training job in its own thread: its events ({"step", "loss", "grad_norms"} per step) and its status.

    Every step's loss is kept; ||dL/dh_t|| only for the latest ``history`` steps (older events keep
    ``"grad_norms": None``), so that a finished job holds at most steps + history x seq_len numbers.
    """

    def __init__(self, job_id: str, request: JobRequest, history: int) -> None:
        self.id, self.request, self.history = job_id, request, history
        self.events: list[dict[str, Any]] = []
        self.status = "running"
        self.error: str | None = None
        self.token = CancelToken()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"rnnkit-job-{job_id}")

    def _run(self) -> None:
        r = self.request
        try:
            self.token.run(run_job, r.experiment, r.cell, r.steps, r.seq_len, r.hidden_size, self.record,
                           seed=r.seed)
            self.status = "finished"
        except Cancelled:
            self.status = "cancelled"
        except Exception as err:  # reported to the page, not swallowed
            self.status, self.error = "failed", f"{type(err).__name__}: {err}"

    def record(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if len(self.events) > self.history:
            self.events[-self.history - 1]["grad_norms"] = None

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "error": self.error, "request": self.request.model_dump(),
                "events": len(self.events)}


class _BodyTooLarge(HTTPException):
    """Raised while the app reads the body; FastAPI passes an HTTPException from a middleware on as it is."""


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 before the app parses it, from its
    Content-Length when it has one, else by counting the bytes as they arrive (chunked uploads)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            return await self._refuse(send, declared.decode("latin-1")[:30])
        received, started = 0, False

        async def counting_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge(413, self._message(f"more than {self.limit}"))
            return message

        async def watching_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(send, f"more than {self.limit}")

    def _message(self, size: str) -> str:
        return f"limit max_body_bytes exceeded: got {size} bytes, the server allows at most {self.limit}"

    async def _refuse(self, send: Any, size: str) -> None:
        body = json.dumps({"detail": self._message(size)}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def host_name(header: str) -> str:
    """The host part of a ``Host`` header: without the port, IPv6 brackets and a trailing dot, lower case."""
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8000
        return header[1:header.find("]")] if "]" in header else header
    name, colon, port = header.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        header = name
    return header.rstrip(".")


class HostCheck:
    """ASGI middleware: a request whose ``Host`` is not one of this server's names is answered 400 unread.

    Allowed: ``localhost`` and ``*.localhost`` (browsers resolve them to loopback themselves), loopback
    addresses (127.0.0.0/8, ::1), the address the server is bound to (when bound to every interface, 0.0.0.0
    or ::, any IP address: a rebinding page always sends a name, never an address), and the names in
    ``allow`` (``.example.org`` also allows its subdomains; ``*`` turns the check off, e.g. behind a proxy
    that checks Host itself).
    """

    def __init__(self, app: Any, bound: str = "127.0.0.1", allow: Iterable[str] = ()) -> None:
        self.app = app
        self.bound = host_name(bound)
        self.allow = tuple(host_name(name) if not name.startswith(".") else name.lower() for name in allow)

    def allows(self, host: str) -> bool:
        if "*" in self.allow or host == self.bound or host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return any(host == name or (name.startswith(".") and (host.endswith(name) or host == name[1:]))
                       for name in self.allow)
        bound_everywhere = self.bound in ("0.0.0.0", "::")
        return address.is_loopback or bound_everywhere or host in self.allow

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        if self.allows(host_name(header)):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        shown = header[:100] if header else "none"
        body = json.dumps({"detail": f"Host {shown!r} is not a name of this server; it answers to localhost, "
                                     "loopback addresses and the address it is bound to. Add names with "
                                     "`rnnkit serve --allow-host NAME`"}).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _name_runs(run_dirs: list[str | Path]) -> dict[str, Run]:
    runs: dict[str, Run] = {}
    for given in run_dirs:
        path = Path(given).resolve()
        if not (path / "config.json").is_file():
            raise ValueError(f"{given} is not a run directory: expected {path / 'config.json'}")
        name = path.name
        for k in itertools.count(2):  # two runs with the same basename: demo, demo-2
            if name not in runs:
                break
            name = f"{path.name}-{k}"
        runs[name] = Run(name, path)
    return runs


def create_app(run_dirs: list[str | Path] = (), limits: Limits = Limits(), host: str = "127.0.0.1",
               allow_hosts: Iterable[str] = ()) -> FastAPI:
    """The app serving ``run_dirs`` (each must hold a config.json) under ``limits``.

    ``host`` is the address the server is bound to and ``allow_hosts`` the further names it answers to
    (see :class:`HostCheck`); requests naming any other host get 400.
    """
    runs = _name_runs(list(run_dirs))
    jobs: dict[str, Job] = {}  # in start order, so the first finished ones are the oldest
    jobs_lock = threading.Lock()  # start_job runs in worker threads: check, evict and insert as one step
    job_ids = itertools.count(1)
    app = FastAPI(title="rnnkit", version="1", description=__doc__)
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    app.add_middleware(HostCheck, bound=host, allow=tuple(allow_hosts))  # the outermost: checked first
    app.state.limits, app.state.runs, app.state.jobs = limits, runs, jobs

    def pick(name: str | None, tasks: tuple[str, ...], verb: str) -> Run:
        if name is None:
            for run in runs.values():
                if run.task in tasks:
                    return run
            raise HTTPException(404, f"no loaded run can {verb}: it needs a run of task {' or '.join(tasks)}; "
                                     f"loaded: {[r.name for r in runs.values()] or 'none'}")
        if name not in runs:
            raise HTTPException(404, f"unknown model {name!r}; loaded: {sorted(runs) or 'none'}")
        run = runs[name]
        if run.task not in tasks:
            raise HTTPException(400, f"model {name!r} is a {run.task} run; {verb} needs task {' or '.join(tasks)}")
        return run

    async def timed(http: Request, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` in a worker thread under a cancel token, which is cancelled when the call runs
        past request_timeout (408) or the client disconnects: the work stops at its next check point
        (:func:`rnnkit.cancel.check`) and its thread is free again, instead of computing for nobody."""
        token = CancelToken()
        work = asyncio.ensure_future(run_in_threadpool(token.run, fn, *args, **kwargs))
        gone = asyncio.ensure_future(client_gone(http.receive))
        try:
            done, _ = await asyncio.wait((work, gone), timeout=limits.request_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this request's task was cancelled: the server is shutting down
            abandon(work, token, "the server is shutting down")
            raise
        finally:
            gone.cancel()
        if work in done:
            try:
                return work.result()
            except ValueError as err:  # a user mistake caught by the library, or a damaged run
                raise HTTPException(422, without_run_paths(str(err), runs)) from None
        if gone in done:
            abandon(work, token, "the client disconnected")
            raise HTTPException(499, "the client closed the connection before the answer was ready")
        abandon(work, token, f"limit request_timeout exceeded ({limits.request_timeout} s)")
        raise HTTPException(408, f"limit request_timeout exceeded: the request took longer than "
                                 f"{limits.request_timeout} s")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        # Browsers ask for it on every page, including served report files; no icon, and no 404 in the console.
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/limits")
    def get_limits() -> dict[str, Any]:
        return asdict(limits)

    @app.get("/api/models")
    def models() -> list[dict[str, Any]]:
        return [run.summary() for run in runs.values()]

    @app.post("/api/translate")
    async def translate(request: TranslateRequest, http: Request) -> dict[str, Any]:
        _check("max_input_chars", len(request.text), limits.max_input_chars)
        _check("max_beam", request.beam_size, limits.max_beam, 422)
        if request.n_best > request.beam_size:
            raise HTTPException(422, f"n_best must be <= beam_size {request.beam_size}, got {request.n_best}")
        run = pick(request.model, ("translate",), "translate")
        runner = await timed(http, run.runner)
        results = await timed(http, runner.translate, [request.text], beam_size=request.beam_size,
                              n_best=request.n_best, alpha=request.alpha)
        return {"model": run.name, "hypotheses": results[0]}

    @app.post("/api/generate")
    async def generate(request: GenerateRequest, http: Request) -> dict[str, Any]:
        _check("max_input_chars", len(request.prompt), limits.max_input_chars)
        _check("max_generation", request.length, limits.max_generation, 422)
        run = pick(request.model, ("lm",), "generate")
        runner = await timed(http, run.runner)
        text = await timed(http, runner.generate, request.prompt, length=request.length,
                           temperature=request.temperature, top_k=request.top_k, seed=request.seed)
        return {"model": run.name, "text": text}

    @app.post("/api/generate/stream", response_class=StreamingResponse, responses={
        200: {"content": {"text/event-stream": {}},
              "description": "server-sent events: `token` {id, token, text} per token, then `done` {count}; "
                             "`error` {error} instead if the generation fails or exceeds request_timeout"}})
    async def generate_stream(request: GenerateRequest, http: Request) -> StreamingResponse:
        # Every limit is checked before the stream starts, so that going over one is still a 4xx.
        _check("max_input_chars", len(request.prompt), limits.max_input_chars)
        _check("max_generation", request.length, limits.max_generation, 422)
        run = pick(request.model, ("lm",), "generate")
        runner = await timed(http, run.runner)
        tokens = runner.generate_stream(request.prompt, length=request.length, temperature=request.temperature,
                                        top_k=request.top_k, seed=request.seed)
        # A sync iterator: Starlette advances it in a worker thread, one token per frame.
        return StreamingResponse(sse_events(until_deadline(tokens, limits.request_timeout)),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def predict_lines(request: PredictRequest, http: Request, tasks: tuple[str, ...], verb: str
                            ) -> dict[str, Any]:
        _check("max_lines", len(request.lines), limits.max_lines)
        _check("max_input_chars", sum(len(line) for line in request.lines), limits.max_input_chars)
        run = pick(request.model, tasks, verb)
        runner = await timed(http, run.runner)
        return {"model": run.name, "task": run.task, "predictions": await timed(http, runner.predict, request.lines)}

    @app.post("/api/predict")
    async def predict(request: PredictRequest, http: Request) -> dict[str, Any]:
        return await predict_lines(request, http, ("classify", "tag"), "predict")

    @app.post("/api/classify")
    async def classify(request: PredictRequest, http: Request) -> dict[str, Any]:
        """One label per line, from a classify run."""
        return await predict_lines(request, http, ("classify",), "classify")

    @app.post("/api/tag")
    async def tag(request: PredictRequest, http: Request) -> dict[str, Any]:
        """One tag per whitespace token of each line, from a tag run."""
        return await predict_lines(request, http, ("tag",), "tag")

    @app.post("/api/diagnostics")
    async def diagnostics(request: DiagnosticsRequest, http: Request) -> dict[str, Any]:
        _check("max_input_chars", len(request.text) + len(request.target or ""), limits.max_input_chars)
        run = pick(request.model, DIAGNOSABLE_TASKS, "diagnose")
        runner = await timed(http, run.runner)
        result = await timed(http, diagnose_input, run.task, runner, request.text, request.target)
        return {"model": run.name, **result}

    @app.post("/api/explore")
    async def explorer(request: ExploreRequest, http: Request) -> dict[str, Any]:
        _check("max_input_chars", len(request.sentence), limits.max_input_chars)
        _check("max_hidden", max(request.hidden_size, request.input_size), limits.max_hidden, 422)
        _check("max_layers", request.num_layers, limits.max_layers, 422)
        r = request
        return await timed(http, explore, r.cell, r.input_size, r.hidden_size, r.num_layers, r.bidirectional,
                           r.layer_norm, r.reset_after, r.sentence, r.seed)

    @app.post("/api/jobs", status_code=201)
    def start_job(request: JobRequest) -> dict[str, Any]:
        _check("max_job_steps", request.steps, limits.max_job_steps, 422)
        _check("max_seq_len", request.seq_len, limits.max_seq_len, 422)
        _check("max_hidden", request.hidden_size, limits.max_hidden, 422)
        with jobs_lock:
            running = sum(job.status == "running" for job in jobs.values())
            if running >= limits.max_jobs:
                raise HTTPException(429, f"limit max_jobs exceeded: {running} jobs are running and the server "
                                         f"allows at most {limits.max_jobs}; cancel one or wait")
            finished = [job_id for job_id, job in jobs.items() if job.status != "running"]
            for job_id in finished[:max(0, len(jobs) + 1 - limits.max_kept_jobs)]:  # the oldest finished
                del jobs[job_id]
            job = Job(str(next(job_ids)), request, limits.max_job_history)
            jobs[job.id] = job
            job.thread.start()
        return job.describe()

    def get_job(job_id: str) -> Job:
        job = jobs.get(job_id)  # one look-up: another thread may evict it in between
        if job is None:
            raise HTTPException(404, f"unknown job {job_id!r} (finished jobs beyond the newest "
                                     f"{limits.max_kept_jobs} are not kept); known: {sorted(jobs) or 'none'}")
        return job

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str) -> dict[str, Any]:
        job = get_job(job_id)
        return {**job.describe(), "history": job.events}

    @app.get("/api/jobs/{job_id}/events")
    async def job_events(job_id: str) -> StreamingResponse:
        job = get_job(job_id)

        async def stream():
            sent = 0
            while True:
                finished = job.status != "running"  # read before the events: none can be missed
                events = job.events[sent:]
                for event in events:
                    yield f"data: {json.dumps(event)}\n\n"
                sent += len(events)
                if finished and sent == len(job.events):
                    yield f"event: end\ndata: {json.dumps(job.describe())}\n\n"
                    return
                await asyncio.sleep(0.05)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.delete("/api/jobs/{job_id}")
    def cancel_job(job_id: str) -> dict[str, Any]:
        job = get_job(job_id)
        job.token.cancel("cancelled by DELETE /api/jobs/{id}")
        job.thread.join(timeout=limits.request_timeout)
        return job.describe()

    def get_run(name: str) -> Run:
        if name not in runs:
            raise HTTPException(404, f"unknown run {name!r}; loaded: {sorted(runs) or 'none'}")
        return runs[name]

    @app.get("/api/runs")
    def list_runs() -> list[dict[str, Any]]:
        return [{**run.summary(), "records": without_paths(run.metrics()), "files": run.files()}
                for run in runs.values()]

    @app.get("/api/runs/{name}/files/{path:path}")
    def run_file(name: str, path: str) -> FileResponse:
        run = get_run(name)
        try:
            target = (run.path / path).resolve()
        except (OSError, ValueError, RuntimeError):  # NUL bytes, names too long, symlink loops
            raise HTTPException(404, f"run {run.name!r} has no report file {path[:200]!r}") from None
        # Only files inside the run directory: resolve() follows '..' and symlinks before the check.
        if not target.is_relative_to(run.path):
            raise HTTPException(403, f"{path[:200]!r} is outside run directory {run.name!r}")
        if run.inside(target) is None or target.suffix not in REPORT_SUFFIXES:
            raise HTTPException(404, f"run {run.name!r} has no report file {path[:200]!r}")
        # Report files come from run directories, which may come from elsewhere: active content (HTML, SVG)
        # is sandboxed, so a planted script cannot run in this page's origin and call the API.
        headers = {"X-Content-Type-Options": "nosniff"}
        if target.suffix in (".html", ".svg"):
            headers["Content-Security-Policy"] = "sandbox"
        return FileResponse(target, headers=headers)

    return app


def serve_main(run_dirs: list[str], host: str = "127.0.0.1", port: int = 8000,
               allow_hosts: Iterable[str] = ()) -> None:
    """``rnnkit serve RUN_DIR... [--host --port --allow-host NAME]``: run the app under uvicorn until
    interrupted."""
    import uvicorn

    allow_hosts = tuple(allow_hosts)
    app = create_app(run_dirs, host=host, allow_hosts=allow_hosts)
    also = f"; also answers to {', '.join(allow_hosts)}" if allow_hosts else ""
    print(f"rnnkit serve: http://{host}:{port}/  ({len(app.state.runs)} runs{also})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
