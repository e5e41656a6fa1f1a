"""Files beside a model that other tools read: what goes in them, and a writer that stays in its folder.

Names and fields, as each reader's own source reads them (the stem is the model's name
without its last extension, os.path.splitext, in every reader):
- `<stem>.json`, the user metadata of AUTOMATIC1111 / Forge: modules/extra_networks.py
  `get_user_metadata` loads it whole; modules/ui_extra_networks_user_metadata.py edits
  "description" and "notes"; extensions-builtin/Lora/ui_edit_user_metadata.py adds
  "sd version", "activation text", "preferred weight" (a float, 0 turns it off) and
  "negative text"; ui_extra_networks_lora.py uses "sd version" only when it names an
  extensions-builtin/Lora/network.py SdVersion ("SD1", "SD2", "SDXL", "Unknown"). The
  editor writes the whole dict back, so keys it does not know survive. CivitAI Browser+
  (scripts/civitai_file_manage.py `get_models`, `find_and_save`) reads the same file for
  "modelId", "modelVersionId" and "sha256" (upper case) and fills the A1111 keys only when
  missing.
- `<stem>.civitai.info`, CivitAI's model-version record as JSON: Civitai Helper
  (scripts/ch_lib/civitai.py, suffix ".civitai" + model.py info_ext ".info") reads "id",
  "modelId", "trainedWords", "images"; LoRA Manager (py/services/model_scanner.py) builds
  its own metadata from it only when a file of "files" has "primary": true, taking that
  file's "hashes"."SHA256" and "sizeKB". CivitAI Browser+ does not read it.
- previews: A1111's modules/ui_extra_networks.py `find_preview` tries `<stem>.<ext>` and
  `<stem>.preview.<ext>` for png, jpg, jpeg, webp, gif (and the samples format); Civitai
  Helper and CivitAI Browser+ look only for `<stem>.preview.png`; LoRA Manager's
  py/utils/constants.py PREVIEW_EXTENSIONS has .preview.{webp,png,jpeg,jpg,mp4}.
- `<stem>.civitai.json` was written by earlier versions of this app; no reader reads it.

A model whose stem-named sidecars would be another model's (`a.safetensors` and `a.ckpt`
both map to `a.json`) gets none: the readers could not tell whose they are.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from .errors import OrchestratorError

log = logging.getLogger(__name__)

USER_METADATA = ".json"
CIVITAI_INFO = ".civitai.info"
LEGACY_CIVITAI_JSON = ".civitai.json"
# Preview names and who shows them (see the module docstring for the sources).
PREVIEW_READERS: dict[str, tuple[str, ...]] = {
    ".preview.png": ("AUTOMATIC1111", "Civitai Helper", "CivitAI Browser+", "LoRA Manager"),
    ".preview.jpeg": ("AUTOMATIC1111", "LoRA Manager"),
    ".preview.webp": ("AUTOMATIC1111", "LoRA Manager"),
    ".preview.gif": ("AUTOMATIC1111",),
    ".preview.mp4": ("LoRA Manager",),
}
PREVIEW_FOR_TYPE = {
    "image/png": ".preview.png",
    "image/jpeg": ".preview.jpeg",
    "image/webp": ".preview.webp",
    "image/gif": ".preview.gif",
    "video/mp4": ".preview.mp4",
}
SIDECAR_SUFFIXES = (USER_METADATA, CIVITAI_INFO, LEGACY_CIVITAI_JSON, *PREVIEW_READERS)
# Extensions of files that describe a model rather than being one: ours, and other tools'
# (A1111 `<stem>.txt` descriptions, `<stem>.png` previews and `<stem>.yaml` configs, LoRA
# Manager `<stem>.metadata.json`, CivitAI Browser+ `<stem>.html` and `.api_info.json`).
_COMPANION_EXTENSIONS = {
    "json", "info", "txt", "md", "html", "htm", "yaml", "yml",
    "png", "jpg", "jpeg", "webp", "gif", "avif", "jxl", "mp4", "webm",
}  # fmt: skip
_PREVIEW_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif", "mp4", "webm", "avif", "jxl")
# A1111's SdVersion names for CivitAI base models; others are left out so A1111 detects it.
_SD_VERSIONS = (("SD 1", "SD1"), ("SD 2", "SD2"), ("SDXL", "SDXL"), ("Pony", "SDXL"), ("Illustrious", "SDXL"))
# Marks a .civitai.info this app wrote, so only those are ever replaced; readers ignore it.
MARKER_KEY = "_writtenBy"
MARKER_VALUE = "orchestrator"
CIVITAI_SITE = "https://civitai.com"
HUGGINGFACE_SITE = "https://huggingface.co"
READ_LIMIT = 4 * 1024 * 1024  # a sidecar larger than this is not ours to merge
_SUFFIX = re.compile(r"(\.[A-Za-z0-9_]+){1,3}")
_NAME_LIMIT = 255 - len("..part")  # the temporary `.<name>.part` must fit a file-name limit too


class Outcome(NamedTuple):
    """What happened to one sidecar."""

    path: Path
    action: str  # written | merged | replaced | unchanged | kept | skipped | refused
    detail: str = ""


# -- which files are sidecars ----------------------------------------------------------------------


def is_sidecar(name: str) -> bool:
    """True for a file that describes a model rather than being one (never list it as a model)."""
    base, dot, extension = name.lower().rpartition(".")
    return bool(base and dot) and extension in _COMPANION_EXTENSIONS


def sidecar_names(model_name: str) -> list[str]:
    """Every sidecar name this app writes or wrote for a model file name."""
    stem = os.path.splitext(model_name)[0]
    return [stem + suffix for suffix in SIDECAR_SUFFIXES]


def sidecar_conflicts(model_path: Path) -> list[Path]:
    """Other models in the folder whose sidecar names overlap this one's (`a.ckpt` for `a.safetensors`)."""
    mine = set(sidecar_names(model_path.name))
    try:
        entries = list(os.scandir(model_path.parent))
    except OSError:
        return []
    return sorted(
        model_path.parent / entry.name
        for entry in entries
        if entry.name != model_path.name
        and not entry.name.startswith(".")
        and not is_sidecar(entry.name)
        and not entry.is_dir()
        and mine & set(sidecar_names(entry.name))
    )


