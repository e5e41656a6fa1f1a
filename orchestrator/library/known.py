"""The SHA-256 of a file in place, for whoever asks: a workflow's "is this model already there
and is it the same file?", a Hugging Face folder's "is this shard already in place?".

The index is the one place that knows which file has which hash, so it answers first: when it
holds the file with the same size, mtime, inode and device, its hash is the file's and nothing is
read. Otherwise the file is read once; the index learns the hash when its row was waiting for
one (the stat still the same), and a memory cache keeps it while the file keeps its inode, size
and mtime, so a second look at the same workflow reads nothing again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .. import files
from .index import LibraryIndex
from .records import FileRecord, FileStat
from .remove import Roots, root_of


class HashCache:
    """SHA-256 of files in place, kept while the file keeps its device, inode, size and mtime."""

    def __init__(self) -> None:
        self._known: dict[FileStat, str] = {}

    def __call__(self, path: Path) -> str:
        stat = FileStat.of(path.stat())
        if stat not in self._known:
            self._known[stat] = files.sha256_of(path, None, True)
        return self._known[stat]


class NoLibrary:
    """The `Library` port (pipeline/context.py) while no library runs: nothing is known
    beforehand, so files are read (and remembered) and nothing is linked or looked up."""

    def __init__(self) -> None:
        self.sha256_of = HashCache()

    def link_existing(self, sha256: str, target: Path) -> str | None:
        return None

    def civitai_links(self, hashes: list[str]) -> dict[str, str]:
        return {}

    def holding(self, sha256: str) -> str | None:
        return None


class KnownHashes:
    """The index first, then one read of the file."""

    def __init__(self, index: LibraryIndex, roots: Callable[[], Roots]) -> None:
        self.index = index
        self.roots = roots
        self.cache = HashCache()

    def __call__(self, path: Path) -> str:
        now = FileStat.of(path.stat())
        record = self._record(path)
        if record is None or record.stat != now:
            return self.cache(path)  # not indexed, or changed since: the next scan sets it right
        if record.sha256:
            return record.sha256
        digest = self.cache(path)
        if FileStat.of(path.stat()) == now:  # still what the row describes: it may keep the hash
            self.index.set_hash(record.id, digest, only_if_unhashed=True)
        return digest

    def _record(self, path: Path) -> FileRecord | None:
        target = Path(os.path.abspath(path))
        root = root_of(target, self.roots())
        return self.index.get_by_path(root, target.relative_to(root)) if root is not None else None
