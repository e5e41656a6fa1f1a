"""A folder bundle's last step: the folder built in staging goes into place whole.

Its files were each verified and installed into the bundle's staging folder
(files.bundle_staging); only when all are there does the folder appear under its type, in one
rename, so a UI never sees half a diffusers folder. On another disk the folder is copied
beside its place under a hidden name first, then renamed. When the folder was already there
(some of its files were present), the new files go in one by one, never replacing any.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from .. import files


def place_folder(built: Path, destination: Path) -> None:
    """Move `built` to `destination` (nothing to do when it went there before a restart)."""
    if not built.exists():
        return
    relatives = _files_in(built)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(destination):
            _rename_whole(built, destination)
        else:
            _merge_into(built, destination, relatives)
    except OSError as exc:
        raise files.install_error(destination, exc) from None
    shutil.rmtree(built, ignore_errors=True)


def _files_in(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def _rename_whole(built: Path, destination: Path) -> None:
    try:
        os.rename(built, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        beside = destination.with_name(f".{destination.name}.partial")
        shutil.rmtree(beside, ignore_errors=True)
        try:
            shutil.copytree(built, beside, symlinks=True)
            os.rename(beside, destination)
        finally:
            shutil.rmtree(beside, ignore_errors=True)


def _merge_into(built: Path, destination: Path, relatives: list[str]) -> None:
    if not destination.is_dir() or destination.is_symlink():
        raise files.exists_error(destination)
    for relative in relatives:
        files.install(built / relative, destination / relative, overwrite=False)
