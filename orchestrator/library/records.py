"""What the library knows about one file, as plain values: where it came from, what its
sidecars say, what CivitAI said about its hash, and the record the index hands out."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import OrchestratorError
from .naming import text

SOURCE_KINDS = ("civitai", "huggingface", "link", "unknown")
_SOURCE_FIELDS = ("kind", "model_id", "version_id", "repo", "commit", "url", "found_by")
LOOKUP_STATES = ("hit", "miss", "error")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Query parameters that carry credentials in the links people paste (API keys, S3/CDN signatures).
_SECRET_PARAM = re.compile(r"token|key|sig|signature|auth|password|secret|credential|x-amz-", re.IGNORECASE)


def normal_sha256(value: object) -> str:
    """A SHA-256 as lower-case hex, or an error naming the bad value."""
    sha = str(value).strip().lower()
    if not _SHA256.fullmatch(sha):
        raise OrchestratorError("invalid_sha256", f"{str(value)[:80]!r} is not a SHA-256 (64 hex digits).")
    return sha


def autov2(sha256: str) -> str:
    """CivitAI's short hash: the first 10 hex digits of the SHA-256, upper case, as its pages show it."""
    return sha256[:10].upper()


def model_part(record: dict[str, Any]) -> dict[str, Any]:
    """The `model` object of a CivitAI model-version record ({} when absent or malformed)."""
    model = record.get("model")
    return model if isinstance(model, dict) else {}


def safe_url(url: str | None) -> str | None:
    """A link fit to store: no user:password part and no query parameter that looks like a secret."""
    if not url:
        return None
    parts = urlsplit(url)
    try:
        host, port = parts.hostname or "", parts.port
    except ValueError:  # a port that is not a number: keep nothing of a link we cannot read
        return None
    netloc = f"{host}:{port}" if port else host
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _SECRET_PARAM.search(k)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))


class FileStat(NamedTuple):
    """The four numbers that say a file is unchanged since it was hashed."""

    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, info: os.stat_result) -> FileStat:
        return cls(info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev)


