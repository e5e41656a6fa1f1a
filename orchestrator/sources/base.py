"""What a source hands back: everything needed to fetch a file, and no secret."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    resumable: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)
    model_type: str | None = None  # what the service says the model is, if it says
    headers: list[str] = field(default_factory=list)  # non-secret extras (e.g. Drive cookies)
