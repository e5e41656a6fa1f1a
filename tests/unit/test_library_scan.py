"""The library scan on a real models folder: what it lists, what it hashes, what it notices."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.library import LibraryIndex, Pacing, Source, scan, start_scan
from orchestrator.library.scan import ScanHandle, ScanProgress

KiB = 1024


def blob(size: int, seed: int) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (size // 32)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    for folder in ("loras/SDXL", "checkpoints", "vae"):
        (root / folder).mkdir(parents=True)
    return root


def roots_of(models: Path) -> list[tuple[str, Path]]:
    return [("lora", models / "loras"), ("checkpoint", models / "checkpoints"), ("vae", models / "vae")]


class Progress:
    """Collects what the progress callback says; bytes hashed are the last report's."""

    def __init__(self) -> None:
        self.reports: list[ScanProgress] = []

    def __call__(self, progress: ScanProgress) -> None:
        self.reports.append(progress)

    @property
    def bytes_done(self) -> int:
        return self.reports[-1].bytes_done

    @property
    def last(self) -> ScanProgress:
        return self.reports[-1]


def listed(index: LibraryIndex) -> dict[str, str | None]:
    return {str(r.rel_path): r.sha256 for r in index.all_files()}


def test_first_scan_lists_every_model_with_its_hash_and_nothing_else(
    models: Path, index: LibraryIndex
) -> None:
    film, base, vae = blob(300 * KiB, 1), blob(200 * KiB, 2), blob(64 * KiB, 3)
    (models / "loras/SDXL/film.safetensors").write_bytes(film)
    (models / "checkpoints/base.ckpt").write_bytes(base)
    (models / "checkpoints/base.yaml").write_text("model: {}")  # a config beside a checkpoint
    (models / "vae/kl-f8.pt").write_bytes(vae)
    (models / "loras/film.txt").write_text("notes")
    (models / "loras/.hidden.safetensors").write_bytes(b"x" * 100)
    (models / "loras/partial.safetensors.aria2").write_bytes(b"control")
    (models / "loras/.staging/abc123").mkdir(parents=True)
    (models / "loras/.staging/abc123/half.safetensors").write_bytes(b"half")
    progress = Progress()

    result = scan(index, roots_of(models), on_progress=progress)

    assert listed(index) == {
        "SDXL/film.safetensors": sha(film),
        "base.ckpt": sha(base),
        "kl-f8.pt": sha(vae),
    }
    assert {r.model_type for r in index.all_files()} == {"lora", "checkpoint", "vae"}
    assert progress.last.phase == "done"
    assert progress.bytes_done == progress.last.bytes_total == len(film) + len(base) + len(vae)
    assert (progress.last.files_done, progress.last.files_total) == (3, 3)
    assert result.hashed_bytes == len(film) + len(base) + len(vae) and not result.cancelled
    record = index.by_sha256(sha(film))[0]
    assert record.autov2 == sha(film)[:10].upper()
    assert record.size == len(film) and record.source == Source()
    assert record.inode == os.stat(models / "loras/SDXL/film.safetensors").st_ino


def test_the_caller_can_call_more_names_sidecars(models: Path, index: LibraryIndex) -> None:
    (models / "loras/a.safetensors").write_bytes(b"a" * 100)
    (models / "loras/a.bin").write_bytes(b"b" * 100)

    scan(index, roots_of(models), is_sidecar=lambda name: name.endswith(".bin"))

    assert list(listed(index)) == ["a.safetensors"]


def test_second_scan_with_nothing_changed_hashes_nothing(models: Path, index: LibraryIndex) -> None:
    for n in range(2000):
        (models / "loras" / f"lora-{n:04}.safetensors").write_bytes(n.to_bytes(4, "big") * 8)
    first = Progress()
    scan(index, roots_of(models), on_progress=first)
    assert first.bytes_done == 2000 * 32

    again = Progress()
    result = scan(index, roots_of(models), on_progress=again)

    assert again.bytes_done == 0 and again.last.bytes_total == 0 and again.last.files_total == 0
    assert result.hashed_files == 0 and result.unchanged == 2000 and result.files == 2000
    assert not (result.added or result.changed or result.moved or result.removed)


