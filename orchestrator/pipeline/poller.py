"""The poll loop: one look at every transfer per tick, and what each status means for its job.

aria2 has no progress notifications, so the loop polls: every interval, sooner
when a job should finish before then, at once when the fallback engine says a
transfer ended. One `engine.poll` per tick covers every job (for aria2 one
`system.multicall`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from .. import files
from ..engines.base import ACTIVE, ERROR, PAUSED, WAITING, TransferStatus
from ..errors import OrchestratorError
from ..jobs import Job, State
from . import observe, space
from .context import Context
from .early_hash import RunningHash
from .health import EngineHealth
from .registry import LiveJob
from .work import Worker

log = logging.getLogger(__name__)

ENGINE_REFRESH = 10.0  # seconds between looks at the engine's own settings
SAVE_PROGRESS_EVERY = 5.0  # seconds between progress writes to SQLite
STALL_BYTES = 64 * 1024  # less than this in `stall_seconds` counts as stalled
WATCHED = (State.QUEUED, State.DOWNLOADING, State.PAUSED)
LOOKS_AFTER_WAKE = 6  # after a transfer ended: quick looks while its job is still busy
LOOK_AGAIN_AFTER = 0.1  # seconds


class Poller:
    def __init__(self, ctx: Context, worker: Worker, health: EngineHealth) -> None:
        self.ctx = ctx
        self.worker = worker
        self.health = health
        self._wake = asyncio.Event()  # set (from any thread) when a transfer ends
        self._task: asyncio.Task[None] | None = None
        self._early_hashes: set[asyncio.Task[None]] = set()
        self._look_again = 0  # quick looks left after a wake-up  # reads in worker threads, kept alive

    def start(self) -> None:
        self.ctx.engine.engine.on_finish = self._wake_from_thread(asyncio.get_running_loop())
        self._task = asyncio.create_task(self._run(), name="poll")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _wake_from_thread(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """What an engine calls, from its own thread, when a transfer ends: the next poll runs at
        once instead of up to an interval later, the fallback's whole gap to curl
        (docs/BENCHMARKS.md, "What changed" 2)."""

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(self._wake.set)

        return wake

    async def _refresh_engine(self) -> None:
        """What an aria2 client may have changed for everyone (the global speed limit)."""
        described = await asyncio.to_thread(self.ctx.engine.engine.describe)
        if described.get("download_limit") != self.health.info.get("download_limit"):
            self.health.learn(described)
            self.health.announce("The download engine's settings changed.")

    async def _run(self) -> None:
        last_refresh = time.monotonic()
        while True:
            if time.monotonic() - last_refresh > ENGINE_REFRESH and self.health.up:
                last_refresh = time.monotonic()
                with contextlib.suppress(Exception):  # a look only; the poll says if it is down
                    await self._refresh_engine()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.next_poll_in())
            if self._wake.is_set():
                self._look_again = LOOKS_AFTER_WAKE
            self._look_again = max(0, self._look_again - 1)
            self._wake.clear()
            try:
                await self.poll_once()
                # a transfer that ended while its job was still being handed over was skipped
                # (aria2 may tell before its answer to addUri arrives): look again in a moment
                # rather than a whole interval later, a small file's whole wait
                if not any(live.busy for live in self.ctx.registry):
                    self._look_again = 0
                await self.carry_out_what_waited()
            except OrchestratorError as error:
                self.health.mark(False, error.message)
            except Exception:
                log.exception("poll failed")

    async def carry_out_what_waited(self) -> None:
        """The engine answers: hand over what waited for it, pause what was asked to pause."""
        waiting = [live for live in self.ctx.registry if live.waiting_for_engine and not live.busy]
        wanted = [live for live in self.ctx.registry if live.pause_wanted and not live.busy]
        if not (waiting or wanted) and self.health.up:
            return
        if not await self.ctx.engine.reachable():
            raise OrchestratorError(
                "engine_unavailable", f"The download engine ({self.ctx.engine.name}) is not answering.", 503
            )
        self.health.mark(True)
        for live in waiting:
            live.waiting_for_engine = False
            self.worker.prepare(live)
        for live in wanted:
            if live.job.allows("pause"):
                with contextlib.suppress(OrchestratorError):
                    await self.worker.pause(live)
            live.pause_wanted = False

    def next_poll_in(self) -> float:
        """The poll interval, or sooner when a job should finish before it: a finished download
        otherwise waits up to a whole interval to be noticed (docs/BENCHMARKS.md, "What changed" 2).
        Progress events keep their own once-a-second limit."""
        if not self.health.up:
            return 2.0
        if self._look_again:
            return LOOK_AGAIN_AFTER
        interval = self.ctx.settings.poll_interval
        etas = [
            live.job.eta
            for live in self.ctx.registry
            if live.job.state == State.DOWNLOADING and live.job.eta is not None
        ]
        soonest = min(etas, default=interval)
        return max(0.1, min(interval, soonest + 0.05))

    async def poll_once(self) -> None:
        watched = [live for live in self.ctx.registry if _watched(live)]
        if not watched:
            return
        statuses = await self.ctx.engine.poll([live.job.handle for live in watched if live.job.handle])
        for live in watched:
            status = statuses.get(live.job.handle or "")
            # the job may have moved on while the engine answered (a command, a step)
            if status and _watched(live) and live.job.handle == status.handle:
                self.apply_status(live, status)
        for live in await asyncio.to_thread(self._over_space, watched):
            self.worker.drop(live, low_on_space())

    def _over_space(self, watched: list[LiveJob]) -> list[LiveJob]:
        """Low on space: failed jobs' partial data goes first; then downloads whose size nobody
        announced (an endless answer) are stopped before the disk is full for everyone."""
        reserve = space.reserve(self.ctx)
        if space.free_bytes(self.ctx) >= reserve:
            return []
        space.make_room(self.ctx, 0)
        if space.free_bytes(self.ctx) >= reserve:
            return []
        return [
            live
            for live in watched
            if live.job.state == State.DOWNLOADING and live.job.size is None and not live.busy
        ]

    def apply_status(self, live: LiveJob, status: TransferStatus) -> None:
        """Bring a job in line with what the engine reports (whoever caused the change)."""
        job = live.job
        learned_size = job.size is None and bool(status.total)
        _take_numbers(job, status)
        self._hash_early(live, status)
        stalled = self._stalled_for(live, status)
        decision = observe.decide(job, status, self.ctx.has_staged_bytes(job), live.repairs, stalled)
        if learned_size and job.size:  # the size the engine's GET announced: does it fit?
            try:
                files.ensure_free_space(self.ctx.settings.models_dir, job.size - job.downloaded)
            except OrchestratorError as error:
                decision = observe.Drop(error)
        refused = self.ctx.refusal_for(job) if status.state == ERROR else None
        if refused:  # a redirect to a private address, caught where aria2 connected
            decision = observe.Fail(refused)
        self._carry_out(live, decision)
        if time.monotonic() - live.last_saved > SAVE_PROGRESS_EVERY:
            live.last_saved = time.monotonic()
            self.ctx.save(job)

    def _hash_early(self, live: LiveJob, status: TransferStatus) -> None:
        """A published SHA-256 is checked by the app: hash the part already complete, so the
        check after the last byte reads only the rest (early_hash.py)."""
        job = live.job
        if not job.expected_sha256 or not job.handle or status.written is None or status.state != ACTIVE:
            return
        running = live.early_hash
        if running is None or running.handle != job.handle:
            running = live.early_hash = RunningHash(job.handle, self.ctx.staged(job))
        if running.wants(job.handle, status.written):
            running.busy = True
            task = asyncio.create_task(asyncio.to_thread(running.advance, status.written))
            self._early_hashes.add(task)
            task.add_done_callback(self._early_hashes.discard)

    def _stalled_for(self, live: LiveJob, status: TransferStatus) -> float | None:
        """Seconds since the transfer last gained STALL_BYTES, once that is over the limit."""
        now = time.monotonic()
        moving = status.state == ACTIVE and status.verified is None  # aria2 verifying is not a stall
        if not moving or live.job.state != State.DOWNLOADING or not live.moved_at:
            live.moved_at, live.moved_bytes = now, status.completed
            return None
        if status.completed - live.moved_bytes >= STALL_BYTES:
            live.moved_at, live.moved_bytes = now, status.completed
            return None
        still = now - live.moved_at
        return still if still > self.ctx.settings.stall_seconds else None

    def _carry_out(self, live: LiveJob, decision: observe.Decision) -> None:
        job = live.job
        if isinstance(decision, observe.Move):
            self.ctx.move(live, decision.state)
            if decision.status:
                self.ctx.announce.progress(live, decision.status, force=decision.force)
        elif isinstance(decision, observe.Finish):
            self.worker.finish(live, decision.sha256)
        elif isinstance(decision, observe.Readd):
            if decision.tell:
                self.ctx.announce.event(live, "stalled", message=decision.tell)
            live.moved_at = 0.0
            self.worker.readd(live, decision.why, paused=decision.paused, stop_first=decision.stop_first)
        elif isinstance(decision, observe.DropBadBytes):
            self.worker.drop_bad_bytes(live)
        elif isinstance(decision, observe.Drop):
            self.worker.drop(live, decision.error)
        elif isinstance(decision, observe.Fail):
            job.handle = None
            self.worker.fail(live, decision.error)
        elif isinstance(decision, observe.RemovedElsewhere):
            # removed by another aria2 client: show it; keep the bytes so a retry can resume
            # (from zero, if that client also deleted the control file); drop aria2's result
            if job.handle:
                self.worker.forget_later(job.handle)
            job.handle = None
            job.rate, job.eta = 0.0, None
            self.ctx.move(live, State.CANCELLED)
            self.ctx.announce.event(live, "cancelled", message="Removed in another aria2 client.")


def low_on_space() -> OrchestratorError:
    return OrchestratorError(
        "disk_full",
        "The disk is almost full and this file's size was never announced, so the download was "
        "stopped before it could fill the disk; its data was removed.",
        507,
    )


def _watched(live: LiveJob) -> bool:
    return bool(live.job.handle) and not live.busy and live.job.state in WATCHED


def _take_numbers(job: Job, status: TransferStatus) -> None:
    # a paused transfer aria2 reloaded from its session reports 0 bytes until it runs again
    not_read_yet = status.state in (PAUSED, WAITING) and status.completed == 0
    job.downloaded = job.downloaded if not_read_yet else status.completed
    job.size = job.size or status.total
    job.rate = status.speed if status.state == ACTIVE else 0.0
    job.verified = status.verified
    job.eta = None if not job.size or job.rate <= 0 else max(0.0, (job.size - job.downloaded) / job.rate)
