"""A fake CivitAI: the v1 API, the download endpoint and its answers, on a loopback host.

It behaves like civitai.com where the orchestrator meets it: model and
model-version records in the API's shape (files with sizeKB, hashes.SHA256,
metadata.format/size/fp, a primary file that is not always first; images),
and a download endpoint that answers 307 to a signed URL on the storage host,
or 401 JSON / a login-page redirect without a token, 403 for early access
and for downloads the creator turned off. Download URLs in records name
civitai.com, as the real API does, whatever host this fake runs on.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field

from tests.fakes.service import Reply, Request, Service, SignedStorage

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

    # -- setting up ------------------------------------------------------------------------------

    def add_model(self, model_id: int, name: str, type: str = "LORA", nsfw: bool = False) -> Model:
        self.models[model_id] = Model(model_id, name, type, nsfw)
        return self.models[model_id]

    def add_version(self, model_id: int, version_id: int, files: list[File], name: str = "v1.0",
                    preview: bool = True, **options) -> Version:
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

    def _api_json(self, data: dict) -> Reply:
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
        if with_model:
            record["model"] = {"name": model.name, "type": model.type, "nsfw": model.nsfw, "poi": False}
        return record

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
            f for f in version.files
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
