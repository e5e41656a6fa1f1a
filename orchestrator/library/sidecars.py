"""Reading what the files beside a model say about it, whichever tool wrote them.

Two shapes are understood:
- CivitAI's model-version record (`GET /api/v1/model-versions/{id}` or `.../by-hash/{hash}`),
  saved as `<stem>.civitai.info` by Civitai Helper and CivitAI Browser+ and as
  `<stem>.civitai.json` by this app: `id` (the version), `modelId`, `name` (the version's),
  `baseModel`, `trainedWords`, `model.name`, `model.type`, `files[].hashes.SHA256`.
- AUTOMATIC1111's user metadata `<stem>.json` (extensions-builtin/Lora/ui_edit_user_metadata.py):
  `description`, `sd version`, `activation text` (one comma-separated string), `notes`;
  CivitAI Browser+ adds `modelId`, `modelVersionId` and `sha256` to it
  (scripts/civitai_file_manage.py).

A sidecar that is not JSON, too big, or of another shape is noted in `problems` and
otherwise ignored: a broken note beside a model never stops a scan.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from .naming import METADATA_SUFFIXES, PREVIEW_EXTENSIONS, stem, text
from .records import SidecarInfo, model_part

MAX_SIDECAR_BYTES = 8 * 1024 * 1024  # CivitAI records are tens of KiB; anything bigger is not one


def signature(folder: bytes, model_name: bytes, names: Iterable[bytes]) -> str:
    """A cheap fingerprint of a model's sidecars (names, and size and mtime of the metadata files),
    so a rescan reads them again only when one changed."""
    own = stem(model_name)
    parts = []
    for name in sorted(names):
        entry = text(name)
        if _suffix(own, name) in METADATA_SUFFIXES:
            try:
                info = os.stat(os.path.join(folder, name))
                entry += f":{info.st_size}:{info.st_mtime_ns}"
            except OSError:
                entry += ":gone"
        parts.append(entry)
    return "\n".join(parts)


def read(folder: bytes, model_name: bytes, names: Iterable[bytes]) -> SidecarInfo:
    """What the sidecars of `model_name` (the names `naming.sidecar_names` found in `folder`) say."""
    own = stem(model_name)
    found = sorted(names)
    by_suffix = {_suffix(own, name): name for name in found}
    problems: list[str] = []
    civitai: dict[str, Any] | None = None
    for suffix in ("civitai.info", "civitai.json"):
        if suffix in by_suffix and civitai is None:
            civitai = _civitai_record(_load(folder, by_suffix[suffix], problems), by_suffix[suffix], problems)
    user = _load(folder, by_suffix["json"], problems) if "json" in by_suffix else None
    if user is not None and not isinstance(user, dict):
        problems.append(f"{text(by_suffix['json'])}: not an object of user metadata")
        user = None
    return _combine(found, by_suffix, civitai or {}, user or {}, problems)


def _suffix(model_stem: bytes, name: bytes) -> str:
    """What follows the model's stem in a sidecar's name: "civitai.info", "json", "preview.png"..."""
    return text(name[len(model_stem) + 1 :]).lower()


def _load(folder: bytes, name: bytes, problems: list[str]) -> Any:
    path = os.path.join(folder, name)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SIDECAR_BYTES + 1)
    except OSError as exc:
        problems.append(f"{text(name)}: cannot be read ({exc.strerror or type(exc).__name__})")
        return None
    if len(raw) > MAX_SIDECAR_BYTES:
        problems.append(f"{text(name)}: larger than {MAX_SIDECAR_BYTES // (1024 * 1024)} MiB, not read")
        return None
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        problems.append(f"{text(name)}: not JSON")
        return None


def _civitai_record(data: Any, name: bytes, problems: list[str]) -> dict[str, Any] | None:
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), int):
        problems.append(f"{text(name)}: not a CivitAI model-version record")
        return None
    return data


def _combine(
    names: list[bytes],
    by_suffix: dict[str, bytes],
    civitai: dict[str, Any],
    user: dict[str, Any],
    problems: list[str],
) -> SidecarInfo:
    model = model_part(civitai)
    # The words a person typed into A1111's "activation text" win over CivitAI's list.
    words = _split_words(user.get("activation text")) or _word_list(civitai.get("trainedWords"))
    return SidecarInfo(
        files=tuple(text(name) for name in names),
        trigger_words=tuple(words),
        base_model=_str(civitai.get("baseModel")) or _str(user.get("sd version")),
        model_name=_str(model.get("name")),
        version_name=_str(civitai.get("name")),
        model_type=_str(model.get("type")),
        model_id=_int(civitai.get("modelId")) or _int(user.get("modelId")),
        version_id=_int(civitai.get("id")) or _int(user.get("modelVersionId")),
        description=_str(user.get("description")),
        preview=_preview(by_suffix),
        listed_sha256=tuple(_listed_hashes(civitai) or _user_hash(user)),
        problems=tuple(problems),
        record=civitai or None,
    )


def _listed_hashes(record: dict[str, Any]) -> list[str]:
    hashes = []
    for item in record.get("files") or []:
        if isinstance(item, dict) and isinstance(item.get("hashes"), dict):
            sha = item["hashes"].get("SHA256")
            if isinstance(sha, str) and len(sha) == 64:
                hashes.append(sha.lower())
    return hashes


def _user_hash(user: dict[str, Any]) -> list[str]:
    """The "sha256" CivitAI Browser+ keeps in A1111's user metadata (upper case there)."""
    value = user.get("sha256")
    return [value.lower()] if isinstance(value, str) and len(value) == 64 else []


def _preview(by_suffix: dict[str, bytes]) -> str | None:
    """`<stem>.preview.<ext>` first (A1111, this app), then `<stem>.<ext>` (A1111's older form)."""
    for wanted in [f"preview{ext}" for ext in PREVIEW_EXTENSIONS] + [ext[1:] for ext in PREVIEW_EXTENSIONS]:
        if wanted in by_suffix:
            return text(by_suffix[wanted])
    return None


def _split_words(value: object) -> list[str]:
    if not isinstance(value, str):
        return []
    return [word.strip() for word in value.split(",") if word.strip()]


def _word_list(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    words: list[str] = []
    for item in value:
        if isinstance(item, str):
            words.extend(_split_words(item))
    return words


def _str(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
