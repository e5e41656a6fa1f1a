"""What a bundle request asks for, as a Plan: the download requests of its files, and the files
that need none (in place already, or with no link). Every request is checked here, before any
job exists, so a bad line or a bad workflow entry refuses the whole and leaves nothing behind.

Four kinds: a list of links (pasted lines, a batch file, `get -i`), a ComfyUI workflow
(workflow.py reads it), a Hugging Face folder (hf_folder.py lists it) and chosen files of
CivitAI versions (sources/civitai.py lists them).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import intake, roots
from ..config import AUTO_TYPE, MODEL_TYPES
from ..errors import OrchestratorError
from ..pipeline.context import HashOf, Library
from ..roots import ModelRoots
from ..sources import Credentials, civitai, http
from . import hf_folder
from .model import Entry
from .workflow import ModelRef, read_workflow

MAX_FILES = 500  # files in one bundle: as many jobs as may wait at once (pipeline/registry.py)
MAX_NAME = 120


@dataclass
class Plan:
    kind: str
    name: str
    requests: list[dict[str, Any]]  # download requests (intake's shape), checked
    entries: list[Entry] = field(default_factory=list)
    destination: Path | None = None  # a folder bundle: where its folder goes
    source: dict[str, Any] = field(default_factory=dict)


# -- lists ------------------------------------------------------------------------------------


def list_plan(body: dict[str, Any], layout: str) -> Plan:
    """`items` (objects like a download request) or `text` (lines `URL [type] [name]`, as a
    batch file), with `type` for lines that name none. The same link twice is one download."""
    default_type = body.get("type") or None
    if isinstance(body.get("text"), str):
        requests = _lines(body["text"], default_type)
    elif isinstance(body.get("items"), list):
        requests = [_item(item, default_type, number) for number, item in enumerate(body["items"], 1)]
    else:
        raise OrchestratorError(
            "invalid_message", "A list needs `items` (a list) or `text` (lines of links)."
        )
    requests = [_checked(request, layout, f"item {n}") for n, request in enumerate(_unique(requests), 1)]
    if not requests:
        raise OrchestratorError("empty_bundle", "The list has no links in it.")
    name = _name(body.get("name")) or f"{len(requests)} links"
    return Plan("list", name, _with_tokens(requests, body), source={"lines": len(requests)})


def _lines(text: str, default_type: str | None) -> list[dict[str, Any]]:
    from ..cli.items import parse_batch  # the one reader of batch lines, shared with `get -i`

    items, bad = parse_batch(text, "line", default_type)
    if bad:
        problems = "; ".join(f"{outcome.where}: {outcome.error}" for outcome in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise OrchestratorError("invalid_list", f"Some lines cannot be downloaded: {problems}{more}.")
    return [item.request(Credentials(), overwrite=False) for item in items]


def _item(item: Any, default_type: str | None, number: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise OrchestratorError("invalid_list", f"Item {number} of the list is not an object.")
    allowed = ("url", "type", "name", "subfolder", "sha256")
    request = {key: item[key] for key in allowed if item.get(key) is not None}
    request.setdefault("type", default_type)
    return request


def _unique(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for request in requests:
        key = (request.get("url"), request.get("type"), request.get("subfolder"), request.get("name"))
        if key not in seen:
            seen.add(key)
            kept.append(request)
    if len(kept) > MAX_FILES:
        raise _too_many(len(kept))
    return kept


def _checked(request: dict[str, Any], layout: str, where: str) -> dict[str, Any]:
    try:
        intake.parse_download(request, layout)
    except OrchestratorError as error:
        raise OrchestratorError(error.code, f"{where.capitalize()}: {error.message}", error.status) from None
    return request


def _with_tokens(requests: list[dict[str, Any]], body: dict[str, Any]) -> list[dict[str, Any]]:
    """The bundle request's tokens go with each file (kept in memory, as for one download)."""
    tokens = {key: body[key] for key in ("civitai_token", "hf_token") if isinstance(body.get(key), str)}
    return [{**request, **tokens} for request in requests]


# -- ComfyUI workflows ---------------------------------------------------------------------------


def workflow_table(
    data: bytes, filename: str | None, model_roots: ModelRoots, known: Library
) -> dict[str, Any]:
    """Every model the workflow names, each with its status: present, different (a file of that
    name whose SHA-256 is not the workflow's), missing, or no_link. A model with no link but a
    SHA-256 is missing, with CivitAI's link, when CivitAI has those bytes; a missing one whose
    bytes the library holds elsewhere says where (the download links them instead of fetching)."""
    workflow = read_workflow(data, filename)
    rows = [_row(model, model_roots, known.sha256_of) for model in workflow.models]
    _link_by_hash(rows, known)
    for row in rows:
        if row["status"] == "missing" and row["sha256"] and (held := known.holding(row["sha256"])):
            row["held_at"] = held
            row["note"] = (
                f"The library has these bytes as {held}; they are linked, not fetched, on the same disk."
            )
    return {"format": workflow.format, "models": rows}


