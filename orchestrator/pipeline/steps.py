"""The steps of one job: prepare (resolve the link, hand the transfer over) and finish (verify, install).

Each step returns what came of it (`Outcome`) instead of raising: the worker that
ran it applies the outcome. Blocking work (the source's HTTP, hashing, moving
files) runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import stat
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec

from .. import bounds, files, headers, net, roots, sidecars, sources
from ..config import AUTO_TYPE, MODEL_TYPES, folder_for
from ..engines.base import Transfer
from ..errors import OrchestratorError
from ..headers import RemoteFinding
from ..jobs import Job, State
from ..sources import Resolved
from . import space
from .context import Context
from .early_hash import RunningHash
from .registry import LiveJob

log = logging.getLogger(__name__)
P = ParamSpec("P")


@dataclass(frozen=True)
class HandedOver:
    """The engine has the transfer (paused when the job was paused)."""

    paused: bool


@dataclass(frozen=True)
class Completed:
    """The verified file is in its folder."""

    size: int
    sha256: str | None  # None: no source published one, it is computed after `success`
    already_present: bool
    compared: str | None = None  # an already present file: "sha256", or only "name and size"
    path: str | None = None  # where it was found, when not at the job's own target
    found_at: str | None = None  # the library's file whose bytes the target now shares (a hard link)


@dataclass(frozen=True)
class Failed:
    error: OrchestratorError


@dataclass(frozen=True)
class EngineAway:
    """The engine did not answer at hand-over: the job waits for it, it does not fail."""

    error: OrchestratorError


Outcome = HandedOver | Completed | Failed | EngineAway


def step(body: Callable[P, Coroutine[Any, Any, Outcome]]) -> Callable[P, Coroutine[Any, Any, Outcome]]:
    """An OrchestratorError raised anywhere inside a step becomes its Failed outcome."""

    @functools.wraps(body)
    async def run(*args: P.args, **kwargs: P.kwargs) -> Outcome:
        try:
            return await body(*args, **kwargs)
        except OrchestratorError as error:
            return Failed(error)

    return run


# -- prepare ---------------------------------------------------------------------------------------


@step
async def prepare(ctx: Context, live: LiveJob, paused: bool = False) -> Outcome:
    """Resolve the link, check the target, hand the transfer to the engine."""
    job = live.job
    ctx.move(live, State.RESOLVING)
    # bytes on disk belong to the version first resolved, even if a branch moved since
    url = sources.pin(job.url, job.metadata) if ctx.has_staged_bytes(job) else job.url
    resolved = await ctx.resolving.run(ctx.resolve, url, live.credentials, ctx.policy_for(job))
    _describe(ctx, live, resolved)
    _apply_subfolder_template(ctx, job, resolved)
    if job.model_type != AUTO_TYPE:  # the folder is known: a file in place needs no header read
        job.folder = ctx.shown_folder(job)
        present = await _in_place(ctx, live)
        if present:
            return present
    found = await _read_header(ctx, job, resolved)
    _file_by_kind(ctx, live, resolved, found)
    present = await _in_place(ctx, live)
    if present:
        return present
    await _discard_unproven_bytes(ctx, job)
    have = ctx.staged(job).stat().st_size if ctx.staged(job).exists() else 0
    await asyncio.to_thread(space.make_room, ctx, (job.size or 0) - have)
    files.ensure_free_space(ctx.settings.models_dir, (job.size or 0) - have)
    transfer = Transfer(
        urls=resolved.urls,
        directory=ctx.staging(job),
        filename=job.filename or "",
        size=job.size,
        sha256=job.expected_sha256,
        headers=resolved.headers,
        proxy=ctx.proxy_for(job),
    )
    try:
        await _start_transfer(ctx, job, transfer)
    except OrchestratorError as error:
        if error.code != "engine_unavailable":
            raise
        return EngineAway(error)
    live.handed = job.handle
    job.engine = ctx.engine.name
    if paused and job.handle:
        await ctx.engine.pause(job.handle)
    return HandedOver(paused=paused)


async def _discard_unproven_bytes(ctx: Context, job: Job) -> None:
    """Never resume into a staged file whose bytes nobody can vouch for.

    The engine's control file says which bytes are real; without it (removed by another
    aria2 client, or lost) a preallocated file is full size and partly zeros, and an
    engine told to continue would call it complete. Such bytes are kept only when the
    published sha256 proves them whole; otherwise the download starts from zero.
    """
    staged = ctx.staged(job)
    if not staged.is_file() or ctx.engine.engine.trusts_staged_bytes(staged.parent, staged.name):
        return
    whole = bool(job.expected_sha256) and staged.stat().st_size == job.size
    if whole and await asyncio.to_thread(files.sha256_of, staged) == job.expected_sha256:
        return
    log.info("job %s: the staged bytes have no control file; starting from zero", job.id)
    await asyncio.to_thread(staged.unlink, missing_ok=True)
    job.downloaded = 0


def _describe(ctx: Context, live: LiveJob, resolved: Resolved) -> None:
    """What the source said about the file goes into the job; the first time, the clients hear it."""
    job = live.job
    first_time = job.filename is None
    job.filename = job.name or (
        files.sanitize_filename(resolved.filename)
        if resolved.filename
        else files.choose_filename(None, None, job.url)
    )
    job.source = resolved.source
    job.size = resolved.size or job.size
    job.expected_sha256 = _expected_sha256(job, resolved)
    # one job's metadata is stored and sent in every client's hello: kept small whatever was said
    job.metadata = bounds.bounded_metadata(resolved.metadata) or job.metadata
    if first_time:
        ctx.announce.started(live)
        if job.metadata:
            ctx.announce.event(live, "metadata", info=job.metadata)


def _apply_subfolder_template(ctx: Context, job: Job, resolved: Resolved) -> None:
    """`--subfolder-template` (e.g. `{base_model}`) for a download that names no subfolder."""
    template = ctx.settings.subfolder_template
    if not template or job.subfolder:
        return
    facts: dict[str, str | None] = {
        "base_model": job.metadata.get("base_model"),
        "model_name": job.metadata.get("model_name"),
        "model_type": job.metadata.get("model_type"),
        "source": resolved.source,
    }
    if isinstance(job.metadata.get("repo"), str):
        facts.update(roots.repo_facts(job.metadata["repo"]))
    job.subfolder = roots.subfolder_from_template(template, facts)


def _expected_sha256(job: Job, resolved: Resolved) -> str | None:
    """What the source publishes, else what the request named (a workflow's hash); both must agree."""
    published = (resolved.sha256 or "").lower() or None
    if published and job.wanted_sha256 and published != job.wanted_sha256:
        raise OrchestratorError(
            "checksum_mismatch",
            f"The SHA-256 this download was asked with ({job.wanted_sha256[:12]}...) is not the one the "
            f"source publishes for the file ({published[:12]}...); it was not fetched.",
            409,
        )
    return published or job.wanted_sha256


# -- what the file is ------------------------------------------------------------------------------

HEADER_NAMES = (".safetensors", ".sft", ".gguf")  # files that describe themselves in their first bytes
# A header that is there but wrong: the file is damaged or lies about what it is, so no byte of
# it is fetched (a header that cannot be read at all only loses the type hint).
DAMAGED_HEADER = frozenset(
    {"header_too_large", "header_invalid", "header_truncated", "header_offsets_invalid", "gguf_invalid"}
)


async def _read_header(ctx: Context, job: Job, resolved: Resolved) -> RemoteFinding | None:
    """The file's own header (two small ranged reads), before a byte of its body is fetched."""
    name = (job.filename or "").lower()
    if not name.endswith(HEADER_NAMES) and "." in name.rsplit("/", 1)[-1]:
        return None  # a .ckpt, a .pt: pickles say nothing before they are loaded
    extra = dict(line.split(": ", 1) for line in resolved.headers if ": " in line)

    def read() -> RemoteFinding:
        with net.session(ctx.policy_for(job)) as session:
            return headers.fetch_finding(session, resolved.urls[0], extra)

    try:
        found = await ctx.resolving.run(read)
    except OrchestratorError as error:
        if error.code == "blocked_target" or error.code in DAMAGED_HEADER:
            raise
        log.info("job %s: the file's header could not be read: %s", job.id, error.code)
        note = {"status": "unreadable", "detail": error.message, "finding": None}
        job.metadata = bounds.bounded_metadata({**job.metadata, "file": note})
        return None
    if found.status == "unknown_format" and name.endswith(HEADER_NAMES):
        kind = "GGUF" if name.endswith(".gguf") else "safetensors"
        raise OrchestratorError(
            "not_gguf" if kind == "GGUF" else "not_safetensors",
            f"{job.filename} is named as a {kind} file but is not one: {found.detail} "
            "Nothing was downloaded.",
            422,
        )
    job.metadata = bounds.bounded_metadata({**job.metadata, "file": found.public()})
    return found


def _file_by_kind(ctx: Context, live: LiveJob, resolved: Resolved, found: RemoteFinding | None) -> None:
    """The type the job is filed as, and its folder. `auto` takes the service's word, corrected by
    the file's own header (a CivitAI "Checkpoint" that holds only a diffusion model goes where a
    UI loads diffusion models); an explicit type the header contradicts gets a warning."""
    job = live.job
    said = found.finding.kind if found and found.finding else None
    if job.model_type == AUTO_TYPE:
        job.kind = _auto_kind(resolved, said, found)
    elif said and said != job.model_type:
        evidence = found.finding.evidence if found and found.finding else ""
        warning = (
            f"The file looks like a {said.replace('_', ' ')} ({evidence}), but it was asked for as a "
            f"{job.model_type.replace('_', ' ')}: it goes to the "
            f"{folder_for(job.model_type, ctx.settings.layout)} folder as asked."
        )
        job.metadata = bounds.bounded_metadata({**job.metadata, "warnings": [warning]})
        ctx.announce.event(live, "warning", message=warning)
    job.folder = ctx.shown_folder(job)
    if "file" in job.metadata:
        ctx.announce.event(live, "metadata", info=job.metadata)


def _auto_kind(resolved: Resolved, said: str | None, found: RemoteFinding | None) -> str:
    service = resolved.model_type if resolved.model_type in MODEL_TYPES else None
    if service == "checkpoint" and said == "diffusion_model":
        return "diffusion_model"  # Flux, Wan, Qwen... uploads filed under CivitAI's "Checkpoint"
    if service or said:
        return service or str(said)
    what = resolved.metadata.get("model_type")
    why = (
        f"its type ({what}) has no folder here"
        if what
        else (found.detail if found else "its name does not say, and it has no header to read")
    )
    raise OrchestratorError(
        "type_required", f"This link does not say what kind of model it is: {why}; pick a type."
    )


async def _start_transfer(ctx: Context, job: Job, transfer: Transfer) -> None:
    """Start it even if the job is cancelled meanwhile, so cancel() can remove it."""
    start = asyncio.ensure_future(ctx.engine.start(transfer))
    try:
        job.handle = await asyncio.shield(start)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            job.handle = await start
        raise


async def _in_place(ctx: Context, live: LiveJob) -> Completed | None:
    """The file in place: at the target, or in another folder the UI reads that type from
    (ComfyUI's extra model paths, an A1111 install's extra folders)."""
    job = live.job
    target = ctx.target(job)
    if target.exists():
        return await _already_there(ctx, live, target)
    if job.overwrite or not job.filename or job.install_root:  # a bundle checked its folder already
        return None
    relative = f"{job.subfolder}/{job.filename}" if job.subfolder else job.filename
    for elsewhere in roots.find_present(ctx.roots, ctx.kind(job), relative):
        try:
            present = await _already_there(ctx, live, elsewhere)
        except OrchestratorError:  # another file of that name there: not ours to judge
            continue
        if present:
            return dataclasses.replace(present, path=str(elsewhere))
    return await _from_library(ctx, job, target)


async def _from_library(ctx: Context, job: Job, target: Path) -> Completed | None:
    """Bytes with the published SHA-256 already in the library, anywhere: a hard link to them
    instead of a download (the same file system only; elsewhere the download goes ahead)."""
    if not job.expected_sha256 or ctx.library is None or job.verify_existing:
        return None
    found = await asyncio.to_thread(ctx.library.link_existing, job.expected_sha256, target)
    if found is None:
        return None
    await add_sidecars(ctx, job, target)
    size = target.stat().st_size
    return Completed(size, job.expected_sha256, already_present=True, compared="sha256", found_at=found)


async def _already_there(ctx: Context, live: LiveJob, target: Path) -> Completed | None:
    """The file in place, when it is the one asked for (an error when it is another one).

    With a published sha256 the bytes decide; without one, the same name and
    size count as the same file, rather than fetching gigabytes to compare.
    """
    job = live.job
    if job.overwrite or (job.verify_existing and not job.expected_sha256):
        return None  # fetched and compared byte for byte in finish()
    if not stat.S_ISREG(target.stat().st_mode):  # a pipe or a device where a model should be
        raise files.not_regular(target)
    size = target.stat().st_size
    if job.expected_sha256:
        ctx.move(live, State.VERIFYING)
        digest: str | None = await asyncio.to_thread(files.sha256_of, target, None, True)
        same = digest == job.expected_sha256
    else:
        same = job.size is not None and size == job.size
        digest = await asyncio.to_thread(files.sha256_of, target, None, True) if same else None
    if not same:
        raise OrchestratorError(
            "file_exists",
            f"{target.name} already exists in {job.folder}/ and is a different file; "
            "ask for overwrite to replace it.",
            409,
        )
    await add_sidecars(ctx, job, target)
    compared = "sha256" if job.expected_sha256 else "name and size"
    return Completed(size, digest, already_present=True, compared=compared)


# -- finish ----------------------------------------------------------------------------------------


@step
async def finish(ctx: Context, live: LiveJob, engine_sha256: str | None) -> Outcome:
    """Verify the staged file and move it into its folder."""
    job = live.job
    ctx.move(live, State.VERIFYING)
    job.rate, job.eta = 0.0, None
    ctx.announce.progress(live, "progress")
    finished_handle = job.handle
    if job.handle:
        if not live.keep_engine_result:
            await ctx.engine.forget(job.handle)
        job.handle = None
    staged = ctx.staged(job)
    if not job.filename or not staged.exists():
        raise OrchestratorError("download_failed", "The downloaded file is missing from the staging folder.")
    if not stat.S_ISREG(staged.lstat().st_mode):
        raise files.not_regular(staged)
    size = staged.stat().st_size
    if size == 0:
        ctx.remove_staging(job)
        raise OrchestratorError("empty_file", "The server sent an empty file instead of the model.", 502)
    early, live.early_hash = live.early_hash, None
    if engine_sha256 is None and early is not None:  # most of it was hashed while it downloaded
        engine_sha256 = await asyncio.to_thread(_early_digest, early, finished_handle, job)
    digest = await _reporting_verification(
        ctx, live, asyncio.to_thread(_check_or_discard, ctx, job, staged, size, engine_sha256)
    )
    target = ctx.target(job)
    if target.exists() and not job.overwrite:
        return await _same_file_or_error(ctx, job, staged, target, size, digest)
    try:
        await asyncio.to_thread(files.install, staged, target, job.overwrite)
    except OrchestratorError as error:
        if error.code != "file_exists":
            raise
        # another job installed a file of this name a moment ago (the same link pasted twice)
        return await _same_file_or_error(ctx, job, staged, target, size, digest)
    await asyncio.to_thread(ctx.remove_staging, job)
    await add_sidecars(ctx, job, target)
    return Completed(size, digest, already_present=False)


async def _same_file_or_error(
    ctx: Context, job: Job, staged: Path, target: Path, size: int, digest: str | None
) -> Completed:
    """A file of this name is in place: success when it holds the same bytes, else file_exists."""
    digest = digest or await asyncio.to_thread(files.sha256_of, staged)
    existing = await asyncio.to_thread(files.sha256_of, target, None, True)
    if existing != digest:
        raise files.exists_error(target)
    await asyncio.to_thread(ctx.remove_staging, job)
    await add_sidecars(ctx, job, target)
    return Completed(size, digest, already_present=True, compared="sha256")


async def _reporting_verification(ctx: Context, live: LiveJob, check: Awaitable[str | None]) -> str | None:
    """The check runs in a thread; meanwhile the bytes hashed so far go out as `verified`
    progress, so a big file's last seconds show what happens."""
    task = asyncio.ensure_future(check)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=ctx.settings.poll_interval)
            if not task.done() and live.job.verified:
                ctx.announce.progress(live, "progress")
        return task.result()
    finally:
        live.job.verified = None


