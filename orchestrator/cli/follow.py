"""`get`'s one way of following downloads, wherever they run: submit, watch, resume, stop cleanly.

The jobs run either in this process (local.py) or on a running server (remote.py);
both are a `Backend`, and this follower does the rest the same way for both:
resume a paused job asked for again, show progress, collect each outcome, and on
Ctrl-C or SIGTERM pause what it started so the bytes wait for a resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any, Protocol

from ..sources import Credentials
from .items import Item, Outcome, RunResult, settled
from .progress import Progress

log = logging.getLogger(__name__)

BUNDLE_ORDER = 10**6  # bundles' files come after the single links in the summary
BUNDLE_STRIDE = 10**4
BUNDLE_FINAL_STATES = ("completed", "failed", "cancelled", "paused")
BUNDLE_WAIT_SECONDS = 240  # a folder is renamed into place once its last file is in: at most this
GIVE_UP_AFTER = 20  # failed looks in a row before the backend counts as gone
WAITING_STATES = ("queued", "resolving")


class Refused(Exception):
    """The backend turned a request down; `message` is its sentence for a person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Gone(Refused):
    """The backend does not answer (the server went away)."""


class Backend(Protocol):
    tick_seconds: float  # how often the jobs are looked at

    async def submit(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(job, created); created is False when an identical active job already existed."""

    async def create_bundle(self, body: dict[str, Any]) -> dict[str, Any]:
        """A bundle of downloads (docs/PROTOCOL.md, Bundles), with its files' jobs under `files`."""

    async def job(self, job_id: str) -> dict[str, Any]: ...

    async def bundle(self, bundle_id: str) -> dict[str, Any]: ...

    async def act(self, job_id: str, action: str) -> dict[str, Any]:
        """pause, resume, cancel or retry."""

    async def tick(self) -> str | None:
        """Housekeeping between looks; a note for the user, if something happened."""

    def others_note(self, ours: set[str]) -> str | None:
        """A note about other downloads this run will also carry on, if any."""

    def pauses_on_stop(self, owned: bool) -> bool:
        """Whether Ctrl-C pauses a followed job (`owned`: this command created or resumed it)."""

    def still_running_note(self, job_id: str, owned: bool) -> str | None:
        """What to say of a job left running after Ctrl-C (None: the usual words)."""


class Follower:
    def __init__(self, backend: Backend, progress: Progress) -> None:
        self.backend = backend
        self.progress = progress
        self.items: dict[int, Item] = {}
        self.latest: dict[int, dict[str, Any]] = {}  # the newest job object per request
        self.owned: set[str] = set()  # job ids this command created or resumed
        self.to_resume: set[str] = set()
        self.outcomes: dict[int, Outcome] = {}
        self._failures = 0
        self.bundles: dict[int, tuple[str, str]] = {}  # order -> (bundle id, label)

    async def run(
        self,
        items: list[Item],
        credentials: Credentials,
        overwrite: bool,
        stop: asyncio.Event,
        bundles: list[dict[str, Any]] | None = None,
    ) -> RunResult:
        for item in items:
            await self._submit(item, credentials, overwrite)
        for order, body in enumerate(bundles or [], start=BUNDLE_ORDER):
            await self._make_bundle(order, body, credentials)
        note = self.backend.others_note({job["id"] for job in self.latest.values()})
        if note:
            self.progress.note(note)
        while self._pending() and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.backend.tick_seconds)
            if note := await self.backend.tick():
                self.progress.note(note)
            await self._resume_paused()
            await self._refresh()
        if stop.is_set():
            await self._pause_unfinished()
        else:
            await self._await_bundles(stop)
        return RunResult(list(self.outcomes.values()), interrupted=stop.is_set())

    def _pending(self) -> list[int]:
        return [key for key in self.latest if key not in self.outcomes]

    async def _submit(self, item: Item, credentials: Credentials, overwrite: bool) -> None:
        try:
            job, created = await self.backend.submit(item.request(credentials, overwrite))
        except Refused as refusal:
            self.outcomes[item.order] = Outcome.refused(item, refusal.message)
            return
        if created:
            self.owned.add(job["id"])
        elif job["state"] == "paused":
            self.to_resume.add(job["id"])  # stopped earlier (e.g. by Ctrl-C): asking again means go on
        self.items[item.order] = item
        self._update(item.order, job)

    async def _make_bundle(self, order: int, body: dict[str, Any], credentials: Credentials) -> None:
        """One request for a set of files (a list, a workflow, a folder): each file is followed."""
        where = str(body.get("label") or body.get("kind"))
        lines: list[Item] = list(body.get("lines") or [])
        request = {key: value for key, value in body.items() if key not in ("label", "lines")}
        request.update(Item.tokens(credentials))
        try:
            bundle = await self.backend.create_bundle(request)
        except Refused as refusal:
            self.outcomes[order] = Outcome.invalid(order, where, refusal.message)
            return
        self.bundles[order] = (bundle["id"], where)
        files = bundle["files"]
        for offset, entry in enumerate(bundle.get("entries") or [], start=len(files) + 1):
            label = f"{where}: {entry.get('name')}"
            if entry.get("status") == "present":
                self.progress.note(f"{label}: already in place ({entry.get('path') or entry.get('folder')})")
            else:  # no link, or a different file of that name: the set is not complete
                key = order * BUNDLE_STRIDE + offset
                self.outcomes[key] = Outcome.invalid(
                    key, label, entry.get("note") or str(entry.get("status"))
                )
        for offset, job in enumerate(files, start=1):
            item = _take_line(lines, job) or Item(
                order * BUNDLE_STRIDE + offset,
                f"{where}: {job.get('filename') or job.get('url')}",
                str(job.get("url")),
                str(job.get("type")),
                job.get("filename"),
            )
            self.items[item.order] = item
            self.owned.add(job["id"])
            self._update(item.order, job)

    async def _await_bundles(self, stop: asyncio.Event) -> None:
        """Every file is settled; a folder bundle is put in place after its last one, so wait
        for each bundle's own end and say where it is (or why it is not)."""
        for order, (bundle_id, where) in self.bundles.items():
            bundle: dict[str, Any] = {}
            for _ in range(int(BUNDLE_WAIT_SECONDS / self.backend.tick_seconds)):
                with contextlib.suppress(Refused, Gone):
                    bundle = await self.backend.bundle(bundle_id)
                if bundle.get("state") in BUNDLE_FINAL_STATES or stop.is_set():
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.backend.tick_seconds)
            self._bundle_outcome(order, where, bundle)

    def _bundle_outcome(self, order: int, where: str, bundle: dict[str, Any]) -> None:
        if bundle.get("state") == "completed":
            if bundle.get("destination"):
                self.progress.note(f"{where}: in place in {bundle['destination']}")
            return
        error = bundle.get("error") or {}
        if error or bundle.get("state") not in ("failed", "cancelled"):
            # the files' own lines do not say this: the folder itself did not land
            message = error.get("message") or f"The set did not finish (it is {bundle.get('state')})."
            self.outcomes[order] = Outcome.invalid(order, where, message)

    async def _resume_paused(self) -> None:
        """Resume the jobs found paused, until each is seen moving. Retried each look: after a
        restart the engine may not know the transfer yet, until the next poll adds it again."""
        for job_id in list(self.to_resume):
            try:
                job = await self.backend.job(job_id)
                if job["state"] == "paused":
                    job = await self.backend.act(job_id, "resume")
                    self.owned.add(job_id)
            except Refused as refusal:  # not possible yet; next look
                log.debug("resume of %s not possible yet: %s", job_id, refusal.message)
                continue
            if job["state"] not in ("paused", *WAITING_STATES):
                self.to_resume.discard(job_id)

    async def _refresh(self) -> None:
        for key in self._pending():
            try:
                job = await self.backend.job(self.latest[key]["id"])
            except Gone as gone:
                self._failures += 1
                if self._failures >= GIVE_UP_AFTER:
                    self._give_up(gone.message)
                return
            except Refused as refusal:  # e.g. the job vanished from the server's list
                self.outcomes[key] = Outcome.refused(self.items[key], refusal.message)
                continue
            self._failures = 0
            self._update(key, job)

    def _update(self, key: int, job: dict[str, Any]) -> None:
        self.latest[key] = job
        self.progress.show(key, job)
        if settled(job):
            self.outcomes[key] = Outcome.from_job(self.items[key], job)

    def _give_up(self, why: str) -> None:
        for key in self._pending():
            self.outcomes[key] = Outcome.refused(self.items[key], f"lost the server: {why}")

    async def _pause_unfinished(self) -> None:
        """Ctrl-C: pause what we started, so its bytes wait for a resume."""
        for key in self._pending():
            job = self.latest[key]
            with contextlib.suppress(Refused):
                job = await self.backend.job(job["id"])
            owned = job["id"] in self.owned
            note = None
            if self.backend.pauses_on_stop(owned):
                try:
                    job = await self.backend.act(job["id"], "pause")
                except Refused:  # not pausable now; stopping keeps the bytes anyway
                    note = self.backend.still_running_note(job["id"], owned)
            else:
                note = self.backend.still_running_note(job["id"], owned)
            outcome = Outcome.from_job(self.items[key], job, interrupted=True)
            outcome.error = note or outcome.error
            self.outcomes[key] = outcome


def _take_line(lines: list[Item], job: dict[str, Any]) -> Item | None:
    """The batch line a bundle's file came from (its place in the summary, its line number)."""
    for line in lines:
        if line.url == job.get("url"):
            lines.remove(line)
            return line
    return None


def stop_on_signals(progress: Progress) -> asyncio.Event:
    """Ctrl-C and SIGTERM set an event instead of raising, so shutdown is orderly."""
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
