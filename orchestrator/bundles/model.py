"""A bundle: a set of files asked for together, kept in SQLite beside the jobs.

A bundle does not move bytes: each of its files is a normal job (`Job.bundle` names the
bundle). What the bundle keeps is what its jobs cannot say: its name and kind, which jobs
are its own, the files it names that needed no job (already in place, or with no link), and,
for a folder (a Hugging Face folder), where the folder goes once every file is verified.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..files import private_file

log = logging.getLogger(__name__)

KINDS = ("list", "workflow", "hf_folder", "civitai")


@dataclass
class Entry:
    """A file the bundle names that is not a job: in place already, or without a link."""

    name: str
    folder: str
    status: str  # "present" | "no_link" | "different"
    path: str | None = None  # where it was found, when present
    note: str = ""  # for a person: why there is no job
    hint: dict[str, Any] | None = None  # how to find a file with no link (CivitAI by hash, a search)


@dataclass
class Bundle:
    id: str
    kind: str  # one of KINDS
    name: str
    jobs: list[str] = field(default_factory=list)  # its files' jobs, in the order they were asked for
    entries: list[Entry] = field(default_factory=list)
    # a folder bundle: its folder relative to the models folder (e.g. "diffusers/FLUX.1-dev"), and
    # whether it is in place; its files are built in files.bundle_staging until then
    destination: str = ""
    installed: bool = False
    cancelled: bool = False
    error_code: str | None = None  # the folder could not be put in place
    error_message: str | None = None
    source: dict[str, Any] = field(default_factory=dict)  # what it came from: repo and commit, file name
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    @property
    def is_folder(self) -> bool:
        return bool(self.destination)


class BundleStore:
    """Bundles in their own table of the jobs' database file, one JSON record each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        private_file(path)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS bundles"
            " (id TEXT PRIMARY KEY, created REAL NOT NULL, data TEXT NOT NULL)"
        )

    def save(self, bundle: Bundle) -> None:
        bundle.updated = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO bundles (id, created, data) VALUES (?, ?, ?)",
                (bundle.id, bundle.created, json.dumps(asdict(bundle))),
            )

    def delete(self, bundle_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM bundles WHERE id = ?", (bundle_id,))

    def load_all(self) -> list[Bundle]:
        with self._lock:
            rows = self._db.execute("SELECT id, data FROM bundles ORDER BY created").fetchall()
        bundles = []
        for bundle_id, data in rows:
            try:
                bundles.append(_bundle_from(data))
            except (ValueError, TypeError, KeyError, RecursionError) as exc:
                log.error("bundle record %r cannot be read (%s); left out", bundle_id, type(exc).__name__)
        return bundles

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _bundle_from(data: str) -> Bundle:
    record = json.loads(data)
    if not isinstance(record, dict) or record.get("kind") not in KINDS:
        raise ValueError("not a bundle record")
    known = {f.name for f in fields(Bundle)}
    values = {key: value for key, value in record.items() if key in known}
    values["entries"] = [Entry(**entry) for entry in values.get("entries", [])]
    bundle = Bundle(**values)
    if not isinstance(bundle.id, str) or not all(isinstance(job, str) for job in bundle.jobs):
        raise ValueError("the record lacks its id or jobs")
    return bundle
