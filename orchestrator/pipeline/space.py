"""Disk space: a failed job's partial data is kept for a retry, but never at the cost of a disk
that fills up. It counts against a cap, and it is the first thing freed when space runs low.
"""

from __future__ import annotations

import logging
import shutil

from .. import files
from ..jobs import Job, State
from .context import Context

log = logging.getLogger(__name__)

RESERVE = 256 * 1024 * 1024  # below this much free space, downloads of unknown size are stopped...
RESERVE_SHARE = 0.05  # ...or below this share of a small disk


def free_bytes(ctx: Context) -> int:
    return shutil.disk_usage(ctx.settings.models_dir).free


def reserve(ctx: Context) -> int:
    return min(RESERVE, int(shutil.disk_usage(ctx.settings.models_dir).total * RESERVE_SHARE))


def partial_bytes(ctx: Context, job: Job) -> int:
    staging = ctx.staging(job)
    if not staging.is_dir():
        return 0
    return sum(path.stat().st_size for path in staging.iterdir() if path.is_file())


def _failed_with_data(ctx: Context) -> list[tuple[Job, int]]:
    kept = [
        (live.job, partial_bytes(ctx, live.job)) for live in ctx.registry if live.job.state == State.FAILED
    ]
    return sorted(((job, size) for job, size in kept if size), key=lambda pair: pair[0].updated)


def _free(ctx: Context, job: Job, size: int, why: str) -> None:
    log.info("job %s: its partial data (%s) was removed: %s", job.id, files.human_bytes(size), why)
    ctx.remove_staging(job)
    job.downloaded = 0
    ctx.save(job)


def make_room(ctx: Context, needed: int) -> None:
    """Free failed jobs' partial data, oldest first, until `needed` bytes fit beside the reserve."""
    for job, size in _failed_with_data(ctx):
        if free_bytes(ctx) >= needed + reserve(ctx):
            return
        _free(ctx, job, size, "the disk needs the space for another download")


def keep_under_cap(ctx: Context) -> None:
    """Failed jobs' partial data together stay under the cap; the oldest goes first."""
    kept = _failed_with_data(ctx)
    total = sum(size for _, size in kept)
    for job, size in kept:
        if total <= ctx.settings.keep_partial_bytes:
            return
        _free(ctx, job, size, "failed downloads keep at most the --keep-partial cap between them")
        total -= size
