"""A download job, its states and legal transitions, and the SQLite file that keeps them."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import OrchestratorError
from .files import private_file

log = logging.getLogger(__name__)


class State(StrEnum):
    QUEUED = "queued"
    RESOLVING = "resolving"
    DOWNLOADING = "downloading"
    PAUSED = "paused"
    VERIFYING = "verifying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Every state change goes through Job.move_to, which refuses a move this table lacks; the
# table holds exactly the moves the pipeline makes (tests/unit/test_transitions.py drives
# each one and fails on an entry nothing uses).
TRANSITIONS: dict[State, frozenset[State]] = {
    # queued: waiting to be resolved, or waiting in the engine's queue
    State.QUEUED: frozenset(
        {State.RESOLVING, State.DOWNLOADING, State.PAUSED, State.VERIFYING, State.FAILED, State.CANCELLED}
    ),
    State.RESOLVING: frozenset(
        {State.QUEUED, State.PAUSED, State.VERIFYING, State.COMPLETED, State.FAILED, State.CANCELLED}
    ),
    State.DOWNLOADING: frozenset(
        {State.QUEUED, State.RESOLVING, State.PAUSED, State.VERIFYING, State.FAILED, State.CANCELLED}
    ),
    State.PAUSED: frozenset(
        {State.QUEUED, State.RESOLVING, State.DOWNLOADING, State.VERIFYING, State.FAILED, State.CANCELLED}
    ),
    State.VERIFYING: frozenset({State.COMPLETED, State.FAILED}),
    # completed -> cancelled: a cancelled bundle takes back the files it installed
    State.COMPLETED: frozenset({State.CANCELLED}),
    State.FAILED: frozenset({State.QUEUED, State.CANCELLED}),
    State.CANCELLED: frozenset({State.QUEUED}),
}
ACTIVE_STATES = frozenset({State.QUEUED, State.RESOLVING, State.DOWNLOADING, State.PAUSED, State.VERIFYING})
FINISHED_STATES = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED})

# What a person may do to a job in each state: the server enforces it, and each job's public
# form lists it (`actions`), so the page and the CLI keep no copy of their own.
ACTIONS: dict[str, frozenset[State]] = {
    "pause": frozenset({State.QUEUED, State.DOWNLOADING}),  # ...once the engine has the transfer
    "resume": frozenset({State.PAUSED}),
    "cancel": frozenset({State.QUEUED, State.RESOLVING, State.DOWNLOADING, State.PAUSED, State.FAILED}),
    "retry": frozenset({State.FAILED, State.CANCELLED}),
}


@dataclass(frozen=True)
class Placement:
    """Where a bundle puts one of its files: the bundle, and a folder (relative to the models
    folder) that takes the place of the type's folder ("" keeps the type's)."""

    bundle: str
    install_root: str = ""


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Job:
    """What the app knows about one download. Never holds a token or a signed URL."""

    id: str
    url: str
    model_type: str
    folder: str
    state: State = State.QUEUED
    name: str | None = None  # the filename the user asked for, if any
    subfolder: str = ""  # inside the type folder, e.g. "SDXL/styles" (checked by roots.check_subfolder)
    kind: str | None = None  # the type it is filed as: the one asked for, or the one found (auto)
    overwrite: bool = False
    verify_existing: bool = False  # never take "same name and size" for "the same file"
    filename: str | None = None  # the final, sanitised filename
    source: str | None = None
    size: int | None = None
    downloaded: int = 0
    expected_sha256: str | None = None
    wanted_sha256: str | None = None  # the SHA-256 the request named (a workflow's hash)
    sha256: str | None = None
    hashing: bool = False  # completed, and the SHA-256 of the installed file is being computed
    path: str | None = None  # relative to the models folder, once completed
    error_code: str | None = None
    error_message: str | None = None
    engine: str | None = None
    handle: str | None = None  # the engine's id for the transfer (aria2 GID)
    request_id: Any = None  # the id the submitting client gave, echoed in events
    # may not reach private addresses (decided by the request that made it; None: by the settings)
    guarded: bool | None = None
    bundle: str | None = None  # the bundle (a set of files asked for together) it belongs to
    # installed here (relative to the models folder) instead of its type's folder: a bundle's
    # staging folder, renamed into place once every file of the bundle is verified
    install_root: str = ""
    already_present: bool = False  # completed without a download: the file was there already
    compared: str | None = None  # how the file in place was found identical: "sha256" or "name and size"
    metadata: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    # live numbers, not stored
    rate: float = 0.0
    eta: float | None = None
    verified: int | None = None  # bytes the engine has checked, while it verifies the finished file

    def move_to(self, new: State) -> None:
        """Change state, refusing a transition the state machine does not allow."""
        if new == self.state:
            return
        if new not in TRANSITIONS[self.state]:
            raise OrchestratorError(
                "invalid_state",
                f"A {self.state.value} download cannot become {new.value}.",
                status=409,
            )
        self.state = new
        self.updated = time.time()

    def allows(self, action: str) -> bool:
        """True when `action` (pause, resume, cancel, retry) fits this job now."""
        if self.state not in ACTIONS[action]:
            return False
        return action != "pause" or self.handle is not None

    def refuse(self, action: str) -> OrchestratorError:
        return OrchestratorError(
            "invalid_state", f"A {self.state.value} download cannot be {_PAST[action]}.", 409
        )

    @property
    def label(self) -> str:
        return self.filename or self.name or self.url

    @property
    def actions(self) -> list[str]:
        return [action for action in ACTIONS if self.allows(action)]

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def progress(self) -> float:
        if self.state == State.COMPLETED:
            return 1.0
        if self.size:
            return min(1.0, self.downloaded / self.size)
        return 0.0

    def public(self) -> dict[str, Any]:
        """The job as the API and the page see it."""
        return {
            "id": self.id,
            "url": self.url,
            "type": self.model_type,
            "folder": self.folder,
            "state": self.state.value,
            "label": self.label,
            "filename": self.filename,
            "source": self.source,
            "engine": self.engine,
            "progress": round(self.progress, 4),
            "downloaded": self.downloaded,
            "total": self.size,
            "rate": round(self.rate / 1_000_000, 3),
            "eta": None if self.eta is None else round(self.eta, 1),
            "verified": self.verified,
            "sha256": self.sha256,
            "hashing": self.hashing,
            "path": self.path,
            "error": ({"code": self.error_code, "message": self.error_message} if self.error_code else None),
            "metadata": self.metadata,
            "bundle": self.bundle,
            "already_present": self.already_present,
            "compared": self.compared,
            "actions": self.actions,
            "request_id": self.request_id,
            "created": self.created,
            "updated": self.updated,
        }


_PAST = {"pause": "paused", "resume": "resumed", "cancel": "cancelled", "retry": "retried"}
_LIVE_ONLY = ("rate", "eta", "verified")
LOCK_FILE = "manager.lock"


@contextlib.contextmanager
def exclusive_state(state_dir: Path) -> Iterator[None]:
    """One manager per state folder (a server, or an in-process `get`): two on one job
    list would each resume the other's downloads."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OrchestratorError(
                "state_in_use",
                f"Another orchestrator (a server or `orchestrator get`) is using {state_dir}; "
                "stop it, or give this one its own --state-dir.",
                409,
            ) from None
        yield


