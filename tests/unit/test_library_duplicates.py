"""Reusing bytes the library has: find a file by its published SHA-256, install it by a hard link."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path

import pytest

from orchestrator.library import (
    LibraryIndex,
    Source,
    duplicates,
    find_existing,
    link_copy,
    link_from_library,
    scan,
)

DATA = b"model bytes " * 1000
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    (root / "lora").mkdir(parents=True)
    (root / "checkpoint").mkdir()
    return root


def test_a_published_hash_finds_the_file_already_there(models: Path, index: LibraryIndex) -> None:
    (models / "lora" / "film.safetensors").write_bytes(DATA)
    scan(index, [("lora", models / "lora")])

    found = find_existing(index, SHA.upper())

    assert found is not None and found.path == models / "lora" / "film.safetensors"
    assert find_existing(index, hashlib.sha256(b"other").hexdigest()) is None


def test_a_file_changed_since_it_was_hashed_is_not_offered(models: Path, index: LibraryIndex) -> None:
    (models / "lora" / "film.safetensors").write_bytes(DATA)
    scan(index, [("lora", models / "lora")])
    (models / "lora" / "film.safetensors").write_bytes(b"edited by hand")

    assert find_existing(index, SHA) is None


def test_link_copy_makes_a_hard_link_and_never_overwrites(models: Path) -> None:
    existing = models / "lora" / "film.safetensors"
    existing.write_bytes(DATA)
    target = models / "checkpoint" / "sub" / "film.safetensors"

    made = link_copy(existing, target)

    assert made.linked and made.code == "linked"
    assert os.stat(target).st_ino == os.stat(existing).st_ino and target.read_bytes() == DATA
    (models / "checkpoint" / "taken.safetensors").write_bytes(b"keep me")
    refused = link_copy(existing, models / "checkpoint" / "taken.safetensors")
    assert refused.code == "target_exists" and not refused.linked
    assert (models / "checkpoint" / "taken.safetensors").read_bytes() == b"keep me"
    gone = link_copy(models / "lora" / "missing.safetensors", models / "checkpoint" / "new.safetensors")
    assert gone.code == "source_missing" and not (models / "checkpoint" / "new.safetensors").exists()


SHARED_MEMORY = Path("/dev/shm")  # Linux's tmpfs: another file system than the tests' on most machines


def test_across_file_systems_the_result_says_so(models: Path) -> None:
    other = SHARED_MEMORY
    if not other.is_dir() or os.stat(other).st_dev == os.stat(models).st_dev:
        pytest.skip("needs a second file system (a tmpfs at /dev/shm)")
    existing = models / "lora" / "film.safetensors"
    existing.write_bytes(DATA)
    with tempfile.TemporaryDirectory(dir=other) as folder:
        target = Path(folder) / "film.safetensors"

        result = link_copy(existing, target)

        assert result.code == "cross_device" and not result.linked and not target.exists()
        assert "another disk" in result.message


@pytest.mark.parametrize(
    ("number", "code"),
    [(errno.EPERM, "links_unsupported"), (errno.EOPNOTSUPP, "links_unsupported"), (errno.EIO, "link_failed")],
)
def test_file_systems_without_hard_links_are_named(number: int, code: str, tmp_path: Path) -> None:
    # FAT and FUSE mounts answer link() with EPERM or EOPNOTSUPP; none can be mounted in a test
    result = duplicates._refused(OSError(number, os.strerror(number)), tmp_path / "a", tmp_path / "b")

    assert result.code == code and not result.linked and len(result.message) > 20


def test_link_from_library_installs_and_records_the_new_file(models: Path, index: LibraryIndex) -> None:
    (models / "lora" / "film.safetensors").write_bytes(DATA)
    index.record_download(models / "lora", "lora", Path("film.safetensors"), SHA, Source.civitai(1, 2))
    target = models / "checkpoint" / "film.safetensors"

    result = link_from_library(index, SHA, models / "checkpoint", "checkpoint", target, Source())

    assert result.linked
    copies = index.by_sha256(SHA)
    assert sorted(r.model_type for r in copies) == ["checkpoint", "lora"]
    assert all(r.source == Source.civitai(1, 2) for r in copies)
    assert [g.wasted_bytes for g in index.duplicates()] == [0]
    missing = link_from_library(index, "ab" * 32, models / "checkpoint", "checkpoint", models / "x", Source())
    assert missing.code == "source_missing"
