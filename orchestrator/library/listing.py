"""`GET /api/models`: every model file in every folder of every type, with what the library knows.

The folders decide what is listed (a file placed by hand shows at once, one deleted by hand is
gone at once); the index adds, for each file it has seen, its SHA-256 and AutoV2, where it came
from, what its sidecars and CivitAI say, its other copies and a newer version. The shape of the
listing the page and the CLI read before the library (`{"models": {type: [{name, size,
modified}]}}`) is kept; every other field is new.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from ..roots import ModelRoots, iter_models
from ..sources import civitai, huggingface
from .index import root_key
from .records import FileRecord, Source

PREVIEW_ROUTE = "api/models/preview"  # relative, as the page's own requests are


def listing(
    model_roots: ModelRoots,
    types: Iterable[Mapping[str, str]],
    records: Iterable[FileRecord],
    updates: Mapping[int, dict[str, Any]],
    models_dir: Path,
) -> dict[str, list[dict[str, Any]]]:
    """{type: [entry, ...]} for every type with a folder; blocking (it lists the folders)."""
    show = shower(models_dir)
    known = {(root_key(record.root), os.fsencode(record.rel_path)): record for record in records}
    copies: dict[str, list[str]] = {}
    for record in known.values():
        if record.sha256:
            copies.setdefault(record.sha256, []).append(show(os.path.join(record.root, record.rel_path)))
    result: dict[str, list[dict[str, Any]]] = {entry["name"]: [] for entry in types if entry["folder"]}
    for found in iter_models(model_roots):
        full = os.path.join(found.root, found.relative)
        try:
            info = os.stat(full)
        except OSError:
            continue  # gone between the listing and the stat
        path = show(full)
        entry: dict[str, Any] = {
            "name": found.relative.as_posix(),
            "size": info.st_size,
            "modified": info.st_mtime,
            "path": path,
        }
        entry.update(
            describe(known.get((root_key(found.root), os.fsencode(found.relative))), path, copies, updates)
        )
        result.setdefault(found.model_type, []).append(entry)
    return result


def describe(
    record: FileRecord | None,
    path: str,
    copies: Mapping[str, list[str]],
    updates: Mapping[int, dict[str, Any]],
) -> dict[str, Any]:
    """The library's fields of one listed file (all null when the index has not seen it yet)."""
    if record is None:
        return {
            "id": None,
            "sha256": None,
            "autov2": None,
            "source": None,
            "source_url": None,
            "title": None,
            "version_name": None,
            "trigger_words": [],
            "base_model": None,
            "preview": None,
            "duplicates": [],
            "update": None,
            "civitai": None,
            "problems": [],
        }
    lookup = record.lookup
    return {
        "id": record.id,
        "sha256": record.sha256,
        "autov2": record.autov2,
        "source": record.source.as_dict(),
        "source_url": source_url(record.source),
        "title": record.title,
        "version_name": record.sidecars.version_name or (lookup.version_name if lookup else None),
        "trigger_words": list(record.sidecars.trigger_words) or _trained_words(record),
        "base_model": record.base_model,
        "preview": preview_url(path) if record.sidecars.preview else None,
        "duplicates": [other for other in copies.get(record.sha256 or "", []) if other != path],
        "update": updates.get(record.id),
        "civitai": lookup.state if lookup else None,  # hit, miss or error: what asking CivitAI gave
        "problems": list(record.sidecars.problems),
    }


def shown_path(path: Path, models_dir: Path) -> str:
    """As people and jobs see a path: relative to the models folder, else absolute."""
    return shower(models_dir)(os.fspath(path))


def shower(models_dir: Path) -> Callable[[str], str]:
    """shown_path for many paths: strings, not pathlib (thousands of files on every listing)."""
    base = os.path.abspath(models_dir).rstrip(os.sep) + os.sep

    def show(path: str) -> str:
        full = os.path.abspath(path)
        return full[len(base) :].replace(os.sep, "/") if full.startswith(base) else full

    return show


def preview_url(path: str) -> str:
    return f"{PREVIEW_ROUTE}?{urlencode({'path': path}, quote_via=quote)}"


def source_url(source: Source) -> str | None:
    """A page a person can open for where the file came from."""
    if source.kind == "civitai" and source.model_id is not None:
        version = f"?modelVersionId={source.version_id}" if source.version_id is not None else ""
        return f"{civitai.site_url()}/models/{source.model_id}{version}"
    if source.kind == "huggingface" and source.repo:
        return f"{huggingface.PUBLIC_SITE}/{source.repo}"
    return source.url


def _trained_words(record: FileRecord) -> list[str]:
    """CivitAI's trigger words from the look-up's record, when no sidecar gave any."""
    lookup = record.lookup
    words = (lookup.record or {}).get("trainedWords") if lookup else None
    return [word for word in words if isinstance(word, str)] if isinstance(words, list) else []
