"""What every engine offers the manager. Engines move bytes; they know no services."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Transfer:
    """One file to fetch into `directory / filename`, from URLs that need no secret."""

    urls: list[str]
    directory: Path
    filename: str
    size: int | None = None
    sha256: str | None = None
    headers: list[str] = field(default_factory=list)  # never credentials; e.g. Drive cookies
    # a guarded download's every connection goes through this proxy (the app's egress proxy,
    # credentials in the URL), which checks the address each one really goes to
    proxy: str | None = field(default=None, repr=False)


# TransferStatus.state values
WAITING, ACTIVE, PAUSED, COMPLETE, ERROR, REMOVED, MISSING = (
    "waiting",
    "active",
    "paused",
    "complete",
    "error",
    "removed",
    "missing",
)


@dataclass
class TransferStatus:
    handle: str
    state: str
    completed: int = 0
    total: int | None = None
    speed: float = 0.0  # bytes per second
    error_code: str | None = None  # a code from engines.errors
    error_message: str | None = None
    sha256: str | None = None  # set when the engine hashed or verified the bytes
    http_status: int | None = None  # 403/410 suggest an expired signed URL
    verified: int | None = None  # bytes checked so far, while the engine verifies a finished file
    written: int | None = None  # bytes from the start known complete, while it downloads (aria2)


class Engine(Protocol):
    """Synchronous: the manager calls these from a worker thread, never the event loop."""

    name: str
    # True when the engine itself checks a published sha256 (Transfer.sha256) and fails a
    # transfer whose bytes differ; False when it only reports the digest it computed.
    verifies_sha256: bool
    # Set by the manager: called from any thread when a transfer completes or fails, so the
    # next poll need not wait. An engine that cannot tell (aria2, polled) leaves it uncalled.
    on_finish: Callable[[], None] | None

    def start(self, transfer: Transfer) -> str:
        """Begin (or resume, from what is in `directory`) and return a handle."""

    def trusts_staged_bytes(self, directory: Path, filename: str) -> bool:
        """True when the engine's own record (its control file) says which bytes of a staged file
        are real. Without it the bytes are unknown: the pipeline deletes them before a start."""

    def poll(self, handles: list[str]) -> dict[str, TransferStatus]:
        """Status of many transfers in one go."""

    def pause(self, handle: str) -> None: ...

    def resume(self, handle: str) -> None: ...

    def remove(self, handle: str) -> None:
        """Stop the transfer; the manager deletes its files if it wants them gone."""

    def forget(self, handle: str) -> None:
        """Drop a finished transfer's record from the engine."""

    def describe(self) -> dict[str, Any]:
        """Name, version and anything the health endpoint should show."""

    def reachable(self) -> bool:
        """A cheap look: does the engine answer now?"""

    def close(self) -> None: ...
