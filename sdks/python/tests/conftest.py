"""A real `jobwire serve` per test (memory or SQLite), started from the monorepo's build."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[3]
# JOBWIRE_SERVER_BIN: another build's jobwire.js (to try a branch's server before it lands).
SERVER_BIN = Path(os.environ.get("JOBWIRE_SERVER_BIN", REPO / "packages" / "server" / "bin" / "jobwire.js"))
API_KEY = "python-sdk-test-key-0123456789"
TOKEN_SECRET = "python-sdk-token-secret-0123456789abcdef"
WEBHOOK_SECRET = "python-sdk-webhook-secret-0123456789abcdef"
HERE = Path(__file__).resolve().parent


@dataclass
class Server:
    url: str
    api_key: str
    process: subprocess.Popen[str]
    output: list[str]


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not on PATH: the tests run a real `jobwire serve`")
    return found


def start_server(store: str, data_dir: Path, *extra: str) -> Server:
    if not (SERVER_BIN.parent.parent / "dist" / "server.js").exists():
        pytest.fail("packages/server is not built: run `npm run build` first")
    args = [
        node(), str(SERVER_BIN), "serve",
        "--port", "0", "--host", "127.0.0.1",
        "--api-key", API_KEY,
        "--token-secret", TOKEN_SECRET,
        "--log-level", "warn",
        "--max-events-per-job", "100000",
        "--create-limit", "100000",
        "--lease-sweep-interval", "100",
        "--retry-backoff", "0",
        *extra,
    ]
    if store == "memory":
        args.append("--memory")
    else:
        args += ["--data-dir", str(data_dir)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=data_dir)
    output: list[str] = []
    url: str | None = None
    assert process.stdout is not None
    # The banner names the address it bound (port 0 picks a free one).
    for line in process.stdout:
        output.append(line)
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            url = match.group(1)
            break
    if url is None:
        process.wait()
        pytest.fail(f"jobwire serve did not start:\n{''.join(output)}")

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)

    threading.Thread(target=drain, daemon=True).start()
    return Server(url, API_KEY, process, output)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(params=["memory", "sqlite"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    started = start_server(request.param, tmp_path)
    yield started
    stop_server(started)


@pytest.fixture
def memory_server(tmp_path: Path) -> Iterator[Server]:
    started = start_server("memory", tmp_path)
    yield started
    stop_server(started)


def wait_for_line(process: subprocess.Popen[str], prefix: str, timeout: float = 60.0) -> None:
    """Waits until the process prints a line starting with ``prefix`` (a hang guard, not a timing assertion)."""
    found = threading.Event()
    seen: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line)
            if line.startswith(prefix):
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout):
        pytest.fail(f"the worker process never printed {prefix!r}; it printed:\n{''.join(seen)}")


def spawn_worker(server: Server, scenario: str, *args: str) -> subprocess.Popen[str]:
    """A worker in its own process (tests/worker_process.py), so it can be killed like a real one."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(HERE / "worker_process.py"), server.url, server.api_key, scenario, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
