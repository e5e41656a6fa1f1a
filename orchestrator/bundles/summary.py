"""What a bundle is doing, from its jobs: one state, bytes, rate and ETA over all its files.

A pure function of the bundle record and its jobs, so the REST answer, the WebSocket event
and the CLI can never disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from ..files import filename_from_url
from ..jobs import ACTIVE_STATES, Job, State
from .model import Bundle

# Active files, most telling first: a bundle is "downloading" while any of its files moves.
_MOVING = (State.DOWNLOADING, State.RESOLVING, State.VERIFYING)


def bundle_state(bundle: Bundle, jobs: list[Job]) -> str:
    """queued, downloading, paused, installing, completed, failed or cancelled."""
    if bundle.cancelled:
        return "cancelled"
    active = [job for job in jobs if job.state in ACTIVE_STATES]
    if active:
        if any(job.state in _MOVING for job in active):
            return "downloading"
        if all(job.state == State.PAUSED for job in active):
            return "paused"
        return "queued"
    if any(job.state in (State.FAILED, State.CANCELLED) for job in jobs) or bundle.error_code:
        return "failed"
    if bundle.is_folder and not bundle.installed:
        return "installing"
    return "completed"


def actions(bundle: Bundle, jobs: list[Job], state: str) -> list[str]:
    """What may be done to the whole: each action applies to the files it fits."""
    allowed = []
    if any(job.allows("pause") for job in jobs):
        allowed.append("pause")
    if any(job.allows("resume") for job in jobs):
        allowed.append("resume")
    if state not in ("completed", "cancelled"):
        allowed.append("cancel")
    if state in ("failed", "cancelled"):
        allowed.append("retry")
    return allowed


def summarize(bundle: Bundle, all_jobs: Mapping[str, Job]) -> dict[str, Any]:
    """The bundle as the API and the page see it."""
    jobs = [all_jobs[job_id] for job_id in bundle.jobs if job_id in all_jobs]
    state = bundle_state(bundle, jobs)
    sizes_known = all(job.size is not None for job in jobs)
    total = sum(job.size or 0 for job in jobs)
    done = sum(
        (job.size or job.downloaded) if job.state == State.COMPLETED else job.downloaded for job in jobs
    )
    rate = sum(job.rate for job in jobs if job.state in ACTIVE_STATES)
    left = max(0, total - done)
    eta = round(left / rate, 1) if rate > 0 and sizes_known and state == "downloading" else None
    counts = Counter(job.state.value for job in jobs)
    return {
        "id": bundle.id,
        "kind": bundle.kind,
        "name": bundle.name,
        "state": state,
        "progress": 1.0 if state == "completed" else round(done / total, 4) if total else 0.0,
        "downloaded": done,
        "total": total if sizes_known else None,
        "rate": round(rate / 1_000_000, 3),
        "eta": eta,
        "counts": {"total": len(bundle.jobs), **{name: counts[name] for name in sorted(counts)}},
        "failed": [_failure(job) for job in jobs if job.state in (State.FAILED, State.CANCELLED)]
        if state == "failed"
        else [],
        "jobs": list(bundle.jobs),
        "entries": [asdict(entry) for entry in bundle.entries],
        "destination": bundle.destination or None,
        "error": {"code": bundle.error_code, "message": bundle.error_message} if bundle.error_code else None,
        "actions": actions(bundle, jobs, state),
        "source": bundle.source,
        "created": bundle.created,
        "updated": bundle.updated,
    }


def _failure(job: Job) -> dict[str, Any]:
    message = job.error_message or ("Cancelled." if job.state == State.CANCELLED else "Failed.")
    label = job.filename or job.name or filename_from_url(job.url) or job.url
    return {"job": job.id, "label": label, "code": job.error_code or job.state.value, "message": message}
