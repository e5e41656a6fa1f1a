"""What every step of the pipeline shares, and the one way a job changes state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import files
from ..config import Settings
from ..jobs import Job, State
from ..policy import Policy
from ..sources import Credentials, Resolved
from .announce import Announcer
from .engine import EngineCalls
from .registry import LiveJob, Registry

Resolver = Callable[[str, Credentials, Policy], Resolved]


@dataclass
class Context:
    settings: Settings
    registry: Registry
    engine: EngineCalls
    announce: Announcer
    resolve: Resolver

    def move(self, live: LiveJob, state: State) -> None:
        """Every state change: checked against the transition table, then saved before any event."""
        if live.job.state != state:
            live.job.move_to(state)
            self.save(live.job)

    def save(self, job: Job) -> None:
        if job.id in self.registry:  # a job dropped from the list meanwhile is not written back
            self.registry.store.save(job)

    def policy_for(self, job: Job) -> Policy:
        return Policy(block_private=self.settings.blocks_private_targets)

    def staging(self, job: Job) -> Path:
        return files.staging_dir(self.settings.models_dir, job.id)

    def staged(self, job: Job) -> Path:
        return self.staging(job) / (job.filename or "")

    def target(self, job: Job) -> Path:
        if not job.filename:
            raise ValueError(f"job {job.id} has no filename yet")
        return files.model_folder(self.settings.models_dir, job.folder) / job.filename

    def has_staged_bytes(self, job: Job) -> bool:
        staged = self.staged(job)
        return bool(job.filename) and staged.is_file() and staged.stat().st_size > 0

    def remove_staging(self, job: Job) -> None:
        files.remove_staging(self.settings.models_dir, job.id)
