"""Building blocks for fake web services (CivitAI, Hugging Face, Google Drive) on 127.0.0.x.

`Service` is a threaded HTTP/1.1 server whose subclass answers each recorded
request with a `Reply`. `SignedStorage` is the storage host such services
redirect to: S3-style signed URLs that expire, refuse HEAD and refuse any
Authorization header, so a test can prove a token never reached it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlsplit

from tests.fakes.origin import RangeNotSatisfiable, parse_range


@dataclass
class Request:
    """One request as a service received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    rate: int | None = None  # bytes per second for the body, per connection
    key: str | None = None  # names the blob being sent, so cut() can stop it

    @classmethod
    def json(cls, status: int, data: object, headers: dict[str, str] | None = None) -> Reply:
        body = json.dumps(data).encode()
        return cls(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)

    @classmethod
    def html(cls, text: str, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, {"Content-Type": "text/html; charset=utf-8", **(headers or {})}, text.encode())

    @classmethod
    def redirect(cls, location: str, status: int = 307, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, {"Location": location, **(headers or {})})


def content_disposition(filename: str, kind: str = "attachment") -> str:
    """An RFC 6266 header with a UTF-8 filename* and an ASCII fallback, as real services send."""
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


def serve_bytes(
    request: Request, data: bytes, headers: dict[str, str], rate: int | None = None, key: str | None = None
) -> Reply:
    """200, 206 or 416 for data, honouring a single Range."""
    try:
        span = parse_range(request.header("Range"), len(data))
    except RangeNotSatisfiable:
        return Reply(416, {"Content-Range": f"bytes */{len(data)}"})
    base = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", **headers}
    if span is None:
        return Reply(200, base, data, rate, key)
    first, last = span
    base["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
    return Reply(206, base, data[first : last + 1], rate, key)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, service: Service) -> None:
        self.service = service
        super().__init__((service.host, 0), _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skips the reverse DNS lookup of HTTPServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hanging up mid-body is normal here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._answer()

    do_HEAD = do_POST = do_GET

    def _answer(self) -> None:
        service = self.server.service
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        parts = urlsplit(self.path)
        request = Request(self.command, parts.path, dict(parse_qsl(parts.query)), dict(self.headers.items()))
        service.record(request)
        reply = service.respond(request)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD" and reply.body:
            self._pump(service, reply)

    def _pump(self, service: Service, reply: Reply) -> None:
        generation = service.generation(reply.key)
        chunk = 16 * 1024 if reply.rate else 256 * 1024
        start, sent = time.monotonic(), 0
        while sent < len(reply.body):
            if service.generation(reply.key) != generation or service.stopping.is_set():
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            piece = reply.body[sent : sent + chunk]
            try:
                self.wfile.write(piece)
            except OSError:
                self.close_connection = True
                return
            sent += len(piece)
            service.count(reply.key, len(piece))
            if reply.rate:
                delay = start + sent / reply.rate - time.monotonic()
                if delay > 0:
                    service.stopping.wait(delay)


class Service:
    """A fake web service on one loopback address; subclasses implement respond()."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.requests: list[Request] = []
        self.sent: dict[str, int] = {}
        self.stopping = threading.Event()
        self._generations: dict[str | None, int] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None

    def respond(self, request: Request) -> Reply:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the service first"
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> Service:
        self._server = _Server(self)
        serve = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        serve.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- bookkeeping used by the handler and by tests ------------------------------------------

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def count(self, key: str | None, n: int) -> None:
        if key is not None:
            with self._lock:
                self.sent[key] = self.sent.get(key, 0) + n

    def generation(self, key: str | None) -> int:
        return self._generations.get(key, 0)

    def cut(self, key: str) -> None:
        """Hang up every body of `key` being sent now (a network blip)."""
        with self._lock:
            self._generations[key] = self._generations.get(key, 0) + 1

    def seen(self, path_prefix: str = "/") -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def saw_text(self, text: str) -> bool:
        """True if text appeared in any request line or header this service received."""
        with self._lock:
            for request in self.requests:
                blob = " ".join([request.path, json.dumps(request.query), json.dumps(request.headers)])
                if text in blob:
                    return True
        return False


@dataclass
class _Blob:
    data: bytes
    filename: str
    content_type: str = "application/octet-stream"


class SignedStorage(Service):
    """Object storage behind signed URLs, like the R2/S3/CloudFront hosts CivitAI and the Hub use.

    A signed URL works for GET (with Range) until expire() is called; HEAD on it
    fails (the signature covers GET only), and any Authorization header is
    refused, as S3 does when a second auth mechanism is present.
    """

    def __init__(self, host: str = "127.0.0.2", rate: int | None = None) -> None:
        super().__init__(host)
        self.rate = rate
        self.blobs: dict[str, _Blob] = {}
        self.public: dict[str, tuple[bytes, str]] = {}  # unsigned files, e.g. preview images
        self._valid: dict[str, str] = {}  # signature -> blob key
        self._expired: set[str] = set()

    def put(self, data: bytes, filename: str) -> str:
        key = hashlib.sha256(filename.encode() + b"\0" + data).hexdigest()[:32]
        self.blobs[key] = _Blob(data, filename)
        return key

    def put_public(self, path: str, data: bytes, content_type: str) -> str:
        self.public[path] = (data, content_type)
        return self.base_url + path

    def sign(self, key: str) -> str:
        signature = secrets.token_hex(16)
        self._valid[signature] = key
        disposition = quote(content_disposition(self.blobs[key].filename), safe="")
        return (
            f"{self.base_url}/file/{key}?X-Amz-Expires=3600&X-Amz-Signature={signature}"
            f"&response-content-disposition={disposition}"
        )

    def expire(self, cut_transfers: bool = True) -> None:
        """Every URL signed so far stops working; bodies in flight are cut if asked."""
        self._expired.update(self._valid)
        if cut_transfers:
            for key in self.blobs:
                self.cut(key)

    def signed_requests(self) -> list[Request]:
        return self.seen("/file/")

    def expired_requests(self) -> list[Request]:
        """GETs that came with a signature expire() had killed."""
        return [r for r in self.signed_requests() if r.query.get("X-Amz-Signature") in self._expired]

    def respond(self, request: Request) -> Reply:
        if request.path in self.public:
            data, content_type = self.public[request.path]
            return Reply(200, {"Content-Type": content_type}, data)
        if request.header("Authorization"):
            return _s3_error(400, "InvalidArgument", "Only one auth mechanism allowed")
        key = request.path.removeprefix("/file/")
        signature = request.query.get("X-Amz-Signature", "")
        if request.method == "HEAD":
            return _s3_error(403, "SignatureDoesNotMatch", "The signature does not cover HEAD")
        if signature in self._expired:
            return _s3_error(403, "AccessDenied", "Request has expired")
        if self._valid.get(signature) != key or key not in self.blobs:
            return _s3_error(403, "AccessDenied", "Signature does not match")
        blob = self.blobs[key]
        headers = {
            "Content-Disposition": request.query.get("response-content-disposition", ""),
            "ETag": f'"{key}"',
            "Content-Type": blob.content_type,
        }
        return serve_bytes(request, blob.data, headers, self.rate, key)


def _s3_error(status: int, code: str, message: str) -> Reply:
    body = f'<?xml version="1.0"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return Reply(status, {"Content-Type": "application/xml"}, body.encode())
