"""The library beside the pipeline: the index kept current, scans in the background, CivitAI asked.

The service owns the index (`library.sqlite3` in the state folder) and nothing of the jobs. It
hears every job event (Announcer.listeners): a finished download is recorded with the SHA-256
it was verified against (or hashed after `success`), so its bytes are never read again. Scans
run in a thread of their own (scan.py), at start and when asked; their progress goes to every
client as `library` events. After a scan, files of unknown source are looked up at CivitAI by
hash (a hit writes the sidecars a download writes), and CivitAI models are checked for newer
versions (one models call per model, cached in the index), when `library_lookups` is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import messages, sidecars
from ..errors import OrchestratorError
from ..events import Hub
from ..jobs import Job, State
from ..manager import Manager
from ..net import session
from ..policy import Policy
from ..sources import civitai
from ..sources import http as source_http
from . import civitai_lookup, duplicates, find_links, listing, naming, remove
from . import sidecars as read_sidecars
from .civitai_lookup import Hit, LookupSettings, Update
from .index import LibraryIndex
from .known import KnownHashes
from .locate import Located, locate, read_preview
from .records import FileRecord, Source
from .scan import ScanHandle, ScanProgress, ScanResult, start_scan

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.5  # seconds between two scan_progress events
LISTED = 50  # names per kind of change a scan_done event carries
LOOKUP_SETTINGS = LookupSettings(timeout=(5.0, 30.0))
# a person waits for a workflow's table: a short wait, and a busy CivitAI means no link this time
TABLE_LOOKUP_SETTINGS = LookupSettings(
    pause=0.2,
    timeout=(5.0, 15.0),
    max_wait=10.0,
    max_rate_limited=2,
    max_server_errors=1,
    max_failed_batches=1,
)


class LibraryService:
    def __init__(self, manager: Manager, hub: Hub, index: LibraryIndex | None = None) -> None:
        self.manager = manager
        self.settings = manager.settings
        self.hub = hub
        self.index = index or LibraryIndex.in_state_dir(self.settings.state_dir)
        self.updates: dict[int, dict[str, Any]] = {}  # file id -> the newer version, as listed
        self.last_scan: dict[str, Any] | None = None
        self._scan: ScanHandle | None = None
        self._scan_task: asyncio.Task[None] | None = None
        self._lookup_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cancel = threading.Event()  # stops CivitAI look-ups at shutdown
        self._loop: asyncio.AbstractEventLoop | None = None
        self._progress_sent = 0.0
        self._records_lock = threading.Lock()
        self._cached: tuple[int, list[FileRecord]] | None = None
        self._quiet = False
        manager.ctx.announce.listeners.append(self._heard)
        self.known = KnownHashes(self.index, self.roots)
        manager.ctx.library = self

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self, scan: bool = True) -> None:
        self._loop = asyncio.get_running_loop()
        if scan:
            await self.scan(quiet=True)

    async def stop(self) -> None:
        self._cancel.set()
        self.manager.ctx.library = None  # the index closes: the pipeline downloads as before
        with contextlib.suppress(ValueError):
            self.manager.ctx.announce.listeners.remove(self._heard)
        if self._scan is not None:
            self._scan.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.index.close()

    # -- reading -----------------------------------------------------------------------------------

    def roots(self) -> list[tuple[str, Path]]:
        """(type, folder) of every folder that exists; the first type that lists a folder wins."""
        return [(kind, folder) for kind, folder in self.manager.ctx.roots.typed_folders() if folder.is_dir()]

    def summary(self) -> dict[str, Any]:
        """What `hello` and `GET /api/models` say of the library as a whole."""
        scanning = self._scan_task is not None and not self._scan_task.done()
        scan = (
            (self._scan.progress if self._scan is not None else ScanProgress("listing")) if scanning else None
        )
        records = self._records()
        copies: dict[str, int] = {}
        for record in records:
            if record.sha256:
                copies[record.sha256] = copies.get(record.sha256, 0) + 1
        return {
            "files": len(records),
            "duplicates": sum(1 for count in copies.values() if count > 1),  # sets of the same bytes
            "updates": len({update["model_id"] for update in self.updates.values()}),
            "scan": _progress(scan) if scan else None,
            "last_scan": self.last_scan,
            "lookups": self.settings.library_lookups,
        }

    async def models(self) -> dict[str, Any]:
        """`GET /api/models`: the listing by type, and the summary."""
        found = await asyncio.to_thread(self._listing)
        return {"models": found, "library": self.summary()}

    def _listing(self) -> dict[str, list[dict[str, Any]]]:
        return listing.listing(
            self.manager.ctx.roots,
            self.manager.types(),
            self._records(),
            self.updates,
            self.settings.models_dir,
        )

    def _records(self) -> list[FileRecord]:
        """Every present file of the index, read again only after a write (GET /api/models is
        asked often, the index changes seldom)."""
        with self._records_lock:
            generation = self.index.generation
            if self._cached is None or self._cached[0] != generation:
                self._cached = (generation, self.index.all_files())
            return self._cached[1]

    def locate(self, path: str) -> Located:
        return locate(path, self.roots(), self.settings.models_dir)

    async def preview(self, path: str) -> tuple[str, bytes]:
        found = self.locate(path)
        return await asyncio.to_thread(read_preview, found)

    # -- scans -------------------------------------------------------------------------------------

    async def scan(self, quiet: bool = False) -> dict[str, Any]:
        """Start a scan in the background; `scan_running` if one runs. A `quiet` scan (the one at
        start) says nothing unless it has files to hash or finds a change."""
        if self._scan_task is not None and not self._scan_task.done():
            raise OrchestratorError(
                "scan_running", "A library scan is already running; wait for it to finish.", 409
            )
        self._quiet = quiet
        self._scan = None
        self._scan_task = self._spawn(self._run_scan())
        return {"status": "scan_started"}

    def _say(self, message: dict[str, Any]) -> None:
        """A scan event, from the event loop; a quiet scan's first words begin with scan_started."""
        if self._quiet:
            self._quiet = False
            self.hub.publish(messages.library_event("scan_started"))
        self.hub.publish(message)

    async def _run_scan(self) -> None:
        if not self._quiet:
            self.hub.publish(messages.library_event("scan_started"))
        handle = start_scan(
            self.index,
            self.roots(),
            is_sidecar=sidecars.is_sidecar,
            downloads_active=self._downloads_active,
            on_progress=self._on_progress,
        )
        self._scan = handle
        try:
            result = await asyncio.to_thread(handle.wait)
        except OrchestratorError as error:
            self._say(messages.library_event("scan_failed", **error.as_dict()))
            return
        except Exception:
            log.exception("the library scan failed")
            self._say(messages.library_event("scan_failed", code="internal", message="The scan failed."))
            return
        if result is None:
            return
        self.last_scan = _result(result)
        news = result.added or result.changed or result.moved or result.removed or result.hashed_files
        if news or not self._quiet:
            self._say(messages.library_event("scan_done", **self.last_scan, library=self.summary()))
        # apart from the scan, so a scan is done when its files are; one round of look-ups at a
        # time (what a second scan finds waits for the next round)
        asking = self._lookup_task is not None and not self._lookup_task.done()
        if self.settings.library_lookups and not (result.cancelled or self._cancel.is_set() or asking):
            self._lookup_task = self._spawn(self._ask_civitai())

    def _downloads_active(self) -> bool:
        """Called from the scan's thread: a snapshot of the job list is enough to pace by."""
        try:
            return any(job.state == State.DOWNLOADING for job in list(self.manager.jobs.values()))
        except RuntimeError:  # the list changed while it was read: assume downloads run
            return True

    def _on_progress(self, progress: ScanProgress) -> None:
        """From the scan's thread: hashing progress, at most one event every PROGRESS_EVERY seconds
        (listing and the end are told by scan_started and scan_done)."""
        loop = self._loop
        if loop is None or progress.phase != "hashing" or not progress.files_total:
            return
        now = time.monotonic()
        if progress.files_done and now - self._progress_sent < PROGRESS_EVERY:
            return
        self._progress_sent = now
        event = messages.library_event("scan_progress", **_progress(progress))
        loop.call_soon_threadsafe(self._say, event)

    # -- CivitAI -----------------------------------------------------------------------------------

    async def _ask_civitai(self) -> None:
        try:
            hits = await asyncio.to_thread(self._identify)
            if hits:
                self.hub.publish(messages.library_event("changed", files=await self._entries(hits)))
            await self.check_updates()
        except Exception:  # a look-up is a nicety; the library stands without it
            log.exception("CivitAI look-ups failed")

    def _session_policy(self) -> Policy:
        settings = self.settings
        egress = self.manager.ctx.egress
        guarded = settings.blocks_private_targets
        proxy = egress.proxy_url("library") if guarded and egress else None
        return Policy(guarded, settings.private_allow, proxy=proxy)

    def _identify(self) -> list[int]:
        """Blocking: look up the hashes of files nobody said the source of; ids of files described."""
        pending = set(self.index.pending_lookups())
        unknown = {r.sha256 for r in self.index.all_files() if r.sha256 in pending and not r.source.known}
        if not unknown:
            return []
        policy = self._session_policy()
        with session(policy) as guarded:
            report = civitai_lookup.identify(
                self.index,
                guarded,
                civitai.base_url(),
                source_http.token_from(None, "CIVITAI_TOKEN"),
                hashes=sorted(h for h in unknown if h),
                settings=LOOKUP_SETTINGS,
                cancel=self._cancel,
            )
        if report.stopped is not None:
            log.info("CivitAI look-ups stopped early: %s", report.stopped.code)
        described: list[int] = []
        for hit in report.hits:
            described.extend(self._describe_hit(hit, policy))
        return described

    def sha256_of(self, path: Path) -> str:
        """Blocking: the SHA-256 of a file in place, read only when the index does not know it."""
        return self.known(path)

    def civitai_links(self, hashes: list[str]) -> dict[str, str]:
        """Blocking: download links of files known only by their SHA-256, where CivitAI knows them
        (never asked when look-ups are off: the hashes would leave the machine)."""
        if not self.settings.library_lookups or not hashes:
            return {}
        try:
            with session(self._session_policy()) as guarded:
                return find_links.civitai_links(
                    self.index,
                    guarded,
                    civitai.base_url(),
                    source_http.token_from(None, "CIVITAI_TOKEN"),
                    hashes,
                    settings=TABLE_LOOKUP_SETTINGS,
                    cancel=self._cancel,
                )
        except Exception:  # a look-up is a nicety: the workflow's table stands without it
            log.exception("CivitAI by-hash look-up for a workflow failed")
            return {}

    def _describe_hit(self, hit: Hit, policy: Policy) -> list[int]:
        """The sidecars a download writes, beside each file of these bytes that has none."""
        files = [record for record in hit.files if not record.sidecars.files]
        if not files or not self.settings.sidecars:
            return [record.id for record in hit.files]
        said = civitai.describe_found(hit.record, hit.sha256, policy)
        for record in files:
            try:
                sidecars.write_description(
                    record.path,
                    record.root,
                    said.kind,
                    said.record,
                    file_id=said.file_id,
                    sha256=hit.sha256,
                    preview=said.preview,
                )
                self._reread_sidecars(record)
            except (OSError, OrchestratorError) as exc:
                log.warning("no sidecars beside %s: %s", record.display_path, type(exc).__name__)
        return [record.id for record in hit.files]

    def _reread_sidecars(self, record: FileRecord) -> None:
        """What was just written beside a file, into the index (no rescan needed to show it)."""
        folder = os.fsencode(record.path.parent)
        name = os.fsencode(record.path.name)
        names = naming.sidecar_names(name, [os.fsencode(n) for n in os.listdir(folder)])
        info = read_sidecars.read(folder, name, names)
        self.index.set_sidecars(record.id, info, read_sidecars.signature(folder, name, names))

    async def check_updates(self) -> None:
        """Newer versions of the CivitAI models in the library (cached per model in the index)."""
        if not self.settings.library_lookups:
            return
        updates = await asyncio.to_thread(self._check_updates)
        changed = updates != self.updates
        self.updates = updates
        if changed:
            self.hub.publish(messages.library_event("updates", updates=list(updates.values())))

    def _check_updates(self) -> dict[int, dict[str, Any]]:
        with session(self._session_policy()) as guarded:
            report = civitai_lookup.check_updates(
                self.index,
                guarded,
                civitai.base_url(),
                source_http.token_from(None, "CIVITAI_TOKEN"),
                settings=LOOKUP_SETTINGS,
                cancel=self._cancel,
            )
        return {record.id: _update(update) for update in report.updates for record in update.files}

    # -- downloads ---------------------------------------------------------------------------------

    def _heard(self, job: Job, status: str) -> None:
        """Every job event (maybe from a worker thread): a finished file with its SHA-256 is recorded."""
        if (
            status not in ("success", "hashed", "moved")
            or not job.sha256
            or not job.path
            or self._loop is None
        ):
            return
        self._loop.call_soon_threadsafe(self._record_soon, job)

    def _record_soon(self, job: Job) -> None:
        self._spawn(self._record(job))

    async def _record(self, job: Job) -> None:
        try:
            record = await asyncio.to_thread(self._record_job, job)
        except OrchestratorError as error:
            log.info("job %s: not in the library: %s", job.id, error.code)
            return
        if record is not None:
            self.hub.publish(messages.library_event("changed", files=await self._entries([record.id])))

    def _record_job(self, job: Job) -> FileRecord | None:
        """Blocking: the job's file into the index, with the hash it was verified against."""
        path = Path(job.path or "")
        full = path if path.is_absolute() else self.settings.models_dir / path
        root = remove.root_of(Path(os.path.abspath(full)), self.roots())
        if root is None or not job.sha256:
            return None  # a bundle's folder still in staging: its `moved` events come when it is in place
        kind = next(kind for kind, folder in self.roots() if Path(os.path.abspath(folder)) == root)
        said = job.metadata.get("civitai") if job.source == civitai.NAME else None
        # one transaction: a reader never sees the file without what its sidecars say
        with self.index.batch():
            record = self.index.record_download(
                root,
                kind,
                full,
                job.sha256,
                job_source(job),
                civitai_record=said if isinstance(said, dict) else None,
            )
            with contextlib.suppress(OSError):  # the sidecars the download wrote, so its card shows them
                self._reread_sidecars(record)
        return self.index.get(record.id)

    async def _entries(self, file_ids: list[int]) -> list[dict[str, Any]]:
        """Files as `GET /api/models` lists them, for `changed` events."""
        wanted = set(file_ids)

        def build() -> list[dict[str, Any]]:
            found = self._listing()
            return [entry for entries in found.values() for entry in entries if entry.get("id") in wanted]

        return await asyncio.to_thread(build)

    def holding(self, sha256: str) -> str | None:
        """Blocking: where the library has a file with these bytes, unchanged since it was hashed."""
        existing = duplicates.find_existing(self.index, sha256)
        return listing.shown_path(existing.path, self.settings.models_dir) if existing else None

    def link_existing(self, sha256: str, target: Path) -> str | None:
        """Blocking, for the pipeline: a hard link at `target` to a file of these bytes the library
        has (unchanged since it was hashed); where it was found, or None (then it downloads)."""
        existing = duplicates.find_existing(self.index, sha256)
        if existing is None:
            return None
        result = duplicates.link_copy(existing.path, target)
        if not result.linked:
            log.info("not linked from the library: %s", result.code)
            return None
        return listing.shown_path(existing.path, self.settings.models_dir)

    # -- deleting and updating ---------------------------------------------------------------------

    async def delete(self, path: str) -> dict[str, Any]:
        found = self.locate(path)
        removal = await asyncio.to_thread(
            remove.remove_model,
            self.index,
            self.roots(),
            found.given,
            base=found.base,
            is_sidecar=sidecars.is_sidecar,
        )
        shown = listing.shown_path(removal.model, self.settings.models_dir)
        result = {
            "path": shown,
            "sidecars": [listing.shown_path(p, self.settings.models_dir) for p in removal.sidecars],
            "freed_bytes": removal.freed_bytes,
        }
        self.hub.publish(messages.library_event("removed", **result))
        return result

    async def download_update(self, path: str, exposed: bool, civitai_token: str | None = None) -> Job:
        """The newer CivitAI version of a file, downloaded beside it as a normal job (with the
        asker's CivitAI key when one is given: early access and login-only models need it)."""
        found = self.locate(path)
        record = self.index.get_by_path(found.root, found.rel)
        if record is None:
            raise OrchestratorError("not_found", f"The library has no file {path[:120]!r}; scan first.", 404)
        update = self.updates.get(record.id)
        if update is None:
            raise OrchestratorError(
                "no_update", f"No newer CivitAI version is known for {path[:120]!r}.", 404
            )
        subfolder = found.rel.parent.as_posix()
        body = {
            "url": civitai.download_link(update["latest_version_id"]),
            "type": record.model_type,
            "subfolder": "" if subfolder == "." else subfolder,
        }
        if civitai_token:
            body["civitai_token"] = civitai_token
        job, _ = await self.manager.submit(body, exposed=exposed)
        return job

    # -- helpers -----------------------------------------------------------------------------------

    def _spawn(self, work: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def job_source(job: Job) -> Source:
    """Where a finished job's bytes came from, as the library records it."""
    metadata = job.metadata
    if job.source == civitai.NAME:
        model_id, version_id = metadata.get("model_id"), metadata.get("version_id")
        if isinstance(model_id, int) and isinstance(version_id, int):
            return Source.civitai(model_id, version_id)
    if job.source == "huggingface" and isinstance(metadata.get("repo"), str):
        commit = metadata.get("commit")
        return Source.huggingface(metadata["repo"], commit if isinstance(commit, str) else None, url=job.url)
    return Source.link(job.url)


def _progress(progress: ScanProgress) -> dict[str, Any]:
    return asdict(progress)


def _result(result: ScanResult) -> dict[str, Any]:
    """A scan's outcome for people: counts, and the first names of each kind of change."""
    return {
        "files": result.files,
        "unchanged": result.unchanged,
        "added": result.added[:LISTED],
        "changed": result.changed[:LISTED],
        "moved": [list(pair) for pair in result.moved[:LISTED]],
        "removed": result.removed[:LISTED],
        "unstable": result.unstable[:LISTED],
        "problems": result.problems[:LISTED],
        "counts": {
            "added": len(result.added),
            "changed": len(result.changed),
            "moved": len(result.moved),
            "removed": len(result.removed),
            "problems": len(result.problems),
        },
        "hashed_files": result.hashed_files,
        "hashed_bytes": result.hashed_bytes,
        "cancelled": result.cancelled,
    }


def _update(update: Update) -> dict[str, Any]:
    return {
        "model_id": update.model_id,
        "model_name": update.model_name,
        "installed_version_id": update.installed_version_id,
        "installed_version_name": update.installed_version_name,
        "latest_version_id": update.latest_version_id,
        "latest_version_name": update.latest_version_name,
        "latest_published_at": update.latest_published_at,
        "latest_availability": update.latest_availability,
    }
