"""`get` through a running server: its REST API as the follower's backend.

The server does the work, so the page sees these downloads too. Ctrl-C pauses the
jobs this command started (their partial data stays on the server's disk); jobs
someone else started and we only watched are left running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from .follow import Gone, Refused
from .server import ServerClient, ServerError, ServerGone

T = TypeVar("T")


class RemoteBackend:
    tick_seconds = 0.5

    def __init__(self, client: ServerClient) -> None:
        self.client = client

    async def submit(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        return await self._call(self.client.submit, body)

    async def create_bundle(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(self.client.create_bundle, body)

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self._call(self.client.job, job_id)

    async def bundle(self, bundle_id: str) -> dict[str, Any]:
        return await self._call(self.client.bundle, bundle_id)

    async def act(self, job_id: str, action: str) -> dict[str, Any]:
        return await self._call(self.client.act, job_id, action)

    async def tick(self) -> str | None:
        return None

    def others_note(self, ours: set[str]) -> str | None:
        return None

    def pauses_on_stop(self, owned: bool) -> bool:
        return owned

    def still_running_note(self, job_id: str, owned: bool) -> str | None:
        if owned:
            return f"Still running on the server; `orchestrator pause {job_id}` stops it."
        return "Started elsewhere; still running on the server."

    async def _call(self, method: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(method, *args)
        except ServerGone as gone:
            raise Gone(gone.message) from None
        except ServerError as error:
            raise Refused(error.message) from None
