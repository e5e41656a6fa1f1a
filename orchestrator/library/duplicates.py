"""Reusing a file the library already has instead of downloading the same bytes again.

Before a download whose SHA-256 is published starts, `find_existing` names a file in the
index with that hash (checked unchanged on disk, so its hash still holds), and
`link_copy` installs it at the target by a hard link: no copy, no extra space, atomic,
and never over an existing file (os.link refuses an existing target). Where hard links
are impossible (another file system: EXDEV; FAT, exFAT and some FUSE mounts: EPERM,
EOPNOTSUPP) the result says so and the caller downloads as usual.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from .index import LibraryIndex
from .records import FileRecord, FileStat, Source, normal_sha256

LINKED = "linked"
TARGET_EXISTS = "target_exists"
CROSS_DEVICE = "cross_device"
LINKS_UNSUPPORTED = "links_unsupported"
SOURCE_MISSING = "source_missing"
FAILED = "link_failed"

_UNSUPPORTED = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}


@dataclass(frozen=True)
class LinkResult:
    code: str  # one of the constants above
    message: str
    existing: Path | None = None
    target: Path | None = None

    @property
    def linked(self) -> bool:
        return self.code == LINKED


def find_existing(index: LibraryIndex, sha256: str) -> FileRecord | None:
    """A file in the library with these bytes, still as it was when hashed; None if there is none."""
    for record in index.by_sha256(normal_sha256(sha256)):
        try:
            now = FileStat.of(os.stat(record.path))
        except OSError:
            continue
        if now == record.stat:
            return record
    return None


def link_copy(existing: Path, target: Path) -> LinkResult:
    """Make `target` a hard link to `existing`; never replaces a file."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(existing, target)
    except OSError as exc:
        return _refused(exc, existing, target)
    return LinkResult(LINKED, f"{target.name} is now a hard link to {existing}.", existing, target)


def _refused(exc: OSError, existing: Path, target: Path) -> LinkResult:
    if isinstance(exc, FileExistsError):
        return LinkResult(TARGET_EXISTS, f"{target} already exists; nothing was replaced.", existing, target)
    if exc.errno == errno.EXDEV:
        message = f"{target.parent} is on another disk than {existing}; hard links cannot cross disks."
        return LinkResult(CROSS_DEVICE, message, existing, target)
    if exc.errno in _UNSUPPORTED:
        message = f"The disk of {target.parent} does not allow hard links here (FAT, exFAT or a FUSE mount)."
        return LinkResult(LINKS_UNSUPPORTED, message, existing, target)
    if isinstance(exc, FileNotFoundError) and not existing.exists():
        return LinkResult(SOURCE_MISSING, f"{existing} is not there any more.", existing, target)
    return LinkResult(
        FAILED, f"Could not link {target.name}: {exc.strerror or type(exc).__name__}.", existing, target
    )


def link_from_library(
    index: LibraryIndex, sha256: str, root: Path, model_type: str, target: Path, source: Source
) -> LinkResult:
    """Install `target` from a file the library already has, and record it; the caller
    downloads when the result is not `linked`."""
    existing = find_existing(index, sha256)
    if existing is None:
        return LinkResult(SOURCE_MISSING, "The library has no file with these bytes.", None, target)
    result = link_copy(existing.path, target)
    if result.linked:
        kept = source if source.known else existing.source
        index.record_download(root, model_type, target, normal_sha256(sha256), kept)
    return result
