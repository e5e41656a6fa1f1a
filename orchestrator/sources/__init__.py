"""Where a pasted link is checked and turned into something an engine can fetch.

Each source module offers `matches(url) -> bool` and
`resolve(url, credentials) -> Resolved`; the first that matches wins, and
`direct` matches every http(s) link. Sources never write to disk.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import OrchestratorError
from . import direct
from .base import Credentials, Resolved

MAX_URL_LENGTH = 4096
SOURCES = [direct]

__all__ = ["Credentials", "Resolved", "identify", "resolve", "validate_url"]


def validate_url(raw: object) -> str:
    """The link, trimmed, or an error saying what is wrong with it."""
    if not isinstance(raw, str) or not raw.strip():
        raise OrchestratorError("empty_url", "Paste a link to download.")
    url = raw.strip()
    if len(url) > MAX_URL_LENGTH:
        raise OrchestratorError("invalid_url", f"That link is too long (over {MAX_URL_LENGTH} characters).")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise OrchestratorError("invalid_url", "A link cannot contain spaces or control characters.")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise OrchestratorError("invalid_url", "That does not look like a web link.") from None
    if parts.scheme.lower() not in ("http", "https"):
        if not parts.scheme:
            raise OrchestratorError(
                "invalid_url", "That does not look like a web link (http:// or https://)."
            )
        raise OrchestratorError(
            "unsupported_scheme",
            f"Only http and https links can be downloaded, not {parts.scheme[:20]}: links.",
        )
    if not host:
        raise OrchestratorError("invalid_url", "The link has no host name.")
    return url


def identify(url: str) -> str:
    """The name of the source that will handle a link (no network)."""
    return next(source.NAME for source in SOURCES if source.matches(url))


def resolve(url: str, credentials: Credentials) -> Resolved:
    """Blocking: call from a worker thread."""
    source = next(source for source in SOURCES if source.matches(url))
    return source.resolve(url, credentials)
