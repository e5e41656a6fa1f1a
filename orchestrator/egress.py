"""The egress proxy: every connection aria2 makes for a guarded download goes through here.

When the server is exposed it must not become a way into the machine's own network
(docs/RELIABILITY.md). Checking a link before handing it to aria2 is not enough: aria2
follows redirects itself and resolves names again when it connects (DNS rebinding).
So each guarded download gets aria2's proxy options pointing at this proxy, which
resolves the host once, checks every address with a policy, and connects to the
checked address itself.

It speaks the part of HTTP/1.1 proxying that aria2 uses (aria2's AbstractCommand.cc,
HttpRequest.cc): `CONNECT host:port` for https, which aria2 always tunnels (its
manual, --proxy-method), and absolute-form requests (`GET http://host/path`) for
plain http, forwarded in origin-form with `Connection: close` on both sides
(RFC 9112 section 3.2.2 for the target forms, RFC 9110 section 7.6.1 for the
hop-by-hop headers removed). aria2 sends `Proxy-Authorization: Basic` on both
kinds of request when the proxy options carry a user, so per-download credentials
tell which download a request belongs to, and anything without them gets 407.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import ipaddress
import logging
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

from .errors import OrchestratorError
from .policy import IPAddress, address_refusal, blocked


def default_policy(host: str, address: IPAddress) -> str | None:
    """Every address that is not a public unicast one is refused (policy.address_refusal)."""
    return address_refusal(address)


log = logging.getLogger(__name__)

# A reason to refuse this host's address ("a loopback address"), or None to allow it.
AddressPolicy = Callable[[str, IPAddress], str | None]
# Every address a host name stands for, resolved once.
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
}
_MAX_REFUSALS = 32  # per download: aria2 retries, and each retry would add one more
_REALM = 'Basic realm="orchestrator egress"'


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The host's addresses from the system resolver (getaddrinfo in the loop's executor)."""
    loop = asyncio.get_running_loop()
    answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for *_, sockaddr in answers:
        address = ipaddress.ip_address(sockaddr[0])
        if address not in found:
            found.append(address)
    return found


def aria2_proxy_options(proxy_url: str) -> dict[str, str]:
    """aria2 options that send every protocol of a download through `proxy_url` (user:password@).

    Each protocol's own proxy option wins over all-proxy, and a user or password option
    wins over the ones in the URL (aria2's getProxyUri), so all are set: a proxy in the
    daemon's global options cannot take over this download.
    """
    parts = urlsplit(proxy_url)
    bare = f"{parts.scheme}://{parts.hostname}:{parts.port}"
    options = {"no-proxy": "", "proxy-method": "get"}
    for kind in ("all", "http", "https", "ftp"):
        options[f"{kind}-proxy"] = bare
        options[f"{kind}-proxy-user"] = parts.username or ""
        options[f"{kind}-proxy-passwd"] = parts.password or ""
    return options


# -- what the app reads back ------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A connection the proxy refused for a download: the host, the address it stands for, why."""

    host: str
    address: str
    reason: str

    def error(self) -> OrchestratorError:
        return blocked(f"{self.host} ({self.address})", self.reason)


@dataclass(frozen=True)
class Limits:
    """Bounds that keep a slow, stuck or hostile peer from holding memory or sockets."""

    max_connections: int = 256  # client connections at once; aria2 opens up to 16 per download
    head_timeout: float = 30.0  # seconds for a client to send its request head
    connect_timeout: float = 30.0  # seconds to resolve and connect, like aria2's connect-timeout
    idle_timeout: float = 120.0  # seconds without a byte either way; aria2's own timeout (60) comes first
    max_head: int = 64 * 1024  # bytes of request or response head
    write_buffer: int = 256 * 1024  # bytes queued towards a peer before its source stops being read


@dataclass
class _Download:
    user: str
    password: str
    refusals: list[Refusal] = field(default_factory=list)


# -- one TCP connection --------------------------------------------------------------------------


