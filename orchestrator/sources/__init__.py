"""Where a pasted link is checked and turned into something an engine can fetch.

Each module here is a `Source` (base.py): it knows its links (`matches`), checks
them (`parse`), resolves them (`resolve`), and may describe the model with files
beside it (`describe`). The first that matches wins; `direct` takes every http(s)
link the others do not. Sources never write to disk, and make every request
through `net.session(policy)`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..errors import OrchestratorError
from ..policy import Policy
from . import civitai, direct, gdrive, huggingface
from .base import Credentials, Description, Resolved, Source

MAX_URL_LENGTH = 4096
SOURCES: list[Source] = [civitai, huggingface, gdrive, direct]  # direct takes whatever the others do not

__all__ = ["Credentials", "Description", "Resolved", "Source", "identify", "resolve", "validate_url"]


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
    source_for(url).parse(url)
    return url


def source_for(url: str) -> Source:
    return next(source for source in SOURCES if source.matches(url))


def named(name: str | None) -> Source | None:
    return next((source for source in SOURCES if name == source.NAME), None)


def identify(url: str) -> str:
    """The name of the source that will handle a link (no network)."""
    return source_for(url).NAME


def knows_model_type(name: str | None) -> bool:
    """True when the source says what kind of model a link is, so type "auto" can work."""
    source = named(name)
    return source is not None and source.KNOWS_MODEL_TYPE


def describe(name: str | None, metadata: dict[str, Any], policy: Policy) -> Description | None:
    """Blocking: what the source says about the model for the files beside it, if anything."""
    source = named(name)
    return source.describe(metadata, policy) if source else None


def pin(url: str, metadata: dict[str, Any]) -> str:
    """The link to exactly the file a download began with, to continue it: a link that names
    a branch may point to other bytes by now (Hugging Face). Other links already name one file."""
    return source_for(url).pin(url, metadata)


def resolve(url: str, credentials: Credentials, policy: Policy) -> Resolved:
    """Blocking: call from a worker thread. Every host contacted is checked against `policy`."""
    source = source_for(url)
    policy.check(url)
    resolved = source.resolve(url, credentials, policy)
    for final in resolved.urls:
        check_engine_url(final)
        policy.check(final)
    return resolved


def check_engine_url(url: str) -> None:
    """Only http(s) goes to an engine, whatever a service or a redirect answered (a `magnet:`
    or `file:` Location would make aria2 start something nobody asked for)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise OrchestratorError(
            "unsupported_scheme",
            f"The server pointed this download to a {scheme[:20] or 'relative'}: link; only http and "
            "https downloads are made.",
            502,
        )
