"""The library index in a real SQLite file: what a download records, the queries, several threads."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.library import LibraryIndex, Source, scan


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_of(call: Callable[..., object], *args: object, **kwargs: object) -> str:
    with pytest.raises(OrchestratorError) as caught:
        call(*args, **kwargs)
    assert len(caught.value.message) > 20
    return caught.value.code


def test_a_download_is_recorded_with_its_hash_and_source_without_reading_it(
    loras: Path, index: LibraryIndex, tmp_path: Path
) -> None:
    data = b"film" * 1000
    (loras / "film.safetensors").write_bytes(data)
    record = {"id": 200, "modelId": 100, "name": "v2", "baseModel": "SDXL 1.0", "model": {"name": "Film"}}

    made = index.record_download(
        loras, "lora", loras / "film.safetensors", sha(data).upper(), Source.civitai(100, 200), record
    )

    assert made.sha256 == sha(data) and made.autov2 == sha(data)[:10].upper()
    assert made.path == loras / "film.safetensors" and made.rel_path == Path("film.safetensors")
    assert made.source == Source.civitai(100, 200) and made.base_model == "SDXL 1.0" and made.title == "Film"
    assert made.lookup is not None and made.lookup.state == "hit" and made.lookup.record == record
    assert sha(data) not in index.pending_lookups()
    # a scan trusts it: same size, mtime and inode, so nothing is read
    result = scan(index, [("lora", loras)])
    assert result.hashed_bytes == 0 and result.unchanged == 1
    # the record survives a restart
    index.close()
    with LibraryIndex.in_state_dir(tmp_path / "state") as reopened:
        assert [r.sha256 for r in reopened.all_files()] == [sha(data)]
        journal = sqlite3.connect(tmp_path / "state" / "library.sqlite3").execute("PRAGMA journal_mode")
        assert journal.fetchone()[0] == "wal"


def test_bad_downloads_records_are_refused_by_name(loras: Path, index: LibraryIndex) -> None:
    (loras / "a.safetensors").write_bytes(b"a")
    good = sha(b"a")

    assert (
        code_of(index.record_download, loras, "lora", Path("a.safetensors"), "abc", Source())
        == "invalid_sha256"
    )
    assert (
        code_of(index.record_download, loras, "lora", Path("missing.safetensors"), good, Source())
        == "not_found"
    )
    assert (
        code_of(index.record_download, loras, "lora", Path("../a.safetensors"), good, Source())
        == "outside_roots"
    )
    assert (
        code_of(index.record_download, loras, "lora", Path("/etc/passwd"), good, Source()) == "outside_roots"
    )
    assert code_of(Source, "ftp") == "invalid_source"
    assert index.all_files() == []  # nothing half-written


def test_links_are_stored_without_their_secrets(loras: Path, index: LibraryIndex) -> None:
    (loras / "x.safetensors").write_bytes(b"x")
    url = "https://user:pw@cdn.example.com/x.safetensors?download=true&token=s3cr3t&X-Amz-Signature=abc"

    made = index.record_download(loras, "lora", Path("x.safetensors"), sha(b"x"), Source.link(url))

    assert made.source.url == "https://cdn.example.com/x.safetensors?download=true"
    files = [index.path, Path(f"{index.path}-wal")]
    raw = b"".join(path.read_bytes() for path in files if path.exists())
    assert b"s3cr3t" not in raw and b"pw@" not in raw


def test_queries_by_hash_type_base_model_and_text(loras: Path, index: LibraryIndex, tmp_path: Path) -> None:
    vae = tmp_path / "models" / "vae"
    vae.mkdir()
    (loras / "film.safetensors").write_bytes(b"film")
    (loras / "film-copy.safetensors").write_bytes(b"film")
    (loras / "anime.safetensors").write_bytes(b"anime")
    (vae / "kl.pt").write_bytes(b"vae")
    scan(index, [("lora", loras), ("vae", vae)])
    index.save_hit(
        sha(b"film"),
        {
            "id": 2,
            "modelId": 1,
            "name": "v1",
            "baseModel": "SDXL 1.0",
            "trainedWords": ["grain"],
            "model": {"name": "Film Look", "type": "LORA"},
        },
    )
    index.save_hit(sha(b"anime"), {"id": 4, "modelId": 3, "name": "v9", "baseModel": "Pony"})

    assert sorted(r.name for r in index.by_sha256(sha(b"film"))) == [
        "film-copy.safetensors",
        "film.safetensors",
    ]
    assert [r.name for r in index.by_autov2(sha(b"anime")[:10].upper())] == ["anime.safetensors"]
    assert [r.name for r in index.find(model_type="vae")] == ["kl.pt"]
    assert sorted(r.name for r in index.find(base_model="sdxl 1.0")) == [
        "film-copy.safetensors",
        "film.safetensors",
    ]
    assert sorted(r.name for r in index.find(text_filter="FILM LOOK")) == [
        "film-copy.safetensors",
        "film.safetensors",
    ]
    assert [r.name for r in index.find(model_type="lora", text_filter="v9")] == ["anime.safetensors"]
    assert [g.sha256 for g in index.duplicates()] == [sha(b"film")]
    assert code_of(index.by_sha256, "not-a-hash") == "invalid_sha256"
    assert code_of(index.by_autov2, "xyz") == "invalid_hash"
    # one record in full carries CivitAI's record; the listing does not
    one = index.find(text_filter="anime")[0]
    assert one.lookup is not None and one.lookup.record is None
    full = index.get(one.id)
    assert (
        full is not None
        and full.lookup is not None
        and full.lookup.record == {"id": 4, "modelId": 3, "name": "v9", "baseModel": "Pony"}
    )
    assert full.as_dict(full=True)["lookup"]["record"]["name"] == "v9"
    assert full.source == Source.civitai(3, 4, found_by="lookup")
    assert index.get(10_000) is None


def test_misses_are_remembered_for_a_day_and_errors_retried_sooner(loras: Path, index: LibraryIndex) -> None:
    for name in ("a", "b", "c"):
        (loras / f"{name}.safetensors").write_bytes(name.encode())
    scan(index, [("lora", loras)])
    now = 1_000_000.0
    index.save_miss(sha(b"a"), now=now)
    index.save_error(
        sha(b"b"), OrchestratorError("civitai_timeout", "CivitAI did not answer in time."), now=now
    )
    index.save_hit(sha(b"c"), {"id": 2, "modelId": 1}, now=now)
    index.save_error(
        sha(b"c"), OrchestratorError("civitai_timeout", "CivitAI did not answer in time."), now=now
    )

    assert index.pending_lookups(now=now + 60) == []
    assert index.pending_lookups(now=now + 11 * 60) == [sha(b"b")]
    assert sorted(index.pending_lookups(now=now + 25 * 3600)) == sorted([sha(b"a"), sha(b"b")])
    kept = index.lookup(sha(b"c"))
    assert kept is not None and kept.state == "hit"  # a passing fault does not erase a hit
    failed = index.lookup(sha(b"b"))
    assert failed is not None and (failed.state, failed.code) == ("error", "civitai_timeout")


def test_several_threads_write_and_read_at_once(loras: Path, index: LibraryIndex) -> None:
    for n in range(40):
        (loras / f"m{n}.safetensors").write_bytes(str(n).encode())
    errors: list[BaseException] = []

    def record(part: int) -> None:
        try:
            for n in range(part, 40, 4):
                data = str(n).encode()
                index.record_download(loras, "lora", Path(f"m{n}.safetensors"), sha(data), Source())
                index.save_miss(sha(data))
                index.all_files()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(part,)) for part in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(index.all_files()) == 40 and index.pending_lookups() == []
