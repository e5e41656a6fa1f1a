"""The contenders: raw aria2c, curl (one connection, or N ranged at once), and the app itself.

Each `fetch` returns a `Run`: the client's own wall time (start to verified file,
or to process exit) plus timestamps the report breaks the time down with. All
times are epoch seconds (time.time()), the clock nginx logs with.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from orchestrator.config import Settings

from .procs import Children, children_of, free_port, run, spawn

ROOT = Path(__file__).resolve().parents[1]
ARIA2_CONF = ROOT / "aria2.conf"

# aria2.conf settings that shape a single transfer: the raw aria2c baseline gets the same values
TRANSFER_KEYS = (
    "split",
    "max-connection-per-server",
    "min-split-size",
    "piece-length",
    "stream-piece-selector",
    "disk-cache",
    "file-allocation",
)
SHORT = {"max-connection-per-server": "-x", "split": "-s", "min-split-size": "-k"}


@dataclass
class Run:
    client: str
    size: int
    wall: float  # the client's own view: start to done
    started: float  # epoch
    ended: float  # epoch
    marks: dict[str, float] = field(default_factory=dict)  # epoch times of steps along the way
    ok: bool = True
    note: str = ""
    cpu: float | None = None  # CPU seconds of the client, where known


def read_conf(path: Path = ARIA2_CONF) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def aria2_flags(conf: dict[str, str], overrides: dict[str, str] | None = None) -> list[str]:
    """aria2.conf's transfer settings as aria2c flags: `-x16 -s16 -k1M --disk-cache=64M ...`."""
    values = {key: conf[key] for key in TRANSFER_KEYS if key in conf}
    values.update(overrides or {})
    flags = []
    for key in ("max-connection-per-server", "split", "min-split-size"):
        if key in values:
            flags.append(f"{SHORT[key]}{values.pop(key)}")
    flags += [f"--{key}={value}" for key, value in values.items()]
    return flags


def aria2c_command(url: str, folder: Path, name: str, flags: list[str]) -> list[str]:
    # --no-conf: ignore ~/.aria2/aria2.conf; -q: no console readout; the rest as the daemon has it
    return ["aria2c", "--no-conf", "-q", *flags, "-d", str(folder), "-o", name, url]


def fetch_aria2c(url: str, folder: Path, name: str, flags: list[str]) -> Run:
    started = time.time()
    t0 = time.perf_counter()
    done = run(aria2c_command(url, folder, name, flags), capture_output=True)
    wall = time.perf_counter() - t0
    size = _size(folder / name)
    note = "" if done.returncode == 0 else done.stderr.decode(errors="replace")[-300:]
    return Run("aria2c", size, wall, started, started + wall, ok=done.returncode == 0, note=note)


def fetch_curl(url: str, output: str, client: str = "curl") -> Run:
    """One connection. `output` may be /dev/null (the loopback ceiling, no disk)."""
    started = time.time()
    t0 = time.perf_counter()
    done = run(["curl", "-sS", "--fail", "-o", output, "-w", "%{size_download}", url], capture_output=True)
    wall = time.perf_counter() - t0
    size = int(done.stdout or 0) if done.returncode == 0 else 0
    note = done.stderr.decode(errors="replace")[-300:]
    return Run(client, size, wall, started, started + wall, ok=done.returncode == 0, note=note)


