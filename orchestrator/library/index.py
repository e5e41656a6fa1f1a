"""The library index: which model file is where, what its bytes hash to, and what is known of it.

This is the one place that maps files to SHA-256s; everything else (duplicates, CivitAI
look-ups, sharing models between machines) asks it. One SQLite file in the state
folder (`library.sqlite3`), in WAL mode, one connection behind a lock, so the scanner's
thread, the web app and look-ups can use it at once; a second process waits for the
writer (busy timeout) instead of failing.

Paths are stored as the bytes the operating system gave (a name may not be UTF-8),
relative to the root (models folder) that holds them, beside a readable `name` for
searching. What CivitAI said about a hash lives in `lookups`, keyed by SHA-256, so a
moved, renamed or copied file keeps it without asking again.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import OrchestratorError
from .naming import text
from .records import (
    DuplicateGroup,
    FileRecord,
    FileStat,
    Lookup,
    SidecarInfo,
    Source,
    model_part,
    normal_sha256,
)

FILE_NAME = "library.sqlite3"
SCHEMA_VERSION = 1
MISS_TTL = 24 * 3600.0  # CivitAI not knowing a hash is remembered this long
ERROR_RETRY = 10 * 60.0  # a failed look-up is tried again after this long

_SCHEMA = """
CREATE TABLE IF NOT EXISTS roots (
    id INTEGER PRIMARY KEY,
    folder BLOB NOT NULL UNIQUE,        -- absolute path, as the OS spells it
    model_type TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    root_id INTEGER NOT NULL REFERENCES roots(id),
    rel_path BLOB NOT NULL,             -- relative to the root, as the OS spells it
    name TEXT NOT NULL,                 -- rel_path for people and searches (bad bytes as U+FFFD)
    model_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    device INTEGER NOT NULL,
    sha256 TEXT,                        -- lower-case hex; NULL until hashed
    source_kind TEXT NOT NULL DEFAULT 'unknown',
    source TEXT NOT NULL DEFAULT '{}',  -- JSON of records.Source
    sidecars TEXT NOT NULL DEFAULT '{}',-- JSON of records.SidecarInfo
    sidecar_sig TEXT NOT NULL DEFAULT '',
    present INTEGER NOT NULL DEFAULT 1, -- 0: missed by a scan that did not finish; never listed
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    UNIQUE (root_id, rel_path)
);
CREATE INDEX IF NOT EXISTS files_by_sha256 ON files (sha256);
CREATE INDEX IF NOT EXISTS files_by_inode ON files (device, inode);
CREATE TABLE IF NOT EXISTS lookups (
    sha256 TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('hit', 'miss', 'error')),
    checked REAL NOT NULL,
    model_id INTEGER,
    version_id INTEGER,
    model_name TEXT,
    version_name TEXT,
    model_type TEXT,
    base_model TEXT,
    published_at TEXT,
    code TEXT,
    message TEXT,
    record TEXT                         -- CivitAI's model-version record (JSON) for a hit
);
CREATE TABLE IF NOT EXISTS model_checks (
    model_id INTEGER PRIMARY KEY,
    checked REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('ok', 'gone')),
    answer TEXT NOT NULL                -- JSON: the model's name and its versions, newest first
);
"""

_FILE_COLUMNS = (
    "f.id, r.folder, f.rel_path, f.model_type, f.size, f.mtime_ns, f.inode, f.device, f.sha256,"
    " f.source, f.sidecars, f.first_seen, f.last_seen,"
    " l.state, l.checked, l.model_id, l.version_id, l.model_name, l.version_name, l.model_type,"
    " l.base_model, l.published_at, l.code, l.message"
)
_FILES_FROM = " FROM files f JOIN roots r ON r.id = f.root_id LEFT JOIN lookups l ON l.sha256 = f.sha256"


@dataclass(frozen=True)
class StoredFile:
    """A row as the scanner needs it: enough to decide whether a file must be hashed again."""

    id: int
    root_id: int
    rel_path: bytes
    stat: FileStat
    sha256: str | None
    source: Source
    sidecar_sig: str
    present: bool


class LibraryIndex:
    """The SQLite index of model files. Safe to share between threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        self.scan_lock = threading.Lock()  # one scan at a time per index
        self.generation = 0  # counts this connection's commits: readers cache until it moves
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(_SCHEMA)  # each statement is IF NOT EXISTS: safe on every start
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> LibraryIndex:
        return cls(state_dir / FILE_NAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> LibraryIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group several writes into one transaction (all or nothing, and much faster)."""
        with self._transaction():
            yield

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            outermost = self._depth == 0
            if outermost:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self._db
            except BaseException:
                self._depth -= 1
                if outermost:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outermost:
                self._db.execute("COMMIT")
                self.generation += 1

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # -- roots -------------------------------------------------------------------------------------

    def root_id(self, folder: Path, model_type: str) -> int:
        """The id of a root folder, added on first use; the latest model type given wins."""
        key = root_key(folder)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO roots (folder, model_type) VALUES (?, ?)"
                " ON CONFLICT (folder) DO UPDATE SET model_type = excluded.model_type",
                (key, model_type),
            )
            return int(db.execute("SELECT id FROM roots WHERE folder = ?", (key,)).fetchone()[0])

    # -- what a download installed -----------------------------------------------------------------

    def record_download(
        self,
        root: Path,
        model_type: str,
        path: Path,
        sha256: str,
        source: Source,
        civitai_record: dict[str, Any] | None = None,
    ) -> FileRecord:
        """Record a file a download just installed, with the SHA-256 it was verified against.

        The file is not read again. `path` is absolute or relative to `root`. A CivitAI
        record, when the download came from CivitAI, counts as a look-up hit for the hash.
        """
        sha = normal_sha256(sha256)
        rel = relative_to_root(root, path)
        try:
            info = os.stat(Path(root) / rel)
        except FileNotFoundError:
            raise OrchestratorError("not_found", f"{text(os.fsencode(rel))} is not in {root}.", 404) from None
        now = time.time()
        with self._transaction():
            root_id = self.root_id(root, model_type)
            file_id = self.put_file(
                root_id=root_id,
                rel_path=os.fsencode(rel),
                model_type=model_type,
                stat=FileStat.of(info),
                sha256=sha,
                source=source,
                sidecars=None,
                sidecar_sig=None,
                now=now,
            )
            if civitai_record is not None:
                self.save_hit(sha, civitai_record, now=now)
        record = self.get(file_id)
        assert record is not None
        return record

    # -- writes the scanner makes ------------------------------------------------------------------

    def snapshot(self) -> list[StoredFile]:
        """Every row, present or not, as the scanner compares it with the disk."""
        rows = self._query(
            "SELECT id, root_id, rel_path, size, mtime_ns, inode, device, sha256, source, sidecar_sig,"
            " present FROM files"
        )
        return [
            StoredFile(
                id=row[0],
                root_id=row[1],
                rel_path=bytes(row[2]),
                stat=FileStat(row[3], row[4], row[5], row[6]),
                sha256=row[7],
                source=Source.from_dict(json.loads(row[8])),
                sidecar_sig=row[9],
                present=bool(row[10]),
            )
            for row in rows
        ]

    def put_file(
        self,
        *,
        root_id: int,
        rel_path: bytes,
        model_type: str,
        stat: FileStat,
        sha256: str | None,
        source: Source,
        sidecars: SidecarInfo | None,
        sidecar_sig: str | None,
        now: float,
        file_id: int | None = None,
    ) -> int:
        """Insert or update one file; with `file_id` the row moves to this path (first_seen kept).

        `sidecars`/`sidecar_sig` of None keep what the row had. Any other row at the
        target path (a ghost from an unfinished scan) gives way.
        """
        with self._transaction() as db:
            clash = db.execute(
                "SELECT id FROM files WHERE root_id = ? AND rel_path = ?", (root_id, rel_path)
            ).fetchone()
            if clash and clash[0] != file_id:
                if file_id is None:
                    file_id = int(clash[0])
                else:
                    db.execute("DELETE FROM files WHERE id = ?", (clash[0],))
            values = {
                "root_id": root_id,
                "rel_path": rel_path,
                "name": text(rel_path),
                "model_type": model_type,
                "size": stat.size,
                "mtime_ns": stat.mtime_ns,
                "inode": stat.inode,
                "device": stat.device,
                "sha256": sha256,
                "source_kind": source.kind,
                "source": json.dumps(source.as_dict()),
                "present": 1,
                "last_seen": now,
            }
            if sidecars is not None:
                values["sidecars"] = json.dumps(sidecars.as_dict())
            if sidecar_sig is not None:
                values["sidecar_sig"] = sidecar_sig
            if file_id is None:
                values["first_seen"] = now
                names = ", ".join(values)  # column names are this function's own keys, never input
                marks = ", ".join("?" for _ in values)
                cursor = db.execute(
                    f"INSERT INTO files ({names}) VALUES ({marks})",  # noqa: S608
                    tuple(values.values()),
                )
                return int(cursor.lastrowid or 0)
            assignments = ", ".join(f"{name} = ?" for name in values)
            db.execute(
                f"UPDATE files SET {assignments} WHERE id = ?",  # noqa: S608
                (*values.values(), file_id),
            )
            return file_id

    def set_hash(
        self, file_id: int, sha256: str | None, source: Source | None = None, only_if_unhashed: bool = False
    ) -> None:
        with self._transaction() as db:
            if only_if_unhashed:
                row = db.execute("SELECT sha256 FROM files WHERE id = ?", (file_id,)).fetchone()
                if row is None or row[0] is not None:
                    return
            db.execute("UPDATE files SET sha256 = ? WHERE id = ?", (sha256, file_id))
            if source is not None:
                db.execute(
                    "UPDATE files SET source_kind = ?, source = ? WHERE id = ?",
                    (source.kind, json.dumps(source.as_dict()), file_id),
                )

    def set_sidecars(self, file_id: int, sidecars: SidecarInfo, signature: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE files SET sidecars = ?, sidecar_sig = ? WHERE id = ?",
                (json.dumps(sidecars.as_dict()), signature, file_id),
            )

    def root_folders(self) -> dict[int, Path]:
        return {
            row[0]: Path(os.fsdecode(bytes(row[1]))) for row in self._query("SELECT id, folder FROM roots")
        }

    def touch(self, file_ids: Iterable[int], now: float) -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE files SET last_seen = ?, present = 1 WHERE id = ?", [(now, i) for i in file_ids]
            )

    def mark_missing(self, file_ids: Iterable[int]) -> None:
        with self._transaction() as db:
            db.executemany("UPDATE files SET present = 0 WHERE id = ?", [(i,) for i in file_ids])

    def delete_files(self, file_ids: Iterable[int]) -> None:
        with self._transaction() as db:
            db.executemany("DELETE FROM files WHERE id = ?", [(i,) for i in file_ids])

    def forget_path(self, root: Path, rel_path: Path) -> int:
        """Drop the row for a file that was deleted; how many rows went (0 or 1)."""
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM files WHERE rel_path = ? AND root_id = (SELECT id FROM roots WHERE folder = ?)",
                (os.fsencode(rel_path), root_key(root)),
            )
            return cursor.rowcount

    # -- queries -----------------------------------------------------------------------------------

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM files WHERE present = 1")[0][0])

    def all_files(self) -> list[FileRecord]:
        return self._records(" WHERE f.present = 1 ORDER BY f.model_type, f.name")

    def by_sha256(self, sha256: str) -> list[FileRecord]:
        return self._records(" WHERE f.present = 1 AND f.sha256 = ? ORDER BY f.id", normal_sha256(sha256))

    def by_autov2(self, short: str) -> list[FileRecord]:
        """Files whose SHA-256 starts with CivitAI's 10-digit AutoV2 (as A1111 writes in PNG info)."""
        prefix = short.strip().lower()
        if len(prefix) != 10 or any(c not in "0123456789abcdef" for c in prefix):
            raise OrchestratorError("invalid_hash", f"{short[:40]!r} is not an AutoV2 hash (10 hex digits).")
        return self._records(" WHERE f.present = 1 AND substr(f.sha256, 1, 10) = ? ORDER BY f.id", prefix)

    def duplicates(self) -> list[DuplicateGroup]:
        """Each SHA-256 found in more than one place, biggest waste first."""
        rows = self._records(
            " WHERE f.present = 1 AND f.sha256 IN (SELECT sha256 FROM files WHERE present = 1"
            " AND sha256 IS NOT NULL GROUP BY sha256 HAVING COUNT(*) > 1) ORDER BY f.id"
        )
        groups: dict[str, list[FileRecord]] = {}
        for record in rows:
            groups.setdefault(record.sha256 or "", []).append(record)
        found = [DuplicateGroup(sha, tuple(files)) for sha, files in groups.items()]
        return sorted(found, key=lambda group: (-group.wasted_bytes, group.sha256))

    def find(
        self, model_type: str | None = None, base_model: str | None = None, text_filter: str | None = None
    ) -> list[FileRecord]:
        """Files of a type, for a base model (CivitAI's words, e.g. "SDXL 1.0"), and/or matching a
        text (case-insensitive, in the path, names, trigger words or hash)."""
        found = self.all_files()
        if model_type:
            found = [r for r in found if r.model_type == model_type]
        if base_model:
            wanted = base_model.casefold()
            found = [r for r in found if (r.base_model or "").casefold() == wanted]
        if text_filter and text_filter.strip():
            needle = text_filter.strip().casefold()
            found = [r for r in found if needle in _haystack(r)]
        return found

    def get(self, file_id: int) -> FileRecord | None:
        """One file in full, CivitAI's record included when the look-up found one."""
        found = self._records(" WHERE f.id = ? AND f.present = 1", file_id, full=True)
        return found[0] if found else None

    def get_by_path(self, root: Path, rel_path: Path) -> FileRecord | None:
        found = self._records(
            " WHERE r.folder = ? AND f.rel_path = ? AND f.present = 1", root_key(root), os.fsencode(rel_path)
        )
        return found[0] if found else None

    def _records(self, where: str, *args: Any, full: bool = False) -> list[FileRecord]:
        columns = _FILE_COLUMNS + (", l.record" if full else "")
        return [_record(row, full) for row in self._query("SELECT " + columns + _FILES_FROM + where, args)]

    # -- CivitAI look-ups --------------------------------------------------------------------------

    def pending_lookups(self, now: float | None = None) -> list[str]:
        """Hashes of present files CivitAI has not been asked about, or whose answer is stale:
        a miss older than MISS_TTL, an error older than ERROR_RETRY. Hits are kept."""
        moment = time.time() if now is None else now
        rows = self._query(
            "SELECT DISTINCT f.sha256 FROM files f LEFT JOIN lookups l ON l.sha256 = f.sha256"
            " WHERE f.present = 1 AND f.sha256 IS NOT NULL AND (l.state IS NULL"
            " OR (l.state = 'miss' AND l.checked < ?) OR (l.state = 'error' AND l.checked < ?))"
            " ORDER BY f.sha256",
            (moment - MISS_TTL, moment - ERROR_RETRY),
        )
        return [row[0] for row in rows]

    def lookup(self, sha256: str) -> Lookup | None:
        rows = self._query(
            "SELECT state, checked, model_id, version_id, model_name, version_name, model_type, base_model,"
            " published_at, code, message, record FROM lookups WHERE sha256 = ?",
            (normal_sha256(sha256),),
        )
        return _lookup(rows[0], rows[0][11]) if rows else None

    def save_hit(self, sha256: str, record: dict[str, Any], now: float | None = None) -> list[FileRecord]:
        """CivitAI knows this hash: keep its model-version record; files of unknown source with
        these bytes are now known to come from that model version. Returns those files."""
        sha = normal_sha256(sha256)
        moment = time.time() if now is None else now
        model = model_part(record)
        model_id, version_id = _int(record.get("modelId")), _int(record.get("id"))
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO lookups (sha256, state, checked, model_id, version_id, model_name,"
                " version_name, model_type, base_model, published_at, record)"
                " VALUES (?, 'hit', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sha,
                    moment,
                    model_id,
                    version_id,
                    _str(model.get("name")),
                    _str(record.get("name")),
                    _str(model.get("type")),
                    _str(record.get("baseModel")),
                    _str(record.get("publishedAt")) or _str(record.get("createdAt")),
                    json.dumps(record),
                ),
            )
            if model_id is not None and version_id is not None:
                source = Source.civitai(model_id, version_id, found_by="lookup")
                db.execute(
                    "UPDATE files SET source_kind = 'civitai', source = ?"
                    " WHERE sha256 = ? AND source_kind = 'unknown'",
                    (json.dumps(source.as_dict()), sha),
                )
        return self.by_sha256(sha)

    def save_miss(self, sha256: str, now: float | None = None) -> None:
        self._save_state(sha256, "miss", None, None, now)

    def save_error(self, sha256: str, error: OrchestratorError, now: float | None = None) -> None:
        """A failed look-up; a hit already known is kept (a passing fault does not erase knowledge)."""
        if (known := self.lookup(sha256)) is not None and known.state == "hit":
            return
        self._save_state(sha256, "error", error.code, error.message, now)

    def _save_state(
        self, sha256: str, state: str, code: str | None, message: str | None, now: float | None
    ) -> None:
        moment = time.time() if now is None else now
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO lookups (sha256, state, checked, code, message)"
                " VALUES (?, ?, ?, ?, ?)",
                (normal_sha256(sha256), state, moment, code, message),
            )

    # -- update checks -----------------------------------------------------------------------------

    def civitai_models(self) -> dict[int, list[FileRecord]]:
        """Present files known to come from CivitAI, by model id."""
        models: dict[int, list[FileRecord]] = {}
        for record in self.all_files():
            if record.source.kind == "civitai" and record.source.model_id is not None:
                models.setdefault(record.source.model_id, []).append(record)
        return models

    def cached_model(self, model_id: int, max_age: float, now: float | None = None) -> tuple[str, Any] | None:
        """What `GET /api/v1/models/{id}` answered within max_age seconds: ("ok", data) or ("gone", None)."""
        moment = time.time() if now is None else now
        rows = self._query(
            "SELECT state, answer FROM model_checks WHERE model_id = ? AND checked >= ?",
            (model_id, moment - max_age),
        )
        if not rows:
            return None
        return rows[0][0], json.loads(rows[0][1])

    def save_model(self, model_id: int, state: str, answer: Any, now: float | None = None) -> None:
        moment = time.time() if now is None else now
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO model_checks (model_id, checked, state, answer) VALUES (?, ?, ?, ?)",
                (model_id, moment, state, json.dumps(answer)),
            )


