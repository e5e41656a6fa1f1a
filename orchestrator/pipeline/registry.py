"""Where jobs live: each `Job` together with everything the app holds for it while it runs.

A job's live state (its tokens, the task working on it, the hasher, the repair
budget, event timing) sits in one `LiveJob`, created and dropped with the job, so
nothing of a dropped job (least of all its tokens) stays in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .. import files
from ..errors import OrchestratorError
from ..jobs import Job, JobStore
from ..sources import Credentials
from .early_hash import RunningHash

MAX_JOBS = 5000  # kept records, finished ones included
MAX_ACTIVE_JOBS = 500  # jobs not yet finished


@dataclass
class LiveJob:
    job: Job
    credentials: Credentials = field(default_factory=Credentials, repr=False)
    task: asyncio.Task[None] | None = None  # the coroutine working on the job, if any
    hasher: asyncio.Task[None] | None = None  # the SHA-256 of the installed file, after `success`
    # the engine's last handle for it, kept after the job let go of it (a file done in a blink is
    # still the transfer an aria2 client asked for: gateway/orchestrated.py)
    handed: str | None = None
    # asked for by an aria2 client through the gateway: it follows the GID to its end, so aria2's
    # record of the finished transfer stays (as aria2 keeps any), instead of being dropped
    keep_engine_result: bool = False
    early_hash: RunningHash | None = None  # the published SHA-256's check, begun while it downloads
    repairs: int = 0  # re-adds of a transfer the engine lost or whose link expired
    last_event: float = 0.0  # monotonic time of the last progress event
    last_saved: float = 0.0  # monotonic time progress was last written to SQLite
    moved_at: float = 0.0  # monotonic time the transfer last gained STALL_BYTES (the stall watchdog)
    moved_bytes: int = 0  # what it had then
    waiting_for_engine: bool = False  # the engine did not answer at hand-over: try again when it does
    pause_wanted: bool = False  # a pause the engine did not answer: done when it is back

    @property
    def busy(self) -> bool:
        """A coroutine owns the job: the poller leaves it alone until that is done."""
        return self.task is not None and not self.task.done()

    def tasks(self) -> list[asyncio.Task[None]]:
        return [task for task in (self.task, self.hasher) if task is not None]

    def forget_credentials(self) -> None:
        self.credentials = Credentials()


class Registry:
    """Every job of this state folder, by id, oldest first. The only place jobs live."""

    def __init__(self, store: JobStore, models_dir: Path) -> None:
        self.store = store
        self.models_dir = models_dir  # where a dropped job's partial data is removed from
        self._live: dict[str, LiveJob] = {}

    def load(self) -> list[LiveJob]:
        for job in self.store.load_all():
            self._live[job.id] = LiveJob(job)
        return list(self._live.values())

    def add(self, job: Job, credentials: Credentials) -> LiveJob:
        self.make_room()
        live = LiveJob(job, credentials)
        self._live[job.id] = live
        self.store.save(job)
        return live

    def get(self, job_id: object) -> LiveJob:
        live = self._live.get(job_id) if isinstance(job_id, str) else None
        if live is None:
            raise OrchestratorError("not_found", f"No download with id {str(job_id)[:40]!r}.", 404)
        return live

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._live

    def __iter__(self) -> Iterator[LiveJob]:
        return iter(list(self._live.values()))

    def jobs(self) -> dict[str, Job]:
        return {job_id: live.job for job_id, live in self._live.items()}

    def find_active(self, url: str, model_type: str) -> LiveJob | None:
        for live in self._live.values():
            if live.job.active and live.job.url == url and live.job.model_type == model_type:
                return live
        return None

    def check_room(self) -> None:
        active = sum(1 for live in self._live.values() if live.job.active)
        if active >= MAX_ACTIVE_JOBS:
            raise OrchestratorError(
                "too_many_jobs", f"{active} downloads are already waiting; let some finish first.", 429
            )

    def make_room(self) -> None:
        """Past the record limit, the oldest tenth of the finished jobs go."""
        if len(self._live) < MAX_JOBS:
            return
        finished = sorted((live for live in self._live.values() if not live.job.active), key=_updated)
        for live in finished[: max(1, len(finished) // 10)]:
            self.drop(live)

    def drop(self, live: LiveJob) -> None:
        """Forget a finished job: its tasks, its tokens, its row, and any partial data it kept."""
        for task in live.tasks():
            task.cancel()
        live.forget_credentials()
        files.remove_staging(self.models_dir, live.job.id)
        self._live.pop(live.job.id, None)
        with contextlib.suppress(Exception):  # the row may be gone already
            self.store.delete(live.job.id)


def _updated(live: LiveJob) -> float:
    return live.job.updated
