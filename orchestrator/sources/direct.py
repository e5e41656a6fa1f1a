"""Plain http(s) links: ask the server about the file before anything is written."""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from .. import net
from ..errors import OrchestratorError, http_error
from ..files import filename_from_content_disposition, filename_from_url
from ..policy import Policy
from .base import Credentials, Description, Resolved
from .http import reason

NAME = "direct"
LABEL = "Direct link"
KNOWS_MODEL_TYPE = False
TIMEOUT = (10, 30)
MAX_REDIRECTS = 10
# Servers that answer HEAD badly: S3-style signed URLs refuse HEAD (403), some
# apps don't implement it (405/501). A one-byte ranged GET asks the same question.
_HEAD_REFUSED = {400, 403, 405, 501}
# Answers that describe other downloads: aria2 would follow them (follow-torrent/-metalink)
DESCRIPTIONS = {"application/x-bittorrent", "application/metalink4+xml", "application/metalink+xml"}
DESCRIPTION_ENDINGS = (".torrent", ".metalink", ".meta4")


def matches(url: str) -> bool:
    return urlsplit(url).scheme.lower() in ("http", "https")


def parse(url: str) -> str:
    return url  # validate_url has checked everything a plain link can be checked for


def describe(metadata: dict[str, Any], policy: Policy) -> Description | None:
    return None  # nothing known beyond the file itself


def pin(url: str, metadata: dict[str, Any]) -> str:
    return url


def resolve(url: str, credentials: Credentials, policy: Policy) -> Resolved:
    del credentials  # a plain link carries no service token
    host = urlsplit(url).hostname or "the server"
    with net.session(policy) as session:
        try:
            response = follow(session, "HEAD", url)
            if response.status_code in _HEAD_REFUSED:
                response = follow(session, "GET", url, headers={"Range": "bytes=0-0"})
        except requests.RequestException as exc:
            raise OrchestratorError("unreachable", f"Could not reach {host}: {reason(exc)}.", 502) from None
    resolved = _describe(url, response, host)
    if policy.block_private:
        # hand the engine the checked final address, so it cannot be sent elsewhere
        resolved.urls = [response.url]
    return resolved


def follow(
    session: requests.Session, method: str, url: str, headers: dict[str, str] | None = None
) -> requests.Response:
    """Follow redirects one hop at a time (the guarded session checks each before it is contacted)."""
    for _ in range(MAX_REDIRECTS):
        response = session.request(
            method, url, headers=headers, allow_redirects=False, stream=True, timeout=TIMEOUT
        )
        response.close()  # only the headers are wanted
        location = response.headers.get("Location")
        if response.status_code not in (301, 302, 303, 307, 308) or not location:
            return response
        url = urljoin(url, location)
        if method == "GET" and response.status_code == 303:
            headers = None
    raise OrchestratorError("too_many_redirects", "The link redirects too many times.", 502)


def _describe(url: str, response: requests.Response, host: str) -> Resolved:
    if response.status_code >= 400:
        raise http_error(response.status_code, host)
    headers = response.headers
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type in DESCRIPTIONS or (_filename(url, response) or "").lower().endswith(DESCRIPTION_ENDINGS):
        raise OrchestratorError(
            "unsupported_content",
            f"{host} answered with a .torrent or metalink file, which describes other downloads; this "
            "app does not follow those. Use the model file's own link.",
            422,
        )
    if content_type in ("text/html", "application/xhtml+xml"):
        raise OrchestratorError(
            "not_a_file",
            f"{host} answered with a web page, not a file (a login, error or download page?). "
            "Nothing was saved; use the file's direct link.",
            422,
        )
    return Resolved(
        urls=[url],
        source=NAME,
        filename=_filename(url, response),
        size=_size(response),
        metadata={"host": host, "content_type": content_type or None},
    )


def _filename(url: str, response: requests.Response) -> str | None:
    """Content-Disposition, else the link's own name, else the name after redirects."""
    named = filename_from_content_disposition(response.headers.get("Content-Disposition"))
    own = filename_from_url(url)
    if named:
        return named
    if own and "." in own:
        return own
    return filename_from_url(response.url) or own


def _size(response: requests.Response) -> int | None:
    if response.status_code == 206:
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length", "")
    return int(length) if length.isdigit() and int(length) > 0 else None