class _ProtocolError(Exception):
    """The peer sent something that is not the HTTP this proxy speaks; answer `status`."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class _Stream(asyncio.Protocol):
    """One TCP connection: first read a head at a time, then spliced to a peer.

    Reading stops while the buffer holds a head's worth of bytes, and while the peer
    it is spliced to has a full write buffer, so neither side can grow memory.
    """

    def __init__(self, limits: Limits, on_connect: Callable[[_Stream], None] | None = None) -> None:
        self.limits = limits
        self.transport: asyncio.Transport | None = None
        self._on_connect = on_connect
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._sink: _Stream | None = None  # where incoming bytes go once spliced
        self._source: _Stream | None = None  # whose reading stops while our writes back up
        self._left: int | None = None  # bytes still to pass to the sink; None: until EOF
        self._write_paused = False
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()  # no more input will be passed on
        self.lost: asyncio.Future[None] = loop.create_future()  # the connection is gone
        self.last_active = loop.time()

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=self.limits.write_buffer)
        if self._on_connect is not None:
            self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = asyncio.get_running_loop().time()
        if self._sink is not None:
            self._pass_on(data)
            return
        self._buffer += data
        if len(self._buffer) > self.limits.max_head:
            self._pause()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        if self._sink is not None:
            self._finish_input()
        return True  # keep the other direction open until the relay closes us

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()
        self._finish_input()
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._source is not None:
            self._source._pause()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._source is not None:
            self._source._resume()

    # reading heads

    async def read_head(self) -> bytes | None:
        """The next head up to its blank line; None if the peer closed before sending one."""
        while True:
            end = self._buffer.find(b"\r\n\r\n", 0, self.limits.max_head + 4)
            if end >= 0:
                head = bytes(self._buffer[: end + 4])
                del self._buffer[: end + 4]
                return head
            if len(self._buffer) >= self.limits.max_head + 4:
                raise _ProtocolError(431, "The request head is too large.")
            if self._eof:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            self._resume()
            try:
                await self._waiter
            finally:
                self._waiter = None

    # splicing

    def splice(self, sink: _Stream, length: int | None = None) -> None:
        """From now on pass incoming bytes to sink: `length` of them, or all until EOF."""
        self._sink, sink._source, self._left = sink, self, length
        leftover, self._buffer = bytes(self._buffer), bytearray()
        if leftover:
            self._pass_on(leftover)
        if self._left == 0 or self._eof:
            self._finish_input()
        elif not sink._write_paused:
            self._resume()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        """Close once queued bytes are written, or after the idle timeout if the peer reads none."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
            if self.transport.get_write_buffer_size():
                asyncio.get_running_loop().call_later(self.limits.idle_timeout, self.abort)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _pass_on(self, data: bytes) -> None:
        assert self._sink is not None
        if self._left is not None:
            data = data[: self._left]
            self._left -= len(data)
        self._sink.write(data)
        if self._left == 0:
            self._finish_input()

    def _finish_input(self) -> None:
        if self._sink is not None and self._left is None and self._eof:
            transport = self._sink.transport
            if transport is not None and not transport.is_closing() and transport.can_write_eof():
                transport.write_eof()  # a half-close travels on, as TLS and plain TCP expect
        if self._left == 0:
            self._pause()  # the body is over; what follows is not ours to pass on
        if not self.done.done():
            self.done.set_result(None)

    def _pause(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


# -- HTTP heads ----------------------------------------------------------------------------


@dataclass
class _Head:
    """A request or response head: its start line's three parts and its header fields."""

    first: str
    second: str
    third: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name]
        return ", ".join(values) if values else None

    def content_length(self) -> int | None:
        values = {value.strip() for key, value in self.headers if key.lower() == "content-length"}
        if not values:
            return None
        if len(values) > 1 or not next(iter(values)).isdigit():
            raise _ProtocolError(400, "The Content-Length header is not valid.")
        return int(values.pop())

    def end_to_end(self) -> list[tuple[str, str]]:
        """Headers minus the hop-by-hop ones, including any the Connection header names."""
        named = {token.strip().lower() for token in (self.get("connection") or "").split(",")}
        return [(k, v) for k, v in self.headers if k.lower() not in _HOP_BY_HOP and k.lower() not in named]


