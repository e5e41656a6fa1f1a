"""The aria2 engine: transfers run in an aria2c daemon, driven over JSON-RPC with aria2p."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aria2p
import requests

from .. import files
from ..egress import aria2_proxy_options
from ..errors import http_error
from .base import (
    ACTIVE,
    COMPLETE,
    ERROR,
    MISSING,
    PAUSED,
    REMOVED,
    WAITING,
    Transfer,
    TransferStatus,
)

log = logging.getLogger(__name__)

STATUS_KEYS = [
    "gid",
    "status",
    "totalLength",
    "completedLength",
    "downloadSpeed",
    "errorCode",
    "errorMessage",
    "verifiedLength",  # present while aria2 checks the published sha256 of a finished file
    "verifyIntegrityPending",  # "true" while that check waits for another one to finish
    "bitfield",  # which pieces are complete: the part from the start may be hashed already
    "pieceLength",
]
SESSION_MARK = "."  # a handle is "<gid>.<sessionId>": the daemon run the transfer was seen in
_STATES = {
    "active": ACTIVE,
    "waiting": WAITING,
    "paused": PAUSED,
    "complete": COMPLETE,
    "error": ERROR,
    "removed": REMOVED,
}
_HTTP_STATUS = re.compile(r"status=(\d{3})")

# aria2 errorCode -> (our code, a sentence for a person)
ERRORS: dict[str, tuple[str, str]] = {
    "1": ("download_failed", "aria2 could not finish the download."),
    "2": ("network_timeout", "The server stopped answering (timeout)."),
    "3": ("origin_not_found", "The server says the file does not exist."),
    "4": ("origin_not_found", "The server kept answering 'not found'."),
    "5": ("too_slow", "The download was slower than the configured minimum and was stopped."),
    "6": ("network", "A network problem interrupted the download."),
    "8": ("no_resume", "The server does not support resuming, so the partial file cannot be continued."),
    "9": ("disk_full", "The disk is full."),
    "10": ("resume_mismatch", "The partial data on disk does not match this download."),
    "13": ("file_exists", "A file with this name is already in the staging folder."),
    "15": ("disk_error", "The partial file could not be opened."),
    "16": ("disk_error", "The file could not be created or resized."),
    "17": ("disk_error", "Writing the file failed (file system error)."),
    "18": ("disk_error", "The download folder could not be created."),
    "19": ("dns", "The server's name could not be resolved."),
    "22": ("origin_error", "The server answered with an error."),
    "23": ("too_many_redirects", "The link redirects too many times."),
    "24": ("origin_forbidden", "The server refused access (authorisation failed)."),
    "32": ("checksum_mismatch", "The downloaded file does not match its published SHA-256."),
}


def describe_error(code: str | None, message: str | None) -> tuple[str, str, int | None]:
    """Our code, a sentence, and the HTTP status aria2 saw (if it says)."""
    match = _HTTP_STATUS.search(message or "")
    http_status = int(match.group(1)) if match else None
    if code == "22" and http_status is not None:
        error = http_error(http_status)
        return error.code, error.message, http_status
    ours, sentence = ERRORS.get(code or "", ("download_failed", "The download failed."))
    return ours, sentence, http_status


def client_for(rpc_url: str, secret: str, timeout: float = 10.0) -> aria2p.Client:
    parts = urlsplit(rpc_url)
    # aria2p wants the host without port or path, and always appends /jsonrpc
    return aria2p.Client(
        host=f"{parts.scheme}://{parts.hostname}", port=parts.port or 6800, secret=secret, timeout=timeout
    )


class Aria2Engine:
    name = "aria2"
    # the app hashes the finished file itself: Python's hashlib (OpenSSL, SHA extensions where the
    # CPU has them) checks a GiB in well under half the time aria2's own checksum option takes
    verifies_sha256 = False
    # set by the poller; the app calls it when the daemon's notifications say a transfer ended
    # (without them, e.g. `get` in-process, the poller wakes at the soonest ETA or its tick)
    on_finish: Callable[[], None] | None = None

    def __init__(self, rpc_url: str, secret: str, timeout: float = 10.0) -> None:
        self.rpc_url = rpc_url
        self.secret = secret  # the daemon's; it never leaves the server (the gateway uses it too)
        self.client = client_for(rpc_url, secret, timeout)
        self._session: str | None = None  # the daemon run seen at the last poll
        self._seen_in: dict[str, str] = {}  # gid -> the daemon run it was last seen alive in
        self._let_go: set[str] = set()  # gids this engine removed or forgot itself

    def version(self) -> str:
        answer = self.client.get_version()
        if not isinstance(answer, dict):
            raise ValueError("aria2 answered getVersion without an object")
        return str(answer["version"])

    def reachable(self) -> bool:
        try:
            self.version()
        except (requests.RequestException, aria2p.ClientException, ValueError, KeyError):
            return False
        return True

    def start(self, transfer: Transfer) -> str:
        options: dict[str, object] = {
            "dir": str(transfer.directory),
            "out": transfer.filename,
            "continue": "true",
            # a metalink or .torrent answer must not start downloads nobody asked for
            "follow-metalink": "false",
            "follow-torrent": "false",
        }
        if transfer.headers:
            options["header"] = list(transfer.headers)
        transfer.directory.mkdir(parents=True, exist_ok=True)
        if files.on_fuse(transfer.directory):
            # preallocating on a FUSE mount (Drive in Colab, sshfs) writes every zero over the wire
            options["file-allocation"] = "none"
        if transfer.proxy:
            options.update(aria2_proxy_options(transfer.proxy))
        gid = str(self.client.add_uri(transfer.urls, options=options))
        return f"{gid}{SESSION_MARK}{self.session_id()}"

    def session_id(self) -> str:
        """The id aria2 gives each run of the daemon: a new one means it restarted."""
        answer = self.client.get_session_info()
        if not isinstance(answer, dict) or not answer.get("sessionId"):
            raise ValueError("aria2 answered getSessionInfo without a sessionId")
        self._session = str(answer["sessionId"])
        return self._session

    def trusts_staged_bytes(self, directory: Path, filename: str) -> bool:
        """Only a file with its `.aria2` control file says which of its bytes are real: with
        preallocation a file is full size from the start, zeros and all."""
        return (directory / f"{filename}.aria2").is_file()

    def poll(self, handles: list[str]) -> dict[str, TransferStatus]:
        if not handles:
            return {}
        calls: list[tuple[str, list[Any]]] = [
            (self.client.TELL_STATUS, [_gid(handle), STATUS_KEYS]) for handle in handles
        ]
        calls.append((self.client.GET_SESSION_INFO, []))
        answers = self.client.multicall2(calls)
        if not isinstance(answers, list) or len(answers) != len(calls):
            raise ValueError("aria2 answered system.multicall with something else than one answer per call")
        session = _session_of_answer(answers[-1])
        restarted = session != self._session and self._session is not None
        self._session = session
        statuses = {}
        for handle, answer in zip(handles, answers[:-1], strict=True):
            status = self._status(handle, answer)
            gid = _gid(handle)
            if status.state != MISSING:
                self._seen_in[gid] = session
            elif gid in self._let_go:
                pass  # this engine removed or forgot it itself
            elif not restarted and self._seen_in.get(gid, _session_in(handle)) == session:
                # gone although the daemon did not restart: another RPC client removed it
                # (aria2p's `remove` also drops the result and the .aria2 control file)
                status.state = REMOVED
            statuses[handle] = status
        return statuses

    @staticmethod
    def _status(handle: str, answer: object) -> TransferStatus:
        if not isinstance(answer, list) or not answer:
            return TransferStatus(handle, MISSING)  # a fault: aria2 does not know this GID
        raw = answer[0]
        total = int(raw.get("totalLength", 0)) or None
        status = TransferStatus(
            handle=handle,
            state=_STATES.get(raw.get("status"), MISSING),
            completed=int(raw.get("completedLength", 0)),
            total=total,
            speed=float(raw.get("downloadSpeed", 0)),
        )
        status.written = _complete_prefix(raw.get("bitfield"), raw.get("pieceLength"), total)
        if "verifiedLength" in raw or raw.get("verifyIntegrityPending") == "true":
            status.verified = int(raw.get("verifiedLength") or 0)
        if status.state == ERROR:
            code, message, http_status = describe_error(raw.get("errorCode"), raw.get("errorMessage"))
            status.error_code, status.error_message, status.http_status = code, message, http_status
        return status

    def pause(self, handle: str) -> None:
        try:
            self.client.pause(_gid(handle))
        except aria2p.ClientException:
            self.client.force_pause(_gid(handle))

    def resume(self, handle: str) -> None:
        self.client.unpause(_gid(handle))

    def remove(self, handle: str) -> None:
        """Stop the transfer and wait until aria2 has let go of its files."""
        self._let_go.add(_gid(handle))
        with contextlib.suppress(aria2p.ClientException):  # already stopped or unknown
            self.client.force_remove(_gid(handle))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            state = self.poll([handle])[handle].state
            if state not in (ACTIVE, WAITING, PAUSED):
                break
            time.sleep(0.05)
        self.forget(handle)

    def forget(self, handle: str) -> None:
        self._let_go.add(_gid(handle))
        self._seen_in.pop(_gid(handle), None)
        with contextlib.suppress(aria2p.ClientException):
            self.client.remove_download_result(_gid(handle))

    def describe(self) -> dict[str, Any]:
        try:
            version = self.version()
            options = self.client.get_global_option()
        except (requests.RequestException, aria2p.ClientException, ValueError, KeyError):
            version, options = None, {}
        warnings = self._shared_daemon_warnings(options)
        for warning in warnings:
            log.warning("%s", warning)
        limit = options.get("max-overall-download-limit", "0") if isinstance(options, dict) else "0"
        return {
            "name": self.name,
            "version": version,
            "connected": version is not None,
            "rpc_url": self.rpc_url,
            "warnings": warnings,
            # set by any aria2 client (AriaNg's speed limit): every download shares it
            "download_limit": int(limit) if str(limit).isdigit() else 0,
        }

    def _shared_daemon_warnings(self, options: object) -> list[str]:
        """A daemon run elsewhere may follow torrents and metalinks for its other clients; the
        app turns that off for each of its own downloads, and says so."""
        if not isinstance(options, dict):
            return []
        following = [key for key in ("follow-torrent", "follow-metalink") if options.get(key) != "false"]
        if not following:
            return []
        return [
            f"The aria2 daemon at {self.rpc_url} has {' and '.join(following)} on, so a .torrent or "
            "metalink answer starts downloads nobody asked for in its other clients; this app turns "
            "both off for its own downloads. Set them to false in the daemon's config."
        ]

    def close(self) -> None:
        pass


def _gid(handle: str) -> str:
    return handle.split(SESSION_MARK, 1)[0]


def _session_in(handle: str) -> str | None:
    """The daemon run a handle was made in (handles saved before sessions were kept have none)."""
    _, _, session = handle.partition(SESSION_MARK)
    return session or None


def _session_of_answer(answer: object) -> str:
    if isinstance(answer, list) and answer and isinstance(answer[0], dict) and answer[0].get("sessionId"):
        return str(answer[0]["sessionId"])
    raise ValueError("aria2 answered getSessionInfo without a sessionId")


def _complete_prefix(bitfield: object, piece_length: object, total: int | None) -> int | None:
    """Bytes from the start of the file whose pieces are all complete (aria2's bitfield is hex,
    the first piece in the highest bit)."""
    if not isinstance(bitfield, str) or not bitfield or not total:
        return None
    try:
        pieces = bin(int(bitfield, 16))[2:].zfill(len(bitfield) * 4)
        length = int(str(piece_length))
    except ValueError:
        return None
    leading = len(pieces) - len(pieces.lstrip("1"))
    return min(total, leading * length)
