"""Bundles beside the pipeline: made from a plan, followed through their jobs' events, acted on as
a whole, a folder put in place once all its files are verified.

The service owns the bundle records (model.py, in SQLite) and nothing else: each file is a
normal job of the manager, asked for with a `Placement` that names the bundle. It hears every
job event (Announcer.listeners), and sends a bundle event at most about once a poll interval
per bundle, at once when the bundle's state changes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from .. import files, messages
from ..errors import OrchestratorError
from ..events import Hub
from ..jobs import Job, Placement, State, new_job_id
from ..library.known import NoLibrary
from ..manager import Manager
from ..pipeline.context import Library
from ..pipeline.registry import MAX_ACTIVE_JOBS
from ..policy import Policy
from ..sidecars import sidecar_paths
from ..sources import Credentials, civitai
from ..sources.civitai import VersionFiles
from . import install, plans
from .model import Bundle, BundleStore
from .summary import summarize
from .workflow import MAX_WORKFLOW_BYTES

log = logging.getLogger(__name__)

ACTIONS = ("pause", "resume", "cancel", "retry")
_URGENT = frozenset({"started", "success", "error", "cancelled", "paused", "hashed"})


class BundleService:
    def __init__(self, manager: Manager, store: BundleStore, hub: Hub) -> None:
        self.manager = manager
        self.store = store
        self.hub = hub
        self._no_library = NoLibrary()  # before the library starts, after it stops
        self.bundles: dict[str, Bundle] = {bundle.id: bundle for bundle in store.load_all()}
        self._dirty: set[str] = set(self.bundles)
        self._shown: dict[str, str] = {}  # the state each bundle's last event said
        self._installing: dict[str, asyncio.Task[None]] = {}
        # bundles being cancelled: their state is told once every file is gone, not before
        self._cancelling: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        manager.ctx.announce.listeners.append(self._heard)

    def _library(self) -> Library:
        """What is known of the files in place: the library's index while it runs."""
        return self.manager.ctx.library or self._no_library

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        for bundle in self.bundles.values():
            self._shown[bundle.id] = self._summary(bundle)["state"]
        self._task = asyncio.create_task(self._follow())
        self._wake.set()  # a folder whose files finished before a restart is put in place now

    async def stop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._installing.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- reading -----------------------------------------------------------------------------------

    def get(self, bundle_id: object) -> Bundle:
        bundle = self.bundles.get(bundle_id) if isinstance(bundle_id, str) else None
        if bundle is None:
            raise OrchestratorError("not_found", "No such bundle.", 404)
        return bundle

    def snapshot(self) -> list[dict[str, Any]]:
        return [self._summary(bundle) for bundle in self.bundles.values()]

    def detail(self, bundle_id: object) -> dict[str, Any]:
        """The bundle with its files' jobs in full."""
        bundle = self.get(bundle_id)
        jobs = self.manager.jobs
        return {**self._summary(bundle), "files": [jobs[j].public() for j in bundle.jobs if j in jobs]}

    def _summary(self, bundle: Bundle) -> dict[str, Any]:
        return summarize(bundle, self.manager.jobs)

    # -- making one --------------------------------------------------------------------------------

    async def create(self, body: Any, exposed: bool = False) -> Bundle:
        """A bundle from a request: `kind` is list, workflow, hf_folder or civitai."""
        if not isinstance(body, dict):
            raise OrchestratorError("invalid_message", "A bundle needs an object with its kind.")
        plan = await self._plan(body, exposed)
        return await self._start(plan, exposed)

    async def read_workflow(self, data: bytes, filename: str | None) -> dict[str, Any]:
        """The models a workflow names and which are in place (nothing is downloaded)."""
        roots = self.manager.ctx.roots
        return await asyncio.to_thread(plans.workflow_table, data, filename, roots, self._library())

    async def civitai_files(self, url: str, credentials: Credentials, exposed: bool) -> VersionFiles:
        """The files of the CivitAI version a link names, for a person to pick from."""
        key = f"files{new_job_id()}"
        try:
            policy = self._policy(exposed, key)
            return await asyncio.to_thread(civitai.version_files, url, credentials, policy)
        finally:
            if self.manager.ctx.egress:
                self.manager.ctx.egress.forget(key)

    async def _plan(self, body: dict[str, Any], exposed: bool) -> plans.Plan:
        settings = self.manager.settings
        kind = body.get("kind")
        if kind == "list":
            return plans.list_plan(body, settings.layout)
        if kind == "workflow":
            data, filename = workflow_bytes(body)
            return await asyncio.to_thread(
                plans.workflow_plan,
                data,
                filename,
                body,
                self.manager.ctx.roots,
                self._library(),
                settings.layout,
            )
        key = f"plan{new_job_id()}"
        try:
            policy = self._policy(exposed, key)
            if kind == "hf_folder":
                roots, models = self.manager.ctx.roots, settings.models_dir
                return await asyncio.to_thread(
                    plans.hf_folder_plan,
                    body,
                    roots,
                    models,
                    policy,
                    self._library().sha256_of,
                    settings.layout,
                )
            if kind == "civitai":
                return await asyncio.to_thread(plans.civitai_plan, body, policy, settings.layout)
        finally:
            if self.manager.ctx.egress:
                self.manager.ctx.egress.forget(key)
        raise OrchestratorError(
            "unknown_bundle",
            f"Unknown bundle kind {str(kind)[:40]!r}; known: list, workflow, hf_folder, civitai.",
        )

    def _policy(self, exposed: bool, key: str) -> Policy:
        """The app's own requests for a plan (the Hub's tree, CivitAI's API), guarded as a download
        from the same request would be."""
        settings = self.manager.settings
        guarded = settings.guards(exposed)
        egress = self.manager.ctx.egress
        proxy = egress.proxy_url(key) if guarded and egress else None
        return Policy(guarded, settings.private_allow, proxy=proxy)

    async def _start(self, plan: plans.Plan, exposed: bool) -> Bundle:
        waiting = sum(1 for job in self.manager.jobs.values() if job.active)
        if waiting + len(plan.requests) > MAX_ACTIVE_JOBS:
            raise OrchestratorError(
                "too_many_jobs",
                f"{waiting} downloads are waiting and this bundle has {len(plan.requests)}; "
                f"at most {MAX_ACTIVE_JOBS} may wait at once. Let some finish first.",
                429,
            )
        bundle = Bundle(new_job_id(), plan.kind, plan.name, entries=plan.entries, source=plan.source)
        root = ""
        if plan.destination is not None:
            bundle.destination = self._shown_path(plan.destination)
            staging = (
                files.bundle_staging(self.manager.settings.models_dir, bundle.id) / plan.destination.name
            )
            root = staging.relative_to(self.manager.settings.models_dir).as_posix()
            bundle.installed = not plan.requests  # every file was there already
        self.bundles[bundle.id] = bundle
        self.store.save(bundle)  # first, so a crash half-way still knows which jobs are whose
        try:
            for request in plan.requests:
                job, _ = await self.manager.submit(
                    request, exposed=exposed, placement=Placement(bundle.id, root)
                )
                if job.id not in bundle.jobs:
                    bundle.jobs.append(job.id)
        except OrchestratorError:
            await self._undo(bundle)
            raise
        self.store.save(bundle)
        self._publish(bundle, "created")
        return bundle

    async def _undo(self, bundle: Bundle) -> None:
        """A bundle that could not be made whole leaves nothing: its jobs cancelled, its record gone."""
        for job_id in bundle.jobs:
            with contextlib.suppress(OrchestratorError):
                await self.manager.cancel(job_id)
        self._remove_staging(bundle)
        self.bundles.pop(bundle.id, None)
        self.store.delete(bundle.id)

    # -- acting on the whole -----------------------------------------------------------------------

    async def act(self, bundle_id: object, action: str) -> Bundle:
        bundle = self.get(bundle_id)
        if action not in ACTIONS:
            raise OrchestratorError("not_found", f"Unknown action {action[:20]!r}.", 404)
        if action not in self._summary(bundle)["actions"]:
            state = self._summary(bundle)["state"]
            raise OrchestratorError("invalid_state", f"A {state} bundle cannot be {_PAST[action]}.", 409)
        if action == "cancel":
            await self._cancel(bundle)
        elif action == "retry":
            await self._retry(bundle)
        else:
            for job in self._jobs(bundle):
                if job.allows(action):
                    with contextlib.suppress(OrchestratorError):  # it moved on meanwhile
                        await getattr(self.manager, action)(job.id)
        self._mark(bundle.id, urgent=True)
        return bundle

    async def _cancel(self, bundle: Bundle) -> None:
        """Every file of it stops, and none stays in a model folder: partial data is removed, and the
        files it already installed are taken back (never one that was there before)."""
        bundle.cancelled = True
        self.store.save(bundle)
        self._cancelling.add(bundle.id)
        try:
            for job in self._jobs(bundle):
                if job.allows("cancel"):
                    with contextlib.suppress(OrchestratorError):
                        await self.manager.cancel(job.id)
                elif job.state == State.COMPLETED and job.bundle == bundle.id and not job.already_present:
                    await self._take_back(bundle, job)
            await asyncio.to_thread(self._remove_staging, bundle)
        finally:
            self._cancelling.discard(bundle.id)

    async def _take_back(self, bundle: Bundle, job: Job) -> None:
        path = self._absolute(job.path) if job.path else None
        if path is not None and not bundle.is_folder:
            await asyncio.to_thread(_delete_installed, path)
        live = self.manager.registry.get(job.id)
        job.path = None
        self.manager.ctx.move(live, State.CANCELLED)
        self.manager.ctx.announce.event(live, "cancelled", message="Removed: its bundle was cancelled.")

    async def _retry(self, bundle: Bundle) -> None:
        bundle.cancelled = False
        bundle.error_code = bundle.error_message = None
        self.store.save(bundle)
        for job in self._jobs(bundle):
            if job.allows("retry"):
                await self.manager.retry(job.id)

    async def delete(self, bundle_id: object) -> dict[str, Any]:
        """Cancel it if it is not finished, then forget it (its jobs stay in the job list)."""
        bundle = self.get(bundle_id)
        if self._summary(bundle)["state"] not in ("completed", "cancelled", "failed"):
            await self._cancel(bundle)
        summary = self._summary(bundle)
        self.bundles.pop(bundle.id, None)
        self.store.delete(bundle.id)
        self.hub.publish(messages.bundle_event(summary, "removed"))
        return summary

    # -- following the jobs ------------------------------------------------------------------------

    def _heard(self, job: Job, status: str) -> None:
        """Every job event (maybe from a worker thread): note the bundle it concerns."""
        if job.bundle and job.bundle in self.bundles and self._loop is not None:
            self._loop.call_soon_threadsafe(self._mark, job.bundle, status in _URGENT)

    def _mark(self, bundle_id: str, urgent: bool) -> None:
        self._dirty.add(bundle_id)
        if urgent and self._wake is not None:
            self._wake.set()

    async def _follow(self) -> None:
        assert self._wake is not None
        interval = self.manager.settings.poll_interval
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for bundle_id in dirty:
                bundle = self.bundles.get(bundle_id)
                if bundle is not None and bundle_id not in self._cancelling:
                    self._update(bundle)
                elif bundle is not None:
                    self._dirty.add(bundle_id)  # told when the cancel is done

    def _update(self, bundle: Bundle) -> None:
        summary = self._summary(bundle)
        state = summary["state"]
        changed = self._shown.get(bundle.id) != state
        self._shown[bundle.id] = state
        self.hub.publish(messages.bundle_event(summary, state if changed else "progress"))
        if state == "installing" and bundle.id not in self._installing:
            self._installing[bundle.id] = asyncio.create_task(self._install(bundle))

    async def _install(self, bundle: Bundle) -> None:
        """Every file of a folder is verified: the folder goes into place whole."""
        try:
            built = files.bundle_staging(self.manager.settings.models_dir, bundle.id)
            destination = self._absolute(bundle.destination)
            await asyncio.to_thread(install.place_folder, built / destination.name, destination)
            for job in self._jobs(bundle):
                if job.bundle == bundle.id and job.state == State.COMPLETED and job.filename:
                    job.path = self._shown_path(destination / job.subfolder / job.filename)
                    job.folder = self._shown_path(destination / job.subfolder)
                    self.manager.ctx.save(job)
                    # clients see where it went; the library records it with its verified hash
                    live = self.manager.registry.get(job.id)
                    self.manager.ctx.announce.event(live, "moved", path=job.path, folder=job.folder)
            bundle.installed = True
            await asyncio.to_thread(self._remove_staging, bundle)
        except OrchestratorError as error:
            bundle.error_code, bundle.error_message = error.code, error.message
        except Exception:
            log.exception("bundle %s: the folder could not be put in place", bundle.id)
            bundle.error_code, bundle.error_message = "internal", "The folder could not be put in place."
        finally:
            self._installing.pop(bundle.id, None)
        self.store.save(bundle)
        self._mark(bundle.id, urgent=True)

    # -- helpers -----------------------------------------------------------------------------------

    def _jobs(self, bundle: Bundle) -> list[Job]:
        jobs = self.manager.jobs
        return [jobs[job_id] for job_id in bundle.jobs if job_id in jobs]

    def _publish(self, bundle: Bundle, status: str) -> None:
        summary = self._summary(bundle)
        self._shown[bundle.id] = summary["state"]
        self.hub.publish(messages.bundle_event(summary, status))

    def _remove_staging(self, bundle: Bundle) -> None:
        shutil.rmtree(files.bundle_staging(self.manager.settings.models_dir, bundle.id), ignore_errors=True)

    def _shown_path(self, path: Path) -> str:
        models = self.manager.settings.models_dir.resolve()
        resolved = path.resolve()
        return resolved.relative_to(models).as_posix() if resolved.is_relative_to(models) else str(resolved)

    def _absolute(self, shown: str) -> Path:
        path = Path(shown)
        return path if path.is_absolute() else self.manager.settings.models_dir / path


