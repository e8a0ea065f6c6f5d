"""Load test of ``rnnkit serve`` on loopback: N requests at concurrency C against a real uvicorn server.

The server runs in its own process (``rnnkit serve RUN_DIR... --host 127.0.0.1 --port P`` on a free port) and
serves tiny untrained lm, classify, tag and translate runs made here (or the run directories given). The
requests are a fixed mix of every kind the page sends: model listing, generation, classification, tagging,
translation with beam search, the architecture explorer, run listing and run files. Nothing is sent anywhere
but 127.0.0.1; the run is bounded in requests and in time (``--max-seconds``), and stops by itself.

Reported: latency percentiles (p50, p90, p99, max) overall and per endpoint, throughput, errors (any status
other than 2xx, and any transport error), and the server's resident memory (VmRSS) after a warm-up and at
the end, so that a leak shows as growth.

Usage: ``python -m benchmarks.server_load [--requests 1000] [--concurrency 32] [--json PATH] [RUN_DIR...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

HOST = "127.0.0.1"  # loopback only


def make_runs(root: Path) -> list[Path]:
    """Untrained lm / classify / tag / translate runs (prepare + initial weights): a second or two."""
    from rnnkit.checkpoint import save_checkpoint
    from rnnkit.tasks import resolve_settings, task_module

    data = {
        "lm": ("text.txt", "the quick brown fox jumps over the lazy dog\n" * 20),
        "classify": ("labels.tsv", "pos\tgood fine\nneg\tbad poor\n" * 10),
        "tag": ("tags.tsv", "the\tDET\ndog\tNOUN\nruns\tVERB\n\na\tDET\ncat\tNOUN\n\n" * 5),
        "translate": ("pairs.tsv", "ab\tba\nabc\tcba\nbca\tacb\n" * 5),
    }
    runs = []
    for task, (name, content) in data.items():
        source = root / name
        source.write_text(content, encoding="utf-8")
        settings = resolve_settings(task, {"data": str(source), "valid": str(source), "hidden_size": 32})
        run_dir = root / "runs" / task
        model_task, run_config = task_module(task).prepare(settings, run_dir)
        save_checkpoint(run_dir, model_task.model, run_config, name="best")
        (run_dir / "report.md").write_text(f"# {task}\n", encoding="utf-8")
        runs.append(run_dir)
    return runs


# The mix: (weight, method, path, body). Bodies stay within the default limits.
MIX = [
    (3, "GET", "/api/models", None),
    (3, "POST", "/api/generate", {"prompt": "the", "length": 40, "temperature": 0.8, "seed": 1}),
    (3, "POST", "/api/predict", {"lines": ["good fine", "bad poor", "fine good good"], "model": "classify"}),
    (2, "POST", "/api/predict", {"lines": ["the dog runs", "a cat"], "model": "tag"}),
    (2, "POST", "/api/translate", {"text": "abcab", "beam_size": 4, "n_best": 2}),
    (2, "POST", "/api/explore", {"cell": "lstm", "hidden_size": 16, "sentence": "the quick brown fox"}),
    (1, "GET", "/api/runs", None),
    (1, "GET", "/api/runs/lm/files/report.md", None),
    (1, "GET", "/api/runs/lm/files/..%2F..%2Fetc%2Fpasswd", None),  # refused (403): counted as expected
]
EXPECTED_STATUS = {"/api/runs/lm/files/..%2F..%2Fetc%2Fpasswd": 403}


def schedule(n: int) -> list[tuple[str, str, dict | None]]:
    cycle = [(method, path, body) for weight, method, path, body in MIX for _ in range(weight)]
    return [cycle[i % len(cycle)] for i in range(n)]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc), or NaN elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@contextlib.contextmanager
def server(run_dirs: list[Path], startup_seconds: float = 120.0):
    """``rnnkit serve`` on a free loopback port; yields (base_url, pid); always stopped at the end."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "rnnkit.cli", "serve", *map(str, run_dirs), "--host", HOST,
                                "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{base}/api/limits", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer within {startup_seconds} s")
            time.sleep(0.2)
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Result:
    requests: int
    concurrency: int
    seconds: float
    errors: int
    error_examples: list[str]
    latency_ms: dict[str, float]
    per_endpoint_ms: dict[str, dict[str, float]]
    throughput_rps: float
    rss_mib_after_warmup: float
    rss_mib_at_end: float
    rss_growth_mib: float = field(init=False)

    def __post_init__(self) -> None:
        self.rss_growth_mib = self.rss_mib_at_end - self.rss_mib_after_warmup


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:  # nearest-rank percentile
        return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]

    return {"p50": at(50), "p90": at(90), "p99": at(99), "max": ordered[-1], "mean": statistics.fmean(ordered)}


