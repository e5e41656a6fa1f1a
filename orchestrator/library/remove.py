"""Deleting a model and the files that describe it, and nothing else.

Rules, in the order they are checked:
- the path is relative (to the models folder, as the app shows paths), has no `..` and
  no empty or NUL part: else `invalid_path`;
- it lies inside one of the roots (the deepest one that holds it): else `outside_roots`;
- no folder between the root and the file is a symbolic link: else `symlink_refused`
  (the root itself may be one: a models folder on another disk is common). Each folder
  is opened with O_NOFOLLOW from its parent's descriptor, so a folder swapped for a
  link during the check is refused too;
- the file exists (`not_found`), is a model by name and not a folder (`not_a_model`);
- a model that is itself a symbolic link is removed as a link, and only when it points
  inside a root (`symlink_refused` otherwise).
Sidecars (`naming.sidecar_names`) go with the model unless another model of the same
stem stays in the folder (x.ckpt beside x.safetensors). The index drops the row.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import OrchestratorError
from .index import LibraryIndex
from .naming import (
    SidecarTest,
    is_model_name,
    is_skipped_folder,
    never_sidecar,
    shares_stem,
    sidecar_names,
    text,
)

Roots = Iterable[tuple[str, Path]]
_DRIVE = re.compile(r"[A-Za-z]:([\\/]|$)")  # C:\models\x: absolute on Windows, and never meant here


@dataclass(frozen=True)
class Removal:
    model: Path
    sidecars: tuple[Path, ...]
    freed_bytes: int  # 0 when another hard link still holds the bytes
    forgotten: bool  # the index had a row for it


def remove_model(
    index: LibraryIndex,
    roots: Roots,
    path: str | os.PathLike[str],
    *,
    base: Path,
    is_sidecar: SidecarTest = never_sidecar,
) -> Removal:
    """Delete the model at `path` (relative to `base`, the models folder) and its sidecars."""
    roots = list(roots)
    parts = checked_parts(path)
    target = Path(os.path.abspath(base)).joinpath(*parts)
    root = root_of(target, roots)
    if root is None:
        raise OrchestratorError("outside_roots", f"{_shown(path)} is not inside any models folder.", 400)
    return _remove(index, root, target.relative_to(root), roots, is_sidecar)


def remove_record(
    index: LibraryIndex, roots: Roots, file_id: int, *, is_sidecar: SidecarTest = never_sidecar
) -> Removal:
    """Delete the model the index lists under `file_id`, by the same rules."""
    record = index.get(file_id)
    if record is None:
        raise OrchestratorError("not_found", f"The library has no file {file_id}.", 404)
    root = Path(os.path.abspath(record.root))
    roots = list(roots)
    if not any(Path(os.path.abspath(folder)) == root for _, folder in roots):
        raise OrchestratorError(
            "outside_roots", f"{record.display_path} is not in a models folder in use.", 400
        )
    rel = Path(*checked_parts(record.rel_path))
    return _remove(index, root, rel, roots, is_sidecar)


def checked_parts(path: str | os.PathLike[str]) -> list[str]:
    raw = os.fspath(path)
    if not isinstance(raw, str) or not raw.strip() or "\0" in raw:
        raise OrchestratorError("invalid_path", "Give the model's path inside the models folder.", 400)
    if raw.startswith(("/", "\\")) or os.path.isabs(raw) or _DRIVE.match(raw):
        raise OrchestratorError(
            "invalid_path", f"{_shown(raw)} is absolute; give a path inside the models folder."
        )
    parts = [part for part in PurePosixPath(raw.replace("\\", "/")).parts if part not in ("", ".")]
    if ".." in parts:
        raise OrchestratorError("invalid_path", f"{_shown(raw)} climbs out with '..'; give a plain path.")
    if not parts:
        raise OrchestratorError("invalid_path", "Give the model's path inside the models folder.", 400)
    return parts


def root_of(target: Path, roots: Roots) -> Path | None:
    """The deepest root that holds `target`, compared by name (symlinks are judged later)."""
    holding = [
        folder
        for folder in (Path(os.path.abspath(f)) for _, f in roots)
        if folder != target and folder in target.parents
    ]
    return max(holding, key=lambda folder: len(folder.parts)) if holding else None


def _remove(index: LibraryIndex, root: Path, rel: Path, roots: Roots, is_sidecar: SidecarTest) -> Removal:
    try:
        return _delete(index, root, rel, list(roots), is_sidecar)
    except OrchestratorError as error:
        if error.code == "not_found":
            index.forget_path(root, rel)  # deleted by hand: the index follows
        raise


def _delete(index: LibraryIndex, root: Path, rel: Path, roots: Roots, is_sidecar: SidecarTest) -> Removal:
    folders, name = rel.parts[:-1], os.fsencode(rel.parts[-1])
    if any(is_skipped_folder(os.fsencode(folder)) for folder in folders):
        raise OrchestratorError(
            "not_a_model", f"{_shown(rel)} is in a hidden or staging folder, not in the library.", 400
        )
    with open_folder(root, folders, rel) as folder_fd:
        info = _lstat(folder_fd, name, rel)
        if stat.S_ISDIR(info.st_mode):
            raise OrchestratorError("not_a_model", f"{_shown(rel)} is a folder, not a model file.", 400)
        if not is_model_name(name, is_sidecar):
            raise OrchestratorError("not_a_model", f"{_shown(rel)} is not a model file.", 400)
        if stat.S_ISLNK(info.st_mode):
            _check_link(root / rel, roots)
        elif not stat.S_ISREG(info.st_mode):
            raise OrchestratorError("not_a_model", f"{_shown(rel)} is not a regular file.", 400)
        names = os.listdir(folder_fd)
        listed = [os.fsencode(n) for n in names]
        extras = [] if shares_stem(name, listed, is_sidecar) else sidecar_names(name, listed)
        freed = info.st_size if stat.S_ISREG(info.st_mode) and info.st_nlink == 1 else 0
        _unlink(folder_fd, name, rel)
        removed = [extra for extra in extras if _remove_sidecar(folder_fd, extra)]
    forgotten = index.forget_path(root, rel) > 0
    folder_path = root.joinpath(*folders)
    return Removal(
        model=root / rel,
        sidecars=tuple(folder_path / os.fsdecode(extra) for extra in removed),
        freed_bytes=freed,
        forgotten=forgotten,
    )


@contextlib.contextmanager
def open_folder(root: Path, folders: tuple[str, ...], rel: Path) -> Iterator[int]:
    """A descriptor of the folder holding the model, reached without following any symlink."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise OrchestratorError("not_found", f"The models folder {root} is not there.", 404) from None
    try:
        for part in folders:
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                raise _folder_error(fd, part, exc, rel) from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _folder_error(parent_fd: int, part: str, exc: OSError, rel: Path) -> OrchestratorError:
    try:
        info = os.stat(part, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return OrchestratorError("not_found", f"{_shown(rel)} does not exist.", 404)
    except OSError:
        info = None
    if info is not None and stat.S_ISLNK(info.st_mode):
        return OrchestratorError(
            "symlink_refused",
            f"{_shown(rel)}: the folder {_shown(part)} is a symbolic link; nothing was deleted.",
            400,
        )
    if info is not None and not stat.S_ISDIR(info.st_mode):
        return OrchestratorError(
            "not_found", f"{_shown(rel)} does not exist ({_shown(part)} is a file).", 404
        )
    return OrchestratorError("remove_failed", f"{_shown(rel)} could not be reached: {exc.strerror}.", 500)


def _lstat(folder_fd: int, name: bytes, rel: Path) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise OrchestratorError("not_found", f"{_shown(rel)} does not exist.", 404) from None


def _check_link(link: Path, roots: Roots) -> None:
    """A model that is a symlink may go (as a link) only if it points to a file inside a root."""
    real = Path(os.path.realpath(link))
    inside = any(
        real.is_relative_to(Path(os.path.realpath(folder))) and real != Path(os.path.realpath(folder))
        for _, folder in roots
    )
    if not inside or not real.is_file():
        raise OrchestratorError(
            "symlink_refused",
            f"{_shown(link.name)} is a symbolic link to something outside the models folders; "
            "nothing was deleted.",
            400,
        )


def _unlink(folder_fd: int, name: bytes, rel: Path) -> None:
    try:
        os.unlink(name, dir_fd=folder_fd)
    except FileNotFoundError:
        raise OrchestratorError("not_found", f"{_shown(rel)} does not exist.", 404) from None
    except OSError as exc:
        raise OrchestratorError(
            "remove_failed", f"{_shown(rel)} could not be deleted: {exc.strerror}.", 500
        ) from None


def _remove_sidecar(folder_fd: int, name: bytes) -> bool:
    """Delete one sidecar if it is a file or a link (a link is removed, never what it points to)."""
    try:
        info = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            return False
        os.unlink(name, dir_fd=folder_fd)
    except OSError:
        return False
    return True


def _shown(path: str | os.PathLike[str]) -> str:
    return repr(text(os.fsencode(os.fspath(path)))[:120])
