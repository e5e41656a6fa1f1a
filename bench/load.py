"""The app's own cost: many downloads at once, many browsers watching.

20 downloads from a slow origin (so they all move bytes for ~25 s) and 50
WebSocket clients, each a thread counting what it receives. Measured:

- CPU of the app process (utime+stime from /proc over wall time, % of one core)
  while all downloads move bytes, and over the whole run including verification;
- its peak memory (VmHWM);
- messages per second delivered to the clients;
- latency: a probe thread polls aria2's tellStatus for one download every 50 ms
  and notes when completedLength changes; the latency of a change is the time
  until a client receives a progress event with `downloaded` >= that value. The
  "relay" delay is the part after the app read aria2: the event's arrival minus
  the moment aria2 held exactly the reported byte count (bracketed by probe samples).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import Settings

from .clients import App
from .measure import Summary
from .procs import cpu_seconds, memory_kib

PROBE_EVERY = 0.05
SAMPLE_EVERY = 0.25


@dataclass
class LoadResult:
    downloads: int
    clients: int
    poll_interval: float
    window: float = 0.0  # seconds with every download moving bytes
    app_cpu: float = 0.0  # % of one core in the window
    app_cpu_idle: float = 0.0  # % of one core, clients connected, nothing to do
    app_cpu_total: float = 0.0  # % of one core from the first submit to the last file hashed
    aria2_cpu: float = 0.0
    peak_rss_mib: float = 0.0
    rss_mib: float = 0.0
    messages_per_s: float = 0.0
    expected_per_s: float = 0.0
    bytes_per_s: float = 0.0
    latency: Summary = field(default_factory=lambda: Summary(()))
    relay: Summary = field(default_factory=lambda: Summary(()))
    completed: int = 0
    dropped_clients: int = 0
    total_s: float = 0.0
    aggregate_mb_s: float = 0.0
    file_size: int = 0


class Watcher:
    """One WebSocket client in a thread: counts messages, keeps the probe job's progress."""

    def __init__(self, url: str, token: str) -> None:
        import websocket

        self.socket = websocket.create_connection(url, timeout=300, header=[f"Authorization: Bearer {token}"])
        self.received: list[tuple[float, int]] = []  # (when, frame length)
        self.progress: list[tuple[float, str, int, str, str]] = []  # (when, job, downloaded, status, state)
        self.failed = False
        self.thread = threading.Thread(target=self._read, daemon=True, name="watcher")
        self.thread.start()

    def _read(self) -> None:
        import websocket

        while True:
            try:
                text = self.socket.recv()
            except (websocket.WebSocketException, OSError):
                self.failed = True
                return
            if not text:
                return
            now = time.time()
            self.received.append((now, len(text)))
            message = json.loads(text)
            if message.get("type") == "download":
                data = message.get("data") or {}
                self.progress.append(
                    (
                        now,
                        message.get("job"),
                        int(data.get("downloaded") or 0),
                        data.get("status", ""),
                        data.get("state", ""),
                    )
                )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.socket.close()


class Sampler:
    """CPU and memory of the app (and its aria2c) every 0.25 s, with timestamps."""

    def __init__(self, app_pid: int, aria2_pid: int | None) -> None:
        self.app_pid, self.aria2_pid = app_pid, aria2_pid
        self.samples: list[tuple[float, float, float, int]] = []  # (when, app cpu s, aria2 cpu s, rss KiB)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="sampler")
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.take()
            self._stop.wait(SAMPLE_EVERY)

    def take(self) -> tuple[float, float, float, int]:
        with contextlib.suppress(OSError, ValueError):
            aria2 = cpu_seconds(self.aria2_pid) if self.aria2_pid else 0.0
            sample = (time.time(), cpu_seconds(self.app_pid), aria2, memory_kib(self.app_pid)["VmRSS"])
            self.samples.append(sample)
        return self.samples[-1]

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()

    def between(self, start: float, end: float) -> tuple[float, float, float]:
        """(app %, aria2 %, seconds) between the samples nearest to start and end."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return 0.0, 0.0, 0.0
        first, last = inside[0], inside[-1]
        wall = last[0] - first[0]
        return 100 * (last[1] - first[1]) / wall, 100 * (last[2] - first[2]) / wall, wall


class Probe:
    """Polls aria2 directly for one GID every 50 ms; keeps (when, completedLength)."""

    def __init__(self, app: App, gid: str) -> None:
        self.app, self.gid = app, gid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="probe")
        self.thread.start()

    def _run(self) -> None:
        import requests

        session = requests.Session()
        body = {
            "jsonrpc": "2.0",
            "id": "probe",
            "method": "aria2.tellStatus",
            "params": [f"token:{self.app.secret()}", self.gid, ["completedLength", "status"]],
        }
        url = f"http://127.0.0.1:{self.app.rpc_port}/jsonrpc"
        while not self._stop.is_set():
            before = time.time()
            try:
                result = session.post(url, json=body, timeout=5).json()["result"]
            except Exception:  # the daemon forgot the GID after completion
                return
            after = time.time()
            self.samples.append(((before + after) / 2, int(result["completedLength"])))
            if result["status"] != "active":
                return
            self._stop.wait(max(0.0, PROBE_EVERY - (after - before)))

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()


def find_gid(app: App, job_id: str, timeout: float = 30) -> str:
    """The aria2 GID of one of the app's jobs: the download whose dir is the job's staging folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in app.rpc("aria2.tellActive", ["gid", "dir"]):
            if Path(entry["dir"]).name == job_id:
                return entry["gid"]
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} never became active in aria2")


