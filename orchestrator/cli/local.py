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
import sqlite3
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ..bundles.model import BundleStore
from ..bundles.service import BundleService
from ..config import Settings
from ..engines import EngineChoice, choose_engine
from ..errors import OrchestratorError
from ..events import Hub
from ..files import private_folder
from ..jobs import JobStore, State, exclusive_state
from ..library.service import LibraryService
from ..manager import Manager
from ..sources import Credentials
from .follow import Follower, Refused, stop_on_signals
from .items import CliError, Item, RunResult
from .progress import Progress

log = logging.getLogger(__name__)
T = TypeVar("T")


def run_local(
    settings: Settings,
    items: list[Item],
    credentials: Credentials,
    overwrite: bool,
    progress: Progress,
    bundles: list[dict[str, Any]] | None = None,
) -> RunResult:
    """Blocking: runs its own event loop. Must be called from the main thread (signals)."""
    if _loop_running():
        raise CliError(
            "cannot download in-process inside a running event loop (a notebook kernel); "
            "run it as a shell command instead: !orchestrator get ..."
        )
    _make_folders(settings)
    with _state_lock(settings.state_dir):
        return asyncio.run(_run(settings, items, credentials, overwrite, progress, bundles or []))


async def _run(
    settings: Settings,
    items: list[Item],
    credentials: Credentials,
    overwrite: bool,
    progress: Progress,
    bundles: list[dict[str, Any]],
) -> RunResult:
    stop = stop_on_signals(progress)
    choice: EngineChoice = await asyncio.to_thread(choose_engine, settings)
    how = "its own aria2c" if choice.daemon else f"the {choice.engine.name} engine"
    print(f"Downloading into {settings.models_dir} with {how}.", file=sys.stderr, flush=True)
    try:
        if stop.is_set():
            return RunResult([], interrupted=True)
        store = _open_store(settings.database_path)
        hub = Hub()
        manager = Manager(settings, store, choice.engine, hub)
        bundle_service = BundleService(manager, BundleStore(settings.database_path), hub)
        # what lands is recorded in the library as the server would record it (no scan: a
        # notebook cell should not wait for one)
        library = LibraryService(manager, hub)
        try:
            await manager.start()
            await bundle_service.start()
            await library.start(scan=False)
            follower = Follower(LocalBackend(manager, choice, bundle_service), progress)
            return await follower.run(items, credentials, overwrite, stop, bundles)
        finally:
            await bundle_service.stop()  # a folder whose files are all in is put in place first
            bundle_service.store.close()
            await library.stop()  # after the bundles: their files are recorded as they land
            await manager.stop()  # saves every job; the staging files stay where they are
            store.close()
    finally:
        if choice.daemon:
            await asyncio.to_thread(choice.daemon.stop)  # SIGTERM: aria2c saves its session


class LocalBackend:
    """The manager in this process as the follower's backend."""

    tick_seconds = 0.25  # the jobs are in memory: looking is cheap

    def __init__(self, manager: Manager, choice: EngineChoice, bundles: BundleService) -> None:
        self.manager = manager
        self.choice = choice
        self.bundles = bundles

    async def submit(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        job, created = await self._call(self.manager.submit(body))
        return job.public(), created

    async def create_bundle(self, body: dict[str, Any]) -> dict[str, Any]:
        bundle = await self._call(self.bundles.create(body))
        return self.bundles.detail(bundle.id)

    async def bundle(self, bundle_id: str) -> dict[str, Any]:
        try:
            return self.bundles.detail(bundle_id)
        except OrchestratorError as error:
            raise Refused(error.message) from None

    async def job(self, job_id: str) -> dict[str, Any]:
        try:
            return self.manager.get(job_id).public()
        except OrchestratorError as error:
            raise Refused(error.message) from None

    async def act(self, job_id: str, action: str) -> dict[str, Any]:
        commands = {
            "pause": self.manager.pause,
            "resume": self.manager.resume,
            "cancel": self.manager.cancel,
            "retry": self.manager.retry,
        }
        job = await self._call(commands[action](job_id))
        return job.public()

    async def tick(self) -> str | None:
        daemon = self.choice.daemon
        if daemon is not None and await asyncio.to_thread(daemon.ensure_running):
            return "aria2c stopped and was restarted; downloads continue from its session"
        return None

    def others_note(self, ours: set[str]) -> str | None:
        """The manager also picks up unfinished jobs of an earlier run (not paused ones): say so."""
        others = [
            job
            for job in self.manager.jobs.values()
            if job.active and job.state != State.PAUSED and job.id not in ours
        ]
        return f"Also continuing {len(others)} unfinished download(s) of an earlier run." if others else None

    def pauses_on_stop(self, owned: bool) -> bool:
        return True  # this process is going away: every followed download waits for the next run

    def still_running_note(self, job_id: str, owned: bool) -> str | None:
        return None

    @staticmethod
    async def _call(command: Awaitable[T]) -> T:
        try:
            return await command
        except OrchestratorError as error:
            raise Refused(error.message) from None


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
            if label == "state":
                private_folder(path)
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
