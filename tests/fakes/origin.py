"""A fake HTTP/1.1 origin (CDN / file host) for integration tests.

It serves in-memory files and reproduces the behaviours of real hosts that a download
orchestrator has to survive: byte ranges, per-connection throttling, connections dropped
mid-body, redirects to other hosts, error statuses, HTML login pages and corrupted bodies.
Everything is recorded so tests can assert what the client actually sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import socket
import socketserver
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from tests.fakes.model_files import opaque_safetensors

# Unthrottled bodies go out in slices so a stop() or a drop can interrupt a 64 MiB send.
_WRITE_CHUNK = 256 * 1024
# Throttled bodies use small slices so the byte rate is smooth rather than bursty.
_THROTTLE_CHUNK = 16 * 1024
# Translation table mapping every byte b to 255 - b: same length, every byte differs.
_INVERT = bytes(range(255, -1, -1))
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass
class RecordedRequest:
    """One request as the origin received it."""

    method: str
    path: str  # raw request path, query removed
    query: str  # raw query string ("" when absent)
    headers: dict[str, str]  # original-case keys; use header() for case-insensitive lookup
    range: str | None  # the Range header, verbatim
    client: tuple[str, int] = ("", 0)  # peer address: same port means same kept-alive connection
    time: float = field(default_factory=time.monotonic)

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@dataclass
class _File:
    data: bytes  # the true content (what add_file returned)
    served: bytes  # what goes on the wire; differs from data only when corrupt
    content_type: str
    content_disposition: str | None
    accept_ranges: bool
    head_allowed: bool
    rate: int | None
    drop_after: int | None
    drops_left: int
    status: int
    etag: str
    last_modified: str
    fail_status: int = 503
    fails_left: int = 0  # the first GETs answer fail_status ("down for a while")
    stall_after: int | None = None
    stall_seconds: float = 0.0
    stalls_left: int = 0  # GET bodies that pause after stall_after bytes


@dataclass
class _Redirect:
    location: str
    status: int
    head_size: int | None = None  # HEAD answers 200 as for a file this long: only GET redirects


@dataclass
class _Html:
    body: bytes
    status: int


_Route = _File | _Redirect | _Html


class RangeNotSatisfiable(Exception):
    """The Range header is valid but selects nothing inside the file."""


def parse_range(header: str | None, total: int) -> tuple[int, int] | None:
    """Return (first, last) inclusive for a single byte range, None to serve the full body.

    Raises RangeNotSatisfiable for a range that lies outside the file (answered with 416).
    Malformed and multi-range headers return None: RFC 9110 lets a server ignore them.
    """
    if header is None:
        return None
    match = _RANGE_RE.match(header)
    if match is None:  # also catches "bytes=0-1,5-9": multi-range gets the full 200
        return None
    first_s, last_s = match.groups()
    if not first_s and not last_s:
        return None
    if not first_s:  # suffix range: the last n bytes
        suffix = int(last_s)
        if suffix == 0 or total == 0:
            raise RangeNotSatisfiable
        return max(0, total - suffix), total - 1
    first = int(first_s)
    last = int(last_s) if last_s else None
    if last is not None and last < first:
        return None
    if first >= total:
        raise RangeNotSatisfiable
    return first, total - 1 if last is None else min(last, total - 1)


def _make_bytes(path: str, size: int, seed: int | None) -> bytes:
    # crc32 rather than hash(): str hashes are salted per process, and tests want stable bytes.
    actual_seed = seed if seed is not None else zlib.crc32(path.encode())
    body = random.Random(actual_seed).randbytes(size)
    # a real safetensors file whatever the name: the app refuses a .safetensors that is not one,
    # and a Content-Disposition may name any path so
    return opaque_safetensors(body)


def _norm_path(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def _hang_up(conn: socket.socket) -> None:
    """Shut both directions now (peer sees FIN); the server closes the socket afterwards."""
    with contextlib.suppress(OSError):  # already gone is fine
        conn.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Otherwise server_close() joins every handler thread, including idle keep-alive ones.
    block_on_close = False
    allow_reuse_address = True
    # The default backlog of 5 makes a 16-connection client see SYN retries (1 s stalls).
    request_queue_size = 256

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        if ":" in origin.host:
            self.address_family = socket.AF_INET6
        super().__init__((origin.host, origin.port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall
        # for seconds in a sandbox; the name is never used, so skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients hanging up (or us dropping them on purpose) is normal here: stay quiet.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOrigin/1.0"
    sys_version = ""
    # Headers and small bodies go out in separate writes; Nagle + delayed ACK would add 40 ms.
    disable_nagle_algorithm = True
    # Idle keep-alive connections eventually end even if a test never calls stop().
    timeout = 30
    server: _Server

    # -- plumbing -------------------------------------------------------------------------

    @property
    def origin(self) -> Origin:
        return self.server.origin

    def setup(self) -> None:
        super().setup()
        self.origin._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.origin._untrack(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        pass  # tests run many requests; per-request stderr lines are noise

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _other_method(self) -> None:
        self._record()
        self._send_status(HTTPStatus.METHOD_NOT_ALLOWED, head=False, extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other_method

    # -- request handling -----------------------------------------------------------------

    def _record(self) -> str:
        parts = urlsplit(self.path)
        path = parts.path or "/"
        self._discard_request_body()
        self.origin._record(
            RecordedRequest(
                method=self.command,
                path=path,
                query=parts.query,
                headers=dict(self.headers.items()),
                range=self.headers.get("Range"),
                client=(str(self.client_address[0]), int(self.client_address[1])),
            )
        )
        return path

    def _discard_request_body(self) -> None:
        # Unread body bytes would be parsed as the next request on a kept-alive connection.
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)

    def _serve(self, head: bool) -> None:
        path = self._record()
        route = self.origin._lookup(path)
        if route is None:
            self._send_status(HTTPStatus.NOT_FOUND, head)
        elif isinstance(route, _Redirect) and head and route.head_size is not None:
            # what a server that lies to a look-ahead does: a file for HEAD, elsewhere for GET
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self._end(route.head_size)
        elif isinstance(route, _Redirect):
            self._send_bytes(route.status, "", b"", head, {"Location": route.location})
        elif isinstance(route, _Html):
            self._send_bytes(route.status, "text/html; charset=utf-8", route.body, head)
        else:
            self._send_file(path, route, head)

    def _send_file(self, path: str, f: _File, head: bool) -> None:
        if head and not f.head_allowed:
            self._send_status(HTTPStatus.METHOD_NOT_ALLOWED, head, extra={"Allow": "GET"})
            return
        if f.status != HTTPStatus.OK:
            self._send_status(f.status, head)
            return
        if not head and self.origin._take(f, "fails_left"):
            self._send_status(f.fail_status, head, extra={"Retry-After": "1"})
            return
        total = len(f.served)
        try:
            span = parse_range(self.headers.get("Range"), total) if f.accept_ranges else None
        except RangeNotSatisfiable:
            self._begin(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, f)
            self.send_header("Content-Range", f"bytes */{total}")
            self._end(0)
            return
        body = memoryview(f.served)
        if span is None:
            self._begin(HTTPStatus.OK, f)
        else:
            first, last = span
            body = body[first : last + 1]
            self._begin(HTTPStatus.PARTIAL_CONTENT, f)
            self.send_header("Content-Range", f"bytes {first}-{last}/{total}")
        self._end(len(body))
        if not head:
            self._write_file_body(path, f, body)

    def _begin(self, status: int, f: _File) -> None:
        """Status line plus the representation headers shared by 200/206/416 and HEAD."""
        self.send_response(status)
        self.send_header("Content-Type", f.content_type)
        if f.accept_ranges:
            self.send_header("Accept-Ranges", "bytes")
        if f.content_disposition is not None:
            self.send_header("Content-Disposition", f.content_disposition)
        self.send_header("ETag", f.etag)
        self.send_header("Last-Modified", f.last_modified)

    def _end(self, length: int) -> None:
        self.send_header("Content-Length", str(length))
        if self.close_connection:  # client asked for close (or spoke HTTP/1.0): say so
            self.send_header("Connection", "close")
        try:
            self.end_headers()
        except OSError:
            self.close_connection = True

    def _send_status(self, status: int, head: bool, extra: dict[str, str] | None = None) -> None:
        """An error page: JSON for auth failures (like API hosts), plain text otherwise."""
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            body = json.dumps({"error": phrase}).encode()
            ctype = "application/json"
        else:
            body = phrase.encode()
            ctype = "text/plain; charset=utf-8"
        self._send_bytes(status, ctype, body, head, extra)

    def _send_bytes(
        self,
        status: int,
        ctype: str,
        body: bytes,
        head: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self._end(len(body))
        if not head and body:
            self._pump(self.origin._path_key(self.path), memoryview(body), None)

    def _write_file_body(self, path: str, f: _File, body: memoryview) -> None:
        # A drop only counts when it really cuts this response short; a ranged request
        # smaller than drop_after is served whole and leaves the countdown alone.
        drop = f.drop_after is not None and f.drop_after < len(body) and self.origin._take_drop(f)
        if drop:
            body = body[: f.drop_after]
        if f.stall_after is not None and f.stall_after < len(body) and self.origin._take(f, "stalls_left"):
            sent = self._pump(path, body[: f.stall_after], f.rate)
            self.origin._stopping.wait(f.stall_seconds)  # the connection stays open, silent
            body = body[sent:]
        sent = self._pump(path, body, f.rate)
        if drop and sent == len(body):
            self._abort()

    def _pump(self, path: str, body: memoryview, rate: int | None) -> int:
        """Write body (throttled to rate bytes/s on this connection); return bytes written."""
        chunk = _WRITE_CHUNK if rate is None else max(1, min(_THROTTLE_CHUNK, rate // 10))
        stopping = self.origin._stopping
        start = time.monotonic()
        sent = 0
        while sent < len(body):
            if stopping.is_set():
                self._abort()
                return sent
            piece = body[sent : sent + chunk]
            # counted before the write: a client may have read it (and a test looked) before
            # this thread runs again
            self.origin._count_sent(path, len(piece))
            try:
                self.wfile.write(piece)
            except OSError:  # client went away mid-body
                self.origin._count_sent(path, -len(piece))
                self.close_connection = True
                return sent
            sent += len(piece)
            if rate is not None:
                # Pace against the response start so sleep jitter does not accumulate.
                delay = start + sent / rate - time.monotonic()
                if delay > 0:
                    stopping.wait(delay)  # an Event, so stop() interrupts the sleep
        return sent

    def _abort(self) -> None:
        """End the connection abruptly: FIN straight away, no further bytes."""
        self.close_connection = True
        _hang_up(self.connection)


class Origin:
    """A threaded HTTP origin on a loopback address. Use as a context manager or start()/stop().

    Routes are keyed by path only; query strings are ignored for routing but recorded.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self._routes: dict[str, _Route] = {}
        self._stats: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Origin:
        if self._server is not None:
            raise RuntimeError("Origin already started")
        self._stopping.clear()
        server = _Server(self)
        self.port = int(server.server_address[1])
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{shown}:{self.port}"
        # A short poll interval makes shutdown() return in ~50 ms instead of up to 0.5 s.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-origin-{self.port}",
            daemon=True,
        )
        self._server = server
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes throttled senders and refuses late connections
        server.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # unblocks handler threads waiting on keep-alive reads
            _hang_up(conn)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Origin:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- routes -----------------------------------------------------------------------------

    def add_file(
        self,
        path: str,
        size: int | None = None,
        *,
        data: bytes | None = None,
        seed: int | None = None,
        content_type: str = "application/octet-stream",
        content_disposition: str | None = None,
        accept_ranges: bool = True,
        head_allowed: bool = True,
        rate: int | None = None,
        drop_after: int | None = None,
        drop_times: int = 1,
        status: int = 200,
        corrupt: bool = False,
        fail_times: int = 0,
        fail_status: int = 503,
        stall_after: int | None = None,
        stall_seconds: float = 0.0,
    ) -> bytes:
        """Serve a file at path; return its true bytes (the ones a correct download yields).

        Bytes are pseudo-random from seed (default: crc32 of path) unless data is given.
        drop_after/drop_times cut that many GET bodies short; corrupt flips every byte;
        the first fail_times GETs answer fail_status; the first GET longer than stall_after
        bytes goes silent for stall_seconds after that many bytes.
        """
        path = _norm_path(path)
        if data is None:
            if size is None:
                raise ValueError("add_file needs size or data")
            data = _make_bytes(path, size, seed)
        elif size is not None and size != len(data):
            raise ValueError(f"size={size} but len(data)={len(data)}")
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (or None for unlimited)")
        self._routes[path] = _File(
            data=data,
            served=data.translate(_INVERT) if corrupt else data,
            content_type=content_type,
            content_disposition=content_disposition,
            accept_ranges=accept_ranges,
            head_allowed=head_allowed,
            rate=rate,
            drop_after=drop_after,
            drops_left=drop_times if drop_after is not None else 0,
            status=status,
            fail_status=fail_status,
            fails_left=fail_times,
            stall_after=stall_after,
            stall_seconds=stall_seconds,
            stalls_left=1 if stall_after is not None else 0,
            # Derived from the true bytes so a corrupt file looks identical in metadata.
            etag='"' + hashlib.blake2b(data, digest_size=8).hexdigest() + '"',
            last_modified=formatdate(time.time(), usegmt=True),
        )
        return data

    def add_redirect(self, path: str, location: str, status: int = 302, head_size: int | None = None) -> None:
        """GET (and HEAD) answer `status` to `location`; with head_size, HEAD answers 200 as for a
        file of that size instead, so only the engine's own GET meets the redirect."""
        self._routes[_norm_path(path)] = _Redirect(location=location, status=status, head_size=head_size)

    def add_html(
        self,
        path: str,
        html: str = "<!DOCTYPE html><html><body>Sign in</body></html>",
        status: int = 200,
    ) -> None:
        self._routes[_norm_path(path)] = _Html(body=html.encode(), status=status)

    def url(self, path: str) -> str:
        if not self.base_url:
            raise RuntimeError("Origin not started")
        return self.base_url + _norm_path(path)

    # -- inspection -------------------------------------------------------------------------

    def requests_for(self, path: str) -> list[RecordedRequest]:
        path = _norm_path(path)
        with self._lock:
            return [r for r in self.requests if path in (r.path, unquote(r.path))]

    def stats(self, path: str) -> dict[str, int]:
        """{"gets", "heads", "bytes_sent"} for path; bytes_sent counts body bytes written."""
        with self._lock:
            counts = self._stats.get(_norm_path(path))
            return dict(counts) if counts else {"gets": 0, "heads": 0, "bytes_sent": 0}

    # -- used by the handler ----------------------------------------------------------------

    def _lookup(self, path: str) -> _Route | None:
        # Clients percent-encode non-ASCII paths; routes may be registered either way.
        return self._routes.get(path) or self._routes.get(unquote(path))

    def _path_key(self, raw_target: str) -> str:
        return urlsplit(raw_target).path or "/"

    def _stats_for(self, path: str) -> dict[str, int]:
        key = path if path in self._routes else unquote(path)
        return self._stats.setdefault(key, {"gets": 0, "heads": 0, "bytes_sent": 0})

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)
            counts = self._stats_for(req.path)
            if req.method == "GET":
                counts["gets"] += 1
            elif req.method == "HEAD":
                counts["heads"] += 1

    def _count_sent(self, path: str, n: int) -> None:
        with self._lock:
            self._stats_for(path)["bytes_sent"] += n

    def _take(self, f: _File, counter: str) -> bool:
        """Use up one of a file's scripted faults (thread-safe)."""
        with self._lock:
            if getattr(f, counter) <= 0:
                return False
            setattr(f, counter, getattr(f, counter) - 1)
            return True

    def _take_drop(self, f: _File) -> bool:
        with self._lock:
            if f.drops_left <= 0:
                return False
            f.drops_left -= 1
            return True

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
            late = self._stopping.is_set()
        if late:  # accepted while stop() was running: don't let it linger
            _hang_up(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)