def latencies(
    changes: list[tuple[float, int]], events: list[tuple[float, int]]
) -> tuple[list[float], list[float]]:
    """(change-to-client latencies, relay delays) for one client's progress events of the probe job."""
    events = sorted(events)
    values = [downloaded for _, downloaded in events]
    # progress only grows, so the first event with downloaded >= v is found by bisecting a running max
    running, best = [], 0
    for value in values:
        best = max(best, value)
        running.append(best)
    change_latency = []
    previous = None
    for when, value in changes:
        if value == previous:
            continue
        previous = value
        index = bisect.bisect_left(running, value)
        if index < len(events):
            change_latency.append(events[index][0] - when)
    relay = []
    times = [t for t, _ in changes]
    counts = [v for _, v in changes]
    for when, downloaded in events:
        # aria2 held `downloaded` bytes some time between the last sample below it and the first above it
        above = bisect.bisect_right(counts, downloaded)
        below = bisect.bisect_left(counts, downloaded) - 1
        if below < 0 or above >= len(counts):
            continue
        read_at = (times[below] + times[above]) / 2
        if times[above] - times[below] <= 3 * PROBE_EVERY:
            relay.append(when - read_at)
    return change_latency, relay


def run_load(
    app: App,
    urls: list[str],
    clients: int,
    settle_idle: float = 3.0,
    timeout: float = 600,
) -> LoadResult:
    """Submit every URL at once with `clients` watchers connected; return what it cost the app."""
    result = LoadResult(len(urls), clients, app.poll_interval or Settings().poll_interval)
    watchers = [Watcher(app.ws_url, app.token) for _ in range(clients)]
    sampler = Sampler(app.pid, app.aria2_pid())
    probe = None
    try:
        time.sleep(settle_idle)
        idle_end = time.time()
        result.app_cpu_idle = sampler.between(idle_end - settle_idle, idle_end)[0]
        began = time.time()
        jobs = [app.submit(url)["id"] for url in urls]
        probe = Probe(app, find_gid(app, jobs[0]))
        first = watchers[0]
        wanted = set(jobs)
        all_moving = settled = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.1)
            seen = [entry for entry in list(first.progress) if entry[1] in wanted]
            moving = {job for _, job, _, _, state in seen if state == "downloading"}
            if all_moving is None and moving == wanted:
                all_moving = time.time()
            # plain links: the SHA-256 follows `success` (a `hashed` event); the run ends with it
            finished = {job for _, job, _, status, _ in seen if status in ("hashed", "error")}
            if finished == wanted:
                settled = seen
                break
        ended = time.time()
        sampler.take()
        seen = settled or [entry for entry in list(first.progress) if entry[1] in wanted]
        result.completed = sum(1 for _, _, _, status, _ in seen if status == "success")
        # the steady window: every download moving bytes, until the first one is verified
        leaving = [t for t, _, _, _, state in seen if state not in ("queued", "resolving", "downloading")]
        start = all_moving or began
        stop = min(leaving) if leaving else ended
        result.app_cpu, result.aria2_cpu, result.window = sampler.between(start, stop)
        result.app_cpu_total = sampler.between(began, ended)[0]
        result.total_s = ended - began
        memory = memory_kib(app.pid)
        result.peak_rss_mib, result.rss_mib = memory["VmHWM"] / 1024, memory["VmRSS"] / 1024
        count = sum(1 for w in watchers for t, _ in w.received if start <= t <= stop)
        size = sum(n for w in watchers for t, n in w.received if start <= t <= stop)
        span = stop - start
        result.messages_per_s = count / span if span > 0 else 0.0
        result.bytes_per_s = size / span if span > 0 else 0.0
        result.expected_per_s = len(jobs) * clients / result.poll_interval
        probe.stop()
        changes = [s for s in probe.samples if start <= s[0] <= stop]
        all_latency, all_relay = [], []
        for watcher in watchers:
            events = [
                (t, downloaded)
                for t, job, downloaded, status, state in watcher.progress
                if job == jobs[0] and status == "progress" and state == "downloading"
            ]
            latency, relay = latencies(changes, events)
            all_latency += latency
            all_relay += relay
        result.latency, result.relay = Summary.of(all_latency), Summary.of(all_relay)
        result.dropped_clients = sum(1 for w in watchers if w.failed)
        total_bytes = sum(app.job(job)["total"] or 0 for job in jobs)
        result.aggregate_mb_s = total_bytes / (ended - began) / 1e6
    finally:
        if probe:
            probe.stop()
        sampler.stop()
        for watcher in watchers:
            watcher.close()
    return result
