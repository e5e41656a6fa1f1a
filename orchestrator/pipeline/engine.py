"""The engine's calls, made from a worker thread, with their failures turned into one clear error.

Engines are synchronous (aria2p opens a connection per call, the fallback joins
threads), so the event loop never calls them directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from ..engines.base import Engine, Transfer, TransferStatus
from ..errors import OrchestratorError

log = logging.getLogger(__name__)
T = TypeVar("T")


class EngineCalls:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def name(self) -> str:
        return self.engine.name

    async def start(self, transfer: Transfer) -> str:
        return await self._call(self.engine.start, transfer)

    async def poll(self, handles: list[str]) -> dict[str, TransferStatus]:
        return await self._call(self.engine.poll, handles)

    async def pause(self, handle: str) -> None:
        await self._call(self.engine.pause, handle)

    async def resume(self, handle: str) -> None:
        await self._call(self.engine.resume, handle)

    async def remove(self, handle: str) -> None:
        await self._call(self.engine.remove, handle)

    async def forget(self, handle: str) -> None:
        await self._call(self.engine.forget, handle)

    async def reachable(self) -> bool:
        return await asyncio.to_thread(self.engine.reachable)

    async def _call(self, method: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(method, *args)
        except OrchestratorError:
            raise
        except OSError as exc:  # requests' ConnectionError is an OSError
            raise OrchestratorError(
                "engine_unavailable",
                f"The download engine ({self.name}) is not answering: {type(exc).__name__}.",
                503,
            ) from None
        except Exception as exc:  # e.g. aria2 refusing a call for a GID it no longer knows
            log.warning("engine call %s failed: %s", getattr(method, "__name__", method), exc)
            raise OrchestratorError(
                "engine_error", f"The download engine ({self.name}) refused: {str(exc)[:160]}", 409
            ) from None
