"""Which file names in a models folder are models, and which files beside a model describe it.

A model is recognised by an allow-list of extensions rather than by excluding known
sidecars: a folder also holds previews, notes, `.yaml` configs beside checkpoints,
`.aria2` control files and half-copied `.part` files, and none of them is a model.
Hidden names and the download staging folder are never part of the library.

Sidecar names follow the tools that read them: AUTOMATIC1111/Forge read `<stem>.json`
(user metadata), previews `<stem>.<ext>` or `<stem>.preview.<ext>` and notes `<stem>.txt` or
`<stem>.description.txt` (modules/ui_extra_networks.py: find_preview, find_description);
Civitai Helper and CivitAI Browser+ write `<stem>.civitai.info` (CivitAI's model-version
record); this app writes `<stem>.civitai.json` and `<stem>.preview.<ext>`; checkpoint
configs sit in `<stem>.yaml`.

Names are bytes here: a folder may hold names that are not UTF-8, and every path is
handed to the operating system exactly as it was listed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from ..config import STAGING_FOLDER
from ..roots import MODEL_EXTENSIONS as ROOTS_MODEL_EXTENSIONS

# roots' list (ComfyUI's supported_pt_extensions, GGUF, ONNX): every file GET /api/models lists is hashed
MODEL_EXTENSIONS = ROOTS_MODEL_EXTENSIONS
PREVIEW_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".avif")
# What may follow "<stem>." in a sidecar's name (compared in lower case).
METADATA_SUFFIXES = ("civitai.info", "civitai.json", "json")
OTHER_SUFFIXES = ("txt", "description.txt", "yaml", "yml")
SIDECAR_SUFFIXES = frozenset(
    {
        *METADATA_SUFFIXES,
        *OTHER_SUFFIXES,
        *(f"preview{ext}" for ext in PREVIEW_EXTENSIONS),
        *(ext.lstrip(".") for ext in PREVIEW_EXTENSIONS),
    }
)

_SUFFIXES_BYTES = tuple(b"." + suffix.encode() for suffix in sorted(SIDECAR_SUFFIXES))

SidecarTest = Callable[[str], bool]


def never_sidecar(name: str) -> bool:
    """The default extra filter: nothing beyond the extension rule."""
    return False


def text(name: bytes | str) -> str:
    """A name fit to show a person or to search: bytes that are not UTF-8 become U+FFFD."""
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else name


def is_hidden(name: bytes) -> bool:
    return name.startswith(b".")


def is_skipped_folder(name: bytes) -> bool:
    """Folders the library never enters: hidden ones (.git, .cache, .Trash) and staging."""
    return is_hidden(name) or name == os.fsencode(STAGING_FOLDER)


def extension(name: bytes) -> str:
    return os.path.splitext(text(name))[1].lower()


def is_model_name(name: bytes, is_sidecar: SidecarTest = never_sidecar) -> bool:
    """True for a visible file name with a model extension that the caller does not call a sidecar."""
    if is_hidden(name) or extension(name) not in MODEL_EXTENSIONS:
        return False
    return not is_sidecar(text(name))


def stem(name: bytes) -> bytes:
    return os.path.splitext(name)[0]


def sidecar_names(model_name: bytes, names: Iterable[bytes]) -> list[bytes]:
    """The names among `names` (one folder's listing) that describe the model `model_name`."""
    return sidecars_by_stem(names).get(stem(model_name), [])


def sidecars_by_stem(names: Iterable[bytes]) -> dict[bytes, list[bytes]]:
    """A folder's sidecar names grouped by the model stem they belong to, in one pass
    (a folder of thousands of LoRAs is listed once, not once per model)."""
    groups: dict[bytes, list[bytes]] = {}
    for name in sorted(names):
        lower = name.lower()
        for suffix in _SUFFIXES_BYTES:
            if lower.endswith(suffix) and len(name) > len(suffix):
                groups.setdefault(name[: -len(suffix)], []).append(name)
    return groups


def shares_stem(model_name: bytes, names: Iterable[bytes], is_sidecar: SidecarTest = never_sidecar) -> bool:
    """True when another model in the folder has the same stem (x.ckpt beside x.safetensors),
    so the sidecars describe it too and must stay."""
    own = stem(model_name)
    return any(name != model_name and stem(name) == own and is_model_name(name, is_sidecar) for name in names)
