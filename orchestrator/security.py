"""Who may talk to the app: Host and Origin checks, and the access token when exposed.

Three threats, three checks, all in one ASGI middleware in front of every route:

- A web page in the user's own browser calling http://127.0.0.1:8000 (CSRF, or a
  cross-site WebSocket): browsers send an Origin header, and it must be this app's own.
- DNS rebinding (evil.example resolving to 127.0.0.1): the Host header must name
  this machine when we listen on loopback.
- Strangers on the network: bound to anything but loopback, every request needs the
  access token, as a Bearer header (scripts) or a cookie (the page; set once by
  opening the `/?token=...` link printed at start, as Jupyter does).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "orchestrator_session"
RPC_PATH = "/jsonrpc"
MIN_TOKEN_LENGTH = 16
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
# token=, also upper case and percent-encoded (%74oken=, token%3D): what a log line may show of one
_TOKEN_IN_QUERY = re.compile(
    r"((?:t|%74)(?:o|%6f)(?:k|%6b)(?:e|%65)(?:n|%6e)(?:=|%3d))[^&\s\"']+", re.IGNORECASE
)


def is_loopback(host: str) -> bool:
    if host.strip("[]") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def request_exposed(scope: Scope) -> bool:
    """A request that names a host other than this machine reached us through a tunnel, a
    reverse proxy or the network: it counts as exposed, whatever address the app listens on."""
    return not is_loopback(_hostname(_headers(scope).get("host", "")))


def new_access_token() -> str:
    return secrets.token_urlsafe(24)


def check_token_strength(token: str) -> None:
    if len(token) < MIN_TOKEN_LENGTH:
        raise SystemExit(f"ORCHESTRATOR_TOKEN must be at least {MIN_TOKEN_LENGTH} characters long")


def session_value(token: str) -> str:
    """What the cookie holds: derived from the token, so the cookie never is the token."""
    return hashlib.sha256(f"orchestrator-session:{token}".encode()).hexdigest()


def redact(text: str) -> str:
    return _TOKEN_IN_QUERY.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """Keeps `?token=...` (the page's login link, a WebSocket's) out of the server's logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


class AccessGuard:
    """`token` is always set (given, or generated at start); it is required whenever a
    request is not purely local: the app is bound beyond loopback, or the Host header
    names something else (a tunnel, a reverse proxy, or a DNS-rebinding page)."""

    def __init__(self, app: ASGIApp, token: str, bound_to_loopback: bool) -> None:
        self.app = app
        self.token = token
        self.session = session_value(token)
        self.bound_to_loopback = bound_to_loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") == RPC_PATH:
            # aria2 clients send their secret inside the JSON-RPC call, where only the gateway
            # can read it: it applies these same rules itself (orchestrator/gateway/rpc.py)
            await self.app(scope, receive, send)
            return
        if self._login_link(scope):
            await _redirect_with_cookie(scope, send, self.session)
            return
        problem = self._problem(scope, _headers(scope))
        if problem is None:
            await self.app(scope, receive, send)
        else:
            await _refuse(scope, receive, send, *problem)

    def _problem(self, scope: Scope, headers: dict[str, str]) -> tuple[str, str, int] | None:
        host = headers.get("host", "")
        authenticated = self._authenticated(headers)
        origin = headers.get("origin")
        unsafe = scope["type"] == "websocket" or scope.get("method") not in ("GET", "HEAD", "OPTIONS")
        # The session cookie never stands in for the Origin check: a browser sends it with a
        # request from any page of this host, other ports included (SameSite ignores ports),
        # e.g. the SD web UI on :7860. Only a token the caller holds (a Bearer header) does.
        if origin and unsafe and not self._bearer(headers) and not _same_origin(origin, host):
            return ("forbidden_origin", "Requests from other web sites are not allowed.", 403)
        local = self.bound_to_loopback and is_loopback(_hostname(host))
        if not local and not authenticated:
            return (
                "unauthorized",
                "This server needs its access token: open the link printed "
                "when it started, or send 'Authorization: Bearer <token>'.",
                401,
            )
        return None

    def _bearer(self, headers: dict[str, str]) -> bool:
        bearer = headers.get("authorization", "")
        return bearer.lower().startswith("bearer ") and hmac.compare_digest(
            bearer[7:].strip().encode(), self.token.encode()
        )

    def _authenticated(self, headers: dict[str, str]) -> bool:
        if self._bearer(headers):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is simply no session
            return False
        value = cookie.get(COOKIE)
        return value is not None and hmac.compare_digest(value.value.encode(), self.session.encode())

    def _login_link(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope.get("method") != "GET":
            return False
        given = parse_qs(scope.get("query_string", b"").decode(errors="replace")).get("token", [""])[0]
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _hostname(host_header: str) -> str:
    return urlsplit(f"//{host_header}").hostname or ""


def _same_origin(origin: str, host_header: str) -> bool:
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == host_header.lower()


async def _redirect_with_cookie(scope: Scope, send: Send, session: str) -> None:
    """Trade the token in the URL for a cookie, and drop it from the address bar."""
    query = {k: v for k, v in parse_qs(scope.get("query_string", b"").decode()).items() if k != "token"}
    location = scope.get("path", "/") + (f"?{urlencode(query, doseq=True)}" if query else "")
    cookie = f"{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict"
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", location.encode()),
                (b"set-cookie", cookie.encode()),
                (b"cache-control", b"no-store"),
                (b"content-length", b"0"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _refuse(scope: Scope, receive: Receive, send: Send, code: str, message: str, status: int) -> None:
    if scope["type"] == "websocket":
        # accept, then close at once with 1008 and the reason (docs/PROTOCOL.md): a close before
        # the accept would reach the browser as a bare HTTP 403 that the page cannot read
        await receive()  # the websocket.connect event
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1008, "reason": code})
        return
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
