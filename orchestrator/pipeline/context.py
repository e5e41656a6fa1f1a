"""What every step of the pipeline shares, and the one way a job changes state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .. import files
from ..config import Settings
from ..egress import EgressProxy
from ..errors import OrchestratorError
from ..jobs import Job, State
from ..policy import Policy
from ..roots import ModelRoots
from ..sources import Credentials, Resolved
from .announce import Announcer
from .engine import EngineCalls
from .registry import LiveJob, Registry
from .resolving import ResolvePool

Resolver = Callable[[str, Credentials, Policy], Resolved]
HashOf = Callable[[Path], str]  # the SHA-256 of a file in place


class Library(Protocol):
    """What the pipeline and the bundles ask of the model library (library/service.py) while one
    runs; without one they download and hash as if there were none. Every method blocks."""

    def link_existing(self, sha256: str, target: Path) -> str | None:
        """Hard-link bytes it already has to `target`: where they were found (as people see
        paths), or None when it has none or cannot link there."""

    def sha256_of(self, path: Path) -> str:
        """The SHA-256 of a file in place: the index's when it knows the file unchanged."""

    def civitai_links(self, hashes: list[str]) -> dict[str, str]:
        """Download links for files known only by their SHA-256, for those CivitAI knows."""

    def holding(self, sha256: str) -> str | None:
        """Where it has a file with these bytes, unchanged since hashed (as people see paths)."""


@dataclass
class Context:
    settings: Settings
    registry: Registry
    engine: EngineCalls
    announce: Announcer
    resolve: Resolver
    resolving: ResolvePool
    roots: ModelRoots
    egress: EgressProxy | None = None
    library: Library | None = None  # set by the library while it runs

    def move(self, live: LiveJob, state: State) -> None:
        """Every state change: checked against the transition table, then saved before any event."""
        if live.job.state != state:
            live.job.move_to(state)
            self.save(live.job)

    def save(self, job: Job) -> None:
        if job.id in self.registry:  # a job dropped from the list meanwhile is not written back
            self.registry.store.save(job)

    def guarded(self, job: Job) -> bool:
        return job.guarded if job.guarded is not None else self.settings.blocks_private_targets

    def policy_for(self, job: Job) -> Policy:
        return Policy(self.guarded(job), self.settings.private_allow, proxy=self.proxy_for(job))

    def proxy_for(self, job: Job) -> str | None:
        """The egress proxy a guarded job's connections go through (the engine's and the app's
        own), so the address each one really goes to is checked."""
        if self.egress is None or not self.guarded(job):
            return None
        return self.egress.proxy_url(job.id)

    def refusal_for(self, job: Job) -> OrchestratorError | None:
        """Why the egress proxy refused one of this job's connections, if it did."""
        refusals = self.egress.refusals(job.id) if self.egress else []
        return refusals[-1].error() if refusals else None

    def release(self, job: Job) -> None:
        """A job that ended needs no egress credentials any more."""
        if self.egress:
            self.egress.forget(job.id)

    def staging(self, job: Job) -> Path:
        return files.staging_dir(self.settings.models_dir, job.id)

    def staged(self, job: Job) -> Path:
        return self.staging(job) / (job.filename or "")

    def kind(self, job: Job) -> str:
        """The type a job is filed as: the one asked for, or the one its link said (auto)."""
        return job.kind or job.model_type

    def type_folder(self, job: Job) -> Path:
        """Where the job's type lives (the download folder of its roots), with its subfolder. A
        folder in the models folder is checked anew each time: a symlink planted since must not
        lead outside (files.model_folder)."""
        models = self.settings.models_dir
        if job.install_root:  # a bundle's folder, built in its staging folder
            return self._bundle_folder(job)
        base = self.roots.default(self.kind(job))
        if base == models or models in base.parents:
            base = files.model_folder(models, base.relative_to(models).as_posix())
        folder = (base / job.subfolder) if job.subfolder else base
        if job.subfolder and base.resolve() not in folder.resolve().parents:
            raise OrchestratorError("invalid_subfolder", f"{job.subfolder!r} leads outside its type folder.")
        return folder

    def _bundle_folder(self, job: Job) -> Path:
        staging = files.bundle_staging(self.settings.models_dir, job.bundle or "")
        folder = (self.settings.models_dir / job.install_root / job.subfolder).resolve()
        if staging.resolve() not in folder.parents:
            raise OrchestratorError("invalid_folder", f"{job.install_root!r} is not a bundle's folder.")
        return folder

    def shown_folder(self, job: Job) -> str:
        """The folder as people see it: relative to the models folder, or absolute on another disk."""
        folder = self.type_folder(job)
        models = self.settings.models_dir.resolve()
        return folder.relative_to(models).as_posix() if folder.is_relative_to(models) else str(folder)

    def target(self, job: Job) -> Path:
        if not job.filename:
            raise ValueError(f"job {job.id} has no filename yet")
        return self.type_folder(job) / job.filename

    def has_staged_bytes(self, job: Job) -> bool:
        staged = self.staged(job)
        return bool(job.filename) and staged.is_file() and staged.stat().st_size > 0

    def remove_staging(self, job: Job) -> None:
        files.remove_staging(self.settings.models_dir, job.id)
