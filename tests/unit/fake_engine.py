"""An Engine that keeps transfers in memory, for the manager and app tests."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

from orchestrator.engines.base import ACTIVE, COMPLETE, MISSING, PAUSED, Transfer, TransferStatus


class FakeEngine:
    """Keeps transfers in memory; the test decides what each poll reports."""

    name = "fake"
    verifies_sha256 = False
    trusted = True  # whether staged bytes have the engine's control file (a test may say not)
    on_finish = None  # the manager sets it; a test calls it to say a transfer ended

    def __init__(self) -> None:
        self.transfers: dict[str, Transfer] = {}
        self.statuses: dict[str, TransferStatus] = {}
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._count = 0

    # the Engine protocol
    def start(self, transfer: Transfer) -> str:
        with self._lock:
            self._count += 1
            handle = f"gid{self._count:013d}"
        self.transfers[handle] = transfer
        self.statuses[handle] = TransferStatus(handle, ACTIVE, 0, transfer.size)
        self.calls.append(("start", handle))
        return handle

    def trusts_staged_bytes(self, directory: Path, filename: str) -> bool:
        return self.trusted

    def poll(self, handles: list[str]) -> dict[str, TransferStatus]:
        self.calls.append(("poll", ",".join(handles)))
        return {h: copy.copy(self.statuses.get(h) or TransferStatus(h, MISSING)) for h in handles}

    def pause(self, handle: str) -> None:
        self.calls.append(("pause", handle))
        self.statuses[handle].state = PAUSED

    def resume(self, handle: str) -> None:
        self.calls.append(("resume", handle))
        self.statuses[handle].state = ACTIVE

    def remove(self, handle: str) -> None:
        self.calls.append(("remove", handle))
        self.statuses.pop(handle, None)

    def forget(self, handle: str) -> None:
        self.calls.append(("forget", handle))
        self.statuses.pop(handle, None)

    def reachable(self) -> bool:
        return True

    def describe(self) -> dict:
        return {"name": self.name, "version": "0", "connected": True}

    def close(self) -> None:
        self.calls.append(("close", ""))

    # test controls
    def called(self, what: str) -> list[str]:
        return [handle for name, handle in self.calls if name == what]

    def report(self, handle: str, state: str, **fields: Any) -> None:
        status = self.statuses.setdefault(handle, TransferStatus(handle, state))
        status.state = state
        for name, value in fields.items():
            setattr(status, name, value)

    def write(self, handle: str, data: bytes) -> Path:
        transfer = self.transfers[handle]
        transfer.directory.mkdir(parents=True, exist_ok=True)
        path = transfer.directory / transfer.filename
        path.write_bytes(data)
        return path

    def finish(self, handle: str, data: bytes, sha256: str | None = None) -> None:
        self.write(handle, data)
        self.report(handle, COMPLETE, completed=len(data), total=len(data), sha256=sha256)
