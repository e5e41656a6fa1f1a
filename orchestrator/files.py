"""Everything that touches the models folder: names, staging, verification, the final move."""

from __future__ import annotations

import contextlib
import email.message
import email.utils
import errno
import hashlib
import os
import re
import shutil
import stat
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from .config import STAGING_FOLDER
from .errors import OrchestratorError

# The process's umask, read once at start: installed models get the usual permissions even
# though aria2c runs with a private umask (its session file holds signed URLs).
_UMASK = os.umask(0o022)
os.umask(_UMASK)
MAX_NAME_BYTES = 200  # leaves room for ".aria2" and sidecar suffixes under 255
HASH_CHUNK = 4 * 1024 * 1024
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')


def private_folder(path: Path) -> Path:
    """A folder only its owner can enter: the state folder holds signed URLs, cookies, the secret."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def private_file(path: Path) -> Path:
    """Create (or keep) a file only its owner can read, before anything is written to it."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    path.chmod(0o600)
    return path


def sanitize_filename(raw: str) -> str:
    """A filename that is safe in any models folder, or an error if nothing usable is left.

    Path parts are dropped (only the last component counts), so `../../x` is `x`;
    control and reserved characters become `_`; leading dots and spaces go, so
    nothing can hide or escape; long names are cut keeping the extension.
    """
    name = unicodedata.normalize("NFC", str(raw)).replace("\\", "/").split("/")[-1]
    name = _UNSAFE.sub("_", name).strip().lstrip(". ").rstrip(". ")
    if not name or set(name) <= {"_"}:
        raise OrchestratorError("invalid_filename", f"{str(raw)[:80]!r} is not a usable file name.")
    return _shorten(name)


def _shorten(name: str) -> str:
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 16:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    budget = MAX_NAME_BYTES - len(suffix.encode())
    cut = stem.encode()[:budget].decode(errors="ignore")
    return cut + suffix


def filename_from_content_disposition(header: str | None) -> str | None:
    """The filename a Content-Disposition header names; filename* wins (RFC 6266)."""
    if not header:
        return None
    message = email.message.Message()
    message["content-disposition"] = header
    try:
        params = message.get_params(header="content-disposition") or []
    except (ValueError, TypeError, IndexError):
        return None
    # RFC 2231 values (filename*=UTF-8''...) arrive as (charset, language, text) tuples
    plain = encoded = None
    for name, value in params[1:]:
        if name.lower() != "filename" or not value:
            continue
        if isinstance(value, tuple):
            encoded = email.utils.collapse_rfc2231_value(value)
        else:
            plain = email.utils.unquote(value)
    return encoded or plain or None


def filename_from_url(url: str) -> str | None:
    path = unquote(urlsplit(url).path)
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return last or None


def choose_filename(explicit: str | None, disposition: str | None, url: str) -> str:
    """Explicit name, else the server's Content-Disposition, else the URL's last path part."""
    for candidate in (explicit, filename_from_content_disposition(disposition), filename_from_url(url)):
        if candidate:
            return sanitize_filename(candidate)
    raise OrchestratorError("no_filename", "The link names no file; give the download a name.")


def model_folder(models_dir: Path, folder: str) -> Path:
    """The folder a type maps to, refusing anything that would resolve outside models_dir."""
    root = models_dir.resolve()
    target = (root / folder).resolve()
    staging = root / STAGING_FOLDER
    inside_staging = target == staging or staging in target.parents
    if target == root or root not in target.parents or inside_staging:
        raise OrchestratorError("invalid_folder", f"{folder!r} is not a folder inside the models folder.")
    return target


def staging_dir(models_dir: Path, job_id: str) -> Path:
    """Per-job scratch space on the same file system as the models, so the final move is atomic."""
    if not re.fullmatch(r"[0-9a-f]{6,32}", job_id):
        raise OrchestratorError("invalid_job", "Bad job id.")
    return models_dir / STAGING_FOLDER / job_id


def bundle_staging(models_dir: Path, bundle_id: str) -> Path:
    """A bundle's scratch folder: a folder of files is built here, then renamed into place whole."""
    if not re.fullmatch(r"[0-9a-f]{6,32}", bundle_id):
        raise OrchestratorError("invalid_bundle", "Bad bundle id.")
    return models_dir / STAGING_FOLDER / f"bundle-{bundle_id}"


def remove_staging(models_dir: Path, job_id: str) -> None:
    shutil.rmtree(staging_dir(models_dir, job_id), ignore_errors=True)


