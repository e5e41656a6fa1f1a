"""The SHA-256 of a file while aria2 still writes it: the part from the start that aria2 reports
complete (its bitfield) is hashed during the download, so after the last byte only the tail is
left to read, instead of the whole file.

Only ever a shortcut, never a verdict on its own: a digest that matches the published one proves
the bytes that were read, and aria2 writes each byte of a transfer once, so the file holds them.
A transfer added anew (a new handle: a retry, a repair, a restart of the daemon) writes the file
anew, so what was hashed for another handle is thrown away. Any doubt (a read that failed, a file
replaced under it, a digest that does not match) means the whole file is read again to decide.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

STEP = 64 * 1024 * 1024  # read at least this much at a time during the download
CHUNK = 8 * 1024 * 1024


class RunningHash:
    """One transfer's digest so far. `advance` and `finish` block: call them in a worker thread."""

    def __init__(self, handle: str, path: Path) -> None:
        self.handle = handle
        self.path = path
        self.offset = 0
        self.spoiled = False  # a read went wrong: only a whole-file hash decides
        self._digest = hashlib.sha256()
        self._identity: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self.busy = False  # an advance is running or scheduled

    def wants(self, handle: str | None, written: int | None) -> bool:
        """Worth a read now: the same transfer, and at least STEP more bytes are complete."""
        return (
            not self.busy
            and not self.spoiled
            and handle == self.handle
            and (written or 0) >= self.offset + STEP
        )

    def advance(self, upto: int) -> None:
        with self._lock:
            try:
                self._read(upto)
            except OSError as exc:
                log.debug("early hash of %s stopped: %s", self.path, exc)
                self.spoiled = True
            finally:
                self.busy = False

    def finish(self, handle: str | None) -> str | None:
        """The whole file's digest, or None when this one cannot be trusted (another transfer,
        a failed read): the caller then hashes the file from the start."""
        with self._lock:
            if self.spoiled or handle != self.handle:
                return None
            try:
                self._read(None)
            except OSError:
                return None
            return self._digest.hexdigest()

    def _read(self, upto: int | None) -> None:
        with open(self.path, "rb") as handle:
            info = os.fstat(handle.fileno())
            identity = (info.st_dev, info.st_ino)
            if self._identity is None:
                self._identity = identity
            elif identity != self._identity:
                raise OSError("the file was replaced")
            handle.seek(self.offset)
            while upto is None or self.offset < upto:
                want = CHUNK if upto is None else min(CHUNK, upto - self.offset)
                chunk = handle.read(want)
                if not chunk:
                    break
                self._digest.update(chunk)
                self.offset += len(chunk)
