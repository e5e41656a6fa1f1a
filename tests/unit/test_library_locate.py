"""A path a person names (as GET /api/models lists it): which root holds it, and its preview."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.library.listing import preview_url, shown_path
from orchestrator.library.locate import locate, read_preview


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, list[tuple[str, Path]]]:
    models = tmp_path / "models"
    elsewhere = tmp_path / "other-disk" / "loras"
    for folder in (models / "lora", models / "checkpoint", elsewhere):
        folder.mkdir(parents=True)
    return models, [("lora", models / "lora"), ("checkpoint", models / "checkpoint"), ("lora", elsewhere)]


def code_of(path: str, models: Path, folders: list[tuple[str, Path]]) -> str:
    with pytest.raises(OrchestratorError) as raised:
        locate(path, folders, models)
    return raised.value.code


def test_paths_inside_a_root_are_found_relative_or_absolute(roots) -> None:
    models, folders = roots
    found = locate("lora/SDXL/x.safetensors", folders, models)
    assert (found.root, found.rel.as_posix(), found.given) == (
        models / "lora",
        "SDXL/x.safetensors",
        "lora/SDXL/x.safetensors",
    )
    other = folders[2][1]
    found = locate(str(other / "y.safetensors"), folders, models)
    assert (found.root, found.rel.as_posix(), found.base) == (other, "y.safetensors", other)
    assert shown_path(other / "y.safetensors", models) == str(other / "y.safetensors")
    assert shown_path(models / "lora" / "y.safetensors", models) == "lora/y.safetensors"


def test_paths_that_climb_out_or_lie_outside_are_refused_by_name(roots, tmp_path: Path) -> None:
    models, folders = roots
    assert code_of("../secret.safetensors", models, folders) == "invalid_path"
    assert code_of("lora/../../secret.safetensors", models, folders) == "invalid_path"
    assert code_of(str(folders[2][1]) + "/../../x.safetensors", models, folders) == "invalid_path"
    assert code_of("", models, folders) == "invalid_path"
    assert code_of(str(tmp_path / "x.safetensors"), models, folders) == "outside_roots"
    assert code_of("embedding/x.safetensors", models, folders) == "outside_roots"  # no such root in use
    assert code_of("lora", models, folders) == "outside_roots"  # a root itself is no model


def test_the_preview_is_the_preview_name_first_and_never_a_link(roots, tmp_path: Path) -> None:
    models, folders = roots
    lora = models / "lora"
    (lora / "a.safetensors").write_bytes(b"model")
    (lora / "a.png").write_bytes(b"old form")
    (lora / "a.preview.webp").write_bytes(b"preview")
    assert read_preview(locate("lora/a.safetensors", folders, models)) == ("image/webp", b"preview")

    (lora / "b.safetensors").write_bytes(b"model")
    (tmp_path / "secret.png").write_bytes(b"secret")
    (lora / "b.preview.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(OrchestratorError) as raised:
        read_preview(locate("lora/b.safetensors", folders, models))
    assert raised.value.code == "no_preview"

    with pytest.raises(OrchestratorError) as raised:
        read_preview(locate("lora/none.safetensors", folders, models))
    assert raised.value.code == "not_found"
    (lora / "linked").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(OrchestratorError) as raised:
        read_preview(locate("lora/linked/secret.safetensors", folders, models))
    assert raised.value.code == "symlink_refused"


def test_preview_urls_are_relative_and_quoted() -> None:
    assert preview_url("lora/odd name #1%.safetensors") == (
        "api/models/preview?path=lora%2Fodd%20name%20%231%25.safetensors"
    )
