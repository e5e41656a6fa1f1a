"""The library scan: list every root, hash what is new or changed, and bring the index up to date.

A scan has three steps.
1. List (stat only): every model file under every root, recursively. Folders that are
   symbolic links are followed, each real folder once (no loops); hidden folders and
   the staging folder are skipped; a root inside another root is listed as its own.
2. Compare with the index, in one transaction: a file whose size, mtime, inode and
   device are unchanged keeps its hash; one found under a new path with the same
   inode is a rename (moved: its record, source and look-up state go with it) or a
   hard link (a copy that costs nothing, so it needs no hashing either); everything
   else waits, listed without a hash, for step 3. Files not found any more are hidden
   at once and deleted when the scan finishes, so a file moved to another disk (new
   inode, same bytes) is still recognised by its hash in step 3.
3. Hash, one file after another (hashing.py: big blocks, paced while downloads run).
   Each result is saved as it comes, so a cancelled scan keeps its work. A new file
   whose hash is that of a file gone since the last scan is that file, moved.

`start_scan` runs a scan in a background thread; `scan` is the same work, blocking.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import OrchestratorError
from . import sidecars
from .hashing import Outcome, Pacing, Reader, hash_file
from .index import LibraryIndex, StoredFile
from .naming import SidecarTest, is_model_name, is_skipped_folder, never_sidecar, sidecars_by_stem, stem, text
from .records import FileStat, SidecarInfo, Source

Roots = Iterable[tuple[str, Path]]
PROGRESS_EVERY = 0.1  # seconds between two progress reports while hashing


@dataclass(frozen=True)
class ScanProgress:
    phase: str  # "listing", "hashing", "done" or "cancelled"
    files_seen: int = 0  # model files listed
    files_done: int = 0  # of the files to hash
    files_total: int = 0
    bytes_done: int = 0  # of the bytes to hash
    bytes_total: int = 0
    current: str | None = None  # the file being hashed


@dataclass
class ScanResult:
    files: int = 0  # model files in the library after the scan
    unchanged: int = 0
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)  # (from, to)
    removed: list[str] = field(default_factory=list)
    unstable: list[str] = field(default_factory=list)  # changed while being hashed: hashed next time
    problems: list[str] = field(default_factory=list)  # unreadable folders or files, broken sidecars
    hashed_files: int = 0
    hashed_bytes: int = 0
    rested: float = 0.0  # seconds the hasher paused for downloads
    cancelled: bool = False


ProgressCallback = Callable[[ScanProgress], None]


class ScanHandle:
    """A scan running in a background thread."""

    def __init__(self, work: Callable[[threading.Event, ProgressCallback], ScanResult]) -> None:
        self._cancel = threading.Event()
        self._result: ScanResult | None = None
        self._error: BaseException | None = None
        self.progress = ScanProgress("listing")
        self._thread = threading.Thread(target=self._run, args=(work,), name="library-scan", daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[threading.Event, ProgressCallback], ScanResult]) -> None:
        try:
            self._result = work(self._cancel, self._note)
        except BaseException as exc:  # handed to whoever waits
            self._error = exc

    def _note(self, progress: ScanProgress) -> None:
        self.progress = progress

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> ScanResult | None:
        """The result, or None if the scan is still running after `timeout` seconds."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            return None
        if self._error is not None:
            raise self._error
        return self._result


def start_scan(
    index: LibraryIndex,
    roots: Roots,
    *,
    is_sidecar: SidecarTest = never_sidecar,
    downloads_active: Callable[[], bool] = lambda: False,
    on_progress: ProgressCallback | None = None,
    pacing: Pacing | None = None,
) -> ScanHandle:
    """Scan in a background thread; `on_progress` is called from that thread."""
    folders = list(roots)

    def work(cancel: threading.Event, note: ProgressCallback) -> ScanResult:
        def report(progress: ScanProgress) -> None:
            note(progress)
            if on_progress:
                on_progress(progress)

        return scan(
            index,
            folders,
            is_sidecar=is_sidecar,
            downloads_active=downloads_active,
            on_progress=report,
            pacing=pacing,
            cancel=cancel,
        )

    return ScanHandle(work)


