"""Deleting a model and its sidecars: only inside a root, never a folder, never through a symlink."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.library import LibraryIndex, remove_model, remove_record, scan

Roots = list[tuple[str, Path]]


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    (root / "lora" / "SDXL").mkdir(parents=True)
    (root / "checkpoint").mkdir()
    return root


@pytest.fixture
def roots(models: Path) -> Roots:
    return [("lora", models / "lora"), ("checkpoint", models / "checkpoint")]


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def code_of(call: Callable[..., object], *args: object, **kwargs: object) -> str:
    with pytest.raises(OrchestratorError) as caught:
        call(*args, **kwargs)
    assert len(caught.value.message) > 20
    return caught.value.code


def test_a_model_goes_with_its_sidecars_and_the_index_follows(
    models: Path, roots: Roots, index: LibraryIndex
) -> None:
    folder = models / "lora" / "SDXL"
    (folder / "film.safetensors").write_bytes(b"f" * 1000)
    for sidecar in ("film.civitai.info", "film.civitai.json", "film.json", "film.preview.png", "film.txt"):
        (folder / sidecar).write_text("{}")
    (folder / "film-2.safetensors").write_bytes(b"other")  # shares a prefix, not the stem
    (folder / "film-2.json").write_text("{}")
    scan(index, roots)

    removal = remove_model(index, roots, "lora/SDXL/film.safetensors", base=models)

    assert files_in(folder) == ["film-2.json", "film-2.safetensors"]
    assert removal.model == folder / "film.safetensors" and removal.freed_bytes == 1000 and removal.forgotten
    assert sorted(p.name for p in removal.sidecars) == [
        "film.civitai.info",
        "film.civitai.json",
        "film.json",
        "film.preview.png",
        "film.txt",
    ]
    assert [r.name for r in index.all_files()] == ["film-2.safetensors"]


def test_by_record_id(models: Path, roots: Roots, index: LibraryIndex) -> None:
    (models / "checkpoint" / "base.ckpt").write_bytes(b"c")
    (models / "checkpoint" / "base.yaml").write_text("config")
    scan(index, roots)
    record = index.all_files()[0]

    removal = remove_record(index, roots, record.id)

    assert files_in(models / "checkpoint") == [] and [p.name for p in removal.sidecars] == ["base.yaml"]
    assert index.all_files() == []
    assert code_of(remove_record, index, roots, record.id) == "not_found"


def test_sidecars_stay_when_another_model_has_the_same_stem(
    models: Path, roots: Roots, index: LibraryIndex
) -> None:
    folder = models / "lora"
    (folder / "x.safetensors").write_bytes(b"s")
    (folder / "x.ckpt").write_bytes(b"c")
    (folder / "x.preview.png").write_bytes(b"png")

    removal = remove_model(index, roots, "lora/x.ckpt", base=models)

    assert files_in(folder) == ["x.preview.png", "x.safetensors"] and removal.sidecars == ()


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("", "invalid_path"),
        ("/etc/passwd", "invalid_path"),
        ("lora/../../secret.safetensors", "invalid_path"),
        ("..", "invalid_path"),
        ("lora/a\0b.safetensors", "invalid_path"),
        ("elsewhere/x.safetensors", "outside_roots"),
        ("lora", "outside_roots"),
        ("lora/missing.safetensors", "not_found"),
        ("lora/SDXL", "not_a_model"),
        ("lora/notes.txt", "not_a_model"),
        ("lora/.staging/job/x.safetensors", "not_a_model"),
        ("C:\\models\\x.safetensors", "invalid_path"),
        ("lora/readme.safetensors/inner.safetensors", "not_found"),
    ],
)
def test_bad_paths_are_refused_by_name_and_nothing_is_deleted(
    models: Path, roots: Roots, index: LibraryIndex, path: str, code: str
) -> None:
    (models / "lora" / "notes.txt").write_text("n")
    (models / "lora" / "readme.safetensors").write_bytes(b"r")
    (models / "lora" / ".staging" / "job").mkdir(parents=True)
    (models / "lora" / ".staging" / "job" / "x.safetensors").write_bytes(b"half")
    (models / "elsewhere").mkdir()
    (models / "elsewhere" / "x.safetensors").write_bytes(b"x")
    before = files_in(models)

    assert code_of(remove_model, index, roots, path, base=models) == code
    assert files_in(models) == before


def test_a_symlinked_folder_on_the_way_is_refused(
    models: Path, roots: Roots, index: LibraryIndex, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.safetensors").write_bytes(b"v")
    (outside / "victim.json").write_text("{}")
    (models / "lora" / "linked").symlink_to(outside)

    assert (
        code_of(remove_model, index, roots, "lora/linked/victim.safetensors", base=models)
        == "symlink_refused"
    )
    assert files_in(outside) == ["victim.json", "victim.safetensors"]


def test_a_model_that_links_outside_is_refused_and_one_that_links_inside_goes_as_a_link(
    models: Path, roots: Roots, index: LibraryIndex, tmp_path: Path
) -> None:
    (tmp_path / "secret.safetensors").write_bytes(b"s")
    (models / "lora" / "escape.safetensors").symlink_to(tmp_path / "secret.safetensors")
    (models / "checkpoint" / "real.safetensors").write_bytes(b"r")
    (models / "lora" / "alias.safetensors").symlink_to(models / "checkpoint" / "real.safetensors")

    assert code_of(remove_model, index, roots, "lora/escape.safetensors", base=models) == "symlink_refused"
    removal = remove_model(index, roots, "lora/alias.safetensors", base=models)

    assert (tmp_path / "secret.safetensors").exists() and (
        models / "lora" / "escape.safetensors"
    ).is_symlink()
    assert not os.path.lexists(models / "lora" / "alias.safetensors")
    assert (models / "checkpoint" / "real.safetensors").read_bytes() == b"r" and removal.freed_bytes == 0


def test_a_root_that_is_a_symlink_is_fine(models: Path, index: LibraryIndex, tmp_path: Path) -> None:
    disk = tmp_path / "other-disk"
    disk.mkdir()
    (disk / "big.safetensors").write_bytes(b"b")
    (models / "upscaler").symlink_to(disk)
    roots = [("upscaler", models / "upscaler")]

    remove_model(index, roots, "upscaler/big.safetensors", base=models)

    assert files_in(disk) == []


def test_a_file_deleted_by_hand_leaves_the_index_when_asked_to_remove_it(
    models: Path, roots: Roots, index: LibraryIndex
) -> None:
    (models / "lora" / "gone.safetensors").write_bytes(b"g")
    scan(index, roots)
    (models / "lora" / "gone.safetensors").unlink()

    assert code_of(remove_model, index, roots, "lora/gone.safetensors", base=models) == "not_found"
    assert index.all_files() == []


def test_a_hard_linked_model_frees_nothing_and_the_other_link_stays(
    models: Path, roots: Roots, index: LibraryIndex
) -> None:
    (models / "lora" / "a.safetensors").write_bytes(b"a" * 10)
    os.link(models / "lora" / "a.safetensors", models / "checkpoint" / "a.safetensors")

    removal = remove_model(index, roots, "lora/a.safetensors", base=models)

    assert removal.freed_bytes == 0 and (models / "checkpoint" / "a.safetensors").read_bytes() == b"a" * 10
