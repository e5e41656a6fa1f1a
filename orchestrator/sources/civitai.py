"""CivitAI links: find the model version through the API, pick its file, get a signed storage URL.

The token (request, else CIVITAI_TOKEN) goes as a Bearer header to the CivitAI
API host only. The download endpoint answers with a redirect to signed storage;
that redirect is read here, with allow_redirects=False, and only the signed URL
(which needs no secret) is handed on.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import requests

from ..errors import OrchestratorError, http_error
from ..policy import Policy
from . import http
from .base import Credentials, Description, Resolved

NAME = "civitai"
LABEL = "CivitAI"
KNOWS_MODEL_TYPE = True  # type "auto" works: the API says what the model is
SERVICE = "CivitAI"
DEFAULT_BASE = "https://civitai.com"
HOSTS = {"civitai.com", "www.civitai.com", "civitai.red", "www.civitai.red"}
TOKEN_PAGE = "https://civitai.com/user/account"  # noqa: S105 - a web page, not a secret
PREVIEW_LIMIT = 32 * 1024 * 1024
DESCRIPTION_LIMIT = 2000  # characters of the version's description kept for the sidecars

# CivitAI's model types -> ours; anything else needs the user to pick a type
TYPES = {
    "checkpoint": "checkpoint",
    "lora": "lora",
    "locon": "lora",
    "lycoris": "lora",
    "dora": "lora",
    "textualinversion": "embedding",
    "vae": "vae",
    "upscaler": "upscaler",
    "controlnet": "controlnet",
    "hypernetwork": "hypernetwork",
    "motionmodule": "motion_module",
}
FILTERS = ("type", "format", "size", "fp")
# AIR format suffixes -> CivitAI's file format names
AIR_FORMATS = {"safetensors": "SafeTensor", "ckpt": "PickleTensor", "pt": "PickleTensor", "gguf": "GGUF"}

_AIR = re.compile(
    r"urn:air:[\w.-]+:[\w.-]+:civitai:(?P<model>\d+)(?:@(?P<version>\d+))?(?::[\w.-]+)?(?:\.(?P<format>\w+))?",
    re.IGNORECASE,
)
_PAIR = re.compile(r"(?P<model>\d+)@(?P<version>\d+)")
_PATHS = [
    (re.compile(r"/models/(\d+)(?:/[^/]*)?/?"), "model"),
    (re.compile(r"/api/v1/models/(\d+)/?"), "model"),
    (re.compile(r"/api/download/models/(\d+)/?"), "version"),
    (re.compile(r"/api/v1/model-versions/(\d+)/?"), "version"),
]
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Link:
    """What a pasted CivitAI link asks for."""

    model_id: int | None = None
    version_id: int | None = None
    filters: dict[str, str] = field(default_factory=dict)  # type/format/size/fp, as in download URLs
    file_id: int | None = None


def base_url() -> str:
    return http.setting("CIVITAI_BASE_URL", DEFAULT_BASE)


def site_url() -> str:
    """Where the model pages people open are (a mirror set with CIVITAI_BASE_URL serves both)."""
    return base_url()


def pin(url: str, metadata: dict[str, Any]) -> str:
    return url  # a version's file does not change


def matches(text: str) -> bool:
    """CivitAI links on its hosts (scheme optional), AIR URNs and `<model>@<version>`."""
    if _AIR.fullmatch(text) or _PAIR.fullmatch(text):
        return True
    url = text if "://" in text else f"https://{text}"
    host = _host(url)
    return host is not None and (host in HOSTS or http.same_service(url, base_url()))


def _host(url: str) -> str | None:
    """The host of an http(s) link, lower-case; None for any other scheme or a broken link."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return None
    try:
        return (parts.hostname or "").lower() or None
    except ValueError:
        return None


def parse(text: str) -> Link:
    """The model, version and file a link names; an error for a CivitAI link that names none."""
    if air := _AIR.fullmatch(text):
        version = air["version"]
        wanted = AIR_FORMATS.get((air["format"] or "").lower())
        filters = {"format": wanted} if wanted else {}
        return Link(int(air["model"]), int(version) if version else None, filters)
    if pair := _PAIR.fullmatch(text):
        return Link(int(pair["model"]), int(pair["version"]))
    parts = urlsplit(text if "://" in text else f"https://{text}")
    query = dict(parse_qsl(parts.query))
    if "token" in query:  # refused before it is stored, logged or shown anywhere
        raise OrchestratorError(
            "token_in_link",
            "This link carries an API token (token=...). Links are saved and shown, so remove it from "
            "the link and paste the token into the CivitAI token field instead.",
        )
    for pattern, kind in _PATHS:
        found = pattern.fullmatch(parts.path)
        if found and kind == "model":
            return Link(int(found[1]), _number(query.get("modelVersionId"), "modelVersionId"))
        if found:
            filters = {key: query[key] for key in FILTERS if query.get(key)}
            return Link(None, int(found[1]), filters, _number(query.get("fileId"), "fileId"))
    raise OrchestratorError(
        "civitai_bad_link",
        "That CivitAI link does not point to a model. Paste a model page (civitai.com/models/...), "
        "a download link (civitai.com/api/download/models/...) or an AIR (urn:air:...:civitai:...@...).",
    )


