"""Who runs a job's steps: at most one task per job, whose outcome is applied when it ends.

Also what happens after a restart (each unfinished job picked up where it was),
and the SHA-256 of a plain link's file, computed after `success`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from .. import files
from ..errors import OrchestratorError
from ..jobs import State
from . import space, steps
from .context import Context
from .registry import LiveJob
from .steps import Completed, EngineAway, Failed, HandedOver, Outcome

log = logging.getLogger(__name__)

SWEEP_AFTER = 2.0  # seconds after a cancel before its staging folder is looked at again


class Worker:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._background: set[asyncio.Task[None]] = set()

    # -- running steps -------------------------------------------------------------------------

    def prepare(self, live: LiveJob, paused: bool = False) -> None:
        self.spawn(live, steps.prepare(self.ctx, live, paused))

    def finish(self, live: LiveJob, engine_sha256: str | None) -> None:
        self.spawn(live, steps.finish(self.ctx, live, engine_sha256))

    def readd(self, live: LiveJob, why: str, paused: bool = False, stop_first: bool = False) -> None:
        """Hand the transfer over anew: stop or forget the engine's old one, resolve, start."""
        log.info("job %s: %s", live.job.id, why)
        live.repairs += 1
        old, live.job.handle = live.job.handle, None
        self.spawn(live, self._forget_then_prepare(live, old, paused, stop_first))

    def drop_bad_bytes(self, live: LiveJob) -> None:
        self.spawn(live, self._drop_bad_bytes(live))

    def drop(self, live: LiveJob, error: OrchestratorError) -> None:
        """Stop the transfer, delete its data and fail the job with `error`."""
        self.spawn(live, self._drop(live, error))

    def forget_later(self, handle: str) -> None:
        """Drop an engine's record of a transfer nobody follows any more, in the background."""

        async def forget() -> None:
            try:
                await self.ctx.engine.forget(handle)
            except OrchestratorError as error:  # the next retry or restart leaves it anyway
                log.info("could not drop the engine's record of %s: %s", handle, error.code)

        self._background.add(task := asyncio.create_task(forget()))
        task.add_done_callback(self._background.discard)

    def sweep_later(self, live: LiveJob) -> None:
        """A cancelled job's staging folder, removed once more a moment later: aria2 may write a
        removed transfer's control file after it already answers that the transfer is gone."""

        async def sweep() -> None:
            await asyncio.sleep(SWEEP_AFTER)
            if live.job.state == State.CANCELLED and not live.busy:  # not retried meanwhile
                await asyncio.to_thread(self.ctx.remove_staging, live.job)

        self._background.add(task := asyncio.create_task(sweep()))
        task.add_done_callback(self._background.discard)

    def spawn(self, live: LiveJob, work: Coroutine[Any, Any, Outcome]) -> None:
        """Run `work` as the job's one task (replacing any other) and apply what comes of it."""

        async def run() -> None:
            try:
                await self.apply(live, await work)
            except asyncio.CancelledError:
                raise
            except OrchestratorError as error:
                self.fail(live, error)
            except Exception as exc:  # a bug must not kill the server or leave a job hanging
                log.exception("job %s crashed", live.job.id)
                self.fail(live, OrchestratorError("internal", f"Internal error: {type(exc).__name__}.", 500))
            finally:
                if live.task is task:
                    live.task = None

        if live.task:
            live.task.cancel()
        task = asyncio.create_task(run(), name=f"job-{live.job.id}")
        # a task cancelled before its first step never awaits `work`: close it, or Python
        # warns "coroutine was never awaited" (e.g. at shutdown)
        task.add_done_callback(lambda _: work.close())
        live.task = task

    async def stop(self, live: LiveJob) -> None:
        """Cancel the job's task and wait until it has let go."""
        task, live.task = live.task, None
        if task:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def apply(self, live: LiveJob, outcome: Outcome) -> None:
        if isinstance(outcome, HandedOver):
            self.ctx.move(live, State.PAUSED if outcome.paused else State.QUEUED)  # a poll says more
            self.ctx.save(live.job)
        elif isinstance(outcome, Completed):
            self.complete(live, outcome)
        elif isinstance(outcome, Failed):
            self.fail(live, outcome.error)
        elif isinstance(outcome, EngineAway):
            live.waiting_for_engine = True
            self.ctx.move(live, State.QUEUED)
            self.ctx.announce.event(
                live, "queued", message="Waiting for the download engine to answer again.", **_numbers(live)
            )

    async def _forget_then_prepare(
        self, live: LiveJob, handle: str | None, paused: bool, stop_first: bool = False
    ) -> Outcome:
        if handle and stop_first:
            await self.ctx.engine.remove(handle)  # the control file stays: the bytes stay known
        elif handle:
            await self.ctx.engine.forget(handle)
        return await steps.prepare(self.ctx, live, paused)

    async def _drop_bad_bytes(self, live: LiveJob) -> Outcome:
        """Bytes that differ from the published sha256 are no use to a retry: remove them, then fail."""
        handle, live.job.handle = live.job.handle, None
        if handle:
            await self.ctx.engine.forget(handle)
        await asyncio.to_thread(self.ctx.remove_staging, live.job)
        live.job.downloaded = 0
        return Failed(steps.checksum_mismatch())

    async def _drop(self, live: LiveJob, error: OrchestratorError) -> Outcome:
        handle, live.job.handle = live.job.handle, None
        if handle:
            await self.ctx.engine.remove(handle)
        await asyncio.to_thread(self.ctx.remove_staging, live.job)
        live.job.downloaded = 0
        return Failed(error)

    async def pause(self, live: LiveJob) -> None:
        """Pause the transfer; when the engine does not answer, the wish is kept and carried out
        as soon as it does (the person asked for a pause, not for an error)."""
        job = live.job
        if not job.handle:
            raise job.refuse("pause")
        try:
            await self.ctx.engine.pause(job.handle)
        except OrchestratorError as error:
            if error.code != "engine_unavailable":
                raise
            live.pause_wanted = True
            raise OrchestratorError(
                "engine_unavailable",
                f"{error.message} The download will be paused as soon as the engine is back.",
                503,
            ) from None
        live.pause_wanted = False
        job.rate, job.eta = 0.0, None
        self.ctx.move(live, State.PAUSED)
        self.ctx.announce.progress(live, "paused")

    # -- endings -------------------------------------------------------------------------------

    def complete(self, live: LiveJob, done: Completed) -> None:
        job = live.job
        job.size = job.downloaded = done.size
        job.sha256 = done.sha256
        job.path = done.path or f"{job.folder}/{job.filename}"
        job.rate, job.eta = 0.0, None
        job.hashing = done.sha256 is None and not done.already_present
        job.already_present = done.already_present
        job.compared = done.compared if done.already_present else None
        self.ctx.move(live, State.COMPLETED)
        live.forget_credentials()
        self.ctx.release(job)
        self.ctx.announce.event(
            live,
            "success",
            path=job.path,
            size=done.size,
            sha256=done.sha256,
            already_present=done.already_present,
            **({"compared": done.compared} if done.already_present else {}),
            **({"found_at": done.found_at} if done.found_at else {}),
        )
        if job.hashing:
            self.hash_later(live)

    def fail(self, live: LiveJob, error: OrchestratorError) -> None:
        job = live.job
        if job.state in (State.COMPLETED, State.CANCELLED, State.FAILED):
            return
        job.error_code, job.error_message = error.code, error.message
        job.rate, job.eta = 0.0, None
        self.ctx.move(live, State.FAILED)
        self.ctx.release(job)
        try:
            space.keep_under_cap(self.ctx)
        except OSError as exc:  # a staging folder that went away meanwhile
            log.warning("could not measure the partial data of failed downloads: %s", exc)
        log.info("job %s failed: %s", job.id, error.code)
        self.ctx.announce.event(live, "error", code=error.code, message=error.message)

    def hash_later(self, live: LiveJob) -> None:
        """The SHA-256 of a file no source published a hash for. It checks nothing (there is
        nothing to compare with), it is a record for the user, so it is computed after `success`
        instead of before: 0.7 s per GiB off every plain download (docs/BENCHMARKS.md, "What changed" 1)."""
        job = live.job

        async def hash_installed() -> None:
            try:
                job.sha256 = await asyncio.to_thread(files.sha256_of, self.ctx.target(job), None, True)
            except (OSError, OrchestratorError) as exc:  # moved or deleted in the meantime: nothing to record
                log.warning("job %s: no SHA-256, the file could not be read: %s", job.id, exc)
            job.hashing = False
            self.ctx.save(job)
            self.ctx.announce.event(live, "hashed", sha256=job.sha256)

        def done(task: asyncio.Task[None]) -> None:
            if live.hasher is task:
                live.hasher = None

        live.hasher = asyncio.create_task(hash_installed(), name=f"hash-{job.id}")
        live.hasher.add_done_callback(done)

    # -- after a restart -----------------------------------------------------------------------

    def recover(self, live: LiveJob) -> None:
        """Pick an unfinished job up where it was."""
        job = live.job
        if job.state == State.VERIFYING:
            self.finish(live, None)
        elif job.state == State.COMPLETED and job.hashing:
            self.hash_later(live)
        elif job.state in (State.QUEUED, State.RESOLVING) and not job.handle:
            self.ctx.move(live, State.QUEUED)
            self.prepare(live)
        elif job.handle and self.ctx.proxy_for(job):
            # a guarded transfer names the egress proxy of the last run, gone with it: hand it over
            # anew (from its control file) through this run's proxy
            paused = job.state == State.PAUSED
            self.ctx.move(live, State.QUEUED)
            self.readd(live, "the egress proxy changed with the restart", paused=paused, stop_first=True)
            live.repairs -= 1  # not a repair: nothing went wrong
        elif job.state == State.RESOLVING and job.handle:
            self.ctx.move(live, State.QUEUED)  # stopped between engine.start and the save: poll it
        elif job.state in (State.DOWNLOADING, State.PAUSED, State.QUEUED) and not job.handle:
            self.prepare(live, paused=job.state == State.PAUSED)
        # jobs with a handle are picked up by the next poll; a lost handle is re-added there


def _numbers(live: LiveJob) -> dict[str, object]:
    return {"downloaded": live.job.downloaded, "total": live.job.size}