def fetch_curl_ranges(url: str, size: int, connections: int, client: str = "curl-ranges") -> Run:
    """N ranged curls at once into /dev/null: an ideal N-connection client with no disk."""
    step = -(-size // connections)
    commands = [
        [
            "curl",
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "-r",
            f"{a}-{min(size, a + step) - 1}",
            url,
        ]
        for a in range(0, size, step)
    ]
    started = time.time()
    t0 = time.perf_counter()
    processes = [spawn(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for command in commands]
    got, ok = 0, True
    for process in processes:
        out, _ = process.communicate()
        ok = ok and process.returncode == 0
        got += int(out or 0)
    wall = time.perf_counter() - t0
    return Run(client, got, wall, started, started + wall, ok=ok and got == size)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


class Listener:
    """One WebSocket client that timestamps every event (epoch) of every job."""

    def __init__(self, url: str, token: str | None = None) -> None:
        import websocket  # websocket-client, from the project's test extra

        header = [f"Authorization: Bearer {token}"] if token else []
        self.socket = websocket.create_connection(url, timeout=120, header=header)
        self.events: list[tuple[float, dict]] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True, name="listener")
        self._thread.start()

    def _read(self) -> None:
        import websocket

        while True:
            try:
                text = self.socket.recv()
            except (websocket.WebSocketException, OSError):
                return
            if not text:
                return  # closed
            now = time.time()
            message = json.loads(text)
            with self._changed:
                self.events.append((now, message))
                self._changed.notify_all()

    def job_events(self, job_id: str) -> list[tuple[float, dict]]:
        with self._changed:
            return [(t, m["data"]) for t, m in self.events if m.get("job") == job_id]

    def wait_final(self, job_id: str, timeout: float) -> tuple[float, dict]:
        """(when, data) of the job's success or error event."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for when, message in self.events:
                    if message.get("job") == job_id and message["data"].get("status") in ("success", "error"):
                        return when, message["data"]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {job_id} did not finish in {timeout:.0f} s")
                self._changed.wait(left)

    def close(self) -> None:
        self.socket.close()


class App:
    """`python -m orchestrator serve` in a temp folder of its own, as a user runs it."""

    def __init__(
        self,
        children: Children,
        workdir: Path,
        engine: str = "auto",
        poll_interval: float | None = None,
        conf: Path | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.children = children
        self.extra = list(extra or [])
        self.workdir = workdir
        self.engine = engine
        self.poll_interval = poll_interval
        self.conf = conf
        self.port = free_port()
        self.rpc_port = free_port()
        self.models = workdir / "models"
        self.state = workdir / "state"
        self.process: subprocess.Popen | None = None
        self.listener: Listener | None = None
        # on loopback the app needs no token today; sending one keeps the benchmark working if it ever does
        self.token = secrets.token_urlsafe(24)
        self.headers = {"Authorization": f"Bearer {self.token}"}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", "orchestrator", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--models-dir", str(self.models), "--state-dir", str(self.state),
            "--engine", self.engine,
            "--aria2-rpc-url", f"http://127.0.0.1:{self.rpc_port}/jsonrpc",
            "--log-level", "warning",
        ]  # fmt: skip
        if self.poll_interval is not None:
            command += ["--poll-interval", str(self.poll_interval)]
        return command + self.extra

    def start(self, listen: bool = True) -> App:
        env = {k: v for k, v in os.environ.items() if k not in ("ARIA2_SECRET", "ORCHESTRATOR_ARIA2_CONF")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        if self.conf:
            env["ORCHESTRATOR_ARIA2_CONF"] = str(self.conf)
        for name in list(env):
            if name.startswith("ORCHESTRATOR_") and name != "ORCHESTRATOR_ARIA2_CONF":
                env.pop(name)  # the benchmark decides every setting
        env["ORCHESTRATOR_TOKEN"] = self.token
        env["ORCHESTRATOR_BLOCK_PRIVATE"] = "off"  # the origin is on loopback on purpose
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "serve.log", "ab") as log:
            self.process = self.children.start(
                self.command(), cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited early:\n{self.log()[-2000:]}")
            try:
                health = requests.get(self.base + "/api/health", headers=self.headers, timeout=1).json()
                break
            except (requests.RequestException, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not start:\n{self.log()[-2000:]}") from None
                time.sleep(0.1)
        name = health["engine"]["name"]
        wanted = "requests" if self.engine == "requests" else "aria2"
        if name != wanted:
            raise RuntimeError(f"the app runs the {name} engine, not {wanted}: {health['engine']}")
        if listen:
            self.listener = Listener(self.ws_url, self.token)
        return self

    def log(self) -> str:
        path = self.workdir / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.listener:
            self.listener.close()
            self.listener = None
        if self.process is not None:
            self.children.stop(self.process)
            self.process = None

    def aria2_pid(self) -> int | None:
        return next(iter(children_of(self.pid)), None)

    def secret(self) -> str:
        return (self.state / "aria2.secret").read_text().strip()

    def rpc(self, method: str, *params: object) -> object:
        body = {
            "jsonrpc": "2.0",
            "id": "bench",
            "method": method,
            "params": [f"token:{self.secret()}", *params],
        }
        answer = requests.post(f"http://127.0.0.1:{self.rpc_port}/jsonrpc", json=body, timeout=10)
        answer.raise_for_status()
        return answer.json()["result"]

    def submit(self, url: str, model_type: str = "checkpoint", name: str | None = None) -> dict:
        body = {"url": url, "type": model_type, **({"name": name} if name else {})}
        answer = requests.post(self.base + "/api/downloads", json=body, headers=self.headers, timeout=30)
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"submit failed: {answer.status_code} {answer.text[:300]}")
        return answer.json()["job"]

    def job(self, job_id: str) -> dict:
        return requests.get(f"{self.base}/api/downloads/{job_id}", headers=self.headers, timeout=30).json()[
            "job"
        ]

    def fetch(self, url: str, client: str, timeout: float = 900) -> Run:
        """Submit over the API; done when the verified file is in its folder.

        The app notices a finished transfer at its next poll. Runs that start in step
        with the poll loop would always wait the same part of an interval, so each run
        starts after a random part of one: the average over runs is then the true one.
        """
        assert self.listener is not None
        time.sleep(random.uniform(0, self.poll_interval or Settings().poll_interval))
        started = time.time()
        t0 = time.perf_counter()
        job = self.submit(url)
        when, final = self.listener.wait_final(job["id"], timeout)
        wall = when - started
        job = self.job(job["id"])
        path = self.models / (job.get("path") or "missing")
        ok = final.get("status") == "success" and job["state"] == "completed" and path.is_file()
        size = path.stat().st_size if path.is_file() else 0
        marks = {"submitted": started, "answered": started + (time.perf_counter() - t0)}
        for when_, data in self.listener.job_events(job["id"]):
            if data.get("status") == "progress" and data.get("state") == "downloading":
                marks.setdefault("first_progress", when_)
            if data.get("state") == "verifying":
                marks.setdefault("verifying", when_)
            if data.get("status") == "success":
                marks["success"] = when_
        if path.is_file():
            path.unlink()  # the next run downloads it again
        note = "" if ok else f"{final.get('code')}: {final.get('message')}"
        return Run(client, size, wall, started, when, marks=marks, ok=ok, note=note)


def fetch_probe(url: str, dest: Path, chunk: int, variant: str = "engine") -> Run:
    """The fallback engine alone, in its own process (bench/probe.py)."""
    command = [
        sys.executable,
        "-m",
        "bench.probe",
        url,
        str(dest),
        "--chunk",
        str(chunk),
        "--variant",
        variant,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    started = time.time()
    done = run(command, capture_output=True, cwd=ROOT, env=env)
    try:
        answer = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        note = done.stderr.decode(errors="replace")[-300:]
        return Run("probe", 0, 0.0, started, time.time(), ok=False, note=note)
    wall = answer["wall"]
    return Run(
        "probe",
        answer["size"],
        wall,
        started,
        started + wall,
        ok=answer["ok"],
        note=answer.get("error") or "",
        cpu=answer["cpu"],
    )
