"""Hashing model files without getting in the way of downloads.

Each file is read once, in big blocks, straight into one reused buffer. While a
download runs, reads are paced: after each block the hasher rests so that reading and
hashing take at most `busy_share` of the wall time (and, if set, at most `busy_rate`
bytes a second). Measuring the time a block took makes the pacing follow the disk: a
slow disk gets long rests, a block served from the page cache almost none.

After each block the pages just read are dropped from the page cache
(posix_fadvise DONTNEED): a scan of a large library would otherwise push out the
pages of files being downloaded. Pages another program has mapped (a Stable Diffusion
server with a safetensors file open) are not dropped by the kernel.

A file is trusted only if it did not change while it was read: its size, mtime, inode
and device are the same after the last block as when it was listed.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .records import FileStat

MiB = 1024 * 1024


@dataclass(frozen=True)
class Pacing:
    """How the scanner shares the disk with downloads (a setting: benchmarks tune it)."""

    block_size: int = 8 * MiB
    busy_share: float = 0.25  # while downloads run: the share of time spent reading and hashing
    busy_rate: int | None = None  # while downloads run: at most this many bytes a second
    drop_cache: bool = True  # posix_fadvise DONTNEED after each block
    check_every: float = 0.5  # seconds between two calls of downloads_active()

    def __post_init__(self) -> None:
        if self.block_size < 64 * 1024:
            raise ValueError("block_size must be at least 64 KiB")
        if not 0 < self.busy_share <= 1:
            raise ValueError("busy_share must be in (0, 1]")
        if self.busy_rate is not None and self.busy_rate <= 0:
            raise ValueError("busy_rate must be positive")


class Outcome(enum.Enum):
    HASHED = "hashed"
    CHANGED = "changed"  # grew, shrank or was replaced while it was read: the bytes are not trusted
    VANISHED = "vanished"  # deleted before or while it was read
    UNREADABLE = "unreadable"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Hashed:
    outcome: Outcome
    sha256: str | None = None
    detail: str = ""


class Reader:
    """Reads the files of one scan: one reused buffer, and rests between blocks while downloads run."""

    def __init__(self, pacing: Pacing, downloads_active: Callable[[], bool], cancel: threading.Event) -> None:
        self.pacing = pacing
        self._active = downloads_active
        self._cancel = cancel
        self._busy = False
        self._checked = float("-inf")
        self.rested = 0.0  # seconds spent resting, for reports and benchmarks
        self.buffer = memoryview(bytearray(pacing.block_size))  # one buffer for every file of a scan

    def busy(self) -> bool:
        now = time.monotonic()
        if now - self._checked >= self.pacing.check_every:
            self._checked = now
            try:
                self._busy = bool(self._active())
            except Exception:  # a broken callback must not stop a scan; assume downloads run
                self._busy = True
        return self._busy

    def after_block(self, size: int, spent: float) -> None:
        if not self.busy():
            return
        rest = spent * (1 / self.pacing.busy_share - 1)
        if self.pacing.busy_rate:
            rest = max(rest, size / self.pacing.busy_rate - spent)
        if rest > 0:
            self.rested += rest
            self._cancel.wait(rest)


def hash_file(
    path: bytes,
    listed: FileStat,
    reader: Reader,
    cancel: threading.Event,
    on_bytes: Callable[[int], None],
) -> Hashed:
    """The SHA-256 of a file as it was listed (`listed`), or why there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return Hashed(Outcome.VANISHED, detail="deleted before it was read")
    except OSError as exc:
        return Hashed(Outcome.UNREADABLE, detail=exc.strerror or type(exc).__name__)
    try:
        if FileStat.of(os.fstat(fd)) != listed:
            return Hashed(Outcome.CHANGED, detail="changed after it was listed")
        result = _digest(fd, reader, cancel, on_bytes)
        if result.outcome is not Outcome.HASHED:
            return result
        return _still_the_same(path, fd, listed) or result
    except OSError as exc:
        return Hashed(Outcome.UNREADABLE, detail=exc.strerror or type(exc).__name__)
    finally:
        os.close(fd)


def _digest(fd: int, reader: Reader, cancel: threading.Event, on_bytes: Callable[[int], None]) -> Hashed:
    pacing = reader.pacing
    _advise(fd, 0, 0, "POSIX_FADV_SEQUENTIAL")
    digest = hashlib.sha256()
    view = reader.buffer
    offset = 0
    with open(fd, "rb", buffering=0, closefd=False) as handle:
        while True:
            if cancel.is_set():
                return Hashed(Outcome.CANCELLED)
            started = time.monotonic()
            count = handle.readinto(view)
            if not count:
                break
            digest.update(view[:count])
            if pacing.drop_cache:
                _advise(fd, offset, count, "POSIX_FADV_DONTNEED")
            offset += count
            on_bytes(count)
            reader.after_block(count, time.monotonic() - started)
    return Hashed(Outcome.HASHED, digest.hexdigest())


def _still_the_same(path: bytes, fd: int, listed: FileStat) -> Hashed | None:
    """None when the file, by its descriptor and by its name, is the one that was listed."""
    if FileStat.of(os.fstat(fd)) != listed:
        return Hashed(Outcome.CHANGED, detail="changed while it was read")
    try:
        now = FileStat.of(os.stat(path))
    except FileNotFoundError:
        return Hashed(Outcome.VANISHED, detail="deleted while it was read")
    if now != listed:
        return Hashed(Outcome.CHANGED, detail="replaced while it was read")
    return None


def _advise(fd: int, offset: int, length: int, name: str) -> None:
    """posix_fadvise where the platform has it; advice is a hint, so a refusal is ignored."""
    advice = getattr(os, name, None)
    if advice is None or not hasattr(os, "posix_fadvise"):
        return
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, offset, length, advice)
