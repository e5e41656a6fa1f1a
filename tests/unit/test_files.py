"""Names, folders and the final move: everything that touches the models folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from orchestrator import files
from orchestrator.config import STAGING_FOLDER
from orchestrator.errors import OrchestratorError

UTF8_CD = "attachment; filename*=UTF-8''%E6%A8%A1%E5%9E%8B.safetensors"


def code_of(call, *args, **kwargs) -> str:
    with pytest.raises(OrchestratorError) as caught:
        call(*args, **kwargs)
    return caught.value.code


# -- sanitize_filename ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("model.safetensors", "model.safetensors"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        ("/abs/path/to/x.ckpt", "x.ckpt"),
        (".hidden.pt", "hidden.pt"),
        ("...three.bin", "three.bin"),
        ("  . spaced.bin", "spaced.bin"),
        ("trailing.bin. . ", "trailing.bin"),
        ("a\x00b\x1fc\x7fd.bin", "a_b_c_d.bin"),
        ('a<b>c:d"e|f?g*h.bin', "a_b_c_d_e_f_g_h.bin"),
        ("模型.safetensors", "模型.safetensors"),
    ],
)
def test_sanitize_filename_makes_safe_names(raw: str, expected: str) -> None:
    assert files.sanitize_filename(raw) == expected


def test_sanitize_filename_normalises_unicode_to_nfc() -> None:
    decomposed = "Cafe\u0301.pt"
    assert files.sanitize_filename(decomposed) == "Caf\u00e9.pt"


@pytest.mark.parametrize("raw", ["", "   ", ".", "..", "....", ". . .", "../..", "dir/", "???", "\x00\x01"])
def test_sanitize_filename_refuses_names_with_nothing_left(raw: str) -> None:
    assert code_of(files.sanitize_filename, raw) == "invalid_filename"


@pytest.mark.parametrize("stem_char", ["a", "é", "模", "😀"])
def test_long_name_keeps_extension_and_fits_200_utf8_bytes(stem_char: str) -> None:
    name = files.sanitize_filename(stem_char * 400 + ".safetensors")
    assert name.endswith(".safetensors")
    assert len(name.encode("utf-8")) <= files.MAX_NAME_BYTES
    assert name.startswith(stem_char * 10)
    # no half characters: the stem is made only of whole copies of the character
    assert set(name.removesuffix(".safetensors")) == {stem_char}


def test_long_name_with_absurd_extension_is_cut_as_a_whole() -> None:
    name = files.sanitize_filename("x" * 100 + "." + "y" * 300)
    assert len(name.encode()) <= files.MAX_NAME_BYTES
    assert name.startswith("x" * 100)


def test_short_name_is_not_cut() -> None:
    name = "b" * 150 + ".safetensors"
    assert files.sanitize_filename(name) == name


# -- Content-Disposition ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("attachment; filename=plain.bin", "plain.bin"),
        ('attachment; filename="with space.safetensors"', "with space.safetensors"),
        (UTF8_CD, "模型.safetensors"),
        (UTF8_CD + '; filename="fallback.bin"', "模型.safetensors"),
        ("inline; filename*=utf-8''caf%C3%A9.pt", "café.pt"),
    ],
)
def test_filename_from_content_disposition(header: str, expected: str) -> None:
    assert files.filename_from_content_disposition(header) == expected


def test_filename_star_wins_even_when_it_comes_second() -> None:
    header = 'attachment; filename="fallback.bin"; ' + UTF8_CD.removeprefix("attachment; ")
    assert files.filename_from_content_disposition(header) == "模型.safetensors"


@pytest.mark.parametrize(
    "header", [None, "", "garbage", ";;;", "attachment", "attachment; filename=", "attachment; name=x"]
)
def test_filename_from_content_disposition_without_a_name_is_none(header: str | None) -> None:
    assert files.filename_from_content_disposition(header) is None


# -- URL names and precedence ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://h.example/a/b/model.safetensors", "model.safetensors"),
        ("https://h.example/a/my%20model%E6%A8%A1.ckpt?token=x#frag", "my model模.ckpt"),
        ("https://h.example/", None),
        ("https://h.example", None),
    ],
)
def test_filename_from_url_decodes_percent_escapes(url: str, expected: str | None) -> None:
    assert files.filename_from_url(url) == expected


def test_choose_filename_precedence() -> None:
    url = "https://h.example/files/from-url.bin"
    cd = "attachment; filename=from-cd.bin"
    assert files.choose_filename("explicit.bin", cd, url) == "explicit.bin"
    assert files.choose_filename(None, cd, url) == "from-cd.bin"
    assert files.choose_filename("", "garbage", url) == "from-url.bin"
    assert files.choose_filename(None, None, url) == "from-url.bin"


def test_choose_filename_sanitises_the_winner() -> None:
    cd = 'attachment; filename="../../.bashrc"'
    assert files.choose_filename(None, cd, "https://h.example/x.bin") == "bashrc"


def test_choose_filename_without_any_name() -> None:
    assert code_of(files.choose_filename, None, None, "https://h.example/") == "no_filename"


# -- model_folder ------------------------------------------------------------------------------


def test_model_folder_inside_models_dir(tmp_path: Path) -> None:
    assert files.model_folder(tmp_path, "lora") == (tmp_path / "lora").resolve()
    assert files.model_folder(tmp_path, "a/b") == (tmp_path / "a" / "b").resolve()


@pytest.mark.parametrize(
    "folder",
    ["..", "../elsewhere", "lora/../../x", "/etc", "/", "", ".", STAGING_FOLDER, f"{STAGING_FOLDER}/abc"],
)
def test_model_folder_refuses_escapes_and_staging(tmp_path: Path, folder: str) -> None:
    assert code_of(files.model_folder, tmp_path, folder) == "invalid_folder"


@pytest.mark.parametrize("folder", ["./.staging", "lora/../.staging"])
def test_model_folder_refuses_staging_reached_another_way(tmp_path: Path, folder: str) -> None:
    assert code_of(files.model_folder, tmp_path, folder) == "invalid_folder"


def test_model_folder_refuses_symlink_to_staging(tmp_path: Path) -> None:
    (tmp_path / STAGING_FOLDER).mkdir()
    (tmp_path / "lora").symlink_to(tmp_path / STAGING_FOLDER, target_is_directory=True)
    assert code_of(files.model_folder, tmp_path, "lora") == "invalid_folder"


def test_model_folder_refuses_symlink_pointing_outside(tmp_path: Path) -> None:
    models = tmp_path / "models"
    outside = tmp_path / "outside"
    models.mkdir()
    outside.mkdir()
    (models / "lora").symlink_to(outside, target_is_directory=True)
    assert code_of(files.model_folder, models, "lora") == "invalid_folder"


def test_model_folder_accepts_symlink_staying_inside(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    assert files.model_folder(tmp_path, "alias") == (tmp_path / "real").resolve()


# -- staging --------------------------------------------------------------------------------------


def test_staging_dir_and_remove(tmp_path: Path) -> None:
    directory = files.staging_dir(tmp_path, "0123456789ab")
    assert directory == tmp_path / STAGING_FOLDER / "0123456789ab"
    directory.mkdir(parents=True)
    (directory / "part.bin").write_bytes(b"x")
    files.remove_staging(tmp_path, "0123456789ab")
    assert not directory.exists()
    files.remove_staging(tmp_path, "0123456789ab")  # again: nothing to do, no error


@pytest.mark.parametrize("job_id", ["../x", "", "ABCDEF", "12345", "0123456789ab/.."])
def test_staging_dir_refuses_bad_job_ids(tmp_path: Path, job_id: str) -> None:
    assert code_of(files.staging_dir, tmp_path, job_id) == "invalid_job"


# -- install ------------------------------------------------------------------------------------


def test_install_moves_the_file(tmp_path: Path) -> None:
    staged = tmp_path / "stage" / "m.bin"
    staged.parent.mkdir()
    staged.write_bytes(b"model bytes")
    target = tmp_path / "models" / "lora" / "m.bin"
    files.install(staged, target, overwrite=False)
    assert target.read_bytes() == b"model bytes"
    assert not staged.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.bin"]


def test_install_refuses_to_replace_a_different_file(tmp_path: Path) -> None:
    staged = tmp_path / "new.bin"
    staged.write_bytes(b"new")
    target = tmp_path / "lora" / "m.bin"
    target.parent.mkdir()
    target.write_bytes(b"old")
    assert code_of(files.install, staged, target, overwrite=False) == "file_exists"
    assert target.read_bytes() == b"old"
    assert staged.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.bin"]


def test_install_error_has_conflict_status(tmp_path: Path) -> None:
    staged = tmp_path / "new.bin"
    staged.write_bytes(b"new")
    target = tmp_path / "m.bin"
    target.write_bytes(b"old")
    with pytest.raises(OrchestratorError) as caught:
        files.install(staged, target, overwrite=False)
    assert caught.value.status == 409


def test_install_overwrite_replaces(tmp_path: Path) -> None:
    staged = tmp_path / "new.bin"
    staged.write_bytes(b"new")
    target = tmp_path / "lora" / "m.bin"
    target.parent.mkdir()
    target.write_bytes(b"old")
    files.install(staged, target, overwrite=True)
    assert target.read_bytes() == b"new"
    assert not staged.exists()


def test_install_across_file_systems_copies_then_moves(tmp_path: Path, monkeypatch) -> None:
    """EXDEV from link/replace: the file is copied beside the target, then placed."""
    staged = tmp_path / "stage.bin"
    staged.write_bytes(b"payload")
    target = tmp_path / "lora" / "m.bin"
    real_link = os.link

    def link(source, destination, *args, **kwargs):
        if Path(source) == staged:
            raise OSError(18, "Invalid cross-device link")
        return real_link(source, destination, *args, **kwargs)

    monkeypatch.setattr(files.os, "link", link)
    files.install(staged, target, overwrite=False)
    assert target.read_bytes() == b"payload"
    assert not staged.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.bin"]


# -- hashing, sniffing, space ----------------------------------------------------------------------


def test_sha256_of_matches_hashlib_and_reports_progress(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(files, "HASH_CHUNK", 1000)
    data = os.urandom(4500)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    seen: list[int] = []
    assert files.sha256_of(path, seen.append) == hashlib.sha256(data).hexdigest()
    assert seen == [1000, 2000, 3000, 4000, 4500]


def test_sha256_of_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert files.sha256_of(path) == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"<!DOCTYPE html><html><body>Sign in</body></html>", True),
        (b"\n\n   <html lang=en>", True),
        (b"<HEAD><title>x</title>", True),
        (b"<body>oops", True),
        (b"\x00\x01safetensors header", False),
        (b'{"__metadata__": {}}', False),
        (b"", False),
    ],
)
def test_looks_like_html(tmp_path: Path, head: bytes, expected: bool) -> None:
    path = tmp_path / "f"
    path.write_bytes(head)
    assert files.looks_like_html(path) is expected


def test_ensure_free_space_refuses_absurd_size(tmp_path: Path) -> None:
    with pytest.raises(OrchestratorError) as caught:
        files.ensure_free_space(tmp_path, 10**18)
    assert caught.value.code == "disk_full"
    assert caught.value.status == 507


@pytest.mark.parametrize("needed", [None, 0, 1024])
def test_ensure_free_space_accepts_small_or_unknown(tmp_path: Path, needed: int | None) -> None:
    files.ensure_free_space(tmp_path / "new", needed)


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (5 * 1024**3, "5.0 GiB"), (3 * 1024**4, "3.0 TiB")],
)
def test_human_bytes(count: int, text: str) -> None:
    assert files.human_bytes(count) == text


def test_the_copy_beside_the_target_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    staged = tmp_path / "staging" / "model.safetensors"
    staged.parent.mkdir()
    staged.write_bytes(b"weights")
    folder = tmp_path / "other-disk" / "lora"
    folder.mkdir(parents=True)
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    (folder / ".model.safetensors.part").symlink_to(outside)
    with pytest.raises(OrchestratorError) as caught:
        files.copy_beside(staged, folder / "model.safetensors")
    assert caught.value.code == "not_a_regular_file"
    assert outside.read_text() == "keep me"


def test_documents_are_told_from_models_after_a_bom_or_a_comment(tmp_path: Path) -> None:
    for head in (
        b"\xef\xbb\xbf<!DOCTYPE html>",
        b"<!-- cdn -->\n<html>",
        b"<?xml version='1.0'?><Error>",
        b"<title>Login</title>",
        b"d8:announce35:http://tracker",
    ):
        page = tmp_path / "page.bin"
        page.write_bytes(head + b" rest")
        assert files.looks_like_html(page), head
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    assert not files.looks_like_html(model)
