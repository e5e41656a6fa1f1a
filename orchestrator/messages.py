"""The protocol's messages (docs/PROTOCOL.md): the only code that writes their envelopes.

Job events, engine events, the `hello` a client gets first, and the answers to one
client. Every sender (the pipeline, the poller, the WebSocket route) builds its
messages here, so the shape cannot drift between them.
"""

from __future__ import annotations

from typing import Any

from .errors import OrchestratorError
from .jobs import Job

Message = dict[str, Any]


def job_event(job: Job, status: str, **data: Any) -> Message:
    """One job's event, to every client: `status` says what happened, `state` where it is now,
    `actions` what may be done to the job from here."""
    payload = {"status": status, "state": job.state.value, "label": job.label, "actions": job.actions, **data}
    return {"type": "download", "id": job.request_id, "job": job.id, "data": payload}


def progress_fields(job: Job) -> dict[str, Any]:
    """What `progress`, `queued` and `paused` events carry; `verified` while the finished
    file is checked against its published sha256."""
    fields = {
        "progress": round(job.progress, 4),
        "rate": round(job.rate / 1e6, 3),
        "eta": None if job.eta is None else round(job.eta, 1),
        "downloaded": job.downloaded,
        "total": job.size,
    }
    if job.verified is not None:
        fields["verified"] = job.verified
    return fields


def bundle_event(summary: dict[str, Any], status: str, request_id: Any = None) -> Message:
    """One bundle's event: `status` says what happened (created, progress, a new state, removed;
    `accepted` answers the client that asked for it, with its `id`), the rest is the bundle as
    `GET /api/bundles/<id>` gives it."""
    return {
        "type": "bundle",
        "id": request_id,
        "bundle": summary["id"],
        "data": {"status": status, **summary},
    }


def library_event(status: str, **data: Any) -> Message:
    """What happened in the model library, to every client: `scan_started`, `scan_progress`,
    `scan_done` (a scan of the models folders), `changed` (files recorded, identified or
    described anew; `files` holds them as `GET /api/models` lists them), `removed` (a file
    deleted; `path`), `updates` (newer CivitAI versions found)."""
    return {"type": "library", "data": {"status": status, **data}}


def engine_event(info: dict[str, Any], message: str | None) -> Message:
    return {"type": "engine", "data": {**info, "message": message}}


def hello(
    engine: dict[str, Any],
    jobs: list[dict[str, Any]],
    vocabulary: dict[str, Any],
    notices: list[str],
    bundles: list[dict[str, Any]] | None = None,
    library: dict[str, Any] | None = None,
) -> Message:
    """The first message on every socket: the engine, every job and bundle, the words of the
    protocol, what the server had to do at start that a person should know, and the library's
    summary (files, a running scan's progress, duplicates, updates)."""
    return {
        "type": "hello",
        "data": {
            "engine": engine,
            "jobs": jobs,
            "bundles": bundles or [],
            "types": vocabulary["types"],
            "layout": vocabulary["layout"],
            "vocabulary": vocabulary,
            "notices": notices,
            "library": library,
        },
    }


def existing_job(request_id: Any, job: Job) -> Message:
    """The answer to a `download` that repeats an active job: that job's `started`, to the sender only."""
    started = job_event(job, "started", url=job.url, type=job.model_type, existing=True)
    return {**started, "id": request_id}


def download_refused(request_id: Any, error: OrchestratorError) -> Message:
    """A `download` that created no job."""
    return {"type": "download", "id": request_id, "job": None, "data": {"status": "error", **error.as_dict()}}


def error_reply(request_id: Any, error: OrchestratorError) -> Message:
    return {"type": "error", "id": request_id, "data": error.as_dict()}


def pong(request_id: Any) -> Message:
    return {"type": "pong", "id": request_id}
