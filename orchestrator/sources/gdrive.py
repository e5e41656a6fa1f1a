"""Google Drive share links: gdown's parsers find the file and get past the confirmation page.

gdown knows Drive's link shapes (`parse_url`) and the "can't scan this file for
viruses" page (`get_url_from_gdrive_confirmation`); those parsers are what breaks
when Google changes a page, so they are used as gdown ships them. The requests
are made here, so the direct URL and the cookies that go with it can be handed
to the engine: Drive cookies are session cookies, not the user's secrets.

GDRIVE_BASE_URL (default https://drive.google.com) says where Drive answers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import requests
from gdown.download import get_url_from_gdrive_confirmation
from gdown.exceptions import FileURLRetrievalError
from gdown.parse_url import parse_url

from ..errors import OrchestratorError, http_error
from ..files import filename_from_content_disposition
from ..policy import Policy
from . import http
from .base import Credentials, Description, Resolved

NAME = "gdrive"
LABEL = "Google Drive"
KNOWS_MODEL_TYPE = False
SERVICE = "Google Drive"
DEFAULT_BASE = "https://drive.google.com"
HOSTS = {"drive.google.com", "docs.google.com", "drive.usercontent.google.com"}
MAX_PAGES = 4  # the first answer, a confirmation page, rarely one more
PAGE_LIMIT = 2 * 1024 * 1024
_NOT_FILES = ("/document/", "/spreadsheets/", "/presentation/", "/forms/")


def base_url() -> str:
    return http.setting("GDRIVE_BASE_URL", DEFAULT_BASE)


def matches(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme.lower() in ("http", "https") and (parts.hostname or "").lower() in HOSTS


def parse(text: str) -> str:
    """The file id of a share link; an error for folders, Docs and links without an id."""
    parts = urlsplit(text)
    if "/folders/" in parts.path:
        raise OrchestratorError(
            "gdrive_bad_link", "That is a Google Drive folder; share a link to the file itself."
        )
    if any(kind in parts.path for kind in _NOT_FILES):
        raise OrchestratorError(
            "gdrive_bad_link", "Google Docs, Sheets, Slides and Forms are not model files; link the file."
        )
    if (parts.hostname or "").lower() == "drive.usercontent.google.com":
        file_id = dict(parse_qsl(parts.query)).get("id")  # gdown does not know this host
    else:
        file_id, _ = parse_url(text)
    if not file_id:
        raise OrchestratorError(
            "gdrive_bad_link",
            "That Google Drive link names no file. Use the file's share link (.../file/d/<id>/view).",
        )
    return file_id


def describe(metadata: dict[str, Any], policy: Policy) -> Description | None:
    return None  # nothing known beyond the file itself


def pin(url: str, metadata: dict[str, Any]) -> str:
    return url  # a file id names one file


def resolve(url: str, credentials: Credentials, policy: Policy) -> Resolved:
    """Blocking: walk Drive's pages to the file itself, then hand over its URL and cookies."""
    del credentials  # Drive files are fetched as "anyone with the link"
    file_id = parse(url)
    with http.session(policy) as session:
        response = _reach_file(session, f"{base_url()}/uc?id={quote(file_id)}&export=download", file_id)
        cookies = _cookie_header(session, response.url)
    return _describe(file_id, response, cookies)


def _reach_file(session: requests.Session, url: str, file_id: str) -> requests.Response:
    """Follow Drive (redirects, the confirmation page) until it answers with the file's headers."""
    for _ in range(MAX_PAGES):
        # one byte is enough to learn the name, the size and whether ranges work
        response = http.send(
            session, "GET", url, SERVICE, headers={"Range": "bytes=0-0"}, stream=True, allow_redirects=True
        )
        if _is_file(response):
            response.close()
            return response
        url = _next_url(response, file_id)  # the guarded session checks it before it is contacted
    raise OrchestratorError(
        "gdrive_private", f"Google Drive kept answering with web pages for file {file_id}.", 403
    )


def _is_file(response: requests.Response) -> bool:
    kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return response.status_code in (200, 206) and kind not in ("text/html", "application/xhtml+xml")


def _next_url(response: requests.Response, file_id: str) -> str:
    """Read a page Drive sent instead of the file: a sign-in, a refusal or a confirmation."""
    status = response.status_code
    if status == 404:
        response.close()
        raise OrchestratorError(
            "gdrive_not_found", f"Google Drive has no file {file_id}, or it was deleted.", 404
        )
    if status >= 400 and status != 403:  # Drive explains a refusal on a 403 page; read it
        response.close()
        raise http_error(status, SERVICE)
    if _is_sign_in(response.url):
        response.close()
        raise _private(file_id, "it asks to sign in")
    page = response.raw.read(PAGE_LIMIT, decode_content=True).decode("utf-8", "replace")
    response.close()
    try:
        return get_url_from_gdrive_confirmation(page)
    except FileURLRetrievalError as exc:
        raise _refusal(str(exc), file_id) from None


def _is_sign_in(url: str) -> bool:
    parts = urlsplit(url)
    return (
        (parts.hostname or "") == "accounts.google.com"
        or "ServiceLogin" in parts.path
        or ("/signin" in parts.path)
    )


def _refusal(said: str, file_id: str) -> OrchestratorError:
    lowered = said.lower()
    if "too many users" in lowered or "quota" in lowered:
        return OrchestratorError(
            "gdrive_quota",
            "Google Drive will not serve this file right now: too many people downloaded it recently "
            "(download quota exceeded). Try again later (up to 24 hours), or copy it to your own Drive "
            "and share that copy.",
            429,
        )
    return _private(file_id, "Drive would not give out its download link")


def _private(file_id: str, why: str) -> OrchestratorError:
    return OrchestratorError(
        "gdrive_private",
        f"Google Drive file {file_id} is not public ({why}). Its owner must share it as "
        "'Anyone with the link'.",
        403,
    )


def _cookie_header(session: requests.Session, url: str) -> str | None:
    """The cookies Drive set that apply to the file's URL, as one Cookie header."""
    prepared = requests.Request("GET", url).prepare()
    return requests.cookies.get_cookie_header(session.cookies, prepared) or None


def _describe(file_id: str, response: requests.Response, cookies: str | None) -> Resolved:
    headers = response.headers
    # Drive always names a file it serves; the id is a last resort rather than ".../view"
    filename = filename_from_content_disposition(headers.get("Content-Disposition")) or file_id
    if response.status_code == 206:
        total = headers.get("Content-Range", "").rpartition("/")[2]
        size = int(total) if total.isdigit() else None
    else:
        length = headers.get("Content-Length", "")
        size = int(length) if length.isdigit() and int(length) > 0 else None
    return Resolved(
        urls=[response.url],
        source=NAME,
        filename=filename,
        size=size,
        metadata={
            "file_id": file_id,
            "file_name": filename,
            "size": size,
            "host": urlsplit(response.url).hostname,
        },
        headers=[f"Cookie: {cookies}"] if cookies else [],
    )