def sidecar_paths(model_path: Path) -> list[Path]:
    """The sidecars of a model that exist as regular files, to delete with it; none when they are
    shared with another model's stem (they may be that model's)."""
    if sidecar_conflicts(model_path):
        return []
    found = []
    for name in sidecar_names(model_path.name):
        path = model_path.parent / name
        with contextlib.suppress(OSError):
            if stat.S_ISREG(path.lstat().st_mode):
                found.append(path)
    return found


# -- what goes in them -----------------------------------------------------------------------------


def a1111_sd_version(base_model: str | None) -> str | None:
    """A1111's "sd version" for a CivitAI base model ("SDXL 1.0" -> "SDXL"); None when A1111 has none."""
    for prefix, version in _SD_VERSIONS:
        if (base_model or "").startswith(prefix):
            return version
    return None


def civitai_user_metadata(
    record: Mapping[str, Any], file_id: Any = None, sha256: str | None = None
) -> dict[str, Any]:
    """`<stem>.json` for a CivitAI model: A1111's editor fields and CivitAI Browser+'s ids.

    "sha256" is the measured one, else the downloaded file's as CivitAI lists it.
    "preferred weight" is left out: CivitAI publishes none, and A1111 reads a missing one as 0 (off).
    """
    model: Mapping[str, Any] = record["model"] if isinstance(record.get("model"), Mapping) else {}
    words = [str(word).strip() for word in record.get("trainedWords") or [] if str(word).strip()]
    # A1111 adds the <lora:name:weight> tag itself; Browser+ drops such words the same way
    words = [word for word in words if not re.fullmatch(r"<[^>]*:[^>]*>", word)]
    title = " - ".join(str(part) for part in (model.get("name"), record.get("name")) if part)
    description = html_to_text(str(record.get("description") or model.get("description") or ""))
    fields: dict[str, Any] = {"description": description or f"{title} (CivitAI)".strip()}
    version = a1111_sd_version(str(record.get("baseModel") or ""))
    if version:
        fields["sd version"] = version
    if words:
        fields["activation text"] = ", ".join(words)
    if record.get("modelId") and record.get("id"):
        fields["notes"] = f"CivitAI: {CIVITAI_SITE}/models/{record['modelId']}?modelVersionId={record['id']}"
        fields["modelId"] = record["modelId"]
        fields["modelVersionId"] = record["id"]
    digest = sha256 or _file_sha256(_downloaded_file(record, file_id))
    if digest:
        fields["sha256"] = digest.upper()
    return fields


