"""What the service sources share: settings from the environment, careful HTTP, token rules.

A service source talks to an API with a token and must never let that token
travel further. So every request here is made with allow_redirects=False unless
the caller says otherwise, and redirects are followed by the source itself.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import SplitResult, urlsplit

import requests

from .. import bounds
from ..errors import OrchestratorError
from ..net import HEADERS, USER_AGENT, session

__all__ = ["HEADERS", "USER_AGENT", "session"]

TIMEOUT = (10, 30)
MAX_HOPS = 5  # redirects a source follows on the service's own host
_ERROR_BODY_LIMIT = 64 * 1024


def setting(name: str, default: str) -> str:
    """A service address from the environment (read on every call, so tests can point it anywhere)."""
    value = os.environ.get(name, "").strip() or default
    return value.rstrip("/")


def token_from(given: str | None, variable: str) -> str | None:
    """The request's token, else the server's environment variable, else none."""
    if given:
        return given
    value = os.environ.get(variable, "").strip()
    return value or None


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def same_origin(url: str, other: str) -> bool:
    """Same scheme, host and port: the only place a token may be sent."""
    a, b = urlsplit(url), urlsplit(other)
    try:
        return (a.scheme.lower(), a.hostname, a.port) == (b.scheme.lower(), b.hostname, b.port)
    except ValueError:
        return False


def same_service(url: str, base: str) -> bool:
    """Host and port (the scheme's default when none is written) are `base`'s: a link to a
    configured endpoint (a mirror, a local fake) and not to another service on its host."""
    a, b = urlsplit(url), urlsplit(base)
    try:
        return bool(a.hostname) and (a.hostname, _port(a)) == (b.hostname, _port(b))
    except ValueError:
        return False


def _port(parts: SplitResult) -> int | None:
    return parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())


def send(session: requests.Session, method: str, url: str, service: str, **kwargs: Any) -> requests.Response:
    """One request; connection trouble becomes an error that names the service."""
    kwargs.setdefault("allow_redirects", False)
    kwargs.setdefault("timeout", TIMEOUT)
    try:
        return session.request(method, url, **kwargs)
    except requests.exceptions.TooManyRedirects:
        raise OrchestratorError("too_many_redirects", f"{service} redirects too many times.", 502) from None
    except requests.RequestException as exc:
        raise OrchestratorError("unreachable", f"Could not reach {service}: {reason(exc)}.", 502) from None


def error_body(response: requests.Response) -> dict[str, Any]:
    """The JSON an error answer carries, or {} (bodies are read only up to a small limit)."""
    try:
        raw = next(response.iter_content(_ERROR_BODY_LIMIT), b"")
    except requests.RequestException:
        return {}
    finally:
        response.close()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def json_object(response: requests.Response, service: str) -> dict[str, Any]:
    """A 200 answer's JSON object, read up to a cap (after decompression), or an error saying
    the service sent something else."""
    data = bounds.read_json(response, service)
    if not isinstance(data, dict):
        raise OrchestratorError(
            "origin_error",
            f"{service} answered with something that is not the JSON it should send; try again later.",
            502,
        )
    return data


def scrub(text: Any, secret: str | None, limit: int = 200) -> str:
    """A server's own words, cut short and with the token blanked out, fit for a message."""
    clean = " ".join(str(text).split())[:limit]
    return clean.replace(secret, "***") if secret else clean


def reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "it did not answer in time"
    if isinstance(exc, requests.exceptions.SSLError):
        return "its TLS certificate is not valid"
    if isinstance(exc, requests.ConnectionError):
        return "the connection failed"
    return type(exc).__name__