def root_key(folder: Path) -> bytes:
    """How a root is named in the index: its absolute path (not resolved: a models folder that is a
    symlink to another disk keeps its own name)."""
    return os.fsencode(os.path.abspath(folder))


def relative_to_root(root: Path, path: Path) -> Path:
    """`path` (absolute or relative to root) relative to root, or an error if it is outside it."""
    base = Path(os.path.abspath(root))
    full = Path(os.path.abspath(base / path))
    try:
        rel = full.relative_to(base)
    except ValueError:
        raise OrchestratorError("outside_roots", f"{text(os.fsencode(path))} is not inside {base}.") from None
    if not rel.parts:
        raise OrchestratorError("not_a_model", f"{base} is a folder, not a model file.")
    return rel


def _record(row: tuple[Any, ...], full: bool) -> FileRecord:
    lookup = _lookup(row[13:24], row[24] if full else None) if row[13] else None
    return FileRecord(
        id=row[0],
        root=Path(os.fsdecode(bytes(row[1]))),
        rel_path=Path(os.fsdecode(bytes(row[2]))),
        model_type=row[3],
        size=row[4],
        mtime_ns=row[5],
        inode=row[6],
        device=row[7],
        sha256=row[8],
        source=Source.from_dict(json.loads(row[9])),
        sidecars=SidecarInfo.from_dict(json.loads(row[10])),
        first_seen=row[11],
        last_seen=row[12],
        lookup=lookup,
    )


def _lookup(values: tuple[Any, ...], record: str | None) -> Lookup:
    state, checked, model_id, version_id, model_name, version_name, model_type, base_model = values[:8]
    published_at, code, message = values[8:11]
    return Lookup(
        state=state,
        checked=checked,
        model_id=model_id,
        version_id=version_id,
        model_name=model_name,
        version_name=version_name,
        model_type=model_type,
        base_model=base_model,
        published_at=published_at,
        code=code,
        message=message,
        record=json.loads(record) if record else None,
    )


def _haystack(record: FileRecord) -> str:
    lookup = record.lookup
    parts = [
        record.display_path,
        record.title or "",
        record.sidecars.version_name or (lookup.version_name if lookup else "") or "",
        " ".join(record.sidecars.trigger_words),
        record.sha256 or "",
    ]
    return "\n".join(parts).casefold()


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