def _early_digest(early: RunningHash, handle: str | None, job: Job) -> str | None:
    """Blocking: the digest hashed during the download, when it proves the published one; else
    None, and the whole file is read again to decide (early_hash.py)."""
    digest = early.finish(handle)
    if digest is not None and digest != job.expected_sha256:
        log.info("job %s: the early hash differs; reading the whole file again", job.id)
        return None
    return digest


def _check_or_discard(
    ctx: Context, job: Job, staged: Path, size: int, engine_sha256: str | None
) -> str | None:
    """Blocking: size, web-page sniffing and the published sha256, if any. A file that fails
    is removed, so a retry cannot reuse its bytes. Returns the digest when it is known by now."""
    try:
        return _check(ctx, job, staged, size, engine_sha256)
    except OrchestratorError:
        ctx.remove_staging(job)
        job.downloaded = 0
        raise


def _check(ctx: Context, job: Job, staged: Path, size: int, engine_sha256: str | None) -> str | None:
    if job.size is not None and size != job.size:
        raise OrchestratorError(
            "size_mismatch",
            f"The download has {size} bytes but should have {job.size}; the bad file was removed.",
            502,
        )
    if not (job.filename or "").lower().endswith((".html", ".htm")) and files.looks_like_html(staged):
        raise OrchestratorError(
            "not_a_file", "The server sent a web page instead of the file; it was removed.", 502
        )
    if not job.expected_sha256:
        return engine_sha256
    if ctx.engine.engine.verifies_sha256:
        digest = job.expected_sha256  # the engine checked it itself
    else:
        digest = engine_sha256 or files.sha256_of(staged, lambda done: setattr(job, "verified", done))
    if digest != job.expected_sha256:
        raise checksum_mismatch()
    return digest