def _link_by_hash(rows: list[dict[str, Any]], known: Library) -> None:
    unlinked = [row for row in rows if row["status"] == "no_link" and row["sha256"]]
    if not unlinked:
        return
    links = known.civitai_links([row["sha256"] for row in unlinked])
    for row in unlinked:
        link = links.get(row["sha256"])
        if link is not None:
            row.update(url=link, status="missing", found_by="civitai_hash")
            row["note"] = "The workflow gives no link; CivitAI has a file with its SHA-256."


def workflow_plan(
    data: bytes,
    filename: str | None,
    body: dict[str, Any],
    model_roots: ModelRoots,
    known: Library,
    layout: str,
) -> Plan:
    """The missing models that have a link, as one bundle; the others as entries."""
    table = workflow_table(data, filename, model_roots, known)
    requests, entries = [], []
    for row in table["models"]:
        if row["status"] == "missing":
            requests.append(_checked(_model_request(row), layout, row["name"]))
        else:
            entries.append(
                Entry(row["name"], row["directory"], row["status"], row["path"], row["note"], row["hint"])
            )
    if len(requests) > MAX_FILES:
        raise _too_many(len(requests))
    name = _name(body.get("name")) or _name(Path(filename or "").stem) or "Workflow"
    source = {"workflow": _name(filename) or None, "format": table["format"], "models": len(table["models"])}
    return Plan("workflow", name, _with_tokens(requests, body), entries, source=source)


def _row(model: ModelRef, model_roots: ModelRoots, hash_of: HashOf) -> dict[str, Any]:
    row = {**model.public(), "status": "missing", "path": None, "note": "", "found_by": None, "held_at": None}
    for path in roots.find_present(model_roots, model.model_type, model.name):
        if model.sha256 and hash_of(path) != model.sha256:
            row.update(status="different", path=str(path))
            row["note"] = "A file of that name is there, but its SHA-256 is not the one the workflow names."
            continue
        row.update(status="present", path=str(path), note="")
        return row
    if row["status"] == "missing" and not model.url:
        row.update(status="no_link", note=model.hint.text if model.hint else "The workflow gives no link.")
    return row


def _model_request(row: dict[str, Any]) -> dict[str, Any]:
    subfolder, _, name = row["name"].rpartition("/")
    request = {"url": row["url"], "type": row["model_type"], "name": name, "subfolder": subfolder}
    if row["sha256"]:
        request["sha256"] = row["sha256"]
    return request


# -- Hugging Face folders ------------------------------------------------------------------------


def hf_folder_plan(
    body: dict[str, Any], model_roots: ModelRoots, models_dir: Path, policy: Any, hash_of: HashOf, layout: str
) -> Plan:
    """Blocking: list the folder at one commit; its files keep their layout under
    `<type folder>/<folder name>/`, which appears only when every file is verified."""
    link = hf_folder.parse_folder(str(body.get("url") or ""))
    if link is None:
        raise OrchestratorError("hf_bad_link", "That is not a link to a Hugging Face folder or repository.")
    model_type = _folder_type(body.get("type"))
    token = http.token_from(
        body.get("hf_token") if isinstance(body.get("hf_token"), str) else None, "HF_TOKEN"
    )
    with http.session(policy) as session:
        listing = hf_folder.list_folder(
            link, session, token, _patterns(body, "include"), _patterns(body, "exclude")
        )
    if len(listing.files) > MAX_FILES:
        raise _too_many(len(listing.files))
    hf_folder.require_complete_shards(listing.files)
    folder_name = posixpath.basename(listing.folder) or link.repo.rsplit("/", 1)[-1]
    destination = _inside_type_folder(model_roots.default(model_type), folder_name)
    requests, entries = [], []
    for file in listing.files:
        present = _present_in_folder(destination, file, hash_of)
        if present:
            entries.append(Entry(file.path, folder_name, "present", str(destination / file.path)))
            continue
        subfolder, _, name = file.path.rpartition("/")
        request = {"url": file.url, "type": model_type, "name": name, "subfolder": subfolder}
        if file.sha256:
            request["sha256"] = file.sha256
        requests.append(_checked(request, layout, file.path))
    source: dict[str, Any] = {"repo": listing.repo, "kind": listing.kind, "revision": listing.revision}
    source.update(
        commit=listing.commit, folder=listing.folder, files=len(listing.files), size=listing.total_size
    )
    name = _name(body.get("name")) or f"{listing.repo}" + (f"/{listing.folder}" if listing.folder else "")
    return Plan("hf_folder", name, _with_tokens(requests, body), entries, destination, source)


