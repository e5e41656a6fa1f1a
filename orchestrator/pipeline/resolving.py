"""Where links are resolved: a pool of its own, with a deadline for each link.

A source talks to servers nobody controls, and a slow one can hold a thread for as long
as it keeps sending a byte now and then. Resolving therefore has its own few threads:
however many slow servers there are, the engine's calls, hashing and the API keep the
default pool. A resolve that passes its deadline fails its job; its thread goes back to
the pool when the server's own read timeout lets it go.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import OrchestratorError

T = TypeVar("T")
RESOLVE_THREADS = 4
RESOLVE_DEADLINE = 120.0  # seconds for one link: the source's hops, its API calls, a confirmation page


class ResolvePool:
    def __init__(self, threads: int = RESOLVE_THREADS, deadline: float = RESOLVE_DEADLINE) -> None:
        self.deadline = deadline
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="resolve")
        self._threads = threads
        self._started: dict[int, float] = {}  # running resolves: ticket -> monotonic start
        self._waiting = 0
        self._tickets = itertools.count()

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in a resolve thread; `resolve_timeout` once it passes the deadline."""
        ticket = next(self._tickets)
        self._waiting += 1

        def tracked() -> T:
            self._waiting -= 1
            self._started[ticket] = time.monotonic()
            try:
                return work(*args)
            finally:
                self._started.pop(ticket, None)

        future = asyncio.get_running_loop().run_in_executor(self._executor, tracked)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.deadline)
        except TimeoutError:
            raise OrchestratorError(
                "resolve_timeout",
                f"The server of this link did not finish answering within {self.deadline:.0f} s; "
                "try again later.",
                504,
            ) from None

    def health(self) -> dict[str, Any]:
        """For /api/health: how busy resolving is, and whether it is stuck."""
        now = time.monotonic()
        oldest = max((now - started for started in self._started.values()), default=0.0)
        stuck = len(self._started) >= self._threads and oldest > self.deadline
        return {
            "running": len(self._started),
            "waiting": max(0, self._waiting),
            "oldest_seconds": round(oldest, 1),
            "stuck": stuck,
        }

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