def test_rescan_notices_added_changed_renamed_copied_and_deleted_files(
    models: Path, index: LibraryIndex
) -> None:
    keep, edit, rename, gone = blob(40 * KiB, 10), blob(40 * KiB, 11), blob(40 * KiB, 12), blob(40 * KiB, 13)
    for name, data in (("keep", keep), ("edit", edit), ("rename", rename), ("gone", gone)):
        (models / "loras" / f"{name}.safetensors").write_bytes(data)
    scan(index, roots_of(models))
    renamed_id = index.by_sha256(sha(rename))[0].id
    index.save_hit(sha(rename), {"id": 22, "modelId": 11, "name": "v1", "model": {"name": "Renamed"}})

    edited = blob(50 * KiB, 99)
    (models / "loras/edit.safetensors").write_bytes(edited)  # changed in place: new size and mtime
    os.rename(models / "loras/rename.safetensors", models / "loras/SDXL/renamed.safetensors")
    shutil.copyfile(models / "loras/keep.safetensors", models / "checkpoints/keep-copy.safetensors")
    (models / "loras/gone.safetensors").unlink()
    new = blob(30 * KiB, 14)
    (models / "vae/new.safetensors").write_bytes(new)
    progress = Progress()

    result = scan(index, roots_of(models), on_progress=progress)

    assert listed(index) == {
        "keep.safetensors": sha(keep),
        "edit.safetensors": sha(edited),
        "SDXL/renamed.safetensors": sha(rename),
        "keep-copy.safetensors": sha(keep),
        "new.safetensors": sha(new),
    }
    # only the changed, the copied and the new file were read; the rename kept its inode
    assert progress.bytes_done == len(edited) + len(keep) + len(new)
    moved = index.by_sha256(sha(rename))[0]
    assert moved.id == renamed_id and moved.source.kind == "civitai" and moved.source.version_id == 22
    assert moved.lookup is not None and moved.lookup.state == "hit"
    assert [name.rsplit("/", 1)[-1] for name in result.removed] == ["gone.safetensors"]
    assert [(a.rsplit("/", 1)[-1], b.rsplit("/", 1)[-1]) for a, b in result.moved] == [
        ("rename.safetensors", "renamed.safetensors")
    ]
    assert sorted(p.rsplit("/", 1)[-1] for p in result.added) == ["keep-copy.safetensors", "new.safetensors"]
    assert [p.rsplit("/", 1)[-1] for p in result.changed] == ["edit.safetensors"]
    assert not index.by_sha256(sha(gone))


def test_a_file_moved_to_another_folder_by_copy_keeps_its_record_and_source(
    models: Path, index: LibraryIndex
) -> None:
    data = blob(20 * KiB, 5)
    (models / "loras/film.safetensors").write_bytes(data)
    index.record_download(models / "loras", "lora", Path("film.safetensors"), sha(data), Source.civitai(1, 2))
    before = index.by_sha256(sha(data))[0]
    # copy then delete (as a move across disks does): a new inode, the same bytes
    shutil.copyfile(models / "loras/film.safetensors", models / "checkpoints/film.safetensors")
    (models / "loras/film.safetensors").unlink()

    result = scan(index, roots_of(models))

    after = index.by_sha256(sha(data))
    assert [str(r.rel_path) for r in after] == ["film.safetensors"] and after[0].model_type == "checkpoint"
    assert after[0].id == before.id and after[0].first_seen == before.first_seen
    assert after[0].source == Source.civitai(1, 2)
    assert len(result.moved) == 1 and not result.removed and not result.added


