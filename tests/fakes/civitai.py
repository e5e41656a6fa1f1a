"""A fake CivitAI: the v1 API, the download endpoint and its answers, on a loopback host.

It behaves like civitai.com where the orchestrator meets it: model and
model-version records in the API's shape (files with sizeKB, hashes.SHA256,
metadata.format/size/fp, a primary file that is not always first; images),
and a download endpoint that answers 307 to a signed URL on the storage host,
or 401 JSON / a login-page redirect without a token, 403 for early access
and for downloads the creator turned off. Download URLs in records name
civitai.com, as the real API does, whatever host this fake runs on.

The by-hash look-ups follow CivitAI's code (src/pages/api/v1/model-versions/by-hash/):
`GET .../by-hash/{hash}` (SHA256 or AutoV2, any case) answers one record or 404;
`POST .../by-hash` takes a JSON list of at most 100 64-character hashes (else 400) and
answers a list with one record per matching file, in its own order. A version's linked
VAE shows in its `files` with type "VAE". For the library's fault tests the API can also
answer 429 with Retry-After, 5xx, Cloudflare's HTML check page, slowly, or refuse the
bulk call.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field

from tests.fakes.service import Reply, Request, Service, SignedStorage, _Handler

TOKEN = "civitai-test-token-0123456789abcdef"
PUBLIC = "https://civitai.com"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(200)) + b"\xff\xd9"
_ids = itertools.count(9000)


@dataclass
class File:
    name: str
    data: bytes
    type: str = "Model"
    format: str = "SafeTensor"
    size: str = "pruned"
    fp: str = "fp16"
    primary: bool = False
    published_sha256: str | None = None  # what the API claims, when it should differ from the bytes
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def sha256(self) -> str:
        return self.published_sha256 or hashlib.sha256(self.data).hexdigest()


@dataclass
class Version:
    id: int
    model_id: int
    name: str
    files: list[File]
    base_model: str = "SDXL 1.0"
    trained_words: list[str] = field(default_factory=lambda: ["vintage photo", "film grain"])
    needs_token: bool = False
    unauthenticated: str = "json"  # how a missing token is answered: "json" (401) or "login" (redirect)
    early_access: bool = False
    downloads_disabled: bool = False
    images: list[dict] = field(default_factory=list)
    published_at: str | None = None  # "publishedAt" in records, when set
    vae_version: int | None = None  # a linked VAE: that version's first file joins `files` as type "VAE"


@dataclass
class Model:
    id: int
    name: str
    type: str
    nsfw: bool = False
    versions: list[int] = field(default_factory=list)  # newest first, as the API lists them


class FakeCivitai(Service):
    def __init__(self, storage: SignedStorage, host: str = "127.0.0.3") -> None:
        super().__init__(host)
        self.storage = storage
        self.tokens = {TOKEN}
        self.models: dict[int, Model] = {}
        self.versions: dict[int, Version] = {}
        self.failing: int | None = None  # every API answer is this status (5xx)
        self.garbage = False  # API answers are broken JSON
        self._keys: dict[int, str] = {}
        # for the library's look-ups; each list is used up one API call at a time
        self.rate_limits: list[str] = []  # Retry-After values: the next calls answer 429 with them
        self.errors_ahead: list[int] = []  # statuses (5xx) the next calls answer with, as HTML
        self.cloudflare = False  # every API call gets Cloudflare's HTML check page (403)
        self.delay = 0.0  # seconds each API answer waits, to make clients time out
        self.bulk_refused: int | None = None  # the bulk POST answers this status (404, 405...)
        self.bulk_nulls = False  # bulk answers carry a null entry, as CivitAI's do at times
        self.bulk_bodies: list[list[str]] = []  # the JSON lists the bulk POST received
        self._body = threading.local()

    def start(self) -> FakeCivitai:
        super().start()
        assert self._server is not None
        self._server.RequestHandlerClass = _BodyKeepingHandler  # the by-hash POST needs its body
        return self

    # -- setting up ------------------------------------------------------------------------------

    def add_model(self, model_id: int, name: str, type: str = "LORA", nsfw: bool = False) -> Model:
        self.models[model_id] = Model(model_id, name, type, nsfw)
        return self.models[model_id]

    def add_version(
        self,
        model_id: int,
        version_id: int,
        files: list[File],
        name: str = "v1.0",
        preview: bool = True,
        **options,
    ) -> Version:
        version = Version(version_id, model_id, name, files, **options)
        if preview:
            path = f"/images/{version_id}/width=450/preview.jpeg"
            image = self.storage.put_public(path, JPEG, "image/jpeg")
            version.images = [
                {"url": f"{self.storage.base_url}/images/{version_id}/clip.mp4", "type": "video"},
                {"url": image, "type": "image", "width": 450, "height": 600, "nsfwLevel": 1, "hash": "UABC"},
            ]
        for item in files:
            self._keys[item.id] = self.storage.put(item.data, item.name)
        self.versions[version_id] = version
        self.models[model_id].versions.insert(0, version_id)
        return version

    # -- inspecting ------------------------------------------------------------------------------

    def downloads(self) -> list[Request]:
        return self.seen("/api/download/")

    # -- answering -------------------------------------------------------------------------------

    def respond(self, request: Request) -> Reply:
        path = request.path
        if path.startswith(("/login", "/pricing")):
            return Reply.html("<!DOCTYPE html><html><body>Sign in to Civitai</body></html>")
        if self.failing:
            return Reply.html("<html><body>502 Bad Gateway (cloudflare)</body></html>", self.failing)
        if path.startswith("/api/v1/"):
            trouble = self._trouble()
            if trouble:
                return trouble
        if path.startswith("/api/v1/model-versions/by-hash"):
            token = (request.header("Authorization") or "").removeprefix("Bearer ").strip()
            if token and token not in self.tokens:
                return Reply.json(401, {"error": "Unauthorized", "message": "Invalid API key"})
            if path.rstrip("/") == "/api/v1/model-versions/by-hash":
                return self._bulk_by_hash(request)
            return self._by_hash(path.rsplit("/", 1)[-1])
        routes = [
            (r"/api/v1/models/(\d+)", self._model),
            (r"/api/v1/model-versions/(\d+)", self._version),
            (r"/api/download/models/(\d+)", self._download),
        ]
        for pattern, handler in routes:
            found = re.fullmatch(pattern, path)
            if found:
                return handler(request, int(found[1]))
        return Reply.json(404, {"error": "Not found"})

    def _api_json(self, data: object) -> Reply:
        if self.garbage:
            return Reply(200, {"Content-Type": "application/json"}, b'{"id": 12, "files": [{"name": ')
        return Reply.json(200, data)

    def _model(self, request: Request, model_id: int) -> Reply:
        model = self.models.get(model_id)
        if model is None:
            return Reply.json(404, {"error": f"No model with id {model_id}"})
        versions = [self._version_record(self.versions[v], with_model=False) for v in model.versions]
        record = {"id": model.id, "name": model.name, "type": model.type, "nsfw": model.nsfw}
        return self._api_json({**record, "modelVersions": versions})

    def _version(self, request: Request, version_id: int) -> Reply:
        version = self.versions.get(version_id)
        if version is None:
            return Reply.json(404, {"error": f"No model version with id {version_id}"})
        return self._api_json(self._version_record(version, with_model=True))

    def _version_record(self, version: Version, with_model: bool) -> dict:
        model = self.models[version.model_id]
        record = {
            "id": version.id,
            "modelId": version.model_id,
            "name": version.name,
            "createdAt": "2024-05-01T10:00:00.000Z",
            "baseModel": version.base_model,
            "trainedWords": version.trained_words,
            "availability": "EarlyAccess" if version.early_access else "Public",
            "description": "<p>" + "A long HTML description. " * 50 + "</p>",
            "files": [self._file_record(version, item) for item in version.files],
            "images": version.images,
            "downloadUrl": f"{PUBLIC}/api/download/models/{version.id}",
        }
        if version.published_at:
            record["publishedAt"] = version.published_at
        if version.vae_version in self.versions:
            vae_version = self.versions[version.vae_version]
            record["files"].append({**self._file_record(vae_version, vae_version.files[0]), "type": "VAE"})
        if with_model:
            record["model"] = {"name": model.name, "type": model.type, "nsfw": model.nsfw, "poi": False}
        return record

    # -- the by-hash look-ups and their faults ---------------------------------------------------

    def _trouble(self) -> Reply | None:
        if self.delay:
            self.stopping.wait(self.delay)
        if self.rate_limits:
            retry_after = self.rate_limits.pop(0)
            return Reply.json(429, {"error": "Too Many Requests"}, {"Retry-After": retry_after})
        if self.errors_ahead:
            status = self.errors_ahead.pop(0)
            return Reply.html(f"<html><body>{status} Internal Server Error</body></html>", status)
        if self.cloudflare:
            page = "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>cf</body></html>"
            return Reply.html(page, 403, {"cf-mitigated": "challenge", "Server": "cloudflare"})
        return None

    def _by_hash(self, wanted: str) -> Reply:
        wanted = wanted.upper()
        for version in self.versions.values():
            for item in version.files:
                if wanted in (item.sha256.upper(), item.sha256[:10].upper()):
                    return self._api_json(self._version_record(version, with_model=True))
        return Reply.json(404, {"error": "Model not found"})

    def _bulk_by_hash(self, request: Request) -> Reply:
        if request.method != "POST":
            return Reply.json(405, {"error": "Method Not Allowed"})
        if self.bulk_refused:
            return Reply.json(self.bulk_refused, {"error": "Not Found"})
        try:
            hashes = json.loads(getattr(self._body, "value", b"") or b"null")
        except ValueError:
            hashes = None
        valid = isinstance(hashes, list) and all(isinstance(h, str) and len(h) == 64 for h in hashes)
        if not valid or len(hashes) > 100:
            message = "Request must include an array of SHA256 Hashes. Too many hashes"
            return Reply.json(400, {"error": message})
        self.bulk_bodies.append(hashes)
        wanted = {h.upper() for h in hashes}
        records: list[dict | None] = [
            self._version_record(version, with_model=True)
            for version in self.versions.values()
            for item in version.files
            if item.sha256.upper() in wanted
        ]
        records.reverse()  # not in the order asked: clients must match by the files' hashes
        if self.bulk_nulls:
            records.insert(0, None)
        return self._api_json(records)

    @staticmethod
    def _file_record(version: Version, item: File) -> dict:
        query = f"type={item.type}&format={item.format}&size={item.size}&fp={item.fp}"
        return {
            "id": item.id,
            "sizeKB": len(item.data) / 1024,
            "name": item.name,
            "type": item.type,
            "pickleScanResult": "Success",
            "virusScanResult": "Success",
            "metadata": {"format": item.format, "size": item.size, "fp": item.fp},
            "hashes": {"AutoV2": item.sha256[:10].upper(), "SHA256": item.sha256.upper()},
            "primary": item.primary,
            "downloadUrl": f"{PUBLIC}/api/download/models/{version.id}?{query}",
        }

    def _download(self, request: Request, version_id: int) -> Reply:
        version = self.versions.get(version_id)
        if version is None:
            return Reply.json(404, {"error": "Model not found"})
        chosen = self._choose(version, request.query)
        if chosen is None:
            return Reply.json(404, {"error": "Model file not found"})
        refusal = self._refusal(version, request)
        if refusal:
            return refusal
        return Reply.redirect(self.storage.sign(self._keys[chosen.id]), 307)

    @staticmethod
    def _choose(version: Version, query: dict[str, str]) -> File | None:
        if query.get("fileId"):
            return next((f for f in version.files if str(f.id) == query["fileId"]), None)
        wanted = {key: query[key].lower() for key in ("type", "format", "size", "fp") if query.get(key)}
        matching = [
            f
            for f in version.files
            if all(str(getattr(f, key)).lower() == value for key, value in wanted.items())
        ]
        primary = [f for f in matching if f.primary]
        return (primary or matching or [None])[0]

    def _refusal(self, version: Version, request: Request) -> Reply | None:
        authorization = request.header("Authorization") or ""
        token = authorization.removeprefix("Bearer ").strip() or None
        if token and token not in self.tokens:
            return Reply.json(401, {"error": "Unauthorized", "message": "Invalid API key"})
        if version.needs_token and not token:
            if version.unauthenticated == "login":
                login = f"/login?returnUrl=/models/{version.model_id}&reason=download-auth"
                return Reply.redirect(login, 307)
            message = "The creator of this asset requires you to be logged in to download it"
            return Reply.json(401, {"error": "Unauthorized", "message": message})
        if version.early_access:
            return Reply.json(403, {"error": "Early Access", "deadline": "2030-01-01T00:00:00.000Z"})
        if version.downloads_disabled:
            return Reply.json(403, {"error": "Forbidden", "message": "The creator has disabled downloads"})
        return None


class _BodyKeepingHandler(_Handler):
    """The shared handler reads and drops request bodies; this one keeps it for respond()."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.service._body.value = body
        del self.headers["Content-Length"]  # already read: the shared handler must not wait for it
        super()._answer()