def civitai_info(record: Mapping[str, Any], file_id: Any = None) -> dict[str, Any]:
    """`<stem>.civitai.info`: CivitAI's model-version record, its files narrowed to the downloaded one.

    That file is marked primary, because LoRA Manager takes the primary file as the model
    on disk (its hash and size); with several files and no `file_id` they are kept as they are.
    """
    info = copy.deepcopy(dict(record))
    downloaded = _downloaded_file(record, file_id)
    if downloaded is not None:
        info["files"] = [{**copy.deepcopy(dict(downloaded)), "primary": True}]
    info[MARKER_KEY] = MARKER_VALUE
    return info


def _downloaded_file(record: Mapping[str, Any], file_id: Any) -> Mapping[str, Any] | None:
    """The record's entry for the file on disk: by id, or the only one listed."""
    listed = [item for item in record.get("files") or [] if isinstance(item, Mapping)]
    if file_id is not None:
        return next((item for item in listed if item.get("id") == file_id), None)
    return listed[0] if len(listed) == 1 else None


def _file_sha256(item: Mapping[str, Any] | None) -> str | None:
    hashes = item.get("hashes") if item is not None else None
    value = hashes.get("SHA256") if isinstance(hashes, Mapping) else None
    return value if isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value) else None


def huggingface_user_metadata(
    repo: str,
    path: str,
    *,
    commit: str | None = None,
    revision: str | None = None,
    license_id: str | None = None,
    repo_type: str = "model",
) -> dict[str, Any]:
    """`<stem>.json` for a Hugging Face file: where it came from, for A1111's card and for people."""
    prefix = {"dataset": "datasets/", "space": "spaces/"}.get(repo_type, "")
    at = quote(commit or revision or "main", safe="")
    page = f"{HUGGINGFACE_SITE}/{prefix}{repo}/blob/{at}/{quote(path)}"
    facts = {"repo": repo, "repo_type": repo_type, "revision": revision, "commit": commit, "path": path}
    facts["license"] = license_id
    return {
        "description": f"{path} from {repo} (Hugging Face)",
        "notes": f"Hugging Face: {page}",
        "huggingface": {key: value for key, value in facts.items() if value},
    }


def preview_suffix(content_type: str) -> str | None:
    """The preview name for a media type, or None when no reader would show it (`video/webm`)."""
    return PREVIEW_FOR_TYPE.get(content_type.split(";")[0].strip().lower())


def html_to_text(text: str, limit: int = 4000) -> str:
    """CivitAI's HTML descriptions as plain text: A1111 shows the description on the card."""
    parser = _TextOnly()
    parser.feed(text)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    return "\n".join(line for line in lines if line)[:limit]


class _TextOnly(HTMLParser):
    """The text of an HTML fragment; block tags become line breaks, scripts and styles vanish."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.hidden += 1
        elif tag in ("br", "p", "div", "li", "h1", "h2", "h3", "h4", "tr"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self.hidden:
            self.hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


# -- writing them ----------------------------------------------------------------------------------


def write_description(
    model_path: Path,
    root: Path,
    kind: str,
    record: Mapping[str, Any],
    *,
    file_id: Any = None,
    sha256: str | None = None,
    preview: tuple[str, bytes] | None = None,
) -> list[Outcome]:
    """The sidecars for what a source said about the model (sources.Description). A file that is
    itself a sidecar's kind (a `config.json`, a `.yaml`) gets none: its own name would be one."""
    if is_sidecar(model_path.name):
        return []
    if kind == "civitai":
        return write_civitai_sidecars(
            model_path, root, record, file_id=file_id, sha256=sha256, preview=preview
        )
    if kind == "huggingface":
        fields = huggingface_user_metadata(
            str(record.get("repo", "")),
            str(record.get("path", "")),
            commit=record.get("commit"),
            revision=record.get("revision"),
            license_id=record.get("license"),
            repo_type=str(record.get("repo_type") or "model"),
        )
        return write_huggingface_sidecar(model_path, root, fields)
    return []


def write_civitai_sidecars(
    model_path: Path,
    root: Path,
    record: Mapping[str, Any],
    *,
    file_id: Any = None,
    sha256: str | None = None,
    preview: tuple[str, bytes] | None = None,
) -> list[Outcome]:
    """`<stem>.json` (merged), `<stem>.civitai.info` and the preview (content type, bytes) beside a
    CivitAI model. Never raises for a sidecar: each one's outcome says what happened."""
    if conflicts := _conflict_outcome(model_path):
        return conflicts
    fields = civitai_user_metadata(record, file_id, sha256)
    info = civitai_info(record, file_id)
    outcomes = [
        _guarded(_beside(model_path, USER_METADATA), lambda: merge_json_sidecar(model_path, fields, root)),
        _guarded(_beside(model_path, CIVITAI_INFO), lambda: write_civitai_info(model_path, info, root)),
    ]
    if preview is not None:
        content_type, data = preview
        preview_path = _beside(model_path, ".preview")
        outcomes.append(_guarded(preview_path, lambda: write_preview(model_path, content_type, data, root)))
    return outcomes


