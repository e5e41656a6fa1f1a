"""The facade of the pipeline: what the app and the CLI ask of it (submit, commands, the job list).

The work itself is done in orchestrator/pipeline/: the registry holds the jobs, the
worker runs their steps, the poller watches the engine. This class wires them
together and turns a command into calls on them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from . import intake, sources
from .config import Settings
from .egress import EgressProxy
from .engines.base import Engine
from .errors import OrchestratorError
from .events import Hub
from .jobs import Job, JobStore, Placement, State, new_job_id
from .pipeline.announce import Announcer
from .pipeline.context import Context, Resolver
from .pipeline.engine import EngineCalls
from .pipeline.health import EngineHealth
from .pipeline.poller import Poller
from .pipeline.registry import Registry
from .pipeline.resolving import ResolvePool
from .pipeline.work import Worker
from .policy import IPAddress, Policy
from .roots import ModelRoots, build_roots
from .vocabulary import vocabulary


class Manager:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        engine: Engine,
        hub: Hub,
        resolver: Resolver | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.hub = hub
        self.registry = Registry(store, settings.models_dir)
        self.engine = EngineCalls(engine)
        self.ctx = Context(
            settings=settings,
            registry=self.registry,
            engine=self.engine,
            announce=Announcer(hub, settings.poll_interval),
            resolve=resolver or sources.resolve,
            resolving=ResolvePool(deadline=settings.resolve_deadline),
            roots=model_roots(settings),
        )
        self.health = EngineHealth(hub, {"name": engine.name})
        self.worker = Worker(self.ctx)
        self.poller = Poller(self.ctx, self.worker, self.health)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.health.learn(await asyncio.to_thread(self.engine.engine.describe))
        if self.settings.block_private != "off":  # some requests may be guarded: their bytes go via it
            self.ctx.egress = EgressProxy(policy=self._address_refusal)
            await self.ctx.egress.start()
        for live in self.registry.load():
            self.worker.recover(live)
        self.poller.start()

    async def stop(self) -> None:
        tasks = [task for live in self.registry for task in live.tasks()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.poller.stop()
        await asyncio.to_thread(self.engine.engine.close)
        if self.ctx.egress:
            await self.ctx.egress.stop()
        self.ctx.resolving.close()
        for live in self.registry:
            self.store.save(live.job)

    def _address_refusal(self, host: str, address: IPAddress) -> str | None:
        """The egress proxy's rule: the policy of a guarded job, with the operator's allow-list."""
        return Policy(block_private=True, allowed=self.settings.private_allow).refusal(host, address)

    # -- what the app reads ----------------------------------------------------------------------

    @property
    def jobs(self) -> Mapping[str, Job]:
        return self.registry.jobs()

    @property
    def notices(self) -> list[str]:
        """What happened at start that a person should know (a damaged job list set aside)."""
        return list(self.store.notices)

    @property
    def engine_info(self) -> dict[str, Any]:
        return self.health.info

    @property
    def engine_up(self) -> bool:
        return self.health.up

    def work_health(self) -> dict[str, Any]:
        """How busy resolving links is, and whether it is stuck (slow servers hold its threads)."""
        return {"resolving": self.ctx.resolving.health()}

    def get(self, job_id: object) -> Job:
        return self.registry.get(job_id).job

    def busy(self, job_id: str) -> bool:
        """A step of this job is running (the poller leaves it alone meanwhile)."""
        return self.registry.get(job_id).busy

    def snapshot(self) -> list[dict[str, Any]]:
        return [live.job.public() for live in self.registry]

    def vocabulary(self) -> dict[str, Any]:
        return vocabulary(self.settings.layout)

    def types(self) -> list[dict[str, str]]:
        return list(self.vocabulary()["types"])

    async def poll_once(self) -> None:
        await self.poller.poll_once()

    # -- commands --------------------------------------------------------------------------------

    async def submit(
        self, body: Any, request_id: Any = None, exposed: bool = False, placement: Placement | None = None
    ) -> tuple[Job, bool]:
        """Create a job (or find the identical active one). Returns (job, created). `exposed`: the
        request came from beyond this machine (a tunnel, a proxy), so private targets are refused.
        `placement`: the job is a file of a bundle (orchestrator/bundles/)."""
        request = intake.parse_download(body, self.settings.layout, request_id)
        existing = self.registry.find_active(request.url, request.model_type)
        if existing and not (placement and placement.install_root):  # a folder's file is its own
            return existing.job, False
        self.registry.check_room()
        job = Job(
            id=new_job_id(),
            url=request.url,
            model_type=request.model_type,
            folder=request.folder,
            name=request.name,
            subfolder=request.subfolder,
            wanted_sha256=request.sha256,
            overwrite=request.overwrite,
            verify_existing=request.verify_existing,
            request_id=request.request_id,
            source=request.source,
            engine=self.engine.name,
            guarded=self.settings.guards(exposed),
            bundle=placement.bundle if placement else None,
            install_root=placement.install_root if placement else "",
        )
        live = self.registry.add(job, request.credentials)
        self.ctx.announce.started(live)
        self.worker.prepare(live)
        return job, True

    async def cancel(self, job_id: object) -> Job:
        """Stop a job and delete its partial data (also how a failed job is cleaned up)."""
        live = self.registry.get(job_id)
        job = live.job
        if job.state == State.CANCELLED:
            # removed in another aria2 client: its bytes were kept for a retry; now they go
            await asyncio.to_thread(self.ctx.remove_staging, job)
            return job
        if not job.allows("cancel"):
            raise job.refuse("cancel")
        await self.worker.stop(live)
        # let go of the handle first: a poll answered meanwhile would find the transfer gone,
        # take it for lost and add it again, a transfer nobody follows
        handle, job.handle = job.handle, None
        if handle:
            try:
                await self.engine.remove(handle)
            except OrchestratorError:
                job.handle = handle  # not cancelled: the job keeps following its transfer
                raise
        await asyncio.to_thread(self.ctx.remove_staging, job)
        job.downloaded, job.rate, job.eta = 0, 0.0, None
        self.ctx.move(live, State.CANCELLED)
        self.ctx.release(job)
        self.ctx.announce.event(live, "cancelled", message="Cancelled; partial data removed.")
        self.worker.sweep_later(live)
        return job

    async def pause(self, job_id: object) -> Job:
        live = self.registry.get(job_id)
        job = live.job
        if job.state == State.PAUSED:
            return job
        if not job.allows("pause") or not job.handle:
            raise job.refuse("pause")
        await self.worker.pause(live)
        return job

    async def resume(self, job_id: object) -> Job:
        live = self.registry.get(job_id)
        job = live.job
        if not job.allows("resume"):
            raise job.refuse("resume")
        if job.handle:
            await self.engine.resume(job.handle)
            self.ctx.move(live, State.DOWNLOADING)
            self.ctx.announce.progress(live, "progress")
        else:
            self.ctx.move(live, State.QUEUED)
            self.worker.prepare(live)
        return job

    async def retry(self, job_id: object) -> Job:
        live = self.registry.get(job_id)
        job = live.job
        if not job.allows("retry"):
            raise job.refuse("retry")
        if job.handle:
            await self.engine.forget(job.handle)
            job.handle = None
        job.error_code = job.error_message = None
        live.repairs = 0
        self.ctx.move(live, State.QUEUED)
        self.ctx.announce.started(live)
        self.worker.prepare(live)
        return job


def model_roots(settings: Settings) -> ModelRoots:
    """The folders each type lives in, from the layout and the UI installs the settings name."""
    return build_roots(
        settings.models_dir,
        settings.layout,
        comfyui=settings.comfyui,
        comfyui_extra_paths=settings.comfyui_extra_paths,
        a1111=settings.a1111,
    )