def _parse_head(raw: bytes) -> _Head:
    lines = raw.decode("latin-1").split("\r\n")
    parts = [*lines[0].split(" ", 2), ""]  # a status line may lack its reason phrase
    if not parts[0] or not parts[1]:
        raise _ProtocolError(400, "The request line is not valid HTTP.")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        # whitespace in a name or a folded line lets two parsers disagree (RFC 9112 section 5.1)
        if not colon or not name or name != name.strip() or " " in name or line[0] in " \t":
            raise _ProtocolError(400, "A header line is not valid HTTP.")
        headers.append((name, value.strip()))
    return _Head(parts[0], parts[1], parts[2], headers)


def _render_head(start_line: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [start_line, *(f"{name}: {value}" for name, value in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _answer(status: int, text: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    body = (text + "\n").encode()
    phrases = {
        400: "Bad Request",
        403: "Forbidden",
        407: "Proxy Authentication Required",
        408: "Request Timeout",
        431: "Request Header Fields Too Large",
        501: "Not Implemented",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *(extra or []),
    ]
    return _render_head(f"HTTP/1.1 {status} {phrases.get(status, 'Error')}", headers) + body


def _split_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"; 400 when it is neither."""
    parts = urlsplit("//" + authority)
    try:
        host, port = parts.hostname, parts.port or default_port
    except ValueError:
        host, port = None, None
    if not host or not port or "@" in authority:
        raise _ProtocolError(400, "The target is not a host and port.")
    return host, port


def _body_length(request_method: str, response: _Head) -> int | None:
    """How many body bytes follow a response head; None: until the server closes (RFC 9112 6.3)."""
    status = int(response.second)
    if request_method == "HEAD" or status in (204, 304):
        return 0
    if response.get("transfer-encoding") is not None:
        return None
    return response.content_length()


# -- the proxy -----------------------------------------------------------------------------


class EgressProxy:
    """An HTTP proxy on loopback that connects only to addresses its policy allows.

    `await start()`, give each guarded download `aria2_options(download_id)`, read
    `refusals(download_id)` when it fails, `forget(download_id)` when it is over,
    `await stop()`. Runs on the caller's event loop; the registry methods may be
    called from any thread.
    """

    def __init__(
        self,
        policy: AddressPolicy = default_policy,
        resolver: Resolver = system_resolver,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: Limits | None = None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.host = host
        self.port = port
        self.limits = limits or Limits()
        self._server: asyncio.Server | None = None
        self._downloads: dict[str, _Download] = {}
        self._by_user: dict[str, str] = {}
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._streams: set[_Stream] = set()

    # lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Stream(self.limits, self._accepted), self.host, self.port, backlog=512
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("egress proxy listening on %s", self.url)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for stream in list(self._streams):
            stream.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> EgressProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # the registry

    def credentials_for(self, download_id: str) -> tuple[str, str]:
        """The (user, password) that marks a request as this download's; the same pair each call."""
        with self._lock:
            entry = self._downloads.get(download_id)
            if entry is None:
                entry = _Download("d" + secrets.token_hex(8), secrets.token_urlsafe(24))
                self._downloads[download_id] = entry
                self._by_user[entry.user] = download_id
            return entry.user, entry.password

    def aria2_options(self, download_id: str) -> dict[str, str]:
        """aria2 options that send every protocol of this download through the proxy."""
        return aria2_proxy_options(self.proxy_url(download_id))

    def proxy_url(self, download_id: str) -> str:
        """The proxy with this download's credentials in it, for an engine to use."""
        user, password = self.credentials_for(download_id)
        return f"http://{user}:{password}@{self.host}:{self.port}"

    def refusals(self, download_id: str) -> list[Refusal]:
        with self._lock:
            entry = self._downloads.get(download_id)
            return list(entry.refusals) if entry else []

    def forget(self, download_id: str) -> None:
        """Drop a finished download: its credentials stop working, its refusals are gone."""
        with self._lock:
            entry = self._downloads.pop(download_id, None)
            if entry is not None:
                self._by_user.pop(entry.user, None)

    def _download_for(self, head: _Head) -> str | None:
        """The download whose credentials the request carries, or None."""
        scheme, _, encoded = (head.get("proxy-authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        with self._lock:
            download_id = self._by_user.get(user)
            entry = self._downloads.get(download_id) if download_id is not None else None
            if entry is None or not hmac.compare_digest(entry.password.encode(), password.encode()):
                return None
            return download_id

    def _record(self, download_id: str, refusal: Refusal) -> None:
        with self._lock:
            entry = self._downloads.get(download_id)
            if entry is not None and refusal not in entry.refusals and len(entry.refusals) < _MAX_REFUSALS:
                entry.refusals.append(refusal)
        log.warning("egress: refused %s for download %s: %s", refusal.host, download_id, refusal.reason)

    # serving one client connection

    def _accepted(self, client: _Stream) -> None:
        if len(self._streams) >= self.limits.max_connections:
            client.write(_answer(503, "Too many connections through the download proxy; try again."))
            client.close()
            return
        self._streams.add(client)
        task = asyncio.get_running_loop().create_task(self._serve(client))
        self._tasks.add(task)
        task.add_done_callback(lambda _: self._ended(task, client))

    def _ended(self, task: asyncio.Task[None], client: _Stream) -> None:
        self._tasks.discard(task)
        self._streams.discard(client)
        if not task.cancelled() and task.exception() is not None:
            log.error("egress: a connection failed unexpectedly", exc_info=task.exception())

    async def _serve(self, client: _Stream) -> None:
        try:
            try:
                raw = await asyncio.wait_for(client.read_head(), self.limits.head_timeout)
            except TimeoutError:
                raise _ProtocolError(408, "The request was not sent in time.") from None
            if raw is None:
                return
            head = _parse_head(raw)
            if not head.third.startswith("HTTP/1."):
                raise _ProtocolError(400, "The request line is not valid HTTP/1.1.")
            download_id = self._download_for(head)
            if download_id is None:
                raise _ProtocolError(407, "This proxy needs a download's credentials.")
            if head.first == "CONNECT":
                await self._tunnel(client, head, download_id)
            else:
                await self._forward(client, head, download_id)
        except _ProtocolError as error:
            extra = [("Proxy-Authenticate", _REALM)] if error.status == 407 else None
            client.write(_answer(error.status, error.text, extra))
        except TimeoutError:
            client.write(_answer(504, "The request timed out at the download proxy."))
        except (OSError, ValueError) as error:
            log.debug("egress: connection failed: %s", error)
        finally:
            client.close()

    async def _open(self, host: str, port: int, download_id: str) -> _Stream:
        """Resolve once, check every address, connect to a checked one: never resolve again."""
        try:
            addresses = await asyncio.wait_for(self._resolve(host, port), self.limits.connect_timeout)
        except (OSError, UnicodeError) as error:
            raise _ProtocolError(502, f"The download proxy could not resolve {host}.") from error
        if not addresses:
            raise _ProtocolError(502, f"The download proxy could not resolve {host}.")
        for address in addresses:
            reason = self.policy(host, address)
            if reason is not None:
                refusal = Refusal(host, str(address), reason)
                self._record(download_id, refusal)
                raise _ProtocolError(403, f"blocked_target: {host} ({address}) is {reason}.")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.connect_timeout
        for address in addresses:
            try:
                _, stream = await asyncio.wait_for(
                    loop.create_connection(lambda: _Stream(self.limits), str(address), port),
                    max(0.0, deadline - loop.time()),
                )
            except (OSError, TimeoutError) as error:
                log.debug("egress: %s (%s) port %s: %s", host, address, port, error)
                continue
            return stream
        raise _ProtocolError(502, f"The download proxy could not connect to {host} port {port}.")

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        with contextlib.suppress(ValueError):
            return [ipaddress.ip_address(host)]  # a literal needs no name server
        return await self.resolver(host, port)

    async def _tunnel(self, client: _Stream, head: _Head, download_id: str) -> None:
        host, port = _split_authority(head.second, None)
        upstream = await self._open(host, port, download_id)
        try:
            client.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            client.splice(upstream)
            upstream.splice(client)
            await self._relay(client, upstream, until_both=True)
        finally:
            upstream.close()

    async def _forward(self, client: _Stream, head: _Head, download_id: str) -> None:
        parts = urlsplit(head.second)
        if parts.scheme.lower() != "http" or not parts.netloc:
            raise _ProtocolError(
                501 if parts.scheme else 400,
                "This proxy forwards http:// requests and tunnels https (CONNECT) only.",
            )
        if head.get("transfer-encoding") is not None:
            raise _ProtocolError(501, "Request bodies need a Content-Length through this proxy.")
        body = head.content_length() or 0
        authority = parts.netloc.rpartition("@")[2]
        host, port = _split_authority(authority, 80)
        path = head.second.split("#", 1)[0][len(parts.scheme) + 3 + len(parts.netloc) :]
        if not path.startswith("/"):
            path = "/" + path  # "http://host" and "http://host?q" have an empty path
        headers = [(k, v) for k, v in head.end_to_end() if k.lower() != "host"]
        request = [("Host", authority), *headers, ("Connection", "close")]
        upstream = await self._open(host, port, download_id)
        try:
            upstream.write(_render_head(f"{head.first} {path} {head.third}", request))
            client.splice(upstream, body)
            response, length = await self._response_head(upstream, head.first)
            status_line = f"{response.first} {response.second} {response.third}".rstrip()
            client.write(_render_head(status_line, [*response.end_to_end(), ("Connection", "close")]))
            upstream.splice(client, length)
            await self._relay(client, upstream, until_both=False)
        finally:
            upstream.close()

    async def _response_head(self, upstream: _Stream, method: str) -> tuple[_Head, int | None]:
        """The final response head and its body's length; interim 1xx heads are dropped."""
        for _ in range(8):
            try:
                raw = await asyncio.wait_for(upstream.read_head(), self.limits.idle_timeout)
                if raw is None:
                    raise _ProtocolError(502, "The server closed the connection without answering.")
                response = _parse_head(raw)
                if not response.first.startswith("HTTP/1.") or not response.second.isdigit():
                    raise _ProtocolError(502, "The server's answer is not valid HTTP.")
                length = _body_length(method, response)
            except _ProtocolError as error:
                raise _ProtocolError(502, f"The server's answer was refused: {error.text}") from error
            if response.second == "101":
                raise _ProtocolError(502, "The server switched protocols, which this proxy does not relay.")
            if not response.second.startswith("1"):  # the client sent no Expect: drop 100 and 103
                return response, length
        raise _ProtocolError(502, "The server sent too many interim answers.")

    async def _relay(self, client: _Stream, upstream: _Stream, until_both: bool) -> None:
        """Wait until the bytes are through (both ways, or the response), a side is gone, or
        nothing moved for too long; the caller then closes both."""
        loop = asyncio.get_running_loop()
        wanted = {client.done, upstream.done} if until_both else {upstream.done}
        while not all(f.done() for f in wanted) and not client.lost.done() and not upstream.lost.done():
            quiet = loop.time() - max(client.last_active, upstream.last_active)
            if quiet >= self.limits.idle_timeout:
                client.abort()
                upstream.abort()
                return
            pending = {f for f in wanted if not f.done()} | {client.lost, upstream.lost}
            await asyncio.wait(
                pending, timeout=self.limits.idle_timeout - quiet, return_when="FIRST_COMPLETED"
            )
