"""The links an aria2 client adds that do better as orchestrator jobs (the gateway's intake).

A CivitAI, Hugging Face or Drive link needs resolving with the server's tokens; a plain
link whose `dir` names a type folder should be checked and installed like any download.
Both become jobs: shown in the page, verified, installed into their folder. The client
gets the GID aria2 was given for the job's transfer and follows it like any other.
Every other link goes to aria2 as it is (under the gateway's policy).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from .. import sources
from ..config import AUTO_TYPE, LAYOUTS
from ..errors import OrchestratorError
from ..jobs import State
from ..manager import Manager
from .intake import Options

HANDOVER_WAIT = 120.0  # seconds to wait for a job's transfer to exist (the link resolved)
SERVICES = ("civitai", "huggingface", "gdrive")


class OrchestratorIntake:
    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    async def add_uri(
        self, uris: list[str], options: Options, position: int | None, remote: bool
    ) -> str | None:
        url = uris[0] if uris else ""
        try:
            source = sources.identify(sources.validate_url(url))
        except OrchestratorError:
            return None  # not a link the orchestrator knows: aria2 says what it makes of it
        model_type = self.type_for(options.get("dir"))
        if source in SERVICES:
            model_type = model_type or (AUTO_TYPE if source == "civitai" else None)
            if model_type is None:
                raise OrchestratorError(
                    "dir_required",
                    "This link needs a model type: set the download's dir to a type folder, e.g. lora "
                    f"or {self.manager.settings.models_dir / 'lora'}.",
                )
        elif model_type is None:
            self._guard_passing_link(options, remote)
            return None
        body: dict[str, Any] = {"url": url, "type": model_type}
        if isinstance(options.get("out"), str) and options["out"]:
            body["name"] = options["out"]
        job, _ = await self.manager.submit(body, exposed=remote)
        self.manager.registry.get(job.id).keep_engine_result = True
        return await self._gid_of(job.id)

    def type_for(self, directory: object) -> str | None:
        """The model type whose folder `dir` names (its name, or its path in the models folder)."""
        if not isinstance(directory, str) or not directory:
            return None
        models = self.manager.settings.models_dir.absolute()
        path = Path(directory)
        relative = path.relative_to(models) if path.is_absolute() and path.is_relative_to(models) else path
        name = relative.as_posix().strip("/")
        for model_type, folder in LAYOUTS[self.manager.settings.layout].items():
            if name in (folder, model_type):
                return model_type
        return None

    def _guard_passing_link(self, options: Options, remote: bool) -> None:
        """A plain link going straight to aria2 for a remote caller, while private addresses are
        refused for such callers: it goes through the egress proxy like any guarded download."""
        egress = self.manager.ctx.egress
        if egress is not None and self.manager.settings.guards(remote):
            options.update(egress.aria2_options(f"rpc-{uuid.uuid4().hex[:12]}"))

    async def _gid_of(self, job_id: str) -> str:
        """The job's transfer, once the link is resolved and handed over; its failure otherwise."""
        deadline = time.monotonic() + HANDOVER_WAIT
        while time.monotonic() < deadline:
            job = self.manager.get(job_id)
            handle = job.handle or self.manager.registry.get(job_id).handed  # maybe done already
            if handle:
                return handle.split(".", 1)[0]  # the GID, without the daemon run it was made in
            if job.state == State.FAILED:
                raise OrchestratorError(
                    job.error_code or "download_failed", job.error_message or "It failed."
                )
            if job.state == State.COMPLETED:
                raise OrchestratorError(
                    "already_present", f"This file is already in place: {job.path}. Nothing to download.", 409
                )
            await asyncio.sleep(0.05)
        raise OrchestratorError(
            "resolve_timeout", "The link took too long to resolve; it stays queued in the orchestrator.", 504
        )