def test_duplicates_are_found_and_hard_links_cost_nothing(models: Path, index: LibraryIndex) -> None:
    data, single = blob(64 * KiB, 7), blob(8 * KiB, 8)
    (models / "loras/a.safetensors").write_bytes(data)
    shutil.copyfile(models / "loras/a.safetensors", models / "loras/SDXL/a-copy.safetensors")
    os.link(models / "loras/a.safetensors", models / "checkpoints/a-link.safetensors")
    (models / "vae/single.pt").write_bytes(single)
    progress = Progress()

    scan(index, roots_of(models), on_progress=progress)

    groups = index.duplicates()
    assert [g.sha256 for g in groups] == [sha(data)]
    assert sorted(str(r.rel_path) for r in groups[0].files) == [
        "SDXL/a-copy.safetensors",
        "a-link.safetensors",
        "a.safetensors",
    ]
    assert groups[0].wasted_bytes == len(data)  # the hard link shares the bytes; the copy does not


def test_odd_file_names_are_listed_hashed_and_found(models: Path, index: LibraryIndex) -> None:
    folder = os.fsencode(models / "loras")
    odd = [b"bad-\xff-bytes.safetensors", b"new\nline.safetensors", b"  spaced  name .safetensors"]
    for n, name in enumerate(odd):
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(blob(4 * KiB, 100 + n))

    scan(index, roots_of(models))
    second = scan(index, roots_of(models))

    records = index.all_files()
    assert sorted(os.fsencode(r.rel_path) for r in records) == sorted(odd)
    assert all(r.path.exists() and r.sha256 == sha(r.path.read_bytes()) for r in records)
    assert second.hashed_files == 0
    shown = index.find(text_filter="bad-")
    assert [r.name for r in shown] == ["bad-\ufffd-bytes.safetensors"]


def test_sidecars_are_read_and_a_broken_one_is_noted(models: Path, index: LibraryIndex) -> None:
    data = blob(16 * KiB, 20)
    (models / "loras/film.safetensors").write_bytes(data)
    record = {
        "id": 200,
        "modelId": 100,
        "name": "v2.0",
        "baseModel": "SDXL 1.0",
        "trainedWords": ["vintage photo", "film grain"],
        "model": {"name": "Film Look", "type": "LORA"},
        "files": [{"name": "film.safetensors", "hashes": {"SHA256": sha(data).upper()}}],
    }
    (models / "loras/film.civitai.info").write_text(json.dumps(record))
    (models / "loras/film.json").write_text(json.dumps({"activation text": "film look, grainy"}))
    (models / "loras/film.preview.png").write_bytes(b"\x89PNG")
    (models / "loras/other.safetensors").write_bytes(blob(8 * KiB, 21))
    (models / "loras/other.json").write_text("{not json")

    result = scan(index, roots_of(models))

    film = index.by_sha256(sha(data))[0]
    assert film.sidecars.files == ("film.civitai.info", "film.json", "film.preview.png")
    assert film.sidecars.trigger_words == ("film look", "grainy")  # A1111's activation text wins
    assert (film.sidecars.model_name, film.sidecars.version_name) == ("Film Look", "v2.0")
    assert film.base_model == "SDXL 1.0" and film.sidecars.preview == "film.preview.png"
    # the record lists this file's hash: it counts as CivitAI's answer, no need to ask
    assert film.source == Source.civitai(100, 200, found_by="sidecar")
    assert film.lookup is not None and film.lookup.state == "hit"
    assert sha(data) not in index.pending_lookups()
    other = next(r for r in index.all_files() if r.name == "other.safetensors")
    assert other.sidecars.problems == ("other.json: not JSON",)
    assert any("other.json: not JSON" in problem for problem in result.problems)


def test_civitai_browser_ids_in_the_user_metadata_name_the_source(models: Path, index: LibraryIndex) -> None:
    data = blob(16 * KiB, 25)
    (models / "loras/film.safetensors").write_bytes(data)
    user = {"activation text": "film", "modelId": 100, "modelVersionId": 200, "sha256": sha(data).upper()}
    (models / "loras/film.json").write_text(json.dumps(user))

    scan(index, roots_of(models))

    assert index.all_files()[0].source == Source.civitai(100, 200, found_by="sidecar")


