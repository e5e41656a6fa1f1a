"""The fallback engine: plain `requests` on one connection, for machines without aria2c.

A thread per transfer streams the body into the staging file (hashing it in a
second thread when the source published a SHA-256 to check) and resumes with a
Range request after a dropped connection, a pause or a restart of the app. It
answers poll() with the same statuses as the aria2 engine, so the manager cannot
tell them apart.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import urllib3

from ..errors import OrchestratorError, http_error
from .base import ACTIVE, COMPLETE, ERROR, MISSING, PAUSED, REMOVED, WAITING, Transfer, TransferStatus

# Reads are sized to about READ_SECONDS of the current rate: big reads when bytes come
# fast (each read costs Python time; fixed 1 MiB reads ran at 0.35 x curl on loopback,
# docs/BENCHMARKS.md, "What changed" 3), small ones on a slow link so progress and pause
# stay prompt. A read that a dropped connection cuts short is fetched again, so a drop
# costs at most that much.
MIN_READ, MAX_READ = 64 * 1024, 4 * 1024 * 1024
READ_SECONDS = 0.25
# ...but written in pieces of at most this: after another program had churned the page
# cache, single 4 MiB writes made a fast download 1.4-2 x slower than 256 KiB ones
# (docs/BENCHMARKS.md, "What changed" 5).
WRITE_SIZE = 256 * 1024
# Beside each staged file, like aria2's `.aria2`: how many of its bytes really arrived. Only
# those are continued from; a file without one has unknown bytes and starts from zero.
CONTROL_SUFFIX = ".fallback"
CONTROL_EVERY = 0.25  # seconds between updates of that record while bytes arrive
# ... or sooner, after this much (or one read's worth at the current rate): bytes that arrive in
# a burst and are followed by silence (a stalled connection) are still vouched for
CONTROL_BYTES = 1024 * 1024
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class _Stopped(Exception):
    """Raised inside a worker when the manager paused or removed the transfer."""


class _Retry(Exception):
    """A transient problem: wait, then continue from the bytes on disk."""


@dataclass
class _Run:
    transfer: Transfer
    state: str = WAITING
    completed: int = 0
    total: int | None = None
    stop: str | None = None  # "pause" | "remove"
    error: OrchestratorError | None = None
    sha256: str | None = None
    hasher: hashlib._Hash | None = None  # covers the first `hashed` bytes of the file
    hashed: int = 0
    samples: deque = field(default_factory=lambda: deque(maxlen=32))
    thread: threading.Thread | None = None

    @property
    def path(self) -> Path:
        return self.transfer.directory / self.transfer.filename

    def told_to_stop(self) -> bool:
        """Paused or removed, or this thread is an older one a resume has replaced (it was
        stuck in a read when it was told to stop): it must not touch the file again."""
        return self.stop is not None or self.thread is not threading.current_thread()

    def speed(self) -> float:
        """Bytes per second over the last few seconds of samples."""
        if len(self.samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        if time.monotonic() - t1 > 3:
            return 0.0
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


class RequestsEngine:
    name = "requests"
    verifies_sha256 = False  # it hashes a published one while streaming; the manager compares
    on_finish: Callable[[], None] | None = None  # set by the manager

    def __init__(
        self,
        max_active: int = 5,
        chunk_size: int | None = None,  # a fixed read size; None adapts it to the rate
        retries: int = 8,
        timeout: tuple[float, float] = (15, 60),
    ) -> None:
        self.chunk_size = chunk_size
        self.retries = retries
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(max_active)
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    def start(self, transfer: Transfer) -> str:
        handle = "r" + uuid.uuid4().hex[:15]
        run = _Run(transfer, total=transfer.size)
        with self._lock:
            self._runs[handle] = run
        self._launch(run)
        return handle

    def _launch(self, run: _Run) -> None:
        run.stop, run.state = None, WAITING
        run.thread = threading.Thread(
            target=self._work, args=(run,), daemon=True, name=f"fetch-{run.transfer.filename[:20]}"
        )
        run.thread.start()

    def poll(self, handles: list[str]) -> dict[str, TransferStatus]:
        statuses = {}
        for handle in handles:
            run = self._runs.get(handle)
            if run is None:
                statuses[handle] = TransferStatus(handle, MISSING)
                continue
            status = TransferStatus(
                handle,
                run.state,
                run.completed,
                run.total,
                run.speed() if run.state == ACTIVE else 0.0,
                sha256=run.sha256,
            )
            if run.error:
                status.error_code, status.error_message = run.error.code, run.error.message
            statuses[handle] = status
        return statuses

    def pause(self, handle: str) -> None:
        run = self._runs[handle]
        if run.state in (ACTIVE, WAITING):
            self._stop(run, "pause")
            run.state = PAUSED

    def resume(self, handle: str) -> None:
        run = self._runs[handle]
        if run.state == PAUSED:
            self._launch(run)

    def remove(self, handle: str) -> None:
        run = self._runs.get(handle)
        if run is None:
            return
        if run.state in (ACTIVE, WAITING):
            self._stop(run, "remove")
        run.state = REMOVED

    def _stop(self, run: _Run, why: str) -> None:
        run.stop = why
        if run.thread and run.thread is not threading.current_thread():
            run.thread.join(timeout=10)

    def trusts_staged_bytes(self, directory: Path, filename: str) -> bool:
        return _control_path(directory / filename).is_file()

    def forget(self, handle: str) -> None:
        with self._lock:
            self._runs.pop(handle, None)

    def reachable(self) -> bool:
        return True  # it runs in this process

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": requests.__version__, "connected": True}

    def close(self) -> None:
        # Every run is told first and joined after: pausing one at a time would free its
        # slot to a waiting run that could finish before it too was told.
        stopping = [run for run in list(self._runs.values()) if run.state in (ACTIVE, WAITING)]
        for run in stopping:
            run.stop = "pause"
        for run in stopping:
            self._stop(run, "pause")
            run.state = PAUSED

    # -- the worker thread ---------------------------------------------------------------

    def _work(self, run: _Run) -> None:
        while not self._slots.acquire(timeout=0.2):
            if run.stop:
                return
        try:
            if run.told_to_stop():  # told while the slot was being handed over
                return
            run.state = ACTIVE
            self._fetch_with_retries(run)
            run.state = COMPLETE
        except _Stopped:
            pass  # pause()/remove() already set the state
        except OrchestratorError as error:
            run.error, run.state = error, ERROR
        except OSError as exc:
            code = "disk_full" if exc.errno == errno.ENOSPC else "disk_error"
            text = "The disk is full." if code == "disk_full" else f"Writing the file failed: {exc.strerror}."
            run.error, run.state = OrchestratorError(code, text, 507), ERROR
        finally:
            self._slots.release()
            if run.state in (COMPLETE, ERROR) and self.on_finish:
                self.on_finish()

    def _fetch_with_retries(self, run: _Run) -> None:
        session = requests.Session()
        if run.transfer.proxy:  # every hop of a guarded download goes through the egress proxy
            session.trust_env = False
            session.proxies = {"http": run.transfer.proxy, "https": run.transfer.proxy}
        try:
            for attempt in range(self.retries + 1):
                try:
                    self._fetch(run, session)
                    return
                except requests.exceptions.ProxyError as exc:
                    if "403" in str(exc):  # the egress proxy refused the address: no retry helps
                        raise OrchestratorError(
                            "blocked_target", "The download was refused an address it may not contact.", 403
                        ) from None
                    if attempt == self.retries:
                        raise OrchestratorError(
                            "network", f"The download kept failing: {_short(exc)}", 502
                        ) from None
                    self._sleep(run, min(30.0, 2.0 * 2**attempt))
                except (_Retry, *_TRANSIENT) as exc:
                    if attempt == self.retries:
                        raise OrchestratorError(
                            "network",
                            f"The download kept failing after {self.retries} retries: {_short(exc)}",
                            502,
                        ) from None
                    self._sleep(run, min(30.0, 2.0 * 2**attempt))
        finally:
            session.close()

    def _sleep(self, run: _Run, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if run.told_to_stop():
                raise _Stopped
            time.sleep(0.1)

    def _fetch(self, run: _Run, session: requests.Session) -> None:
        path = run.path
        path.parent.mkdir(parents=True, exist_ok=True)
        have = self._known_bytes(run)
        if run.total is not None and have > run.total:
            have = self._truncate(run, 0)
        if run.total is not None and have == run.total and have > 0:
            return self._finish(run, have)
        headers = {"Accept-Encoding": "identity", **_header_dict(run.transfer.headers)}
        if have:
            headers["Range"] = f"bytes={have}-"
        url = run.transfer.urls[0]
        with session.get(url, headers=headers, stream=True, timeout=self.timeout) as response:
            if response.status_code == 416 and have:
                return self._range_refused(run, response, have)
            have = self._check_response(run, response, have)
            self._stream(run, response, have)
        if run.total is not None and run.completed < run.total:
            raise _Retry(f"connection closed at {run.completed} of {run.total} bytes")
        return self._finish(run, run.completed)

    def _check_response(self, run: _Run, response: requests.Response, have: int) -> int:
        """Validate the answer; return how many bytes on disk it continues from."""
        status = response.status_code
        if status in RETRYABLE_STATUS:
            raise _Retry(f"HTTP {status}")
        if status >= 400:
            raise http_error(status)
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            raise OrchestratorError(
                "origin_error",
                f"The server sent the file compressed ({encoding[:20]}) although asked not to; its bytes "
                "would not be the model's, so nothing was kept.",
                502,
            )
        content_type = response.headers.get("Content-Type", "")
        if "text/html" in content_type and not run.transfer.filename.lower().endswith((".html", ".htm")):
            raise OrchestratorError(
                "not_a_file",
                "The server sent a web page instead of the file (a login or error page?); nothing was saved.",
                502,
            )
        if status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != have:
                return self._truncate(run, 0, restart_request=True)
            run.total = total or run.total
        else:  # 200: the whole file from byte 0, whatever we asked
            if have:
                have = self._truncate(run, 0)
            length = response.headers.get("Content-Length")
            if length and length.isdigit():
                run.total = int(length)
        return have

    def _range_refused(self, run: _Run, response: requests.Response, have: int) -> None:
        """416 to 'bytes=have-': done if the file is exactly that long, else start over."""
        _, total = _content_range(response.headers.get("Content-Range", "").replace("*", "0-0"))
        if total == have:
            run.total = total
            return self._finish(run, have)
        self._truncate(run, 0, restart_request=True)
        return None

    def _known_bytes(self, run: _Run) -> int:
        """How much of the staged file its control file vouches for; the rest is cut off.

        Bytes written after the last record (the app was killed in between) or a file
        without a record at all are unknown, so they are never continued from."""
        recorded = _read_control(run.path)
        actual = run.path.stat().st_size if run.path.exists() else 0
        if recorded is None or actual != recorded:
            return self._truncate(run, min(recorded or 0, actual)) if run.path.exists() else 0
        return actual

    def _truncate(self, run: _Run, size: int, restart_request: bool = False) -> int:
        with open(run.path, "r+b" if run.path.exists() else "wb") as handle:
            handle.truncate(size)
        _write_control(run.path, size)
        run.hasher, run.hashed, run.completed = None, 0, size
        if restart_request:
            raise _Retry("the server answered a different range; starting over")
        return size

    def _stream(self, run: _Run, response: requests.Response, have: int) -> None:
        if run.transfer.sha256:
            self._hash_prefix(run, have)
        run.completed = have
        run.samples.append((time.monotonic(), have))
        recorded, recorded_bytes = time.monotonic(), have
        with open(run.path, "r+b" if have else "wb") as handle, _HashingThread(run.hasher) as hasher:
            handle.seek(have)
            _write_control(run.path, have)
            try:
                while chunk := _read(response, self._read_size(run)):
                    if run.told_to_stop():
                        raise _Stopped
                    view = memoryview(chunk)
                    for start in range(0, len(view), WRITE_SIZE):
                        handle.write(view[start : start + WRITE_SIZE])
                    hasher.update(chunk)
                    run.completed += len(chunk)
                    if run.total is not None and run.completed > run.total:
                        raise OrchestratorError(
                            "size_mismatch",
                            f"The server sends more than the {run.total} bytes it announced; stopped.",
                            502,
                        )
                    run.hashed = run.completed
                    run.samples.append((time.monotonic(), run.completed))
                    if self._record_due(run, recorded, recorded_bytes):
                        handle.flush()  # the record must never count bytes still in our buffer
                        _write_control(run.path, run.completed)
                        recorded, recorded_bytes = time.monotonic(), run.completed
            finally:
                handle.flush()
                # a removed run's file, or a replaced thread's, may belong to a newer run by now
                if run.stop != "remove" and run.thread is threading.current_thread():
                    _write_control(run.path, run.completed)

    @staticmethod
    def _record_due(run: _Run, recorded: float, recorded_bytes: int) -> bool:
        unrecorded = run.completed - recorded_bytes
        return time.monotonic() - recorded > CONTROL_EVERY or unrecorded >= max(
            CONTROL_BYTES, int(run.speed() * READ_SECONDS)
        )

    def _read_size(self, run: _Run) -> int:
        if self.chunk_size:
            return self.chunk_size
        wanted = int(run.speed() * READ_SECONDS)
        return max(MIN_READ, min(MAX_READ, wanted - wanted % MIN_READ))

    def _hash_prefix(self, run: _Run, have: int) -> None:
        """Bring the running hash up to the bytes already on disk (after a restart)."""
        if run.hasher is not None and run.hashed == have:
            return
        run.hasher, run.hashed = hashlib.sha256(), 0
        if have:
            with open(run.path, "rb") as handle:
                while run.hashed < have:
                    block = handle.read(min(4 * 1024 * 1024, have - run.hashed))
                    if not block:
                        break
                    run.hasher.update(block)
                    run.hashed += len(block)

    def _finish(self, run: _Run, size: int) -> None:
        run.completed = size
        run.total = run.total or size
        if run.transfer.sha256:
            self._hash_prefix(run, size)
            run.sha256 = run.hasher.hexdigest() if run.hasher else None


class _HashingThread:
    """Feeds a hash from a second thread, so hashing overlaps receiving and writing (hashlib
    lets go of the GIL on big buffers). On exit every queued chunk is in the hash. With no
    hash to feed (no published one to check), it does nothing."""

    def __init__(self, digest: hashlib._Hash | None) -> None:
        self._digest = digest
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=4)  # <= 4 reads in memory
        self._thread = threading.Thread(target=self._run, daemon=True, name="sha256")

    def __enter__(self) -> _HashingThread:
        if self._digest is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._digest is not None:
            self._chunks.put(None)
            self._thread.join()

    def update(self, chunk: bytes) -> None:
        if self._digest is not None:
            self._chunks.put(chunk)

    def _run(self) -> None:
        digest = self._digest
        assert digest is not None  # the thread starts only with a hash to feed
        while (chunk := self._chunks.get()) is not None:
            digest.update(chunk)


def _read(response: requests.Response, size: int) -> bytes:
    """Up to `size` bytes of the body (fewer only at its end). urllib3's errors become the
    requests errors the retry loop knows: all of them mean a broken or stalled connection."""
    try:
        return response.raw.read(size, decode_content=False)  # the bytes as sent: never inflated
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.Timeout(str(exc)) from None
    except urllib3.exceptions.HTTPError as exc:
        raise requests.exceptions.ChunkedEncodingError(str(exc)) from None


def _control_path(path: Path) -> Path:
    return path.with_name(path.name + CONTROL_SUFFIX)


def _read_control(path: Path) -> int | None:
    """The byte count the control file records, or None when there is none (or it is damaged)."""
    try:
        record = json.loads(_control_path(path).read_text())
        count = record["bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return count if isinstance(count, int) and count >= 0 else None


def _write_control(path: Path, count: int) -> None:
    control = _control_path(path)
    partial = control.with_name(control.name + ".part")
    partial.write_text(json.dumps({"bytes": count}))
    os.replace(partial, control)


def _content_range(value: str) -> tuple[int | None, int | None]:
    """(start, total) from 'bytes a-b/total'."""
    try:
        _, _, rest = value.partition(" ")
        span, _, total = rest.partition("/")
        start = int(span.split("-")[0])
        return start, (int(total) if total.isdigit() else None)
    except (ValueError, IndexError):
        return None, None


def _header_dict(lines: list[str]) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in lines if ":" in line)
    return {name.strip(): value.strip() for name, value in pairs}


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]