def write_huggingface_sidecar(model_path: Path, root: Path, fields: Mapping[str, Any]) -> list[Outcome]:
    """`<stem>.json` (merged) beside a Hugging Face file; `fields` from huggingface_user_metadata."""
    if conflicts := _conflict_outcome(model_path):
        return conflicts
    return [
        _guarded(_beside(model_path, USER_METADATA), lambda: merge_json_sidecar(model_path, fields, root))
    ]


def _conflict_outcome(model_path: Path) -> list[Outcome]:
    others = sidecar_conflicts(model_path)
    if not others:
        return []
    names = ", ".join(other.name for other in others[:3])
    detail = f"{model_path.name} shares its sidecar names with {names}; no sidecars written for it"
    log.warning("%s", detail)
    return [Outcome(model_path, "skipped", detail)]


def _guarded(path: Path, write: Callable[[], Outcome]) -> Outcome:
    """One sidecar; a refusal or a disk error becomes its outcome, never the download's failure."""
    try:
        outcome = write()
    except OrchestratorError as exc:
        outcome = Outcome(path, "refused", exc.message)
    except OSError as exc:
        outcome = Outcome(path, "refused", f"{type(exc).__name__}: {exc.strerror}")
    if outcome.action in ("kept", "skipped", "refused"):
        log.warning("sidecar %s %s: %s", outcome.path.name, outcome.action, outcome.detail)
    return outcome


def _beside(model_path: Path, suffix: str) -> Path:
    return model_path.with_name(os.path.splitext(model_path.name)[0] + suffix)


def merge_json_sidecar(
    model_path: Path, fields: Mapping[str, Any], root: Path, suffix: str = USER_METADATA
) -> Outcome:
    """Add the fields a JSON sidecar lacks, keeping every value already there (what the user edited).
    A file that is not a JSON object is left alone."""
    path = _beside(model_path, suffix)
    raw = read_sidecar(model_path, suffix, root)
    if raw is None:
        write_sidecar(model_path, suffix, _json_bytes(fields), root)
        return Outcome(path, "written")
    existing = _json_object(raw)
    if existing is None:
        return Outcome(path, "kept", f"{path.name} is not a JSON object; it is left as it is")
    missing = {key: value for key, value in fields.items() if key not in existing}
    if not missing:
        return Outcome(path, "unchanged")
    write_sidecar(model_path, suffix, _json_bytes({**existing, **missing}), root)
    return Outcome(path, "merged", ", ".join(missing))


def write_civitai_info(model_path: Path, info: Mapping[str, Any], root: Path) -> Outcome:
    """Write the record unless a file is there that this app did not write (it carries no marker)."""
    suffix = CIVITAI_INFO
    path = _beside(model_path, suffix)
    raw = read_sidecar(model_path, suffix, root)
    data = _json_bytes(info)
    if raw is None:
        write_sidecar(model_path, suffix, data, root)
        return Outcome(path, "written")
    existing = _json_object(raw)
    if existing is None or existing.get(MARKER_KEY) != MARKER_VALUE:
        return Outcome(path, "kept", f"{path.name} was written by someone else; it is left as it is")
    if raw == data:
        return Outcome(path, "unchanged")
    write_sidecar(model_path, suffix, data, root)
    return Outcome(path, "replaced")


def write_preview(model_path: Path, content_type: str, data: bytes, root: Path) -> Outcome:
    """The preview under the name its readers look for, unless the model already has a preview."""
    stem = os.path.splitext(model_path.name)[0]
    suffix = preview_suffix(content_type)
    if suffix is None:
        detail = f"no reader shows a {content_type.split(';')[0]} preview"
        return Outcome(model_path.with_name(stem + ".preview"), "skipped", detail)
    path = model_path.with_name(stem + suffix)
    present = [
        name
        for extension in _PREVIEW_EXTENSIONS
        for name in (f"{stem}.{extension}", f"{stem}.preview.{extension}")
        if os.path.lexists(model_path.with_name(name))
    ]
    if present:
        return Outcome(path, "kept", f"{present[0]} is already its preview")
    write_sidecar(model_path, suffix, data, root)
    return Outcome(path, "written")


def _json_bytes(value: Mapping[str, Any]) -> bytes:
    return (json.dumps(value, indent=4, ensure_ascii=False) + "\n").encode("utf-8")


