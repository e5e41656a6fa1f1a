"""A fake Google Drive: drive.google.com's /uc and drive.usercontent.google.com's /download.

As Drive does: /uc redirects (303) to the content host; small files come back
at once with a UTF-8 filename* Content-Disposition; large files first get the
"can't scan this file for viruses" page with its download form (confirm, uuid)
and a cookie that the confirmed download needs; files not shared publicly
redirect to a sign-in page; a file over its quota gets Drive's error page with
the uc-error-subcaption gdown reads; unknown ids get a 404 page.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import quote

from tests.fakes.service import Reply, Request, Service, content_disposition, serve_bytes

QUOTA_TEXT = (
    "Too many users have viewed or downloaded this file recently. Please try accessing the file "
    "again later. If the file you are trying to access is particularly large or is shared with "
    "many people, it may take up to 24 hours to be able to view or download the file."
)


@dataclass
class DriveFile:
    data: bytes
    name: str
    shared: bool = True
    large: bool = False  # gets the virus-scan warning page first
    over_quota: bool = False


class FakeDrive:
    """Two hosts, like Drive: `drive` answers /uc, `content` serves the bytes."""

    def __init__(
        self, drive_host: str = "127.0.0.6", content_host: str = "127.0.0.7", rate: int | None = None
    ) -> None:
        self.files: dict[str, DriveFile] = {}
        self.uuids: dict[str, str] = {}  # file id -> uuid its confirmation page handed out
        self.cookies: dict[str, str] = {}  # file id -> cookie value that page set
        self.rate = rate
        self.drive = _DriveHost(self, drive_host)
        self.content = _ContentHost(self, content_host)

    def add(self, file_id: str, data: bytes, name: str, **options) -> bytes:
        self.files[file_id] = DriveFile(data, name, **options)
        return data

    @property
    def base_url(self) -> str:
        return self.drive.base_url

    def start(self) -> FakeDrive:
        self.drive.start()
        self.content.start()
        return self

    def stop(self) -> None:
        self.drive.stop()
        self.content.stop()

    def __enter__(self) -> FakeDrive:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _DriveHost(Service):
    def __init__(self, drive: FakeDrive, host: str) -> None:
        super().__init__(host)
        self.drive = drive

    def respond(self, request: Request) -> Reply:
        if request.path == "/uc":
            file_id = request.query.get("id", "")
            target = f"{self.drive.content.base_url}/download?id={quote(file_id)}&export=download"
            return Reply.redirect(target, 303, {"Content-Type": "text/html; charset=UTF-8"})
        if request.path.startswith("/ServiceLogin"):
            return Reply.html(
                "<!DOCTYPE html><html><head><title>Sign in - Google Accounts</title></head>"
                "<body><form id='identifier'>Email or phone</form></body></html>"
            )
        return Reply.html("<html><body>Google Drive</body></html>", 404)


class _ContentHost(Service):
    def __init__(self, drive: FakeDrive, host: str) -> None:
        super().__init__(host)
        self.drive = drive

    def respond(self, request: Request) -> Reply:
        file_id = request.query.get("id", "")
        item = self.drive.files.get(file_id)
        if request.path != "/download" or item is None:
            return Reply.html("<html><title>Google Drive - Page Not Found</title></html>", 404)
        if not item.shared:
            login = f"{self.drive.drive.base_url}/ServiceLogin?service=wise&continue={quote(request.path)}"
            return Reply.redirect(login, 302)
        if item.over_quota:
            return Reply.html(_error_page(QUOTA_TEXT), 403)
        if item.large and not self._confirmed(request, file_id):
            return self._warning(file_id, item)
        headers = {"Content-Disposition": content_disposition(item.name)}
        return serve_bytes(request, item.data, headers, self.drive.rate, file_id)

    def _confirmed(self, request: Request, file_id: str) -> bool:
        uuid = self.drive.uuids.get(file_id)
        cookie = self.drive.cookies.get(file_id)
        return (
            request.query.get("confirm") == "t"
            and uuid is not None
            and request.query.get("uuid") == uuid
            and f"download_warning_{file_id}={cookie}" in (request.header("Cookie") or "")
        )

    def _warning(self, file_id: str, item: DriveFile) -> Reply:
        uuid = self.drive.uuids.setdefault(file_id, secrets.token_hex(8))
        cookie = self.drive.cookies.setdefault(file_id, secrets.token_hex(8))
        page = f"""<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>
<body><div class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive can't scan this
file for viruses.</p><p class="uc-warning-subcaption"><span class="uc-name-size"><a href="/open?id={file_id}">
{item.name}</a> ({len(item.data) // 1024}K)</span> is too large for Google to scan for viruses.
Would you still like to download this file?</p>
<form id="download-form" action="{self.base_url}/download" method="get"><input type="submit"
 id="uc-download-link" class="goog-inline-block jfk-button jfk-button-action" value="Download anyway"/>
<input type="hidden" name="id" value="{file_id}"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{uuid}"></form>
</div></div></body></html>"""
        cookie_header = f"download_warning_{file_id}={cookie}; Path=/; HttpOnly"
        return Reply.html(page.replace("\n", " "), 200, {"Set-Cookie": cookie_header})


def _error_page(text: str) -> str:
    return (
        "<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>"
        '<div class="uc-main"><div id="uc-text"><p class="uc-error-caption">Sorry, you can\'t view or '
        f'download this file at this time.</p><p class="uc-error-subcaption">{text}</p></div></div>'
        "</body></html>"
    )