class JobStore:
    """Jobs in one SQLite file, so the list survives a restart.

    Writes are small and rare (state changes, progress every few seconds), so a
    single connection guarded by a lock is enough; WAL keeps a crash from
    leaving a half-written row. Each row is the job as JSON plus the columns
    worth querying.

    Damage never keeps the server from starting: a row that cannot be read is set aside
    in a `damaged` table (after a copy of the file is kept), a file that is not a database
    any more is moved aside whole, and `notices` says what happened, for the page.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.notices: list[str] = []
        self._lock = threading.Lock()
        try:
            self._db = self._open()
            self._db.execute("SELECT count(*) FROM jobs").fetchone()
        except sqlite3.DatabaseError as exc:
            kept = self._set_aside(exc)
            self.notices.append(
                f"The job list ({path.name}) was damaged ({exc}) and could not be read; it was kept as "
                f"{kept.name} and a new, empty list started."
            )
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        private_file(self.path)  # SQLite gives its -wal and -shm files the same mode
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS jobs"
            " (id TEXT PRIMARY KEY, state TEXT NOT NULL, created REAL NOT NULL, data TEXT NOT NULL)"
        )
        db.execute("CREATE TABLE IF NOT EXISTS damaged (id TEXT, data TEXT, reason TEXT, found REAL)")
        return db

    def _set_aside(self, exc: Exception) -> Path:
        """Move a file that is no database (any more) out of the way, with its WAL."""
        log.error("%s cannot be read (%s); moving it aside", self.path, exc)
        with contextlib.suppress(Exception):
            self._db.close()
        kept = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            part = self.path.with_name(self.path.name + suffix)
            if part.exists():
                os.replace(part, kept.with_name(kept.name + suffix))
        return kept

    def save(self, job: Job) -> None:
        record = {k: v for k, v in asdict(job).items() if k not in _LIVE_ONLY}
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO jobs (id, state, created, data) VALUES (?, ?, ?, ?)",
                (job.id, job.state.value, job.created, json.dumps(record)),
            )

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def load_all(self) -> list[Job]:
        with self._lock:
            rows = self._db.execute("SELECT id, data FROM jobs ORDER BY created").fetchall()
        jobs, damaged = [], []
        for job_id, data in rows:
            try:
                jobs.append(_job_from(data))
            except (ValueError, TypeError, KeyError, RecursionError) as exc:
                damaged.append((job_id, data, f"{type(exc).__name__}: {str(exc)[:200]}"))
        if damaged:
            self._quarantine(damaged)
        return jobs

    def _quarantine(self, damaged: list[tuple[Any, Any, str]]) -> None:
        copy = self.path.with_name(f"{self.path.name}.before-repair-{int(time.time())}")
        with self._lock:
            quoted = str(copy).replace("'", "''")
            self._db.execute(f"VACUUM INTO '{quoted}'")  # the file as it was, for whoever looks into it
            for job_id, data, reason in damaged:
                log.error("job record %r cannot be read (%s); set aside", job_id, reason)
                self._db.execute(
                    "INSERT INTO damaged (id, data, reason, found) VALUES (?, ?, ?, ?)",
                    (str(job_id), str(data), reason, time.time()),
                )
                self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        self.notices.append(
            f"{len(damaged)} damaged download record(s) could not be read and were set aside (the "
            f"table `damaged` in {self.path.name}; a copy of the file as it was: {copy.name})."
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _job_from(data: Any) -> Job:
    record = json.loads(data)
    if not isinstance(record, dict):
        raise ValueError("the record is not an object")
    record["state"] = State(record["state"])
    known = {f.name for f in fields(Job)}
    job = Job(**{k: v for k, v in record.items() if k in known})
    if not isinstance(job.id, str) or not isinstance(job.url, str) or not isinstance(job.model_type, str):
        raise ValueError("the record lacks its id, link or type")
    return job