def _json_object(raw: bytes) -> dict[str, Any] | None:
    if len(raw) > READ_LIMIT:
        return None
    try:
        value = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# -- the safe writer -------------------------------------------------------------------------------


def write_sidecar(model_path: Path, suffix: str, data: bytes, root: Path) -> Path:
    """Write `<stem><suffix>` beside the model, inside `root` only; returns its path.

    The folder is reached from root one component at a time without following links; the
    bytes go to `.<name>.part`, created with O_EXCL|O_NOFOLLOW, then renamed over the name,
    so a reader never sees half a file and a link planted at either name is never followed.
    Anything there that is not a regular file is refused (`sidecar_not_regular`).
    """
    name = _sidecar_name(model_path, suffix)
    partial = f".{name}.part"
    with _folder(model_path, root) as folder:
        _refuse_non_regular(folder, name)
        handle = _create_partial(folder, partial)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            _refuse_non_regular(folder, name)
            os.replace(partial, name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial, dir_fd=folder)
            raise
    return model_path.parent / name


def read_sidecar(model_path: Path, suffix: str, root: Path) -> bytes | None:
    """The bytes of `<stem><suffix>` (up to READ_LIMIT + 1), None when there is none; never follows a link."""
    name = _sidecar_name(model_path, suffix)
    with _folder(model_path, root) as folder:
        try:
            handle = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _not_regular(name, "a symbolic link") from None
            raise
        with os.fdopen(handle, "rb") as stream:
            if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                raise _not_regular(name, "not a regular file")
            return stream.read(READ_LIMIT + 1)


def _sidecar_name(model_path: Path, suffix: str) -> str:
    if not _SUFFIX.fullmatch(suffix):
        raise ValueError(f"bad sidecar suffix {suffix!r}")
    stem = os.path.splitext(model_path.name)[0]
    if not stem or stem.startswith("."):
        raise OrchestratorError(
            "sidecar_bad_name", f"{model_path.name!r} is not a model name to put sidecars beside."
        )
    name = stem + suffix
    if len(name.encode()) > _NAME_LIMIT:
        raise OrchestratorError(
            "sidecar_name_too_long",
            f"{name[:60]}... is too long a file name for this disk; no sidecar written.",
        )
    return name


@contextlib.contextmanager
def _folder(model_path: Path, root: Path) -> Iterator[int]:
    """A handle on the model's folder, opened from root down without following any link."""
    root_real = os.path.realpath(root)
    relative = os.path.relpath(os.path.realpath(model_path.parent), root_real)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep) or os.path.isabs(relative):
        raise OrchestratorError(
            "sidecar_outside", f"{model_path.name} is not inside {root}; no sidecar is written outside it."
        )
    folder = _open_down(root_real, [] if relative == os.curdir else relative.split(os.sep), model_path)
    try:
        yield folder
    finally:
        os.close(folder)


def _open_down(root_real: str, parts: list[str], model_path: Path) -> int:
    """Each component with O_NOFOLLOW, so a folder swapped for a link after the check is not entered."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        folder = os.open(root_real, flags)
    except OSError as exc:
        raise _folder_gone(model_path, exc) from None
    try:
        for part in parts:
            inner = os.open(part, flags | os.O_NOFOLLOW, dir_fd=folder)
            os.close(folder)
            folder = inner
    except OSError as exc:
        os.close(folder)
        raise _folder_gone(model_path, exc) from None
    return folder


def _folder_gone(model_path: Path, exc: OSError) -> OrchestratorError:
    return OrchestratorError(
        "sidecar_folder_unusable",
        f"The folder of {model_path.name} cannot be opened without following a link ({exc.strerror}); "
        "no sidecar written.",
    )


def _refuse_non_regular(folder: int, name: str) -> None:
    try:
        mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise _not_regular(name, "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file")


def _create_partial(folder: int, partial: str) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for attempt in (1, 2):
        try:
            return os.open(partial, flags, 0o644, dir_fd=folder)
        except FileExistsError:
            mode = os.stat(partial, dir_fd=folder, follow_symlinks=False).st_mode
            if attempt == 2 or not stat.S_ISREG(mode):
                what = "a symbolic link" if stat.S_ISLNK(mode) else "in the way"
                raise _not_regular(partial, what) from None
            os.unlink(partial, dir_fd=folder)  # left by an interrupted write
    raise AssertionError("unreachable")


def _not_regular(name: str, what: str) -> OrchestratorError:
    return OrchestratorError(
        "sidecar_not_regular", f"{name} is {what}, not a file this app may replace; no sidecar written."
    )