_PAST = {"pause": "paused", "resume": "resumed", "cancel": "cancelled", "retry": "retried"}


def _delete_installed(path: Path) -> None:
    """A file this bundle installed, and the sidecars written beside it."""
    if not path.is_file() or path.is_symlink():
        return
    for sidecar in sidecar_paths(path):
        sidecar.unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def workflow_bytes(body: dict[str, Any]) -> tuple[bytes, str | None]:
    """The workflow a request carries: its JSON (text or object) or an image as base64."""
    filename = body.get("filename") if isinstance(body.get("filename"), str) else None
    raw = body.get("workflow")
    if isinstance(raw, dict | list):
        return json.dumps(raw).encode(), filename
    if isinstance(raw, str):
        return raw.encode(), filename
    encoded = body.get("workflow_base64")
    if isinstance(encoded, str):
        if len(encoded) > MAX_WORKFLOW_BYTES * 4 // 3 + 4:
            raise OrchestratorError("workflow_too_large", "That workflow file is larger than 50 MB.", 413)
        try:
            return base64.b64decode(encoded, validate=True), filename
        except (binascii.Error, ValueError):
            raise OrchestratorError("invalid_message", "`workflow_base64` is not base64.") from None
    raise OrchestratorError(
        "invalid_message", "A workflow bundle needs `workflow` (its JSON) or `workflow_base64`."
    )
