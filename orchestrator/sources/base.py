"""What a source hands back: everything needed to fetch a file, and no secret."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..policy import Policy


@dataclass(frozen=True)
class Credentials:
    """Tokens a request carried. Kept in memory only; repr never shows them."""

    civitai: str | None = field(default=None, repr=False)
    huggingface: str | None = field(default=None, repr=False)


@dataclass
class Resolved:
    """A link turned into URLs an engine can fetch without any token."""

    urls: list[str]
    source: str
    filename: str | None = None  # the server's or API's name, not yet sanitised
    size: int | None = None
    sha256: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    model_type: str | None = None  # what the service says the model is, if it says
    headers: list[str] = field(default_factory=list)  # non-secret extras (e.g. Drive cookies)


@dataclass(frozen=True)
class Description:
    """What a source says about a model for the files other tools read beside it (sidecars.py)."""

    kind: str  # "civitai" | "huggingface"
    record: dict[str, Any]  # CivitAI's model-version record; a Hub file's repo, path, commit
    file_id: Any = None  # which of the record's files was downloaded (CivitAI)
    preview: tuple[str, bytes] | None = None  # (content type, bytes) of a preview image


class Source(Protocol):
    """One kind of link (a module in this package): how to know it, check it and resolve it.

    `resolve`, `sidecars` are blocking (HTTP): call them from a worker thread. Every
    request goes through `net.session(policy)`. A source never writes to disk.
    """

    NAME: str
    LABEL: str  # the name people read, e.g. "Hugging Face"
    KNOWS_MODEL_TYPE: bool  # True when its answer says what kind of model a link is (type "auto")

    def matches(self, url: str, /) -> bool:
        """True for links this source handles (no network)."""

    def parse(self, url: str, /) -> object:
        """Raise an OrchestratorError for a link of its own that it cannot use (no network)."""

    def resolve(self, url: str, credentials: Credentials, policy: Policy, /) -> Resolved: ...

    def describe(self, metadata: dict[str, Any], policy: Policy, /) -> Description | None:
        """Blocking (a preview may be fetched): what to write beside the model, or None."""

    def pin(self, url: str, metadata: dict[str, Any], /) -> str:
        """The link to exactly the file a download began with (a branch may have moved since)."""