def open_regular(path: Path, follow_links: bool = False) -> BinaryIO:
    """Open a file for reading only if it is a regular file (a FIFO planted where a model should
    be would block the reader forever); a link at its name is followed only when asked (a model
    the user linked into a folder), never in staging."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_links else os.O_NOFOLLOW)
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise not_regular(path) from None
        raise
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise not_regular(path)
    os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "rb")


def not_regular(path: Path) -> OrchestratorError:
    return OrchestratorError(
        "not_a_regular_file",
        f"{path.name} is not a regular file (a link, a pipe or a device sits where a model file should "
        "be); it was left alone.",
        409,
    )


def sha256_of(
    path: Path, on_progress: Callable[[int], None] | None = None, follow_links: bool = False
) -> str:
    digest = hashlib.sha256()
    done = 0
    with open_regular(path, follow_links) as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if on_progress:
                on_progress(done)
    return digest.hexdigest()


def looks_like_html(path: Path) -> bool:
    """True when a file starts like a document instead of a model: a web page (an error or login
    page, also after a byte-order mark or a comment), XML (a metalink, an S3 error), or a
    bencoded .torrent."""
    with open_regular(path) as handle:
        raw = handle.read(4096)
    if raw.startswith(b"d8:announce") or raw.startswith(b"d13:announce-list") or raw.startswith(b"d4:info"):
        return True
    head = raw.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    while head.startswith(b"<!--"):  # comments before the page
        end = head.find(b"-->")
        if end < 0:
            return True
        head = head[end + 3 :].lstrip()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml", b"<title", b"<meta"))


def filesystem_type(path: Path, mounts_text: str | None = None) -> str | None:
    """The type of the file system `path` lives on (ext4, tmpfs, fuse.sshfs...), from /proc/mounts."""
    try:
        mounts = (Path("/proc/mounts").read_text() if mounts_text is None else mounts_text).splitlines()
    except OSError:
        return None
    target = str(path.absolute() if mounts_text is not None else path.resolve())
    best, kind = "", None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def on_fuse(path: Path, mounts_text: str | None = None) -> bool:
    """FUSE mounts (Colab's Drive, sshfs, rclone) turn preallocation into writing every zero."""
    kind = filesystem_type(path, mounts_text) or ""
    return kind == "fuse" or kind.startswith(("fuse.", "fuseblk"))


def ensure_free_space(directory: Path, needed: int | None) -> None:
    """Refuse early when the disk cannot hold the file (plus a little slack)."""
    if not needed:
        return
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < needed + 16 * 1024 * 1024:
        raise OrchestratorError(
            "disk_full",
            f"Not enough free space: the file needs {human_bytes(needed)}, "
            f"the disk has {human_bytes(free)} free.",
            status=507,
        )


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def install(staged: Path, target: Path, overwrite: bool) -> None:
    """Move a verified file into place in one step; never replaces a file unless asked.

    os.link fails if the target exists, which makes "create only if absent" atomic;
    os.replace is the atomic overwrite. When the models folder is a symlink to
    another disk, the file is first copied next to the target, then moved.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staged.chmod(0o666 & ~_UMASK)  # a model is readable as any file this user makes
        try:
            _place(staged, target, overwrite)
        except OSError as exc:
            if exc.errno != errno.EXDEV:  # staging and target on different file systems
                raise
            _place_from_afar(staged, target, overwrite)
    except OSError as exc:
        raise install_error(target, exc) from None
    staged.unlink(missing_ok=True)


def _place_from_afar(staged: Path, target: Path, overwrite: bool) -> None:
    """Another disk: copy next to the target first, then the same one-step move; a copy that
    fails (that disk full, say) leaves nothing behind."""
    neighbour = target.with_name(f".{target.name}.part")
    try:
        copy_beside(staged, target)
        _place(neighbour, target, overwrite)
    finally:
        with contextlib.suppress(OSError):
            if stat.S_ISREG(neighbour.lstat().st_mode):
                neighbour.unlink()


def install_error(target: Path, exc: OSError) -> OrchestratorError:
    """What a person can do about a failed install: free space, or fix the folder's permissions."""
    folder = f"{target.parent.name}/"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OrchestratorError(
            "disk_full", f"The disk of the {folder} folder is full; the file could not be put there.", 507
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OrchestratorError(
            "folder_not_writable",
            f"The {folder} folder cannot be written to ({exc.strerror}); fix its permissions or pick "
            "another models folder.",
            507,
        )
    return OrchestratorError("disk_error", f"The file could not be put in {folder}: {exc.strerror}.", 507)


def copy_beside(staged: Path, target: Path) -> Path:
    """Copy the staged file to a hidden name next to the target, created anew: a link or a pipe
    planted at that name is refused, never written through."""
    neighbour = target.with_name(f".{target.name}.part")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        descriptor = os.open(neighbour, flags, 0o666 & ~_UMASK)
    except FileExistsError:
        if not stat.S_ISREG(neighbour.lstat().st_mode):
            raise not_regular(neighbour) from None
        neighbour.unlink()  # our own leftover from an interrupted copy
        descriptor = os.open(neighbour, flags, 0o666 & ~_UMASK)
    with open_regular(staged) as source, os.fdopen(descriptor, "wb") as copy:
        shutil.copyfileobj(source, copy, HASH_CHUNK)
    return neighbour


def _place(source: Path, target: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(source, target)
        return
    try:
        os.link(source, target)
    except FileExistsError:
        raise exists_error(target) from None
    except PermissionError:
        # Some file systems (FAT, certain FUSE mounts) have no hard links; a
        # check-then-rename is the best they allow.
        if target.exists():
            raise exists_error(target) from None
        os.rename(source, target)


def exists_error(target: Path) -> OrchestratorError:
    return OrchestratorError(
        "file_exists",
        f"{target.name} already exists in {target.parent.name}/ and is a different file; "
        "ask for overwrite to replace it.",
        status=409,
    )