@dataclass(frozen=True)
class Source:
    """Where a file's bytes came from, as far as the library knows."""

    kind: str = "unknown"  # one of SOURCE_KINDS
    model_id: int | None = None  # CivitAI
    version_id: int | None = None  # CivitAI
    repo: str | None = None  # Hugging Face
    commit: str | None = None  # Hugging Face
    url: str | None = None  # any link, stored without secrets
    found_by: str | None = None  # "download", "sidecar", "lookup", "copy"

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise OrchestratorError("invalid_source", f"{self.kind!r} is not a known source kind.")
        object.__setattr__(self, "url", safe_url(self.url))

    @classmethod
    def civitai(cls, model_id: int, version_id: int, found_by: str = "download") -> Source:
        return cls("civitai", model_id=int(model_id), version_id=int(version_id), found_by=found_by)

    @classmethod
    def huggingface(cls, repo: str, commit: str | None, url: str | None = None) -> Source:
        return cls("huggingface", repo=repo, commit=commit, url=url, found_by="download")

    @classmethod
    def link(cls, url: str) -> Source:
        return cls("link", url=url, found_by="download")

    @property
    def known(self) -> bool:
        return self.kind != "unknown"

    def as_dict(self) -> dict[str, Any]:
        # by hand, not dataclasses.asdict (a deep copy): the listing builds one per file
        values = (self.kind, self.model_id, self.version_id, self.repo, self.commit, self.url, self.found_by)
        return {key: value for key, value in zip(_SOURCE_FIELDS, values, strict=True) if value is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Source:
        known = {"kind", "model_id", "version_id", "repo", "commit", "url", "found_by"}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass(frozen=True)
class SidecarInfo:
    """What the files beside a model say about it (this app's and other tools')."""

    files: tuple[str, ...] = ()  # sidecar names found beside the model
    trigger_words: tuple[str, ...] = ()
    base_model: str | None = None
    model_name: str | None = None
    version_name: str | None = None
    model_type: str | None = None  # CivitAI's word: LORA, Checkpoint...
    model_id: int | None = None
    version_id: int | None = None
    description: str | None = None
    preview: str | None = None  # the preview image's file name
    listed_sha256: tuple[str, ...] = ()  # the SHA-256s a CivitAI record in a sidecar lists
    problems: tuple[str, ...] = ()  # sidecars that could not be read, and why
    # CivitAI's full record from a sidecar: handed to the index as a lookup hit, never stored here
    record: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("record")
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SidecarInfo:
        values: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name in data and name != "record":
                value = data[name]
                values[name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

    def describes(self, sha256: str | None) -> bool:
        """False when the sidecar's CivitAI record lists file hashes and none is this file's."""
        return not self.listed_sha256 or (sha256 is not None and sha256 in self.listed_sha256)


@dataclass(frozen=True)
class Lookup:
    """What CivitAI said about one SHA-256."""

    state: str  # hit | miss | error
    checked: float  # when (Unix time)
    model_id: int | None = None
    version_id: int | None = None
    model_name: str | None = None
    version_name: str | None = None
    model_type: str | None = None
    base_model: str | None = None
    published_at: str | None = None  # the version's publishedAt (ISO 8601), for update checks
    code: str | None = None  # for an error: the OrchestratorError code
    message: str | None = None
    record: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def as_dict(self, with_record: bool = False) -> dict[str, Any]:
        data = {key: value for key, value in asdict(self).items() if value is not None and key != "record"}
        if with_record and self.record is not None:
            data["record"] = self.record
        return data


@dataclass(frozen=True)
class FileRecord:
    """One model file in the library."""

    id: int
    root: Path  # the models folder (root) that holds it
    rel_path: Path  # relative to root; may hold names that are not UTF-8 (kept as the OS gave them)
    model_type: str
    size: int
    mtime_ns: int
    inode: int
    device: int
    sha256: str | None  # None until hashed
    source: Source
    sidecars: SidecarInfo
    first_seen: float
    last_seen: float
    lookup: Lookup | None = None

    @property
    def path(self) -> Path:
        return self.root / self.rel_path

    @property
    def name(self) -> str:
        return text(os.fsencode(self.rel_path.name))

    @property
    def stat(self) -> FileStat:
        """The numbers the file had when it was last listed."""
        return FileStat(self.size, self.mtime_ns, self.inode, self.device)

    @property
    def display_path(self) -> str:
        """The relative path as a person reads it (undecodable bytes shown as U+FFFD)."""
        return text(os.fsencode(self.rel_path))

    @property
    def autov2(self) -> str | None:
        return autov2(self.sha256) if self.sha256 else None

    @property
    def base_model(self) -> str | None:
        """CivitAI's base model ("SDXL 1.0"...), from the look-up, else from the sidecars."""
        return (self.lookup.base_model if self.lookup else None) or self.sidecars.base_model

    @property
    def title(self) -> str | None:
        """The CivitAI model name, from the look-up, else from the sidecars."""
        return (self.lookup.model_name if self.lookup else None) or self.sidecars.model_name

    def as_dict(self, full: bool = False) -> dict[str, Any]:
        """JSON-ready; `full` adds CivitAI's record when the lookup found one."""
        return {
            "id": self.id,
            "root": text(os.fsencode(self.root)),
            "path": self.display_path,
            "name": self.name,
            "type": self.model_type,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "inode": self.inode,
            "device": self.device,
            "sha256": self.sha256,
            "autov2": self.autov2,
            "source": self.source.as_dict(),
            "sidecars": self.sidecars.as_dict(),
            "base_model": self.base_model,
            "title": self.title,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "lookup": self.lookup.as_dict(with_record=full) if self.lookup else None,
        }


@dataclass(frozen=True)
class DuplicateGroup:
    """Files with the same SHA-256 in more than one place."""

    sha256: str
    files: tuple[FileRecord, ...]

    @property
    def size(self) -> int:
        return self.files[0].size

    @property
    def wasted_bytes(self) -> int:
        """Space the extra copies take: hard links of one file (same device and inode) cost nothing."""
        distinct = {(record.device, record.inode) for record in self.files}
        return self.size * (len(distinct) - 1)