def test_a_sidecar_record_for_other_bytes_is_not_trusted(models: Path, index: LibraryIndex) -> None:
    (models / "loras/film.safetensors").write_bytes(blob(16 * KiB, 30))
    record = {"id": 200, "modelId": 100, "files": [{"hashes": {"SHA256": "AB" * 32}}]}
    (models / "loras/film.civitai.info").write_text(json.dumps(record))

    scan(index, roots_of(models))

    film = index.all_files()[0]
    assert film.source == Source() and film.lookup is None


def test_a_changed_sidecar_is_read_again_without_hashing_the_model(models: Path, index: LibraryIndex) -> None:
    (models / "loras/film.safetensors").write_bytes(blob(16 * KiB, 40))
    scan(index, roots_of(models))
    (models / "loras/film.json").write_text(json.dumps({"activation text": "shiny", "sd version": "SDXL"}))

    result = scan(index, roots_of(models))

    film = index.all_files()[0]
    assert film.sidecars.trigger_words == ("shiny",) and film.base_model == "SDXL"
    assert result.hashed_files == 0


def test_a_file_that_grows_while_it_is_hashed_gets_no_hash(models: Path, index: LibraryIndex) -> None:
    growing = models / "loras/growing.safetensors"
    growing.write_bytes(blob(256 * KiB, 50))

    def download_running() -> bool:  # asked while the file is read: the copy goes on meanwhile
        with open(growing, "ab") as handle:
            handle.write(b"more bytes")
        return False

    result = scan(
        index, roots_of(models), downloads_active=download_running, pacing=Pacing(block_size=64 * KiB)
    )

    assert [p.rsplit("/", 1)[-1] for p in result.unstable] == ["growing.safetensors"]
    assert listed(index) == {"growing.safetensors": None}  # listed, but no hash for bytes that changed
    again = scan(index, roots_of(models))
    assert listed(index) == {"growing.safetensors": sha(growing.read_bytes())} and again.hashed_files == 1


def test_a_file_deleted_while_it_is_hashed_leaves_the_index(models: Path, index: LibraryIndex) -> None:
    doomed = models / "loras/doomed.safetensors"
    doomed.write_bytes(blob(256 * KiB, 60))

    def delete_it() -> bool:
        doomed.unlink(missing_ok=True)
        return False

    result = scan(index, roots_of(models), downloads_active=delete_it, pacing=Pacing(block_size=64 * KiB))

    assert listed(index) == {}
    assert [p.rsplit("/", 1)[-1] for p in result.removed] == ["doomed.safetensors"]


def test_a_download_recorded_while_the_scan_hashes_that_file_keeps_its_source(
    models: Path, index: LibraryIndex
) -> None:
    data = blob(256 * KiB, 65)
    (models / "loras/film.safetensors").write_bytes(data)
    recorded: list[bool] = []

    def download_finishing() -> bool:  # the app records the finished download while the scan reads it
        if not recorded:
            recorded.append(True)
            index.record_download(
                models / "loras", "lora", Path("film.safetensors"), sha(data), Source.civitai(1, 2)
            )
        return False

    scan(index, roots_of(models), downloads_active=download_finishing, pacing=Pacing(block_size=64 * KiB))

    (film,) = index.all_files()
    assert film.sha256 == sha(data) and film.source == Source.civitai(1, 2) and recorded


