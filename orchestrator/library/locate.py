"""Finding a model that a person names by its path, and reading its preview image.

A path is the one `GET /api/models` lists: relative to the models folder, or absolute for a
folder elsewhere (ComfyUI's extra paths, an A1111 install). It is checked by the same rules as a
delete (remove.py): no `..`, inside a root, no symbolic link on the way.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import OrchestratorError
from .naming import PREVIEW_EXTENSIONS, sidecar_names, stem, text
from .remove import Roots, checked_parts, open_folder, root_of

MAX_PREVIEW_BYTES = 32 * 1024 * 1024  # CivitAI previews are a few hundred KiB; a GIF a few MiB
PREVIEW_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".avif": "image/avif",
}


@dataclass(frozen=True)
class Located:
    root: Path  # the models folder (root) that holds the file
    rel: Path  # relative to it
    base: Path  # what the path was given relative to (the models folder, or the root itself)
    given: str  # relative to `base`, as remove_model takes it


def locate(path: str, roots: Roots, models_dir: Path) -> Located:
    """The root holding `path` and the path inside it; errors name what is wrong."""
    if not isinstance(path, str) or not path.strip():
        raise OrchestratorError("invalid_path", "Give the model's path (as the library lists it).", 400)
    folders = list(roots)
    if os.path.isabs(path):
        if ".." in PurePosixPath(path.replace("\\", "/")).parts:
            raise OrchestratorError(
                "invalid_path", f"{_shown(path)} climbs out with '..'; give a plain path."
            )
        target = Path(os.path.abspath(path))
        root = root_of(target, folders)
        if root is None:
            raise OrchestratorError("outside_roots", f"{_shown(path)} is not inside any models folder.", 400)
        rel = target.relative_to(root)
        return Located(root, rel, root, rel.as_posix())
    parts = checked_parts(path)
    target = Path(os.path.abspath(models_dir)).joinpath(*parts)
    root = root_of(target, folders)
    if root is None:
        raise OrchestratorError("outside_roots", f"{_shown(path)} is not inside any models folder.", 400)
    return Located(root, target.relative_to(root), Path(os.path.abspath(models_dir)), "/".join(parts))


def read_preview(found: Located) -> tuple[str, bytes]:
    """(content type, bytes) of the model's preview (`<stem>.preview.<ext>` first, then
    `<stem>.<ext>`), read without following any symbolic link."""
    folders, name = found.rel.parts[:-1], os.fsencode(found.rel.parts[-1])
    with open_folder(found.root, folders, found.rel) as folder_fd:
        names = [os.fsencode(entry) for entry in os.listdir(folder_fd)]
        if name not in names:
            raise OrchestratorError("not_found", f"{_shown(found.given)} does not exist.", 404)
        preview = _preview_name(name, names)
        if preview is None:
            raise OrchestratorError("no_preview", f"{_shown(found.given)} has no preview image.", 404)
        return _read_image(folder_fd, preview)


def _preview_name(model: bytes, names: list[bytes]) -> bytes | None:
    own = stem(model)
    present = {name.lower(): name for name in sidecar_names(model, names)}
    candidates = [own + b".preview" + ext.encode() for ext in PREVIEW_EXTENSIONS]
    candidates += [own + ext.encode() for ext in PREVIEW_EXTENSIONS]  # A1111's older form, after
    return next((present[name.lower()] for name in candidates if name.lower() in present), None)


def _read_image(folder_fd: int, name: bytes) -> tuple[str, bytes]:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=folder_fd)
    except OSError:
        raise OrchestratorError(
            "no_preview", f"The preview {_shown(text(name))} cannot be read (a link, or gone).", 404
        ) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_PREVIEW_BYTES:
            raise OrchestratorError("no_preview", f"{_shown(text(name))} is not a preview image.", 404)
        data = handle.read(MAX_PREVIEW_BYTES + 1)
    kind = PREVIEW_TYPES.get(os.path.splitext(text(name))[1].lower(), "application/octet-stream")
    return kind, data


def _shown(path: str) -> str:
    return repr(path[:120])