def scan(
    index: LibraryIndex,
    roots: Roots,
    *,
    is_sidecar: SidecarTest = never_sidecar,
    downloads_active: Callable[[], bool] = lambda: False,
    on_progress: ProgressCallback | None = None,
    pacing: Pacing | None = None,
    cancel: threading.Event | None = None,
) -> ScanResult:
    """Blocking: bring the index in line with the roots. One scan at a time per index."""
    if not index.scan_lock.acquire(blocking=False):
        raise OrchestratorError(
            "scan_running", "A library scan is already running; wait for it to finish.", 409
        )
    try:
        scanner = _Scanner(
            index,
            list(roots),
            is_sidecar,
            downloads_active,
            on_progress or (lambda progress: None),
            pacing or Pacing(),
            cancel or threading.Event(),
        )
        return scanner.run()
    finally:
        index.scan_lock.release()


# -- listing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Root:
    id: int
    model_type: str
    folder: bytes  # absolute


@dataclass(frozen=True)
class _Found:
    root: _Root
    rel: bytes  # relative to the root, "/"-separated
    stat: FileStat
    folder: bytes  # the folder holding it (absolute)
    name: bytes
    sidecars: tuple[bytes, ...]  # names of its sidecars in that folder

    @property
    def path(self) -> bytes:
        return os.path.join(self.folder, self.name)

    @property
    def shown(self) -> str:
        return text(self.path)


def _list(
    roots: list[_Root], is_sidecar: SidecarTest, cancel: threading.Event, problems: list[str]
) -> list[_Found]:
    found: list[_Found] = []
    owners: dict[tuple[int, int], _Root] = {}
    usable = []
    for root in roots:
        try:
            info = os.stat(root.folder)
        except OSError as exc:
            problems.append(f"{text(root.folder)}: {exc.strerror or 'cannot be read'}; nothing listed there")
            continue
        key = (info.st_dev, info.st_ino)
        if key not in owners:  # the same folder given twice (for two types): the first type wins
            owners[key] = root
            usable.append((root, key))
    visited = set(owners)
    for root, _ in usable:
        stack = [(root.folder, b"")]
        while stack and not cancel.is_set():
            folder, rel = stack.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
            except OSError as exc:
                problems.append(f"{text(folder)}: {exc.strerror or 'cannot be listed'}")
                continue
            extras_of = sidecars_by_stem(entry.name for entry in entries)
            for entry in entries:
                try:
                    if entry.is_dir():
                        if is_skipped_folder(entry.name):
                            continue
                        info = entry.stat()
                        key = (info.st_dev, info.st_ino)
                        if key not in visited:  # a folder reached twice, or another root's own folder
                            visited.add(key)
                            stack.append((entry.path, rel + entry.name + b"/"))
                    elif entry.is_file() and is_model_name(entry.name, is_sidecar):
                        stat = FileStat.of(entry.stat())
                        extras = tuple(extras_of.get(stem(entry.name), ()))
                        found.append(_Found(root, rel + entry.name, stat, folder, entry.name, extras))
                except OSError as exc:
                    problems.append(f"{text(entry.path)}: {exc.strerror or 'cannot be read'}")
    return found


# -- the scan --------------------------------------------------------------------------------------


@dataclass
class _Pending:
    file_id: int
    found: _Found
    previous: StoredFile | None  # the row at this path before, when the file changed in place
    info: SidecarInfo | None