def test_while_downloads_run_the_hasher_rests_between_blocks(models: Path, index: LibraryIndex) -> None:
    (models / "loras/big.safetensors").write_bytes(blob(512 * KiB, 70))
    (models / "loras/other.safetensors").write_bytes(blob(512 * KiB, 71))
    pacing = Pacing(block_size=64 * KiB, busy_share=0.5, busy_rate=64 * 1024 * 1024)
    busy = scan(index, [("lora", models / "loras")], downloads_active=lambda: True, pacing=pacing)
    (models / "loras/big.safetensors").unlink()
    (models / "loras/third.safetensors").write_bytes(blob(512 * KiB, 72))
    idle = scan(index, [("lora", models / "loras")], downloads_active=lambda: False, pacing=pacing)

    assert busy.rested > 0 and busy.hashed_files == 2  # it rested, and still hashed everything
    assert idle.rested == 0 and idle.hashed_files == 1


def test_a_scan_in_the_background_can_be_cancelled_and_keeps_its_work(
    models: Path, index: LibraryIndex
) -> None:
    for n in range(4):
        (models / "loras" / f"m{n}.safetensors").write_bytes(blob(128 * KiB, 80 + n))
    started: list[ScanHandle] = []
    ready, done_one = threading.Event(), threading.Event()

    def on_progress(progress: ScanProgress) -> None:
        if progress.files_done >= 1 and not done_one.is_set():
            ready.wait(10)  # the handle exists once start_scan has returned
            started[0].cancel()
            done_one.set()

    started.append(start_scan(index, roots_of(models), on_progress=on_progress))
    ready.set()
    result = started[0].wait(timeout=60)

    assert result is not None and result.cancelled and done_one.is_set()
    assert started[0].progress.phase == "cancelled" and not started[0].running
    assert 1 <= result.hashed_files < 4
    hashed = [name for name, digest in listed(index).items() if digest]
    assert len(hashed) == result.hashed_files and len(listed(index)) == 4  # all listed, some unhashed
    progress = Progress()
    rest = scan(index, roots_of(models), on_progress=progress)
    assert rest.hashed_files == 4 - result.hashed_files and not rest.cancelled
    assert progress.bytes_done == (4 - result.hashed_files) * 128 * KiB


def test_only_one_scan_runs_at_a_time(models: Path, index: LibraryIndex) -> None:
    (models / "loras/a.safetensors").write_bytes(blob(64 * KiB, 90))
    errors: list[str] = []

    def try_another(progress: ScanProgress) -> None:
        if progress.phase == "hashing" and not errors:
            try:
                scan(index, roots_of(models))
            except OrchestratorError as exc:
                errors.append(exc.code)

    scan(index, roots_of(models), on_progress=try_another)

    assert errors == ["scan_running"]


def test_a_missing_root_is_noted_and_its_files_leave_the_index(models: Path, index: LibraryIndex) -> None:
    (models / "vae/kl.pt").write_bytes(blob(8 * KiB, 91))
    scan(index, roots_of(models))
    shutil.rmtree(models / "vae")

    result = scan(index, roots_of(models))

    assert listed(index) == {}
    assert any("vae" in problem for problem in result.problems)


def test_a_root_inside_another_root_owns_its_files(models: Path, index: LibraryIndex) -> None:
    (models / "loras/SDXL/x.safetensors").write_bytes(blob(8 * KiB, 92))
    (models / "loras/y.safetensors").write_bytes(blob(8 * KiB, 93))

    scan(index, [("lora", models / "loras"), ("lora_xl", models / "loras/SDXL")])

    types = {r.name: (r.model_type, str(r.rel_path)) for r in index.all_files()}
    assert types == {
        "x.safetensors": ("lora_xl", "x.safetensors"),
        "y.safetensors": ("lora", "y.safetensors"),
    }


def test_a_folder_linked_into_a_root_is_listed_once_even_in_a_loop(models: Path, index: LibraryIndex) -> None:
    shared = models.parent / "shared"
    shared.mkdir()
    (shared / "s.safetensors").write_bytes(blob(8 * KiB, 94))
    (models / "loras/shared").symlink_to(shared)
    (shared / "loop").symlink_to(shared)

    scan(index, roots_of(models))

    assert list(listed(index)) == ["shared/s.safetensors"]
