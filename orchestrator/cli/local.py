"""`get` with no server: the same pipeline (sources, engine, manager, SQLite) in this process.

The engine is picked as `serve` picks it: an aria2 daemon that answers, else our own
aria2c, else the requests fallback. Jobs live in the state folder's SQLite file, so
Ctrl-C followed by the same command resumes: on Ctrl-C the running transfers are
paused and the manager stopped (never cancelled, which would delete the partial
data); the next run finds the paused job for the same link and resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

from ..config import Settings
from ..engines import EngineChoice, choose_engine
from ..errors import OrchestratorError
from ..events import Hub
from ..jobs import JobStore, State, exclusive_state
from ..manager import Manager
from ..sources import Credentials
from .items import CliError, Item, Outcome, RunResult, settled
from .progress import Progress

log = logging.getLogger(__name__)

TICK = 0.25  # seconds between looks at the jobs (they are in memory; this is cheap)


def run_local(
    settings: Settings, items: list[Item], credentials: Credentials, overwrite: bool, progress: Progress
) -> RunResult:
    """Blocking: runs its own event loop. Must be called from the main thread (signals)."""
    if _loop_running():
        raise CliError("cannot download in-process inside a running event loop (a notebook kernel); "
                       "run it as a shell command instead: !orchestrator get ...")
    _make_folders(settings)
    with _state_lock(settings.state_dir):
        return asyncio.run(_run(settings, items, credentials, overwrite, progress))


async def _run(
    settings: Settings, items: list[Item], credentials: Credentials, overwrite: bool, progress: Progress
) -> RunResult:
    stop = _stop_on_signals(progress)
    choice: EngineChoice = await asyncio.to_thread(choose_engine, settings)
    how = "its own aria2c" if choice.daemon else f"the {choice.engine.name} engine"
    print(f"Downloading into {settings.models_dir} with {how}.", file=sys.stderr, flush=True)
    try:
        if stop.is_set():
            return RunResult([], interrupted=True)
        store = _open_store(settings.database_path)
        manager = Manager(settings, store, choice.engine, Hub())
        try:
            await manager.start()
            return await LocalRun(manager, progress, choice).run(items, credentials, overwrite, stop)
        finally:
            await manager.stop()  # saves every job; the staging files stay where they are
            store.close()
    finally:
        if choice.daemon:
            await asyncio.to_thread(choice.daemon.stop)  # SIGTERM: aria2c saves its session


class LocalRun:
    def __init__(self, manager: Manager, progress: Progress, choice: EngineChoice) -> None:
        self.manager = manager
        self.progress = progress
        self.choice = choice
        self.followed: dict[int, tuple[Item, str]] = {}  # order -> (item, job id)
        self.outcomes: dict[int, Outcome] = {}
        self.to_resume: set[str] = set()

    async def run(
        self, items: list[Item], credentials: Credentials, overwrite: bool, stop: asyncio.Event
    ) -> RunResult:
        for item in items:
            await self._submit(item, credentials, overwrite)
        self._mention_others()
        while len(self.outcomes) < len(items) and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK)
            self._keep_daemon_alive()
            await self._resume_paused()
            self._refresh()
        if stop.is_set():
            await self._pause_unfinished()
        return RunResult(list(self.outcomes.values()), interrupted=stop.is_set())

    async def _submit(self, item: Item, credentials: Credentials, overwrite: bool) -> None:
        try:
            job, created = await self.manager.submit(item.request(credentials, overwrite))
        except OrchestratorError as error:
            self.outcomes[item.order] = Outcome.refused(item, error.message)
            return
        if not created and job.state == State.PAUSED:
            self.to_resume.add(job.id)  # stopped earlier (e.g. by Ctrl-C): asking again means go on
        self.followed[item.order] = (item, job.id)

    def _mention_others(self) -> None:
        """The manager also picks up unfinished jobs of an earlier run (not paused ones): say so."""
        ours = {job_id for _, job_id in self.followed.values()}
        others = [job for job in self.manager.jobs.values()
                  if job.active and job.state != State.PAUSED and job.id not in ours]
        if others:
            self.progress.note(f"Also continuing {len(others)} unfinished download(s) of an earlier run.")

    async def _resume_paused(self) -> None:
        """Resume the jobs found paused, until each is seen moving.

        Retried each tick: after a restart the engine may not know the transfer yet;
        the manager's next poll adds it again, and then the resume works.
        """
        for job_id in list(self.to_resume):
            job = self.manager.get(job_id)
            if job.state == State.PAUSED:
                try:
                    await self.manager.resume(job_id)
                except Exception as exc:  # the engine may not know the transfer yet; next tick
                    log.debug("resume of %s not possible yet: %s", job_id, type(exc).__name__)
            elif job.state not in (State.QUEUED, State.RESOLVING):
                self.to_resume.discard(job_id)

    def _refresh(self) -> None:
        for order, (item, job_id) in self.followed.items():
            if order in self.outcomes:
                continue
            job = self.manager.get(job_id).public()
            self.progress.show(order, job)
            if settled(job):
                self.outcomes[order] = Outcome.from_job(item, job)

    def _keep_daemon_alive(self) -> None:
        if self.choice.daemon and self.choice.daemon.ensure_running():
            self.progress.note("aria2c stopped and was restarted; downloads continue from its session")

    async def _pause_unfinished(self) -> None:
        """Ctrl-C: pause moving transfers so they stay stopped until asked for again."""
        for order, (item, job_id) in self.followed.items():
            if order in self.outcomes:
                continue
            job = self.manager.get(job_id)
            if job.state in (State.DOWNLOADING, State.QUEUED) and job.handle:
                with contextlib.suppress(Exception):  # stopping the manager keeps the bytes anyway
                    await self.manager.pause(job_id)
            self.outcomes[order] = Outcome.from_job(item, job.public(), interrupted=True)


def _stop_on_signals(progress: Progress) -> asyncio.Event:
    """Ctrl-C (and SIGTERM) set an event instead of raising, so shutdown is orderly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            progress.note("Still stopping: saving the partial downloads...")
        else:
            progress.note("Stopping: partial downloads are kept for a resume...")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread
            loop.add_signal_handler(sig, on_signal)
    return stop


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _make_folders(settings: Settings) -> None:
    for label, path in (("models", settings.models_dir), ("state", settings.state_dir)):
        try:
            path.mkdir(parents=True, exist_ok=True)
            if label == "models":
                settings.staging_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise CliError(f"cannot create the {label} folder {path}: {exc.strerror or exc}") from None


def _open_store(path: Path) -> JobStore:
    try:
        return JobStore(path)
    except sqlite3.Error as exc:
        raise CliError(f"cannot open the job database {path}: {exc}") from None


@contextlib.contextmanager
def _state_lock(state_dir: Path) -> Iterator[None]:
    try:
        with exclusive_state(state_dir):
            yield
    except OrchestratorError as error:
        if error.code != "state_in_use":
            raise
        raise CliError(error.message) from None