class _Scanner:
    def __init__(
        self,
        index: LibraryIndex,
        roots: list[tuple[str, Path]],
        is_sidecar: SidecarTest,
        downloads_active: Callable[[], bool],
        on_progress: ProgressCallback,
        pacing: Pacing,
        cancel: threading.Event,
    ) -> None:
        self.index = index
        self.roots = roots
        self.is_sidecar = is_sidecar
        self.on_progress = on_progress
        self.cancel = cancel
        self.reader = Reader(pacing, downloads_active, cancel)
        self.result = ScanResult()
        self.now = time.time()
        self.progress = ScanProgress("listing")
        self._reported = 0.0
        self._vanished: dict[int, StoredFile] = {}
        self._folders: dict[int, Path] = {}
        self._known_sources: dict[str, Source] = {}

    def run(self) -> ScanResult:
        self._report(self.progress)
        roots = [
            _Root(self.index.root_id(folder, kind), kind, _absolute(folder)) for kind, folder in self.roots
        ]
        found = _list(roots, self.is_sidecar, self.cancel, self.result.problems)
        if self.cancel.is_set():
            return self._finish(cancelled=True)
        self.progress = replace(self.progress, files_seen=len(found))
        self._folders = self.index.root_folders()
        pending = self._compare(found)
        self._hash_all(pending)
        return self._finish(cancelled=self.cancel.is_set())

    # step 2: what the listing says, applied in one transaction

    def _compare(self, found: list[_Found]) -> list[_Pending]:
        # One transaction from the snapshot on: a download recorded meanwhile waits, and is not lost.
        with self.index.batch():
            return self._compare_with(found, self.index.snapshot())

    def _compare_with(self, found: list[_Found], rows: list[StoredFile]) -> list[_Pending]:
        by_path = {(row.root_id, row.rel_path): row for row in rows}
        self._known_sources = {row.sha256: row.source for row in rows if row.sha256 and row.source.known}
        matched = {by_path[key].id for key in ((f.root.id, f.rel) for f in found) if key in by_path}
        self._vanished = {row.id: row for row in rows if row.id not in matched}
        by_inode: dict[tuple[int, int], list[StoredFile]] = {}
        for stored in rows:
            if stored.sha256:
                by_inode.setdefault((stored.stat.device, stored.stat.inode), []).append(stored)
        pending: list[_Pending] = []
        unchanged: list[int] = []
        self.index.mark_missing(self._vanished)
        for item in found:
            row = by_path.get((item.root.id, item.rel))
            if row is not None and row.stat == item.stat and row.sha256:
                unchanged.append(row.id)
                self._refresh_sidecars(item, row)
            elif row is not None:
                pending.append(self._changed(item, row))
            else:
                same_inode = by_inode.get((item.stat.device, item.stat.inode), [])
                twin = next((r for r in same_inode if r.stat == item.stat), None)
                if twin is not None:
                    self._same_inode(item, twin)
                else:
                    pending.append(self._new(item))
        self.index.touch(unchanged, self.now)
        self.result.unchanged = len(unchanged)
        return sorted(pending, key=lambda p: p.found.path)

    def _refresh_sidecars(self, item: _Found, row: StoredFile) -> None:
        signature = sidecars.signature(item.folder, item.name, item.sidecars)
        if signature == row.sidecar_sig:
            return
        info = self._read_sidecars(item)
        self.index.set_sidecars(row.id, info, signature)
        source = self._learn(row.sha256, info, row.source)
        if source != row.source:
            self.index.set_hash(row.id, row.sha256, source)

    def _changed(self, item: _Found, row: StoredFile) -> _Pending:
        if row.stat != item.stat:
            self.result.changed.append(item.shown)
        info = self._read_sidecars(item)
        file_id = self._put(item, None, row.source, info, file_id=row.id)
        return _Pending(file_id, item, row, info)

    def _same_inode(self, item: _Found, twin: StoredFile) -> None:
        """A known inode at a new path: the same bytes, so no hashing. Renamed if the old path is gone."""
        info = self._read_sidecars(item)
        if twin.id in self._vanished:
            del self._vanished[twin.id]
            self._put(item, twin.sha256, self._learn(twin.sha256, info, twin.source), info, file_id=twin.id)
            self.result.moved.append((self._shown(twin), item.shown))
            return
        inherited = replace(twin.source, found_by="copy") if twin.source.known else twin.source
        self._put(item, twin.sha256, self._learn(twin.sha256, info, inherited), info)
        self.result.added.append(item.shown)

    def _new(self, item: _Found) -> _Pending:
        info = self._read_sidecars(item)
        file_id = self._put(item, None, Source(), info)
        self.result.added.append(item.shown)
        return _Pending(file_id, item, None, info)

    def _put(
        self, item: _Found, sha256: str | None, source: Source, info: SidecarInfo, file_id: int | None = None
    ) -> int:
        return self.index.put_file(
            root_id=item.root.id,
            rel_path=item.rel,
            model_type=item.root.model_type,
            stat=item.stat,
            sha256=sha256,
            source=source,
            sidecars=info,
            sidecar_sig=sidecars.signature(item.folder, item.name, item.sidecars),
            now=self.now,
            file_id=file_id,
        )

    def _read_sidecars(self, item: _Found) -> SidecarInfo:
        info = sidecars.read(item.folder, item.name, item.sidecars)
        self.result.problems.extend(f"{text(item.folder)}/{problem}" for problem in info.problems)
        return info

    def _learn(self, sha256: str | None, info: SidecarInfo, source: Source) -> Source:
        """What a file's sidecars add once its hash is known: a CivitAI record that lists this hash
        counts as a look-up hit (no need to ask CivitAI), and names the source if none is known."""
        if not sha256 or not info.describes(sha256):
            return source
        if info.record is not None and sha256 in info.listed_sha256:
            known = self.index.lookup(sha256)
            if known is None or known.state != "hit":
                self.index.save_hit(sha256, info.record, now=self.now)
        if not source.known and info.model_id is not None and info.version_id is not None:
            return Source.civitai(info.model_id, info.version_id, found_by="sidecar")
        return source

    # step 3: hashing

    def _hash_all(self, pending: list[_Pending]) -> None:
        total = sum(p.found.stat.size for p in pending)
        self.progress = replace(self.progress, phase="hashing", files_total=len(pending), bytes_total=total)
        self._report(self.progress, force=True)
        for item in pending:
            if self.cancel.is_set():
                return
            self._hash_one(item)
            self.progress = replace(self.progress, files_done=self.progress.files_done + 1, current=None)
            self._report(self.progress, force=True)

    def _hash_one(self, item: _Pending) -> None:
        self.progress = replace(self.progress, current=item.found.shown)
        outcome = hash_file(item.found.path, item.found.stat, self.reader, self.cancel, self._count)
        if outcome.outcome is Outcome.HASHED and outcome.sha256:
            self.result.hashed_files += 1
            self._hashed(item, outcome.sha256)
        elif outcome.outcome is Outcome.CHANGED:
            self.result.unstable.append(item.found.shown)
        elif outcome.outcome is Outcome.VANISHED:
            self.index.delete_files([item.file_id])
            self._drop_from_added(item.found.shown)
            self.result.removed.append(item.found.shown)
        elif outcome.outcome is Outcome.UNREADABLE:
            self.result.problems.append(f"{item.found.shown}: {outcome.detail}")

    def _count(self, size: int) -> None:
        self.result.hashed_bytes += size
        self.progress = replace(self.progress, bytes_done=self.progress.bytes_done + size)
        self._report(self.progress)

    def _hashed(self, item: _Pending, sha256: str) -> None:
        info = item.info or SidecarInfo()
        previous = item.previous
        if previous is None:
            ghost = next((row for row in self._vanished.values() if row.sha256 == sha256), None)
            if ghost is not None:  # moved here from a path that is gone (e.g. from another disk)
                del self._vanished[ghost.id]
                self._put(item.found, sha256, self._learn(sha256, info, ghost.source), info, file_id=ghost.id)
                self._drop_from_added(item.found.shown)
                self.result.moved.append((self._shown(ghost), item.found.shown))
                return
            source = self._learn(sha256, info, self._copied_source(sha256))
        elif previous.sha256 == sha256:  # touched, or hashed after an unfinished scan: same bytes
            source = self._learn(sha256, info, previous.source)
        else:  # new bytes under an old name: what was known about the old bytes no longer holds
            source = self._learn(sha256, info, self._copied_source(sha256))
        # Only if still unhashed: a download recorded meanwhile (with its own source) wins.
        self.index.set_hash(item.file_id, sha256, source, only_if_unhashed=True)
        if source.known:
            self._known_sources.setdefault(sha256, source)

    def _copied_source(self, sha256: str) -> Source:
        known = self._known_sources.get(sha256)
        return replace(known, found_by="copy") if known else Source()

    def _drop_from_added(self, shown: str) -> None:
        if shown in self.result.added:
            self.result.added.remove(shown)

    def _shown(self, row: StoredFile) -> str:
        folder = self._folders.get(row.root_id)
        return text(os.path.join(os.fsencode(folder), row.rel_path)) if folder else text(row.rel_path)

    # the end

    def _finish(self, cancelled: bool) -> ScanResult:
        if not cancelled and self._vanished:
            # Gone for good; a cancelled scan keeps them hidden, so the next one can still match a move.
            self.index.delete_files(self._vanished)
            self.result.removed.extend(self._shown(row) for row in self._vanished.values())
        self.result.cancelled = cancelled
        self.result.rested = self.reader.rested
        self.result.files = self.index.count()
        self.progress = replace(self.progress, phase="cancelled" if cancelled else "done", current=None)
        self._report(self.progress, force=True)
        return self.result

    def _report(self, progress: ScanProgress, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._reported >= PROGRESS_EVERY:
            self._reported = now
            self.on_progress(progress)


def _absolute(folder: Path) -> bytes:
    return os.fsencode(os.path.abspath(folder))
