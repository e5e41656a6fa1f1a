"""Where a pasted link is checked and turned into something an engine can fetch.

Each source module offers `matches(url) -> bool` and
`resolve(url, credentials) -> Resolved`; the first that matches wins, and
`direct` matches every http(s) link. Sources never write to disk.
A service source may also offer `parse(url)` (raises for a link of its own it
cannot use), `KNOWS_MODEL_TYPE` (type "auto" works), `sidecars(metadata)` and
`pin(url, metadata)` (the link to the exact version a download began with).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..errors import OrchestratorError
from . import civitai, direct, gdrive, huggingface, policy
from .base import Credentials, Resolved

MAX_URL_LENGTH = 4096
SOURCES = [civitai, huggingface, gdrive, direct]  # direct takes whatever the others do not

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
    if _shorthand(url):
        return _checked(url)
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
    if parts.username or parts.password:
        # the link is kept in the job list and shown to every page: no passwords in it
        raise OrchestratorError(
            "credentials_in_link",
            "Links with a user name or password in them are not accepted, since the link is "
            "stored and shown; use a link that needs no password, or a token field.",
        )
    return _checked(url)


def _shorthand(url: str) -> bool:
    """Not a web link, but a form a service knows: an AIR URN, hf://, owner/repo/file, model@version."""
    return not url.lower().startswith(("http://", "https://")) and any(s.matches(url) for s in SOURCES)


def _checked(url: str) -> str:
    """A service link its source cannot use is refused now, before any job exists."""
    source = next(source for source in SOURCES if source.matches(url))
    if hasattr(source, "parse"):
        source.parse(url)
    return url


def identify(url: str) -> str:
    """The name of the source that will handle a link (no network)."""
    return next(source.NAME for source in SOURCES if source.matches(url))


def knows_model_type(name: str | None) -> bool:
    """True when the source says what kind of model a link is, so type "auto" can work."""
    return any(getattr(source, "KNOWS_MODEL_TYPE", False) for source in SOURCES if name == source.NAME)


def sidecars(name: str | None, metadata: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Blocking: files the source wants beside the model, as (suffix, content); most want none."""
    for source in SOURCES:
        if name == source.NAME and hasattr(source, "sidecars"):
            return source.sidecars(metadata)
    return []


def pin(url: str, metadata: dict[str, Any]) -> str:
    """The link to exactly the file a download began with, to continue it: a link that names
    a branch may point to other bytes by now (Hugging Face). Other links already name one file."""
    for source in SOURCES:
        if source.matches(url):
            return source.pin(url, metadata) if hasattr(source, "pin") else url
    return url


def resolve(url: str, credentials: Credentials, block_private: bool = False) -> Resolved:
    """Blocking: call from a worker thread. With block_private, only public hosts are fetched."""
    with policy.blocking_private(block_private):
        source = next(source for source in SOURCES if source.matches(url))
        policy.check_target(url)
        resolved = source.resolve(url, credentials)
        for final in resolved.urls:
            policy.check_target(final)
    return resolved
