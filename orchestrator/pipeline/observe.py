"""What a transfer's status, as the engine reports it, means for its job: a pure decision.

Whoever caused the change (this app, another aria2 client, a restart of the
daemon, an expired link), the poller asks `decide` and carries out the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engines.base import ACTIVE, COMPLETE, ERROR, MISSING, PAUSED, REMOVED, WAITING, TransferStatus
from ..errors import OrchestratorError
from ..jobs import Job, State

MAX_REPAIRS = 3  # re-adds of a transfer the engine lost, whose link expired, or that stalled


@dataclass(frozen=True)
class Move:
    """Bytes move, wait or stopped: the job follows; `status` is the event to send, if any."""

    state: State
    status: str | None
    force: bool = True  # False: a progress event, sent at most about once a poll interval


@dataclass(frozen=True)
class Finish:
    sha256: str | None  # what the engine hashed or verified, if it did


@dataclass(frozen=True)
class Readd:
    """Resolve the link again and hand the transfer over anew (uses one repair)."""

    why: str
    paused: bool = False
    stop_first: bool = False  # the engine still runs the old transfer: stop it, keeping its bytes
    tell: str | None = None  # what the clients are told (a `stalled` event), if anything


@dataclass(frozen=True)
class DropBadBytes:
    """The engine found the bytes differ from the published sha256."""


@dataclass(frozen=True)
class Fail:
    error: OrchestratorError


@dataclass(frozen=True)
class Drop:
    """Stop the transfer, delete its bytes, fail the job: they can only be wrong (too many)."""

    error: OrchestratorError


@dataclass(frozen=True)
class RemovedElsewhere:
    """Another aria2 client removed the transfer."""


Decision = Move | Finish | Readd | DropBadBytes | Drop | Fail | RemovedElsewhere | None


def decide(
    job: Job, status: TransferStatus, staged_bytes: bool, repairs: int, stalled_for: float | None = None
) -> Decision:
    """`staged_bytes`: the staging folder holds bytes of this job; `repairs`: re-adds used so far;
    `stalled_for`: seconds the transfer has been all but still, when that is past the limit."""
    seen = max(status.completed, status.total or 0)
    if job.size is not None and status.state in (ACTIVE, WAITING, COMPLETE) and seen > job.size:
        return Drop(oversized(job.size, seen))
    if status.state == ACTIVE and stalled_for is not None:
        return _on_stall(stalled_for, repairs)
    if status.state == ACTIVE:
        return Move(State.DOWNLOADING, "progress", force=job.state != State.DOWNLOADING)
    if status.state == WAITING:
        return Move(State.QUEUED, "queued") if job.state != State.QUEUED else None
    if status.state == PAUSED:  # paused here, or elsewhere, e.g. in AriaNg
        return Move(State.PAUSED, "paused") if job.state != State.PAUSED else None
    if status.state == COMPLETE:
        return Finish(status.sha256)
    if status.state == ERROR:
        return _on_error(job, status, staged_bytes, repairs)
    if status.state == REMOVED:
        return RemovedElsewhere()
    if status.state == MISSING:
        return _on_missing(job, repairs)
    return None


def _on_error(job: Job, status: TransferStatus, staged_bytes: bool, repairs: int) -> Decision:
    # 403/410 on a link that worked: a signed URL may have expired; resolve again
    # (after a restart aria2 fails before reading its control file and reports 0 bytes)
    worked = job.downloaded > 0 or staged_bytes
    if may_have_expired(status) and worked and repairs < MAX_REPAIRS:
        return Readd("the link expired; resolving it again")
    if status.error_code == "checksum_mismatch":  # an engine that checks the sha256 itself
        return DropBadBytes()
    return Fail(
        OrchestratorError(
            status.error_code or "download_failed", status.error_message or "The download failed.", 502
        )
    )


def _on_missing(job: Job, repairs: int) -> Decision:
    """The engine lost the transfer (the daemon restarted without it): add it again."""
    if repairs >= MAX_REPAIRS:
        return Fail(
            OrchestratorError(
                "engine_lost", "The download engine lost this download several times; retry it.", 502
            )
        )
    return Readd("the engine lost the transfer; adding it again", paused=job.state == State.PAUSED)


def _on_stall(seconds: float, repairs: int) -> Decision:
    """A trickle or a silent connection: aria2's own limits never catch it (lowest-speed-limit=0)."""
    if repairs >= MAX_REPAIRS:
        return Fail(
            OrchestratorError(
                "stalled",
                f"The server stopped sending this file (almost nothing for {seconds:.0f} s), again after "
                "asking it anew several times; the bytes so far are kept: retry later.",
                502,
            )
        )
    return Readd(
        "the transfer stalled; resolving the link again and continuing from the bytes on disk",
        stop_first=True,
        tell=f"Almost nothing arrived for {seconds:.0f} s; asking the server again and continuing "
        "from the bytes already here.",
    )


def oversized(expected: int, seen: int) -> OrchestratorError:
    """More bytes than the source announced or published: the download is stopped at once,
    before a lying or endless answer can fill the disk."""
    return OrchestratorError(
        "size_mismatch",
        f"The server sends more than the {expected} bytes this file has ({seen} so far); the "
        "download was stopped and its data removed.",
        502,
    )


def may_have_expired(status: TransferStatus) -> bool:
    """403/410, or an HTTP failure whose status got lost: when several of aria2's connections
    meet an expired URL, it often reports only "No URI available" (errorCode 22, no status)."""
    if status.http_status is not None:
        return status.http_status in (403, 410)
    return status.error_code in ("origin_error", "origin_forbidden")