async def fire(base: str, plan: list[tuple[str, str, dict | None]], concurrency: int, max_seconds: float,
               timeout: float) -> tuple[list[tuple[str, float]], list[str]]:
    """Send ``plan`` with ``concurrency`` workers; returns (endpoint, latency ms) per request and the errors."""
    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    timings: list[tuple[str, float]] = []
    errors: list[str] = []
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits) as client:
        async def worker() -> None:
            while not queue.empty() and time.monotonic() < deadline:
                method, path, body = queue.get_nowait()
                started = time.perf_counter()
                try:
                    response = await client.request(method, path, json=body)
                    status = response.status_code
                    await response.aread()
                except httpx.HTTPError as err:
                    errors.append(f"{method} {path}: {type(err).__name__}: {err}")
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                expected = EXPECTED_STATUS.get(path)
                if (status != expected) if expected is not None else not 200 <= status < 300:
                    errors.append(f"{method} {path}: HTTP {status} {response.text[:200]}")
                timings.append((f"{method} {path}", elapsed))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    unsent = queue.qsize()
    if unsent:
        errors.append(f"{unsent} requests not sent within --max-seconds {max_seconds}")
    return timings, errors


def run_load(requests: int = 1000, concurrency: int = 32, run_dirs: list[Path] | None = None,
             warmup: int = 50, max_seconds: float = 600.0, timeout: float = 60.0) -> Result:
    """Start a server, warm it up (loads every runner), then send ``requests`` at ``concurrency``."""
    with contextlib.ExitStack() as stack:
        if not run_dirs:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rnnkit-load-")))
            run_dirs = make_runs(root)
        base, pid = stack.enter_context(server(run_dirs))
        _, warm_errors = asyncio.run(fire(base, schedule(warmup), min(concurrency, 8), max_seconds, timeout))
        if warm_errors:
            raise RuntimeError(f"warm-up failed: {warm_errors[:3]}")
        rss_before = rss_mib(pid)
        started = time.perf_counter()
        timings, errors = asyncio.run(fire(base, schedule(requests), concurrency, max_seconds, timeout))
        seconds = time.perf_counter() - started
        rss_after = rss_mib(pid)
    by_endpoint: dict[str, list[float]] = {}
    for endpoint, ms in timings:
        by_endpoint.setdefault(endpoint, []).append(ms)
    return Result(requests=len(timings), concurrency=concurrency, seconds=seconds, errors=len(errors),
                  error_examples=errors[:5], latency_ms=percentiles([ms for _, ms in timings]),
                  per_endpoint_ms={k: percentiles(v) for k, v in sorted(by_endpoint.items())},
                  throughput_rps=len(timings) / seconds, rss_mib_after_warmup=rss_before, rss_mib_at_end=rss_after)


def markdown(result: Result) -> str:
    lat = result.latency_ms
    lines = [
        f"{result.requests} requests at concurrency {result.concurrency} in {result.seconds:.1f} s "
        f"({result.throughput_rps:.0f} requests/s), errors: {result.errors}",
        f"latency: p50 {lat['p50']:.0f} ms, p90 {lat['p90']:.0f} ms, p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms",
        f"server RSS: {result.rss_mib_after_warmup:.0f} MiB after warm-up, {result.rss_mib_at_end:.0f} MiB at the end "
        f"({result.rss_growth_mib:+.1f} MiB)",
        "",
        "| endpoint | requests | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    counts: dict[str, int] = {}
    for method, path, _ in schedule(result.requests):
        counts[f"{method} {path}"] = counts.get(f"{method} {path}", 0) + 1
    for endpoint, stats in result.per_endpoint_ms.items():
        lines.append(f"| `{endpoint}` | {counts.get(endpoint, 0)} | {stats['p50']:.0f} | {stats['p99']:.0f} | "
                     f"{stats['max']:.0f} |")
    if result.error_examples:
        lines += ["", "errors:", *(f"- {e}" for e in result.error_examples)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="*", type=Path, help="runs to serve (default: tiny untrained ones)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop sending after this long")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the server's torch: one thread per request worker
    result = run_load(args.requests, args.concurrency, args.run_dirs or None, max_seconds=args.max_seconds)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return 0 if result.errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
