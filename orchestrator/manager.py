"""The pipeline: submit -> resolve -> start -> poll -> verify -> finish, and recovery.

Runs on the event loop. Anything that blocks (the source's HTTP calls, every
engine call, hashing, moving files) goes to a worker thread. Job state lives
in the JobStore; tokens live only in memory, for the life of the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import files, sources
from .config import AUTO_DESCRIPTION, AUTO_TYPE, MODEL_TYPES, Settings, folder_for
from .engines.base import (
    ACTIVE,
    COMPLETE,
    ERROR,
    MISSING,
    PAUSED,
    REMOVED,
    WAITING,
    Engine,
    Transfer,
    TransferStatus,
)
from .errors import OrchestratorError
from .events import Hub
from .jobs import ACTIVE_STATES, Job, JobStore, State, new_job_id
from .sources import Credentials, Resolved

log = logging.getLogger(__name__)

MAX_JOBS = 5000  # kept records, finished ones included
MAX_ACTIVE_JOBS = 500  # jobs not yet finished
SAVE_PROGRESS_EVERY = 5.0  # seconds between progress writes to SQLite
MAX_REPAIRS = 3  # re-adds of a transfer the engine lost or whose link expired


class Manager:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        engine: Engine,
        hub: Hub,
        resolver: Callable[[str, Credentials], Resolved] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.hub = hub
        self.resolve = resolver or functools.partial(
            sources.resolve, block_private=settings.blocks_private_targets
        )
        self.jobs: dict[str, Job] = {}
        self.engine_info: dict[str, Any] = {"name": engine.name}
        self._tasks: dict[str, asyncio.Task] = {}
        self._hashers: dict[str, asyncio.Task] = {}  # SHA-256 of installed files, after `success`
        self._wake = asyncio.Event()  # set (from any thread) when a transfer ends
        self._credentials: dict[str, Credentials] = {}
        self._last_event: dict[str, float] = {}
        self._last_saved: dict[str, float] = {}
        self._repairs: dict[str, int] = {}
        self._poller: asyncio.Task | None = None
        self.engine_up = True

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.engine_info = await asyncio.to_thread(self.engine.describe)
        for job in self.store.load_all():
            self.jobs[job.id] = job
        for job in list(self.jobs.values()):
            self._recover(job)
        self.engine.on_finish = self._wake_from_thread(asyncio.get_running_loop())
        self._poller = asyncio.create_task(self._poll_forever(), name="poll")

    async def stop(self) -> None:
        tasks = [*self._tasks.values(), *self._hashers.values(), *([self._poller] if self._poller else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(self.engine.close)
        for job in self.jobs.values():
            self.store.save(job)

    def _recover(self, job: Job) -> None:
        """After a restart: pick every unfinished job up where it was."""
        if job.state == State.VERIFYING:
            self._spawn(job, self._finish(job, None))
        elif job.state == State.COMPLETED and job.hashing:
            self._hash_later(job)
        elif job.state in (State.QUEUED, State.RESOLVING) and not job.handle:
            job.state = State.QUEUED
            self._spawn(job, self._prepare(job))
        elif job.state == State.RESOLVING and job.handle:
            job.state = State.QUEUED  # stopped between engine.start and the save: poll it
        elif job.state in (State.DOWNLOADING, State.PAUSED, State.QUEUED) and not job.handle:
            self._spawn(job, self._prepare(job, paused=job.state == State.PAUSED))
        # jobs with a handle are picked up by the next poll; a lost handle is re-added there

    # -- commands --------------------------------------------------------------------

    async def submit(self, request: dict[str, Any], request_id: Any = None) -> tuple[Job, bool]:
        """Create a job (or find the identical active one). Returns (job, created)."""
        if not isinstance(request, dict):
            raise OrchestratorError("invalid_message", "A download needs an object with url and type.")
        request_id = _request_id(request_id)
        url = sources.validate_url(request.get("url"))
        model_type = request.get("type")
        source = sources.identify(url)
        folder = self._requested_folder(model_type, source)
        name = request.get("name") or None
        if name is not None:
            name = files.sanitize_filename(name)
        for job in self.jobs.values():
            if job.active and job.url == url and job.model_type == model_type:
                return job, False
        self._check_limits()
        job = Job(
            id=new_job_id(),
            url=url,
            model_type=model_type,
            folder=folder,
            name=name,
            overwrite=_flag(request.get("overwrite"), "overwrite"),
            request_id=request_id,
            source=source,
            engine=self.engine.name,
        )
        self._credentials[job.id] = Credentials(
            civitai=_token(request.get("civitai_token")), huggingface=_token(request.get("hf_token"))
        )
        self.jobs[job.id] = job
        self.store.save(job)
        self._emit(job, "started", url=job.url, type=job.model_type)
        self._spawn(job, self._prepare(job))
        return job, True

    def _requested_folder(self, model_type: Any, source: str) -> str:
        """The folder a request names; with `auto` it stays empty until the source says the type."""
        if model_type != AUTO_TYPE:
            return folder_for(model_type, self.settings.layout)
        if not sources.knows_model_type(source):
            raise OrchestratorError(
                "type_required",
                "Only CivitAI links say what kind of model they are; pick a model type for this link.",
            )
        return ""

    def _auto_folder(self, resolved: Resolved) -> str:
        """The folder for the type the source gave (CivitAI: LORA -> lora, ...)."""
        if resolved.model_type in MODEL_TYPES:
            return folder_for(resolved.model_type, self.settings.layout)
        said = resolved.metadata.get("model_type")
        kind = f" ({said})" if said else ""
        raise OrchestratorError(
            "type_required",
            f"This model's type{kind} has no folder here; pick a model type instead of auto.",
        )

    def _check_limits(self) -> None:
        active = sum(1 for job in self.jobs.values() if job.active)
        if active >= MAX_ACTIVE_JOBS:
            raise OrchestratorError(
                "too_many_jobs", f"{active} downloads are already waiting; let some finish first.", 429
            )
        if len(self.jobs) >= MAX_JOBS:
            self._drop_oldest_finished()

    def _drop_oldest_finished(self) -> None:
        finished = sorted((j for j in self.jobs.values() if not j.active), key=lambda j: j.updated)
        for job in finished[: max(1, len(finished) // 10)]:
            self.jobs.pop(job.id, None)
            self.store.delete(job.id)

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise OrchestratorError("not_found", f"No download with id {str(job_id)[:40]!r}.", 404)
        return job

    async def cancel(self, job_id: str) -> Job:
        """Stop a job and delete its partial data (also how a failed job is cleaned up)."""
        job = self.get(job_id)
        if job.state == State.CANCELLED:
            return job
        if job.state not in (*ACTIVE_STATES, State.FAILED) or job.state == State.VERIFYING:
            raise OrchestratorError(
                "invalid_state", f"A {job.state.value} download cannot be cancelled.", 409
            )
        task = self._tasks.pop(job.id, None)
        if task:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if job.handle:
            await self._engine_call(self.engine.remove, job.handle)
            job.handle = None
        await asyncio.to_thread(files.remove_staging, self.settings.models_dir, job.id)
        job.downloaded, job.rate, job.eta = 0, 0.0, None
        self._set_state(job, State.CANCELLED)
        self._emit(job, "cancelled", message="Cancelled; partial data removed.")
        return job

    async def pause(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state == State.PAUSED:
            return job
        if job.state not in (State.DOWNLOADING, State.QUEUED) or not job.handle:
            raise OrchestratorError("invalid_state", f"A {job.state.value} download cannot be paused.", 409)
        await self._engine_call(self.engine.pause, job.handle)
        job.rate, job.eta = 0.0, None
        self._set_state(job, State.PAUSED)
        self._emit_progress(job, "paused")
        return job

    async def resume(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state != State.PAUSED:
            raise OrchestratorError("invalid_state", f"A {job.state.value} download cannot be resumed.", 409)
        if job.handle:
            await self._engine_call(self.engine.resume, job.handle)
            self._set_state(job, State.DOWNLOADING)
            self._emit_progress(job, "progress")
        else:
            self._set_state(job, State.QUEUED)
            self._spawn(job, self._prepare(job))
        return job

    async def retry(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state not in (State.FAILED, State.CANCELLED):
            raise OrchestratorError("invalid_state", f"A {job.state.value} download cannot be retried.", 409)
        if job.handle:
            await self._engine_call(self.engine.forget, job.handle)
            job.handle = None
        job.error_code = job.error_message = None
        self._repairs.pop(job.id, None)
        self._set_state(job, State.QUEUED)
        self._emit(job, "started", url=job.url, type=job.model_type)
        self._spawn(job, self._prepare(job))
        return job

    def snapshot(self) -> list[dict[str, Any]]:
        return [job.public() for job in self.jobs.values()]

    # -- the pipeline ----------------------------------------------------------------

    def _spawn(self, job: Job, work: Any) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except OrchestratorError as error:
                self._fail(job, error)
            except Exception as exc:  # a bug must not kill the server or leave a job hanging
                log.exception("job %s crashed", job.id)
                self._fail(job, OrchestratorError("internal", f"Internal error: {type(exc).__name__}.", 500))
            finally:
                if self._tasks.get(job.id) is task:
                    del self._tasks[job.id]

        old = self._tasks.get(job.id)
        if old:
            old.cancel()
        task = asyncio.create_task(guarded(), name=f"job-{job.id}")
        # a task cancelled before its first step never awaits `work`: close it, or Python
        # warns "coroutine was never awaited" (e.g. at shutdown)
        task.add_done_callback(lambda _: work.close())
        self._tasks[job.id] = task

    async def _prepare(self, job: Job, paused: bool = False) -> None:
        """Resolve the link, check the target, hand the transfer to the engine."""
        self._set_state(job, State.RESOLVING)
        credentials = self._credentials.get(job.id, Credentials())
        # bytes on disk belong to the version first resolved, even if a branch moved since
        url = sources.pin(job.url, job.metadata) if self._has_staged_bytes(job) else job.url
        resolved = await asyncio.to_thread(self.resolve, url, credentials)
        first_time = job.filename is None
        job.filename = job.name or (
            files.sanitize_filename(resolved.filename)
            if resolved.filename
            else files.choose_filename(None, None, job.url)
        )
        job.source = resolved.source
        job.size = resolved.size or job.size
        job.expected_sha256 = (resolved.sha256 or "").lower() or None
        job.metadata = resolved.metadata or job.metadata
        if first_time:
            self._emit(job, "started", url=job.url, type=job.model_type)
            if job.metadata:
                self._emit(job, "metadata", info=job.metadata)
        if job.model_type == AUTO_TYPE:
            job.folder = self._auto_folder(resolved)
        target = self._target(job)
        if target.exists() and await self._already_there(job, target):
            return
        directory = files.staging_dir(self.settings.models_dir, job.id)
        have = (directory / job.filename).stat().st_size if (directory / job.filename).exists() else 0
        files.ensure_free_space(self.settings.models_dir, (job.size or 0) - have)
        transfer = Transfer(
            urls=resolved.urls,
            directory=directory,
            filename=job.filename,
            size=job.size,
            sha256=job.expected_sha256,
            headers=resolved.headers,
        )
        await self._start_transfer(job, transfer)
        job.engine = self.engine.name
        if paused:
            await self._engine_call(self.engine.pause, job.handle)
            self._set_state(job, State.PAUSED)
        else:
            self._set_state(job, State.QUEUED)  # the next poll says when bytes really move
        self.store.save(job)

    async def _start_transfer(self, job: Job, transfer: Transfer) -> None:
        """Start it even if the job is cancelled meanwhile, so cancel() can remove it."""
        start = asyncio.ensure_future(self._engine_call(self.engine.start, transfer))
        try:
            job.handle = await asyncio.shield(start)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                job.handle = await start
            raise

    def _staged(self, job: Job) -> Path:
        return files.staging_dir(self.settings.models_dir, job.id) / (job.filename or "")

    def _target(self, job: Job) -> Path:
        assert job.filename
        return files.model_folder(self.settings.models_dir, job.folder) / job.filename

    async def _already_there(self, job: Job, target: Path) -> bool:
        """True (and the job completed) when the file in place is the one asked for.

        With a published sha256 the bytes decide; without one, the same name and
        size count as the same file, rather than fetching gigabytes to compare.
        """
        if job.overwrite:
            return False
        size = target.stat().st_size
        if job.expected_sha256:
            self._set_state(job, State.VERIFYING)
            digest = await asyncio.to_thread(files.sha256_of, target)
            same = digest == job.expected_sha256
        else:
            same = job.size is not None and size == job.size
            digest = await asyncio.to_thread(files.sha256_of, target) if same else None
        if not same:
            raise OrchestratorError(
                "file_exists",
                f"{target.name} already exists in {job.folder}/ and is a different file; "
                "ask for overwrite to replace it.",
                409,
            )
        await self._add_sidecars(job, target)
        self._complete(job, size, digest, already_present=True)
        return True

    async def _finish(self, job: Job, engine_sha256: str | None) -> None:
        """Verify the staged file and move it into its folder."""
        self._set_state(job, State.VERIFYING)
        job.rate, job.eta = 0.0, None
        self._emit_progress(job, "progress")
        if job.handle:
            await self._engine_call(self.engine.forget, job.handle)
            job.handle = None
        staged = self._staged(job)
        if not job.filename or not staged.is_file():
            raise OrchestratorError(
                "download_failed", "The downloaded file is missing from the staging folder."
            )
        size = staged.stat().st_size
        digest = await asyncio.to_thread(self._verify, job, staged, size, engine_sha256)
        target = self._target(job)
        if target.exists() and not job.overwrite:
            digest = digest or await asyncio.to_thread(files.sha256_of, staged)
            existing = await asyncio.to_thread(files.sha256_of, target)
            if existing == digest:
                await asyncio.to_thread(files.remove_staging, self.settings.models_dir, job.id)
                await self._add_sidecars(job, target)
                self._complete(job, size, digest, already_present=True)
                return
        await asyncio.to_thread(files.install, staged, target, job.overwrite)
        await asyncio.to_thread(files.remove_staging, self.settings.models_dir, job.id)
        await self._add_sidecars(job, target)
        job.hashing = digest is None
        self._complete(job, size, digest, already_present=False)
        if job.hashing:
            self._hash_later(job)

    def _hash_later(self, job: Job) -> None:
        """The SHA-256 of a file no source published a hash for. It checks nothing (there is
        nothing to compare with), it is a record for the user, so it is computed after
        `success` instead of before: 0.7 s per GiB off every plain download (bench/)."""

        async def hash_installed() -> None:
            try:
                job.sha256 = await asyncio.to_thread(files.sha256_of, self._target(job))
            except OSError as exc:  # moved or deleted in the meantime: nothing to record
                log.warning("job %s: no SHA-256, the file could not be read: %s", job.id, exc.strerror)
            job.hashing = False
            if job.id in self.jobs:  # not dropped from the list meanwhile
                self.store.save(job)
            self._emit(job, "hashed", sha256=job.sha256)

        task = asyncio.create_task(hash_installed(), name=f"hash-{job.id}")
        self._hashers[job.id] = task
        task.add_done_callback(lambda _: self._hashers.pop(job.id, None))

    async def _add_sidecars(self, job: Job, target: Path) -> None:
        """Files that describe the model (CivitAI's record, a preview) beside it; never fails the job."""
        if not self.settings.sidecars:
            return
        try:
            extras = await asyncio.to_thread(sources.sidecars, job.source, job.metadata)
            await asyncio.to_thread(files.write_sidecars, target, extras)
        except Exception as exc:  # the model is in place and verified; a sidecar is a nicety
            log.warning("job %s: sidecar files not written: %s", job.id, type(exc).__name__)

    def _verify(self, job: Job, staged: Path, size: int, engine_sha256: str | None) -> str | None:
        """Blocking: size, web-page sniffing and the published sha256, if any. Removes the
        file when it is wrong. Returns the digest when it is known by now."""
        problem = None
        if job.size is not None and size != job.size:
            problem = OrchestratorError(
                "size_mismatch",
                f"The download has {size} bytes but should have {job.size}; the bad file was removed.",
                502,
            )
        elif not job.filename.lower().endswith((".html", ".htm")) and files.looks_like_html(staged):
            problem = OrchestratorError(
                "not_a_file", "The server sent a web page instead of the file; it was removed.", 502
            )
        digest = engine_sha256
        if problem is None and job.expected_sha256:
            if getattr(self.engine, "verifies_sha256", False):
                digest = job.expected_sha256  # aria2 checked it against the checksum option
            else:
                digest = digest or files.sha256_of(staged)
            if digest != job.expected_sha256:
                problem = OrchestratorError(
                    "checksum_mismatch",
                    "The file's SHA-256 does not match the one the source published; "
                    "the bad file was removed.",
                    502,
                )
        if problem:
            files.remove_staging(self.settings.models_dir, job.id)
            job.downloaded = 0
            raise problem
        return digest

    def _complete(self, job: Job, size: int, digest: str | None, already_present: bool) -> None:
        job.size = job.downloaded = size
        job.sha256 = digest
        job.path = f"{job.folder}/{job.filename}"
        job.rate, job.eta = 0.0, None
        self._set_state(job, State.COMPLETED)
        self._credentials.pop(job.id, None)
        self._emit(job, "success", path=job.path, size=size, sha256=digest, already_present=already_present)

    def _fail(self, job: Job, error: OrchestratorError) -> None:
        if job.state in (State.COMPLETED, State.CANCELLED, State.FAILED):
            return
        job.error_code, job.error_message = error.code, error.message
        job.rate, job.eta = 0.0, None
        job.state = State.FAILED  # any active state may fail
        job.updated = time.time()
        self.store.save(job)
        log.info("job %s failed: %s", job.id, error.code)
        self._emit(job, "error", code=error.code, message=error.message)

    # -- polling ---------------------------------------------------------------------

    def _wake_from_thread(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """What an engine calls, from its own thread, when a transfer ends: the next poll runs
        at once instead of up to an interval later (the fallback's whole gap to curl, bench/)."""

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(self._wake.set)

        return wake

    async def _poll_forever(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_poll_in())
            self._wake.clear()
            try:
                await self.poll_once()
                self._engine_status(True)
            except OrchestratorError as error:
                self._engine_status(False, error.message)
            except Exception:
                log.exception("poll failed")

    def _next_poll_in(self) -> float:
        """The poll interval, or sooner when a job should finish before it: a finished
        download otherwise waits up to a whole interval to be noticed (measured in bench/).
        Progress events keep their own once-a-second limit."""
        if not self.engine_up:
            return 2.0
        etas = [job.eta for job in self.jobs.values()
                if job.state == State.DOWNLOADING and job.eta is not None]
        soonest = min(etas, default=self.settings.poll_interval)
        return max(0.1, min(self.settings.poll_interval, soonest + 0.05))

    async def poll_once(self) -> None:
        watched = [
            job
            for job in self.jobs.values()
            if job.handle
            and job.id not in self._tasks
            and job.state in (State.QUEUED, State.DOWNLOADING, State.PAUSED)
        ]
        if not watched:
            return
        statuses = await self._engine_call(self.engine.poll, [job.handle for job in watched])
        for job in watched:
            status = statuses.get(job.handle)
            if status and job.id not in self._tasks and job.handle == status.handle:
                self._apply(job, status)

    def _apply(self, job: Job, status: TransferStatus) -> None:
        """Bring a job in line with what the engine reports (whoever caused the change)."""
        job.downloaded = status.completed
        job.size = job.size or status.total
        job.rate = status.speed if status.state == ACTIVE else 0.0
        job.eta = _eta(job)
        handlers = {
            ACTIVE: self._on_active,
            WAITING: self._on_waiting,
            PAUSED: self._on_paused,
            COMPLETE: self._on_complete,
            ERROR: self._on_error,
            REMOVED: self._on_removed,
            MISSING: self._on_missing,
        }
        handlers[status.state](job, status)
        if time.monotonic() - self._last_saved.get(job.id, 0) > SAVE_PROGRESS_EVERY:
            self._last_saved[job.id] = time.monotonic()
            self.store.save(job)

    def _on_active(self, job: Job, status: TransferStatus) -> None:
        changed = job.state != State.DOWNLOADING
        self._set_state(job, State.DOWNLOADING)
        self._emit_progress(job, "progress", force=changed)

    def _on_waiting(self, job: Job, status: TransferStatus) -> None:
        if job.state != State.QUEUED:
            self._set_state(job, State.QUEUED)
            self._emit_progress(job, "queued")

    def _on_paused(self, job: Job, status: TransferStatus) -> None:
        if job.state != State.PAUSED:  # paused elsewhere, e.g. in AriaNg
            self._set_state(job, State.PAUSED)
            self._emit_progress(job, "paused")

    def _on_complete(self, job: Job, status: TransferStatus) -> None:
        self._spawn(job, self._finish(job, status.sha256))

    def _on_error(self, job: Job, status: TransferStatus) -> None:
        # 403/410 on a link that worked: a signed URL may have expired; resolve again
        # (after a restart aria2 fails before reading its control file and reports 0 bytes)
        worked = job.downloaded or self._has_staged_bytes(job)
        if _may_have_expired(status) and worked and self._may_repair(job):
            self._readd(job, "the link expired; resolving it again")
            return
        if status.error_code == "checksum_mismatch":  # aria2 checked the published sha256 itself
            self._spawn(job, self._drop_bad_bytes(job))
            return
        job.handle = None
        self._fail(
            job,
            OrchestratorError(
                status.error_code or "download_failed", status.error_message or "The download failed.", 502
            ),
        )

    def _has_staged_bytes(self, job: Job) -> bool:
        staged = self._staged(job)
        return bool(job.filename) and staged.is_file() and staged.stat().st_size > 0

    async def _drop_bad_bytes(self, job: Job) -> None:
        """Bytes that differ from the published sha256 are no use to a retry: remove them, then fail."""
        handle, job.handle = job.handle, None
        if handle:
            await self._engine_call(self.engine.forget, handle)
        await asyncio.to_thread(files.remove_staging, self.settings.models_dir, job.id)
        job.downloaded = 0
        raise OrchestratorError(
            "checksum_mismatch",
            "The file's SHA-256 does not match the one the source published; the bad file was removed.",
            502,
        )

    def _on_removed(self, job: Job, status: TransferStatus) -> None:
        # removed by another aria2 client: show it; keep the bytes so a retry can resume
        job.handle = None
        job.rate, job.eta = 0.0, None
        self._set_state(job, State.CANCELLED)
        self._emit(job, "cancelled", message="Removed in another aria2 client.")

    def _on_missing(self, job: Job, status: TransferStatus) -> None:
        """The engine lost the transfer (daemon restarted without it): add it again."""
        if not self._may_repair(job):
            job.handle = None
            self._fail(
                job,
                OrchestratorError(
                    "engine_lost", "The download engine lost this download several times; retry it.", 502
                ),
            )
            return
        self._readd(job, "the engine lost the transfer; adding it again", paused=job.state == State.PAUSED)

    def _may_repair(self, job: Job) -> bool:
        self._repairs[job.id] = self._repairs.get(job.id, 0) + 1
        return self._repairs[job.id] <= MAX_REPAIRS

    def _readd(self, job: Job, why: str, paused: bool = False) -> None:
        log.info("job %s: %s", job.id, why)
        old, job.handle = job.handle, None
        if old:
            self._spawn(job, self._forget_then_prepare(job, old, paused))
        else:
            self._spawn(job, self._prepare(job, paused=paused))

    async def _forget_then_prepare(self, job: Job, handle: str, paused: bool) -> None:
        await self._engine_call(self.engine.forget, handle)
        await self._prepare(job, paused=paused)

    # -- helpers ---------------------------------------------------------------------

    async def _engine_call(self, method: Callable[..., Any], *args: Any) -> Any:
        """Run an engine method in a thread; turn connection trouble into one clear error."""
        try:
            return await asyncio.to_thread(method, *args)
        except OrchestratorError:
            raise
        except OSError as exc:  # requests' ConnectionError is an OSError
            raise OrchestratorError(
                "engine_unavailable",
                f"The download engine ({self.engine.name}) is not answering: {type(exc).__name__}.",
                503,
            ) from None
        except Exception as exc:  # e.g. aria2 refusing a call for a GID it no longer knows
            log.warning("engine call %s failed: %s", getattr(method, "__name__", method), exc)
            raise OrchestratorError(
                "engine_error", f"The download engine ({self.engine.name}) refused: {str(exc)[:160]}", 409
            ) from None

    def _engine_status(self, up: bool, message: str | None = None) -> None:
        if up == self.engine_up:
            return
        self.engine_up = up
        self.engine_info = {**self.engine_info, "connected": up}
        log.warning("engine %s", "is back" if up else f"unreachable: {message}")
        self.hub.publish({"type": "engine", "data": {**self.engine_info, "message": message}})

    def _set_state(self, job: Job, state: State) -> None:
        if job.state != state:
            job.move_to(state)
            self.store.save(job)

    def _emit(self, job: Job, status: str, **data: Any) -> None:
        payload = {
            "status": status,
            "state": job.state.value,
            "label": job.filename or job.name or job.url,
            **data,
        }
        self.hub.publish({"type": "download", "id": job.request_id, "job": job.id, "data": payload})

    def _emit_progress(self, job: Job, status: str, force: bool = True) -> None:
        now = time.monotonic()
        if not force and now - self._last_event.get(job.id, 0) < self.settings.poll_interval * 0.9:
            return
        self._last_event[job.id] = now
        self._emit(
            job,
            status,
            progress=round(job.progress, 4),
            rate=round(job.rate / 1e6, 3),
            eta=None if job.eta is None else round(job.eta, 1),
            downloaded=job.downloaded,
            total=job.size,
        )

    def types(self) -> list[dict[str, str]]:
        # "auto" has no folder of its own: the source's answer picks one of the others
        auto = {"name": AUTO_TYPE, "description": AUTO_DESCRIPTION, "folder": ""}
        return [auto] + [
            {"name": name, "description": text, "folder": folder_for(name, self.settings.layout)}
            for name, text in MODEL_TYPES.items()
        ]


def _may_have_expired(status: TransferStatus) -> bool:
    """403/410, or an HTTP failure whose status got lost: when several of aria2's connections
    meet an expired URL, it often reports only "No URI available" (errorCode 22, no status)."""
    if status.http_status is not None:
        return status.http_status in (403, 410)
    return status.error_code in ("origin_error", "origin_forbidden")


def _eta(job: Job) -> float | None:
    if not job.size or job.rate <= 0:
        return None
    return max(0.0, (job.size - job.downloaded) / job.rate)


def _flag(value: Any, name: str) -> bool:
    """A JSON boolean; anything else (e.g. the string "false") is refused, not guessed."""
    if value is None or isinstance(value, bool):
        return bool(value)
    raise OrchestratorError("invalid_message", f"{name!r} must be true or false.")


def _request_id(value: Any) -> Any:
    """The client's id is echoed to every client, so it must be small, plain JSON."""
    try:
        size = len(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        size = None
    if size is None or size > 1024:
        raise OrchestratorError("invalid_message", "The message id must be plain JSON under 1 KiB.")
    return value


def _token(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
