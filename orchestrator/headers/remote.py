"""Read what a model file at a URL is from its header alone, with ranged GETs, never its body.

A safetensors header costs two requests: `bytes=0-7` for its length, then exactly the rest of
the header (refused unread above the format's 100 MB limit). A GGUF header has no length, so
a first block of 256 KiB is read (a diffusion model's header fits) and more, doubling, only
when the parser asks, up to its cap.

Bytes are asked for uncompressed (Accept-Encoding: identity), so they are the file's own. A
server that ignores ranges (200 with the whole file) or refuses them (416) is detected from
the status line, the body is not read: the answer is `no_range_support`, so the caller can
fall back to asking the person. A file in neither format (a pickled .ckpt, a web page) is
`unknown_format`. A damaged header raises its parse error; a network failure raises
`header_unreachable`.

The session is the caller's (net.py's guarded session checks its network policy on every
request). Redirects are followed here, one hop at a time, so that the extra headers (a cookie,
a token) go only to the host the link names, never to a redirect's target, and so that later
ranges go straight to where the first one led.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import requests

from ..errors import OrchestratorError, http_error
from ..sources.http import reason, same_origin
from . import gguf, safetensors
from .classify import Finding
from .detect import inspect_bytes

TIMEOUT = (10, 30)
GGUF_FIRST_BLOCK = 256 * 1024
MAX_HOPS = 10
MAX_READS = 32  # each GGUF read at least doubles what is held, so the cap is reached long before
_READ_CHUNK = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)

Status = Literal["found", "no_range_support", "unknown_format"]


@dataclass(frozen=True)
class RemoteFinding:
    """The outcome of reading a remote header: a Finding, or why there is none (not an error)."""

    status: Status
    detail: str
    finding: Finding | None = None
    size: int | None = None  # the whole file's size, when the server said it
    bytes_read: int = 0

    def public(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "detail": self.detail,
            "finding": self.finding.public() if self.finding else None,
            "size": self.size,
            "bytes_read": self.bytes_read,
        }


@dataclass(frozen=True)
class _Refusal:
    status: Status
    detail: str


def fetch_finding(
    session: requests.Session, url: str, headers: Mapping[str, str] | None = None
) -> RemoteFinding:
    """What the file at `url` is, from its header; `headers` go to the link's own host only."""
    reader = _RangeReader(session, url, dict(headers or {}))
    try:
        return _inspect(reader)
    except requests.RequestException as exc:
        raise OrchestratorError(
            "header_unreachable",
            f"Could not read the file's header from {reader.host}: {reason(exc)}.",
            502,
        ) from None


def _inspect(reader: _RangeReader) -> RemoteFinding:
    data = b""
    wanted = safetensors.LENGTH_BYTES
    for _ in range(MAX_READS):
        piece = reader.read(len(data), wanted)
        if isinstance(piece, _Refusal):
            return RemoteFinding(piece.status, piece.detail, size=reader.size, bytes_read=len(data))
        data += piece
        if not piece and reader.size is None:
            reader.size = len(data)  # the server had nothing more: this is the end of the file
        try:
            result = inspect_bytes(data, reader.size)
        except OrchestratorError as exc:
            if exc.code != "unknown_format":
                raise
            return RemoteFinding("unknown_format", exc.message, size=reader.size, bytes_read=len(data))
        if isinstance(result, Finding):
            detail = f"Read {len(data)} bytes of header from {reader.host}."
            return RemoteFinding("found", detail, finding=result, size=reader.size, bytes_read=len(data))
        wanted = _next_size(data, result.size, reader.size)
    raise OrchestratorError(
        "header_unreachable", f"{reader.host} kept sending the header in pieces too small to read it.", 502
    )


def _next_size(data: bytes, needed: int, file_size: int | None) -> int:
    """How much of the file to hold after the next read (the parser's minimum, or more for GGUF)."""
    wanted = needed
    if data.startswith(gguf.MAGIC):
        wanted = max(needed, GGUF_FIRST_BLOCK, 2 * len(data))
        wanted = min(wanted, max(needed, gguf.MAX_HEADER_SIZE))
    if file_size is not None:
        wanted = min(wanted, max(needed, file_size))
    return wanted


class _RangeReader:
    """Ranged GETs against one file, remembering where redirects led and how big the file is."""

    def __init__(self, session: requests.Session, url: str, extra: dict[str, str]) -> None:
        self.session = session
        self.link = url
        self.url = url
        self.extra = extra
        self.host = urlsplit(url).hostname or "the server"
        self.size: int | None = None

    def read(self, start: int, stop: int) -> bytes | _Refusal:
        """Bytes [start, stop) of the file, fewer at its end; or why the server will not say."""
        response = self._get({"Range": f"bytes={start}-{stop - 1}", "Accept-Encoding": "identity"})
        try:
            return self._answer(response, start, stop)
        finally:
            response.close()  # never reads what was not asked for: closing drops the rest

    def _answer(self, response: requests.Response, start: int, stop: int) -> bytes | _Refusal:
        status = response.status_code
        if status == 206:
            return self._partial(response, start, stop)
        if status == 200:
            if _is_web_page(response):
                return _Refusal("unknown_format", f"{self.host} answered with a web page, not a model file.")
            return _Refusal(
                "no_range_support",
                f"{self.host} does not serve byte ranges (it answered with the whole file), "
                "so the header cannot be read on its own.",
            )
        if status == 416:
            return self._unsatisfiable(response, start)
        raise http_error(status, self.host)

    def _partial(self, response: requests.Response, start: int, stop: int) -> bytes | _Refusal:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != start:
            return _Refusal("no_range_support", f"{self.host} answered a byte range with other bytes.")
        if response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
            return _Refusal("no_range_support", f"{self.host} sends the file compressed, not its own bytes.")
        if match.group(3) != "*":
            total = int(match.group(3))
            if self.size is not None and total != self.size:
                return _Refusal(
                    "no_range_support", f"{self.host} changed the file's size between two ranges."
                )
            self.size = total
        return _body(response, stop - start)

    def _unsatisfiable(self, response: requests.Response, start: int) -> bytes | _Refusal:
        match = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", ""))
        if match is None:
            return _Refusal("no_range_support", f"{self.host} refused the byte range (HTTP 416).")
        self.size = int(match.group(1))
        if start == 0 and self.size == 0:
            return _Refusal("unknown_format", f"{self.host} serves an empty file.")
        return b""  # the file ends before `start`: the parser says what that means

    def _get(self, range_headers: dict[str, str]) -> requests.Response:
        url = self.url
        for _ in range(MAX_HOPS):
            headers = {**range_headers, **(self.extra if same_origin(url, self.link) else {})}
            response = self.session.get(
                url, headers=headers, stream=True, allow_redirects=False, timeout=TIMEOUT
            )
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or not location:
                self.url = url  # the next range goes straight to where the bytes are
                return response
            response.close()
            url = urljoin(url, location)
        raise OrchestratorError(
            "too_many_redirects", f"The link to {self.host} redirects too many times.", 502
        )


def _body(response: requests.Response, expected: int) -> bytes:
    """At most `expected` bytes of the body, even if the server sends more."""
    chunks: list[bytes] = []
    got = 0
    for chunk in response.iter_content(min(_READ_CHUNK, max(expected, 1))):
        chunks.append(chunk)
        got += len(chunk)
        if got >= expected:
            break
    return b"".join(chunks)[:expected]


def _is_web_page(response: requests.Response) -> bool:
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return content_type in ("text/html", "application/xhtml+xml")