def _number(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise OrchestratorError(
            "civitai_bad_link", f"The link's {name} must be a number, not {value[:20]!r}."
        )
    return int(value)


def resolve(url: str, credentials: Credentials, policy: Policy) -> Resolved:
    """Blocking: the API record, the chosen file, and a signed URL that needs no token."""
    link = parse(url)
    token = http.token_from(credentials.civitai, "CIVITAI_TOKEN")
    with http.session(policy) as session:
        api = _Api(session, base_url(), token)
        version = api.version(link)
        chosen = pick_file(version, link)
        signed = api.signed_url(version, chosen)
    return resolved_for(version, chosen, signed)


# A version's files and the type each is filed as: the model itself takes CivitAI's model type
# (and the file's header), the others their own; training data and archives are no model.
FILE_TYPES = {
    "model": "auto",
    "pruned model": "auto",
    "vae": "vae",
    "config": "config",
    "negative": "embedding",
    "text encoder": "text_encoder",
}


@dataclass(frozen=True)
class VersionFile:
    id: int
    name: str
    kind: str  # CivitAI's file type: Model, Pruned Model, VAE, Config, Training Data...
    model_type: str | None  # the type it is filed as; None: not a model file
    size: int | None
    format: str
    precision: str  # fp16, fp32...
    variant: str  # pruned, full
    primary: bool
    sha256: str | None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "type": self.model_type,
            "size": self.size,
            "format": self.format,
            "fp": self.precision,
            "variant": self.variant,
            "primary": self.primary,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class VersionFiles:
    model_id: int
    model_name: str
    model_type: str
    version_id: int
    version_name: str
    base_model: str
    files: tuple[VersionFile, ...]
    versions: tuple[dict[str, Any], ...]  # the model's versions, newest first (id, name, published)

    def download_link(self, file: VersionFile) -> str:
        return download_link(self.version_id, file.id)

    def public(self) -> dict[str, Any]:
        return {
            "model": {"id": self.model_id, "name": self.model_name, "type": self.model_type},
            "version": {"id": self.version_id, "name": self.version_name, "base_model": self.base_model},
            "files": [file.public() for file in self.files],
            "versions": list(self.versions),
        }


def version_files(url: str, credentials: Credentials, policy: Policy) -> VersionFiles:
    """Blocking: every file of the version a link names, and the model's other versions."""
    link = parse(url)
    token = http.token_from(credentials.civitai, "CIVITAI_TOKEN")
    with http.session(policy) as session:
        api = _Api(session, base_url(), token)
        version = api.version(link)
        model_id = int(version.get("modelId") or link.model_id or 0)
        model = api.model(model_id) if model_id else {}
    files = [item for item in version.get("files") or [] if isinstance(item, dict) and item.get("name")]
    if not files:
        raise OrchestratorError("civitai_no_files", f"CivitAI {_version_label(version)} has no files.", 404)
    versions = [
        {"id": v.get("id"), "name": v.get("name"), "published": v.get("publishedAt") or v.get("createdAt")}
        for v in model.get("modelVersions") or []
        if isinstance(v, dict) and isinstance(v.get("id"), int)
    ]
    about = _object(version.get("model")) or model
    return VersionFiles(
        model_id=model_id,
        model_name=str(about.get("name") or ""),
        model_type=str(about.get("type") or ""),
        version_id=int(version.get("id") or 0),
        version_name=str(version.get("name") or ""),
        base_model=str(version.get("baseModel") or ""),
        files=tuple(_version_file(item) for item in files),
        versions=tuple(versions[:50]),
    )


def _version_file(item: dict[str, Any]) -> VersionFile:
    facts = _file_facts(item)
    sha = str(_object(item.get("hashes")).get("SHA256") or "")
    return VersionFile(
        id=int(item.get("id") or 0),
        name=str(item["name"]),
        kind=facts["type"] or "Model",
        model_type=FILE_TYPES.get((facts["type"] or "model").lower()),
        size=_bytes(item.get("sizeKB")),
        format=facts["format"],
        precision=facts["fp"],
        variant=facts["size"],
        primary=bool(item.get("primary")),
        sha256=sha.lower() if _SHA256.fullmatch(sha) else None,
    )


# -- the API -------------------------------------------------------------------------------------


@dataclass
class _Api:
    session: requests.Session
    base: str
    token: str | None = field(repr=False)

    def version(self, link: Link) -> dict[str, Any]:
        """The model-version record; the newest version when the link names only the model."""
        version_id = link.version_id or self._newest_version(link.model_id)
        missing = f"CivitAI has no model version {version_id} (deleted, or a mistyped link)."
        return self._get(f"/api/v1/model-versions/{version_id}", missing)

    def model(self, model_id: int | None) -> dict[str, Any]:
        missing = f"CivitAI has no model {model_id} (deleted, or a mistyped link)."
        return self._get(f"/api/v1/models/{model_id}", missing)

    def _newest_version(self, model_id: int | None) -> int:
        model = self.model(model_id)
        versions = [v for v in model.get("modelVersions") or [] if isinstance(v, dict) and v.get("id")]
        if not versions:
            raise OrchestratorError(
                "civitai_no_files", f"CivitAI model {model_id} has no published versions to download.", 404
            )
        return int(versions[0]["id"])  # the API lists the newest first

    def _get(self, path: str, missing: str) -> dict[str, Any]:
        response = http.send(
            self.session,
            "GET",
            self.base + path,
            SERVICE,
            headers={"Accept": "application/json", **http.bearer(self.token)},
        )
        if response.status_code == 404:
            raise OrchestratorError("civitai_not_found", missing, 404)
        if response.status_code in (401, 403):
            raise _token_rejected() if self.token else _token_required()
        if response.status_code != 200:
            raise http_error(response.status_code, SERVICE)
        return http.json_object(response, SERVICE)

    def signed_url(self, version: dict[str, Any], chosen: dict[str, Any]) -> str:
        """Ask the download endpoint (token attached) where the file is; follow only CivitAI's own hops."""
        url = self._download_url(version, chosen)
        for _ in range(http.MAX_HOPS):
            response = http.send(
                self.session, "GET", url, SERVICE, headers=http.bearer(self.token), stream=True
            )
            if response.is_redirect:
                response.close()
                url = urljoin(url, response.headers.get("Location", ""))
                if not self._is_api(url):
                    return _storage_url(url)
                self._refuse_page(url)
                continue
            raise self._refusal(response, version)
        raise OrchestratorError("too_many_redirects", "CivitAI redirects this download too many times.", 502)

    def _download_url(self, version: dict[str, Any], chosen: dict[str, Any]) -> str:
        """The file's download link on the configured API host (the API names civitai.com)."""
        parts = urlsplit(str(chosen.get("downloadUrl") or ""))
        if parts.path.startswith("/api/download/models/"):
            return f"{self.base}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        query = {key: value for key, value in _file_facts(chosen).items() if value}
        suffix = f"?{urlencode(query)}" if query else ""
        return f"{self.base}/api/download/models/{version.get('id')}{suffix}"

    def _is_api(self, url: str) -> bool:
        """CivitAI's own hosts get the token; any other host is storage and gets nothing."""
        parts = urlsplit(url)
        return http.same_origin(url, self.base) or (
            parts.scheme == "https" and (parts.hostname or "").lower() in HOSTS
        )

    def _refuse_page(self, url: str) -> None:
        """CivitAI sends browsers without access to a login or a membership page."""
        parts = urlsplit(url)
        reason = dict(parse_qsl(parts.query)).get("reason", "")
        if "early-access" in reason or parts.path.startswith(("/pricing", "/purchase")):
            raise _early_access(None)
        if parts.path.startswith("/login") or "auth" in reason:
            raise _token_rejected() if self.token else _token_required()

    def _refusal(self, response: requests.Response, version: dict[str, Any]) -> OrchestratorError:
        """The error for a download answer that is not a redirect to storage."""
        status = response.status_code
        body = http.error_body(response)
        said = " ".join(str(body.get(key, "")) for key in ("error", "message")).strip()
        if status == 401:
            return _token_rejected() if self.token else _token_required()
        if status == 403 and ("early access" in said.lower() or version.get("availability") == "EarlyAccess"):
            return _early_access(body.get("deadline") or version.get("earlyAccessEndsAt"))
        if status == 403 and "disabled" in said.lower():
            return OrchestratorError(
                "civitai_downloads_disabled",
                "The creator of this CivitAI model has turned downloads off; it cannot be downloaded.",
                403,
            )
        if status == 403:
            if not self.token:
                return _token_required()
            return OrchestratorError(
                "civitai_forbidden",
                f"CivitAI refused this download for your account (HTTP 403): {http.scrub(said, self.token)}",
                403,
            )
        if status == 404:
            return OrchestratorError(
                "civitai_file_not_found",
                f"CivitAI says the file of version {version.get('id')} does not exist (HTTP 404).",
                404,
            )
        if status in (200, 206):
            return OrchestratorError(
                "origin_error",
                "CivitAI sent the file itself instead of a storage link; it cannot be fetched "
                "without handing your token to the download engine, which this app never does.",
                502,
            )
        return http_error(status, SERVICE)


def _storage_url(url: str) -> str:
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise OrchestratorError(
            "origin_error", "CivitAI pointed the download somewhere that is not a web link.", 502
        )
    return url


def _token_required() -> OrchestratorError:
    return OrchestratorError(
        "civitai_token_required",
        f"This CivitAI download needs an API token. Create one at {TOKEN_PAGE} (API Keys) and paste it "
        "into the CivitAI token field, or set CIVITAI_TOKEN on the server.",
        401,
    )


def _token_rejected() -> OrchestratorError:
    return OrchestratorError(
        "civitai_token_rejected",
        f"CivitAI did not accept the API token (wrong, expired or deleted). Check it at {TOKEN_PAGE}.",
        401,
    )


def _early_access(deadline: Any) -> OrchestratorError:
    until = f" until {str(deadline)[:10]}" if deadline else ""
    return OrchestratorError(
        "civitai_early_access",
        f"This CivitAI version is in early access{until}: only accounts that unlocked it can download it. "
        "Use the token of such an account, or wait until it is public.",
        403,
    )


# -- choosing the file ---------------------------------------------------------------------------


def pick_file(version: dict[str, Any], link: Link) -> dict[str, Any]:
    """The file the link asks for: by fileId, by type/format/size/fp, else the primary file."""
    files = [item for item in version.get("files") or [] if isinstance(item, dict) and item.get("name")]
    label = _version_label(version)
    if not files:
        raise OrchestratorError("civitai_no_files", f"CivitAI {label} has no files to download.", 404)
    if link.file_id is not None:
        found = [item for item in files if item.get("id") == link.file_id]
        if not found:
            raise _no_such_file(label, f"fileId={link.file_id}", files)
        return found[0]
    if link.filters:
        found = [item for item in files if _fits(item, link.filters)]
        if not found:
            asked = ", ".join(f"{key}={value}" for key, value in link.filters.items())
            raise _no_such_file(label, asked, files)
        files = found
    primary = [item for item in files if item.get("primary")]
    return (primary or files)[0]  # the primary file is not always the first


def _file_facts(item: dict[str, Any]) -> dict[str, str]:
    meta = _object(item.get("metadata"))
    return {
        "type": str(item.get("type") or ""),
        "format": str(meta.get("format") or ""),
        "size": str(meta.get("size") or ""),
        "fp": str(meta.get("fp") or ""),
    }


def _fits(item: dict[str, Any], filters: dict[str, str]) -> bool:
    facts = _file_facts(item)
    return all(facts[key].lower() == value.lower() for key, value in filters.items())


def _no_such_file(label: str, asked: str, files: list[dict[str, Any]]) -> OrchestratorError:
    offered = "; ".join(
        f"{item['name']} ({', '.join(v for v in _file_facts(item).values() if v)})" for item in files[:8]
    )
    return OrchestratorError(
        "civitai_file_not_found", f"No file of CivitAI {label} matches {asked}. It has: {offered}.", 404
    )


def _version_label(version: dict[str, Any]) -> str:
    name = _object(version.get("model")).get("name")
    title = " ".join(str(part) for part in (name, version.get("name")) if part)
    return f"version {version.get('id')}" + (f" ({title})" if title else "")


# -- describing the result -----------------------------------------------------------------------


def resolved_for(version: dict[str, Any], chosen: dict[str, Any], signed_url: str) -> Resolved:
    """The Resolved for a chosen file: name, size and sha256 as the API publishes them."""
    model = _object(version.get("model"))
    sha = str(_object(chosen.get("hashes")).get("SHA256") or "")
    sha256 = sha.lower() if _SHA256.fullmatch(sha) else None
    size = _bytes(chosen.get("sizeKB"))
    metadata = {
        "model_name": model.get("name"),
        "version_name": version.get("name"),
        "model_type": model.get("type"),
        "base_model": version.get("baseModel"),
        "trained_words": [str(word) for word in version.get("trainedWords") or []],
        "file_name": chosen.get("name"),
        "size": size,
        "sha256": sha256,
        "nsfw": bool(model.get("nsfw")),
        "preview_url": _preview(version),
        "model_id": version.get("modelId"),
        "version_id": version.get("id"),
        "civitai": _record(version, chosen),
    }
    return Resolved(
        urls=[signed_url],
        source=NAME,
        filename=str(chosen["name"]),
        size=size,
        sha256=sha256,
        metadata=metadata,
        model_type=TYPES.get(str(model.get("type") or "").lower()),
    )


def _object(value: Any) -> dict[str, Any]:
    """A JSON object from the API, or {} when it sent something else there."""
    return value if isinstance(value, dict) else {}


def _bytes(size_kb: Any) -> int | None:
    """sizeKB is bytes/1024 as a float; use it only when it is exact, or a good file would fail."""
    if not isinstance(size_kb, int | float) or size_kb <= 0:
        return None
    exact = size_kb * 1024
    return round(exact) if abs(exact - round(exact)) < 1e-3 else None


def _preview(version: dict[str, Any]) -> str | None:
    for image in version.get("images") or []:
        if isinstance(image, dict) and image.get("type", "image") == "image" and image.get("url"):
            return str(image["url"])
    return None


def _record(version: dict[str, Any], chosen: dict[str, Any]) -> dict[str, Any]:
    """The API record a model browser reads, trimmed to what describes this file."""
    keep = ("id", "modelId", "name", "baseModel", "trainedWords", "createdAt", "publishedAt", "downloadUrl")
    record = {key: version[key] for key in keep if key in version}
    if isinstance(version.get("description"), str):  # A1111 shows it on the model's card
        record["description"] = version["description"][:DESCRIPTION_LIMIT]
    if isinstance(version.get("model"), dict):
        record["model"] = {k: v for k, v in version["model"].items() if k in ("name", "type", "nsfw", "poi")}
    record["files"] = [chosen]
    images = [image for image in version.get("images") or [] if isinstance(image, dict)]
    fields = ("url", "type", "width", "height", "nsfwLevel", "hash")
    record["images"] = [{k: image[k] for k in fields if k in image} for image in images[:4]]
    return record


# -- files beside the model ----------------------------------------------------------------------

_IMAGE_TYPES = {"image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}


def describe(metadata: dict[str, Any], policy: Policy) -> Description | None:
    """CivitAI's record of the version (for `<stem>.json` and `<stem>.civitai.info`) and its
    preview image. Blocking (the preview is fetched); a preview that cannot be had is left out,
    never an error: the model itself is what matters."""
    record = metadata.get("civitai")
    if not isinstance(record, dict):
        return None
    files = record.get("files") if isinstance(record.get("files"), list) else []
    file_id = files[0].get("id") if files and isinstance(files[0], dict) else None
    return Description("civitai", record, file_id, _fetch_preview(metadata.get("preview_url"), policy))


def describe_found(version: dict[str, Any], sha256: str, policy: Policy) -> Description:
    """What a download of this version's file would write beside it, for a file the library found
    by its hash (a by-hash record): the record trimmed to that file, its id, the preview. Blocking."""
    files = [item for item in version.get("files") or [] if isinstance(item, dict)]
    own = [item for item in files if str(_object(item.get("hashes")).get("SHA256") or "").lower() == sha256]
    chosen = (own or files or [{}])[0]
    record = _record(version, chosen)
    return Description("civitai", record, chosen.get("id"), _fetch_preview(_preview(version), policy))


def download_link(version_id: int, file_id: int | None = None) -> str:
    """The link that downloads a version's primary file (or the file with `file_id`), on the
    configured host."""
    link = f"{base_url()}/api/download/models/{int(version_id)}"
    return link if file_id is None else f"{link}?fileId={int(file_id)}"


def _fetch_preview(url: Any, policy: Policy) -> tuple[str, bytes] | None:
    """(content type, bytes) of the preview image, or None."""
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        return None
    try:
        with http.session(policy) as session, session.get(url, timeout=http.TIMEOUT, stream=True) as response:
            kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if response.status_code != 200 or kind not in _IMAGE_TYPES:
                log.warning("no preview image: HTTP %s, %s", response.status_code, kind or "no type")
                return None
            data = response.raw.read(PREVIEW_LIMIT + 1, decode_content=True)
    except (requests.RequestException, OSError, OrchestratorError) as exc:
        log.warning("no preview image: %s", getattr(exc, "code", type(exc).__name__))
        return None
    if not data or len(data) > PREVIEW_LIMIT:
        return None
    return kind, data