def checksum_mismatch() -> OrchestratorError:
    return OrchestratorError(
        "checksum_mismatch",
        "The file's SHA-256 does not match the one the source published; the bad file was removed.",
        502,
    )


async def add_sidecars(ctx: Context, job: Job, target: Path, sha256: str | None = None) -> None:
    """Files that describe the model beside it, under the names other tools read (sidecars.py);
    never fails the job: the model is in place and verified, a sidecar is a nicety. A folder's
    files (a bundle's) get none: they are parts of one model, and a `config.json` is no model."""
    if not ctx.settings.sidecars or job.install_root or not roots.is_model_name(target.name):
        return
    try:
        said = await ctx.resolving.run(sources.describe, job.source, job.metadata, ctx.policy_for(job))
        if said is None:
            return
        outcomes = await asyncio.to_thread(
            sidecars.write_description,
            target,
            ctx.settings.models_dir,
            said.kind,
            said.record,
            file_id=said.file_id,
            sha256=sha256 or job.expected_sha256,
            preview=said.preview,
        )
        for outcome in outcomes:
            if outcome.action in ("refused", "skipped", "kept"):
                log.info("job %s: %s %s: %s", job.id, outcome.path.name, outcome.action, outcome.detail)
    except Exception as exc:  # the model is in place and verified; a sidecar is a nicety
        log.warning("job %s: sidecar files not written: %s", job.id, type(exc).__name__)
