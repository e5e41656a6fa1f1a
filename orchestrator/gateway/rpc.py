"""The gateway's door: aria2's JSON-RPC at `/jsonrpc` on the app's own port.

aria2 RPC clients (AriaNg, aria2p, the npm package `aria2`) talk to it as to aria2
itself, with the app's access token as their secret, through the one tunnel people have
to a Colab or rented box. What they may do is gateway/policy.py; how a payload is
answered is gateway/dispatch.py. This module is the transport:

- HTTP POST: one call or a batch. HTTP GET: aria2's GET form; JSONP is refused (it
  would make this server's answers a script any web page can pull in). OPTIONS: the
  CORS preflight of a page on another site (a hosted AriaNg). Any Origin is allowed,
  never with credentials: the secret in the body authenticates, so a cookie of the
  app's page is worth nothing here (no cross-site request can borrow it).
- WebSocket at the same path: calls in, answers out (several at once: an addUri the
  orchestrator resolves may take a while), and the daemon's notifications to every
  client that has shown the secret, or is on this machine (aria2 tells anyone).
- Bodies and messages are capped at 64 KiB, batches and multicalls at 100 calls.

The app's AccessGuard (orchestrator/security.py) lets `/jsonrpc` through, since its
token check needs a header aria2 clients do not send; the same rules hold here with
the token as the secret: every call needs it (a non-loopback Host, a server bound
beyond loopback, another site's Origin: all the more), and a WebSocket opened by
another site's page must show it in its first message or is refused as the app
refuses one: accepted, then closed with 1008 and the reason (a close before the
accept would reach the page as a bare HTTP 403). The secret is never logged: the GET
form's params (base64 is no disguise) are dropped from what the access log sees, and
the WebSocket frames uvicorn's server logs at DEBUG are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Coroutine, Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..events import Hub, Subscription
from ..security import is_loopback
from .daemon import DaemonConnection
from .dispatch import Caller, Dispatcher
from .intake import Intake
from .jsonrpc import (
    MAX_BODY_BYTES,
    METHOD_FAILED,
    Fault,
    decode_get,
    error_answer,
    loggable_query,
    parse_body,
)
from .policy import Policy

PATH = "/jsonrpc"  # aria2's, and AriaNg's default "RPC interface"
MAX_IN_FLIGHT = 8  # calls one WebSocket client may have running at once
FORBIDDEN_ORIGIN = "forbidden_origin"
MEDIA_TYPE = "application/json-rpc"  # what aria2 answers with
CORS = {"Access-Control-Allow-Origin": "*"}
ANSWER_HEADERS = {**CORS, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_HEADER_NAMES = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(?:\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*")


class Gateway:
    """aria2's JSON-RPC for the app's clients, in front of the daemon at `daemon_url`.

    `access_token` is what clients give as their secret; `daemon_secret` stays here.
    `bound_to_loopback`: the server listens on loopback only (the app's `not exposed`)."""

    def __init__(
        self,
        daemon_url: str,
        daemon_secret: str,
        access_token: str,
        policy: Policy,
        intake: Intake | None = None,
        *,
        bound_to_loopback: bool = True,
    ) -> None:
        self.bound_to_loopback = bound_to_loopback
        self._hub = Hub()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._daemon = DaemonConnection(daemon_url, daemon_secret, self._notified)
        self._dispatcher = Dispatcher(access_token, policy, intake, self._daemon)
        self._clients: set[_Client] = set()

    async def start(self) -> None:
        """Connect to the daemon, and stay connected (call on the app's event loop)."""
        _keep_frames_out_of_the_log()
        await self._daemon.start()

    async def stop(self) -> None:
        for client in list(self._clients):
            await client.close(1001, "server_stopping")
        await self._daemon.stop()

    def listen(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """`listener` hears each of the daemon's notifications too (on the event loop)."""
        self._listeners.append(listener)

    def _notified(self, notification: dict[str, Any]) -> None:
        self._hub.publish(notification)
        for listener in self._listeners:
            listener(notification)

    @property
    def listening(self) -> bool:
        """Connected to the daemon right now (calls and notifications)."""
        return self._daemon.connected

    @property
    def clients(self) -> int:
        return len(self._clients)

    # -- HTTP ---------------------------------------------------------------------------

    async def serve_http(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return _preflight(request.headers)
        if request.method not in ("GET", "POST"):
            return Response(status_code=405, headers={**CORS, "Allow": "GET, POST, OPTIONS"})
        try:
            payload = await _read_post(request) if request.method == "POST" else _read_get(request)
        except Fault as fault:
            return _answer_response(error_answer(None, fault), fault.status)
        reply = await self._dispatcher.handle(payload, self._caller(request.headers))
        return _answer_response(reply.body, reply.status)

    # -- WebSocket ----------------------------------------------------------------------

    async def serve_websocket(self, socket: WebSocket) -> None:
        await socket.accept()
        client = _Client(socket, self._caller(socket.headers))
        self._clients.add(client)
        if client.caller.local:
            client.subscribe(self._hub)
        try:
            await self._converse(client)
        finally:
            self._clients.discard(client)
            await client.stop()

    async def _converse(self, client: _Client) -> None:
        while True:
            message = await client.socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                payload = _frame_payload(message)
            except Fault as fault:
                if client.must_prove:
                    await client.close(1008, FORBIDDEN_ORIGIN)
                    return
                await client.send(error_answer(None, fault))
                continue
            proofs = self._dispatcher.secrets(payload)
            if client.must_prove and not (proofs and all(proofs)):
                await client.close(1008, FORBIDDEN_ORIGIN)
                return
            if any(proofs):
                client.subscribe(self._hub)
            await client.run(self._answer_frame(client, payload))

    async def _answer_frame(self, client: _Client, payload: Any) -> None:
        reply = await self._dispatcher.handle(payload, client.caller)
        await client.send(reply.body)

    def _caller(self, headers: Headers) -> Caller:
        host = headers.get("host", "")
        origin = headers.get("origin")
        foreign = origin is not None and not _same_origin(origin, host)
        local = self.bound_to_loopback and is_loopback(_hostname(host)) and not foreign
        return Caller(local=local, foreign_origin=foreign)


def make_routes(gateway: Gateway) -> list[BaseRoute]:
    """`/jsonrpc` for HTTP and for WebSocket."""
    http = Route(PATH, gateway.serve_http, methods=["GET", "POST", "OPTIONS"])  # HEAD comes with GET: 405
    return [http, WebSocketRoute(PATH, gateway.serve_websocket)]


class _Client:
    """One WebSocket client. Answers and notifications leave one at a time; notifications
    wait in a bounded queue that drops the oldest for a client that does not read
    (orchestrator/events.py), answers are never dropped."""

    def __init__(self, socket: WebSocket, caller: Caller) -> None:
        self.socket = socket
        self.caller = caller
        self._sending = asyncio.Lock()
        self._subscription: Subscription | None = None
        self._pump: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._room = asyncio.Semaphore(MAX_IN_FLIGHT)

    @property
    def must_prove(self) -> bool:
        """Opened by another site's page and has not shown the secret yet."""
        return self.caller.foreign_origin and self._subscription is None

    def subscribe(self, hub: Hub) -> None:
        if self._subscription is None:
            self._subscription = hub.subscribe()
            self._pump = asyncio.create_task(self._forward(self._subscription))

    async def _forward(self, subscription: Subscription) -> None:
        while True:
            await self.send_text(await subscription.get())

    async def run(self, work: Coroutine[Any, Any, None]) -> None:
        """Answer a call in the background; a client with too many running waits here."""
        await self._room.acquire()
        task = asyncio.create_task(work)
        self._calls.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._calls.discard(task)
        self._room.release()

    async def send(self, body: Any) -> None:
        await self.send_text(json.dumps(body, separators=(",", ":")))

    async def send_text(self, text: str) -> None:
        async with self._sending:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.socket.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        async with self._sending:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.socket.close(code, reason)

    async def stop(self) -> None:
        tasks = [*self._calls, *([self._pump] if self._pump else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._subscription is not None:
            self._subscription.close()


class _NoFrames(logging.Filter):
    """uvicorn hands its WebSocket library the "uvicorn.error" logger, which then logs each
    frame at DEBUG ("< %s"), and a frame sent to /jsonrpc carries the client's secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in ("< %s", "> %s")


def _keep_frames_out_of_the_log() -> None:
    server_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _NoFrames) for f in server_log.filters):
        server_log.addFilter(_NoFrames())


def _too_large() -> Fault:
    return Fault(
        METHOD_FAILED,
        f"The request is larger than {MAX_BODY_BYTES // 1024} KiB; send fewer calls at once.",
        "message_too_large",
        413,
    )


async def _read_post(request: Request) -> Any:
    """The body, refused as soon as it grows past the limit (never read whole into memory)."""
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        raise _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
    return parse_body(bytes(body))


def _read_get(request: Request) -> Any:
    query = request.scope.get("query_string", b"").decode("latin-1")
    if len(query) > MAX_BODY_BYTES:
        raise _too_large()
    if "params=" in query:
        # the server's access log reads the query from this scope once we answer
        request.scope["query_string"] = loggable_query(query).encode("latin-1")
    payload, callback = decode_get(query)
    if callback is not None:
        raise Fault(
            METHOD_FAILED,
            "JSONP (jsoncallback) is not served here: it would let any web page run this server's "
            "answers as a script. Use POST, GET without jsoncallback, or a WebSocket.",
            "jsonp_refused",
        )
    return payload


def _frame_payload(message: Mapping[str, Any]) -> Any:
    raw = message.get("text")
    if raw is None:
        raw = message.get("bytes") or b""
    if len(raw.encode() if isinstance(raw, str) else raw) > MAX_BODY_BYTES:
        raise _too_large()
    return parse_body(raw)


def _answer_response(body: Any, status: int) -> Response:
    content = json.dumps(body, separators=(",", ":")).encode()
    return Response(content, status_code=status, headers=ANSWER_HEADERS, media_type=MEDIA_TYPE)


def _preflight(headers: Headers) -> Response:
    """What a browser asks before a cross-site POST with a JSON Content-Type (AriaNg sends
    one): any site, these methods, the headers it asks for (as aria2 does); and, for a
    public page reaching a loopback or private server, Chrome's Private Network Access."""
    allowed = {
        **CORS,
        "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
        "Access-Control-Max-Age": "86400",
    }
    asked = headers.get("access-control-request-headers", "")
    if asked and len(asked) < 1000 and _HEADER_NAMES.fullmatch(asked.strip()):
        allowed["Access-Control-Allow-Headers"] = asked.strip()
    if headers.get("access-control-request-private-network") == "true":
        allowed["Access-Control-Allow-Private-Network"] = "true"
    return Response(status_code=204, headers=allowed)


def _hostname(host_header: str) -> str:
    try:
        return urlsplit(f"//{host_header}").hostname or ""
    except ValueError:  # a malformed IPv6 literal
        return ""


def _same_origin(origin: str, host_header: str) -> bool:
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == host_header.lower()
