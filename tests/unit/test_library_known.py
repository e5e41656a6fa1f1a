"""The SHA-256 of a file in place: the library index answers when it knows the file unchanged,
and otherwise the file is read once and the index learns what it was waiting for."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from orchestrator import files
from orchestrator.library import LibraryIndex, Source, scan
from orchestrator.library.known import KnownHashes
from orchestrator.library.records import FileStat


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CountedReads:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[Path] = []
        real = files.sha256_of

        def counted(path: Path, *args: object, **kwargs: object) -> str:
            self.paths.append(path)
            return real(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(files, "sha256_of", counted)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> CountedReads:
    return CountedReads(monkeypatch)


def test_a_scanned_file_is_answered_from_the_index_without_reading_it(
    loras: Path, index: LibraryIndex, reads: CountedReads
) -> None:
    model = scanned(index, loras, b"lora bytes" * 1000)
    known = known_in(index, loras)
    assert known(model) == sha(model.read_bytes())
    assert reads.paths == []


def test_a_file_changed_since_the_scan_is_read_and_its_real_hash_given(
    loras: Path, index: LibraryIndex, reads: CountedReads
) -> None:
    model = scanned(index, loras, b"old" * 1000)
    with open(model, "r+b") as handle:  # same inode, new bytes
        handle.write(b"new")
    os.utime(model, ns=(1, 1))
    known = known_in(index, loras)
    assert known(model) == sha(model.read_bytes())
    assert known(model) == sha(model.read_bytes())
    assert reads.paths.count(model) == 1  # the second look came from memory


def test_an_indexed_file_without_a_hash_is_read_once_and_the_index_keeps_it(
    loras: Path, index: LibraryIndex, reads: CountedReads
) -> None:
    model = loras / "style.safetensors"
    model.write_bytes(b"never hashed" * 1000)
    index.put_file(
        root_id=index.root_id(loras, "lora"),
        rel_path=b"style.safetensors",
        model_type="lora",
        stat=FileStat.of(model.stat()),
        sha256=None,
        source=Source(),
        sidecars=None,
        sidecar_sig=None,
        now=0.0,
    )
    assert known_in(index, loras)(model) == sha(model.read_bytes())
    record = index.get_by_path(loras, Path("style.safetensors"))
    assert record is not None and record.sha256 == sha(model.read_bytes())
    reads.paths.clear()
    assert known_in(index, loras)(model) == sha(model.read_bytes())  # a new cache: the index answers
    assert reads.paths == []


def test_a_file_outside_every_library_folder_is_still_hashed(
    tmp_path: Path, loras: Path, index: LibraryIndex
) -> None:
    stray = tmp_path / "elsewhere.safetensors"
    stray.write_bytes(b"stray")
    assert known_in(index, loras)(stray) == sha(b"stray")


def scanned(index: LibraryIndex, loras: Path, data: bytes) -> Path:
    """A LoRA placed by hand and found by a scan (so the index holds its hash)."""
    model = loras / "style.safetensors"
    model.write_bytes(data)
    scan(index, [("lora", loras)])
    return model


def known_in(index: LibraryIndex, loras: Path) -> KnownHashes:
    """A fresh KnownHashes (an empty memory) over the LoRA folder."""
    return KnownHashes(index, lambda: [("lora", loras)])