def _folder_type(value: Any) -> str:
    if value in (None, "", AUTO_TYPE):
        raise OrchestratorError(
            "type_required",
            "A folder goes into one type's folder: pick its type (diffusers for a diffusers folder, "
            "text_encoder for a folder of text encoders...).",
        )
    if value not in MODEL_TYPES:
        raise OrchestratorError("unknown_type", f"Unknown model type {str(value)[:40]!r}.")
    return str(value)


def _patterns(body: dict[str, Any], key: str) -> Sequence[str]:
    value = body.get(key) or []
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(part, str) for part in value):
        raise OrchestratorError("invalid_message", f"`{key}` must be a list of patterns like *.safetensors.")
    return [part for part in value if part][:50]


def _inside_type_folder(type_folder: Path, folder_name: str) -> Path:
    if roots.check_subfolder(folder_name) != folder_name or "/" in folder_name:
        raise OrchestratorError("invalid_subfolder", f"{folder_name[:80]!r} cannot be a folder name here.")
    return type_folder / folder_name


def _present_in_folder(destination: Path, file: hf_folder.FolderFile, hash_of: HashOf) -> bool:
    """A file of the folder already in place, with the same bytes; another file there is an error."""
    path = destination / file.path
    if not os.path.lexists(path):
        return False
    same = path.is_file() and not path.is_symlink() and path.stat().st_size == file.size
    if same and file.sha256:
        same = hash_of(path) == file.sha256
    if not same:
        raise OrchestratorError(
            "file_exists",
            f"{path} is already there and is not the repository's {file.path}; move it away first.",
            409,
        )
    return True


# -- CivitAI versions ----------------------------------------------------------------------------


def civitai_plan(body: dict[str, Any], policy: Any, layout: str) -> Plan:
    """Blocking: the chosen files (`files`: CivitAI file ids, or "all" model files) of the link's
    version, and every model file of each other version of its model named in `versions`
    (the page shows one version's files to tick, and the model's other versions whole)."""
    token = body.get("civitai_token") if isinstance(body.get("civitai_token"), str) else None
    credentials = Credentials(civitai=token)
    first = civitai.version_files(str(body.get("url") or ""), credentials, policy)
    listings = [first]
    wanted = _version_ids(body.get("versions"))
    if wanted:
        listings = [
            first
            if version == first.version_id
            else civitai.version_files(f"{first.model_id}@{version}", credentials, policy)
            for version in wanted
        ]
    chosen = body.get("files", "all")
    ids = None if chosen == "all" else _file_ids(chosen)
    requests = []
    for listing in listings:
        only = ids if listing.version_id == first.version_id else None
        for file in listing.files:
            if only is not None and file.id not in only:
                continue
            if file.model_type is None:
                if only is not None:
                    raise OrchestratorError("not_a_model", f"{file.name} ({file.kind}) is not a model file.")
                continue
            request = {"url": listing.download_link(file), "type": file.model_type, "name": file.name}
            requests.append(_checked(request, layout, file.name))
    if not requests:
        raise OrchestratorError("empty_bundle", "None of the chosen files is a model file.")
    name = _name(body.get("name")) or " + ".join(
        f"{item.model_name} {item.version_name}".strip() for item in listings
    )
    source = {"model_id": first.model_id, "versions": [item.version_id for item in listings]}
    return Plan("civitai", _name(name) or "CivitAI files", _with_tokens(requests, body), source=source)


def _version_ids(value: Any) -> list[int]:
    if value in (None, []):
        return []
    if not isinstance(value, list) or not all(isinstance(v, int) and v > 0 for v in value):
        raise OrchestratorError("invalid_message", "`versions` must be a list of CivitAI version ids.")
    return list(dict.fromkeys(value))[:20]


def _file_ids(value: Any) -> set[int]:
    if not isinstance(value, list) or not value or not all(isinstance(v, int) for v in value):
        raise OrchestratorError("invalid_message", '`files` must be "all" or a list of CivitAI file ids.')
    return set(value)


# -- shared --------------------------------------------------------------------------------------


def _name(value: Any) -> str:
    """A bundle's name as people see it: text, one line, not too long."""
    if not isinstance(value, str):
        return ""
    return " ".join(value.split())[:MAX_NAME]


def _too_many(count: int) -> OrchestratorError:
    return OrchestratorError(
        "bundle_too_large",
        f"That is {count} files; a bundle holds at most {MAX_FILES}. Pick fewer "
        "(include / exclude patterns for a folder).",
        413,
    )
