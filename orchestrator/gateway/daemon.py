"""The gateway's one connection to the aria2 daemon: its WebSocket, for calls and notifications.

aria2 serves the same JSON-RPC on `ws://host:port/jsonrpc` as over HTTP, and sends its
notifications there to every connected client (aria2's manual, "JSON-RPC over
WebSocket"). So one WebSocket carries everything: calls go out with ids of their own
and their answers are matched back by id (aria2 answers in order, but a match by id
needs no such promise), and notifications are handed to `deliver`. That is a third of
the latency of a kept-alive HTTP call to aria2 from a worker thread, measured on
loopback (0.10-0.15 ms against 0.44-0.50 ms for aria2.getVersion), and no thread.

The connection is reopened, with a growing pause, whenever the daemon restarts; a call
made meanwhile waits a moment for it, then fails with an error a person can read. The
daemon's secret is put in here and nowhere else, into the call and into each call
inside `system.multicall` (aria2's manual, "RPC authorization secret token").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect

from .jsonrpc import METHOD_FAILED, MULTICALL, NO_SECRET_METHODS, Fault, with_secret

log = logging.getLogger(__name__)
# websockets logs every frame at DEBUG, and the frames carry the daemon's secret: its logger
# for this connection never goes below INFO, whatever the root logger's level
_socket_log = logging.getLogger(f"{__name__}.socket")
_socket_log.setLevel(logging.INFO)

CALL_TIMEOUT = 30.0  # aria2 is single-threaded: a slow disk stalls its RPC for a while
CONNECT_WAIT = 1.0  # how long a call waits for a daemon that is reconnecting
FIRST_RETRY = 0.25  # seconds before reconnecting to a daemon that went away; doubles up to
LAST_RETRY = 5.0
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # tellStopped of a thousand downloads is megabytes
NOTIFICATIONS = frozenset(
    {
        "aria2.onDownloadStart",
        "aria2.onDownloadPause",
        "aria2.onDownloadStop",
        "aria2.onDownloadComplete",
        "aria2.onDownloadError",
        "aria2.onBtDownloadComplete",
    }
)
Deliver = Callable[[dict[str, Any]], None]


def unreachable() -> Fault:
    return Fault(
        METHOD_FAILED,
        "The server's aria2 daemon is not answering (it may be restarting); try again in a moment.",
        "daemon_unreachable",
        503,
    )


def refused_our_secret() -> Fault:
    return Fault(
        METHOD_FAILED,
        "The server's aria2 daemon does not accept the server's own secret; its operator must "
        "give both the same ARIA2_SECRET.",
        "daemon_secret_mismatch",
        502,
    )


def websocket_url(rpc_url: str) -> str:
    """The daemon's WebSocket: its RPC URL with ws:// (wss:// for https://)."""
    parts = urlsplit(rpc_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path or "/jsonrpc", "", ""))


class DaemonConnection:
    """Calls to the daemon whose RPC URL is `rpc_url` (http://127.0.0.1:6800/jsonrpc), and
    its notifications to `deliver`, on the event loop, between start() and stop()."""

    def __init__(self, rpc_url: str, secret: str, deliver: Deliver, timeout: float = CALL_TIMEOUT) -> None:
        self.url = websocket_url(rpc_url)
        self._secret = secret
        self._deliver = deliver
        self._timeout = timeout
        self._socket: ClientConnection | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._up = asyncio.Event()
        self._wake = asyncio.Event()  # a call is waiting: reconnect now rather than after the pause
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._socket is not None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._stay_connected(), name="aria2-daemon")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def call(self, method: str, params: list[Any]) -> dict[str, Any]:
        """The daemon's answer object (`result` or `error`); Fault when it cannot be had."""
        socket = await self._open_socket()
        call_id = f"gateway-{next(self._ids)}"
        request = {
            "jsonrpc": "2.0",
            "id": call_id,
            "method": method,
            "params": self._authorized(method, params),
        }
        answered = asyncio.get_running_loop().create_future()
        self._pending[call_id] = answered
        try:
            await socket.send(json.dumps(request, separators=(",", ":")))
            answer: dict[str, Any] = await asyncio.wait_for(answered, self._timeout)
        except (websockets.exceptions.ConnectionClosed, TimeoutError):
            raise unreachable() from None
        finally:
            self._pending.pop(call_id, None)
        if _is_unauthorized(answer.get("error")) or (
            method == MULTICALL and any(_is_unauthorized(item) for item in answer.get("result") or [])
        ):
            log.error("the aria2 daemon refused the gateway's secret")
            raise refused_our_secret()
        return answer

    def _authorized(self, method: str, params: list[Any]) -> list[Any]:
        if method in NO_SECRET_METHODS:
            return params
        if method == MULTICALL and params and isinstance(params[0], list):
            inner = [
                {**spec, "params": self._authorized(spec["methodName"], spec["params"])} for spec in params[0]
            ]
            return [inner, *params[1:]]
        return with_secret(self._secret, params)

    async def _open_socket(self) -> ClientConnection:
        if self._socket is None:
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(), CONNECT_WAIT)
        if self._socket is None:
            raise unreachable()
        return self._socket

    async def _stay_connected(self) -> None:
        pause = FIRST_RETRY
        while True:
            try:
                async with connect(
                    self.url,
                    proxy=None,
                    compression=None,
                    open_timeout=5.0,
                    max_size=MAX_ANSWER_BYTES,
                    logger=_socket_log,
                ) as socket:
                    self._socket, pause = socket, FIRST_RETRY
                    self._up.set()
                    async for message in socket:
                        self._receive(message)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as error:
                if self._socket is not None:
                    log.info(
                        "lost the connection to the aria2 daemon (%s); reconnecting", type(error).__name__
                    )
            finally:
                self._socket = None
                self._up.clear()
                self._fail_pending()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
            pause = min(pause * 2, LAST_RETRY)

    def _receive(self, message: str | bytes) -> None:
        try:
            data = json.loads(message)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        waiting = self._pending.get(data["id"]) if isinstance(data.get("id"), str) else None
        if waiting is not None:
            if not waiting.done():
                waiting.set_result(data)
        elif data.get("method") in NOTIFICATIONS and "id" not in data:
            self._deliver(data)

    def _fail_pending(self) -> None:
        for waiting in self._pending.values():
            if not waiting.done():
                waiting.set_exception(unreachable())


def _is_unauthorized(error: Any) -> bool:
    return isinstance(error, dict) and error.get("code") == 1 and error.get("message") == "Unauthorized"
