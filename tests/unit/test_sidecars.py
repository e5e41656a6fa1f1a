"""Sidecars beside a model, read back the way each tool that reads them finds them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator import sidecars
from orchestrator.errors import OrchestratorError
from tests.fakes.trees import put_model

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 24
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 16
ADVERTISED = "ab" * 32  # the primary file's hash
DOWNLOADED = "cd" * 32  # the file the user picked
# A model-version record as CivitAI's GET /api/v1/model-versions/{id} returns it (trimmed).
RECORD = {
    "id": 456,
    "modelId": 123,
    "name": "v2.0",
    "baseModel": "SDXL 1.0",
    "description": "<p>Trained on <b>ink</b> drawings.<br>Use it &amp; enjoy</p><script>alert(1)</script>",
    "trainedWords": ["inkstyle", "<lora:ink:1>", " sketch "],
    "model": {"name": "Ink Style", "type": "LORA", "nsfw": False},
    "files": [
        {
            "id": 1,
            "name": "ink_fp16.safetensors",
            "primary": True,
            "sizeKB": 1.0,
            "hashes": {"SHA256": ADVERTISED},
        },
        {"id": 2, "name": "ink_fp32.safetensors", "sizeKB": 2.0, "hashes": {"SHA256": DOWNLOADED.upper()}},
    ],
    "images": [{"url": "https://image.civitai.com/x/1.jpeg", "type": "image", "meta": {"prompt": "ink cat"}}],
    "downloadUrl": "https://civitai.com/api/download/models/456",
}


def code_of(call, *args, **kwargs) -> str:
    with pytest.raises(OrchestratorError) as caught:
        call(*args, **kwargs)
    return caught.value.code


def base(model: Path) -> str:
    return os.path.splitext(model)[0]  # every reader takes the stem this way


# -- the readers' lookup rules, re-implemented from their source --------------------------------------

A1111_SD_VERSIONS = {"Unknown", "SD1", "SD2", "SDXL"}  # extensions-builtin/Lora/network.py SdVersion
A1111_PREVIEW_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif")  # modules/ui_extra_networks.py
LORA_MANAGER_PREVIEWS = (  # py/utils/constants.py PREVIEW_EXTENSIONS
    ".webp", ".preview.webp", ".preview.png", ".preview.jpeg", ".preview.jpg", ".preview.mp4",
    ".png", ".jpeg", ".jpg", ".mp4", ".gif", ".webm", ".avif", ".jxl",
)  # fmt: skip


def a1111_user_metadata(model: Path) -> dict:
    """modules/extra_networks.py get_user_metadata: splitext(filename)[0] + '.json', json.load."""
    path = Path(base(model) + ".json")
    return json.loads(path.read_text(encoding="utf8")) if path.exists() else {}


def a1111_lora_card(model: Path) -> dict:
    """extensions-builtin/Lora/ui_extra_networks_lora.py and ui_edit_user_metadata.py: the values used."""
    meta = a1111_user_metadata(model)
    sd_version = meta.get("sd version")
    return {
        "description": meta.get("description", ""),
        "sd_version": sd_version if sd_version in A1111_SD_VERSIONS else None,
        "activation_text": meta.get("activation text", ""),
        "preferred_weight": float(meta.get("preferred weight", 0.0)),
        "notes": meta.get("notes", ""),
    }


def a1111_find_preview(model: Path) -> Path | None:
    """modules/ui_extra_networks.py find_preview: <path>.<ext>, then <path>.preview.<ext>, per extension."""
    for ext in A1111_PREVIEW_EXTENSIONS:
        for candidate in (f"{base(model)}.{ext}", f"{base(model)}.preview.{ext}"):
            if os.path.isfile(candidate):
                return Path(candidate)
    return None


def civitai_helper_info(model: Path) -> dict | None:
    """scripts/ch_lib/civitai.py load_model_info_by_model_path: base + '.civitai' + '.info'."""
    path = Path(base(model) + ".civitai" + ".info")
    return json.loads(path.read_text()) if path.is_file() else None


def civitai_helper_has_preview(model: Path) -> bool:
    """scripts/ch_lib/civitai.py get_preview_image_by_model_path: only base + '.preview.png' counts."""
    return os.path.isfile(base(model) + ".preview.png")


def lora_manager_metadata(model: Path) -> dict | None:
    """py/services/model_scanner.py: from <stem>.civitai.info, only with a primary file
    (py/utils/models.py from_civitai_info takes its hash, lower case, and size)."""
    path = Path(base(model) + ".civitai.info")
    if not path.exists():
        return None
    version_info = json.loads(path.read_text(encoding="utf-8"))
    file_info = next((item for item in version_info.get("files", []) if item.get("primary")), None)
    if not file_info:
        return None
    return {
        "sha256": (file_info.get("hashes") or {}).get("SHA256", "").lower(),
        "size": file_info.get("sizeKB", 0) * 1024,
        "model_name": (version_info.get("model") or {}).get("name"),
        "base_model": version_info.get("baseModel"),
    }


def lora_manager_preview(model: Path) -> Path | None:
    """py/utils/file_utils.py find_preview_file: <stem><ext> for each of PREVIEW_EXTENSIONS in order."""
    for ext in LORA_MANAGER_PREVIEWS:
        candidate = model.parent / (model.stem + ext)
        if candidate.exists():
            return candidate
    return None


def browser_plus_ids(model: Path) -> tuple:
    """scripts/civitai_file_manage.py get_models: modelId, modelVersionId and sha256 from <stem>.json."""
    data = a1111_user_metadata(model)
    return data.get("modelId"), data.get("modelVersionId"), data.get("sha256")


@pytest.fixture
def lora(tmp_path) -> Path:
    folder = tmp_path / "models" / "lora"
    folder.mkdir(parents=True)
    return folder


def folder_names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# -- a CivitAI download, read by every tool --------------------------------------------------------


def test_a_civitai_download_is_read_by_a1111_civitai_helper_lora_manager_and_browser_plus(lora) -> None:
    model = put_model(lora / "ink.safetensors")
    outcomes = sidecars.write_civitai_sidecars(model, lora, RECORD, file_id=2, preview=("image/png", PNG))
    assert [(o.path.name, o.action) for o in outcomes] == [
        ("ink.json", "written"),
        ("ink.civitai.info", "written"),
        ("ink.preview.png", "written"),
    ]
    card = a1111_lora_card(model)
    assert card["description"] == "Trained on ink drawings.\nUse it & enjoy"
    assert card["sd_version"] == "SDXL"
    assert card["activation_text"] == "inkstyle, sketch"
    assert card["preferred_weight"] == 0.0
    assert card["notes"] == "CivitAI: https://civitai.com/models/123?modelVersionId=456"
    assert a1111_find_preview(model) == lora / "ink.preview.png"
    assert (lora / "ink.preview.png").read_bytes() == PNG

    helper = civitai_helper_info(model)
    assert (helper["id"], helper["modelId"], helper["trainedWords"]) == (456, 123, RECORD["trainedWords"])
    assert helper["images"][0]["meta"]["prompt"] == "ink cat"
    assert civitai_helper_has_preview(model)

    manager = lora_manager_metadata(model)
    assert manager == {
        "sha256": DOWNLOADED,
        "size": 2048.0,
        "model_name": "Ink Style",
        "base_model": "SDXL 1.0",
    }
    assert lora_manager_preview(model) == lora / "ink.preview.png"

    assert browser_plus_ids(model) == (123, 456, DOWNLOADED.upper())
    assert folder_names(lora) == ["ink.civitai.info", "ink.json", "ink.preview.png", "ink.safetensors"]


def test_the_measured_sha256_wins_and_a_single_file_record_needs_no_file_id(lora) -> None:
    model = put_model(lora / "ink.safetensors")
    single = {**RECORD, "files": [RECORD["files"][0]]}
    sidecars.write_civitai_sidecars(model, lora, single, sha256="ef" * 32)
    assert browser_plus_ids(model)[2] == "EF" * 32
    assert lora_manager_metadata(model)["sha256"] == ADVERTISED


@pytest.mark.parametrize(
    ("base_model", "expected"),
    [("SD 1.5", "SD1"), ("SD 2.1 768", "SD2"), ("SDXL 1.0", "SDXL"), ("SDXL Turbo", "SDXL"), ("Pony", "SDXL"),
     ("Illustrious", "SDXL"), ("Flux.1 D", None), ("SD 3.5", None), ("", None), (None, None)],
)  # fmt: skip
def test_sd_version_is_one_a1111_accepts_or_left_out(lora, base_model, expected) -> None:
    assert sidecars.a1111_sd_version(base_model) == expected
    model = put_model(lora / "m.safetensors")
    sidecars.write_civitai_sidecars(model, lora, {**RECORD, "baseModel": base_model})
    assert a1111_user_metadata(model).get("sd version") == expected  # missing: A1111 detects it itself


# -- previews --------------------------------------------------------------------------------------


def test_a_jpeg_preview_keeps_its_real_extension(lora) -> None:
    model = put_model(lora / "ink.safetensors")
    sidecars.write_civitai_sidecars(model, lora, RECORD, preview=("image/jpeg; charset=binary", JPEG))
    assert a1111_find_preview(model) == lora / "ink.preview.jpeg"
    assert lora_manager_preview(model) == lora / "ink.preview.jpeg"
    assert not civitai_helper_has_preview(model)  # it would fetch its own .preview.png


def test_a_video_preview_is_written_for_lora_manager_only(lora) -> None:
    model = put_model(lora / "ink.safetensors")
    outcome = sidecars.write_preview(model, "video/mp4", MP4, lora)
    assert outcome.action == "written"
    assert lora_manager_preview(model) == lora / "ink.preview.mp4"
    assert a1111_find_preview(model) is None


def test_a_preview_no_reader_shows_is_not_written(lora) -> None:
    model = put_model(lora / "ink.safetensors")
    outcome = sidecars.write_preview(model, "video/webm", b"webm", lora)
    assert outcome.action == "skipped"
    assert folder_names(lora) == ["ink.safetensors"]


@pytest.mark.parametrize("existing", ["ink.png", "ink.preview.png", "ink.preview.webp"])
def test_an_existing_preview_is_kept(lora, existing) -> None:
    """`<stem>.png` is where A1111's "Replace preview" saves; `.preview.png` is Civitai Helper's."""
    model = put_model(lora / "ink.safetensors")
    (lora / existing).write_bytes(b"the user's")
    outcome = sidecars.write_preview(model, "image/jpeg", JPEG, lora)
    assert outcome.action == "kept"
    assert (lora / existing).read_bytes() == b"the user's"
    assert folder_names(lora) == sorted([existing, "ink.safetensors"])


# -- merging, and files someone else wrote ---------------------------------------------------------


def test_merge_keeps_what_the_user_edited_and_adds_only_what_is_missing(lora) -> None:
    model = put_model(lora / "ink.safetensors")
    edited = {"activation text": "my words", "preferred weight": 0.7, "notes": "mine", "custom": [1]}
    (lora / "ink.json").write_text(json.dumps(edited), encoding="utf-8")
    outcome = sidecars.merge_json_sidecar(model, sidecars.civitai_user_metadata(RECORD, 2), lora)
    assert outcome.action == "merged"
    assert "sd version" in outcome.detail
    card = a1111_lora_card(model)
    assert (card["activation_text"], card["preferred_weight"], card["notes"]) == ("my words", 0.7, "mine")
    assert card["sd_version"] == "SDXL"
    assert a1111_user_metadata(model)["custom"] == [1]
    again = sidecars.merge_json_sidecar(model, sidecars.civitai_user_metadata(RECORD, 2), lora)
    assert again.action == "unchanged"


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe garbage", b""])
def test_a_user_metadata_file_that_is_not_a_json_object_is_left_alone(lora, content) -> None:
    model = put_model(lora / "ink.safetensors")
    (lora / "ink.json").write_bytes(content)
    outcomes = sidecars.write_civitai_sidecars(model, lora, RECORD)
    assert outcomes[0].action == "kept"
    assert "not a JSON object" in outcomes[0].detail
    assert (lora / "ink.json").read_bytes() == content
    assert outcomes[1].action == "written"  # the other sidecars still go


def test_a_civitai_info_another_tool_wrote_is_kept(lora) -> None:
    model = put_model(lora / "ink.safetensors")
    theirs = json.dumps({"id": 456, "modelId": 123, "files": []}, indent=4).encode()
    (lora / "ink.civitai.info").write_bytes(theirs)
    outcome = sidecars.write_civitai_info(model, sidecars.civitai_info(RECORD, 2), lora)
    assert outcome.action == "kept"
    assert (lora / "ink.civitai.info").read_bytes() == theirs


def test_a_civitai_info_this_app_wrote_is_replaced_by_a_newer_record(lora) -> None:
    model = put_model(lora / "ink.safetensors")
    assert sidecars.write_civitai_info(model, sidecars.civitai_info(RECORD, 2), lora).action == "written"
    assert sidecars.write_civitai_info(model, sidecars.civitai_info(RECORD, 2), lora).action == "unchanged"
    newer = {**RECORD, "trainedWords": ["inkstyle", "new word"]}
    assert sidecars.write_civitai_info(model, sidecars.civitai_info(newer, 2), lora).action == "replaced"
    assert civitai_helper_info(model)["trainedWords"] == ["inkstyle", "new word"]
    assert civitai_helper_info(model)[sidecars.MARKER_KEY] == sidecars.MARKER_VALUE


def test_a_hugging_face_file_gets_a_small_user_metadata_file_merged_the_same_way(lora) -> None:
    model = put_model(lora / "sdxl_vae.safetensors")
    (lora / "sdxl_vae.json").write_text(json.dumps({"notes": "my vae"}))
    fields = sidecars.huggingface_user_metadata(
        "stabilityai/sdxl-vae", "sdxl_vae.safetensors", commit="c" * 40, revision="main", license_id="mit"
    )
    outcomes = sidecars.write_huggingface_sidecar(model, lora, fields)
    assert [o.action for o in outcomes] == ["merged"]
    card = a1111_lora_card(model)
    assert card["notes"] == "my vae"
    assert card["description"] == "sdxl_vae.safetensors from stabilityai/sdxl-vae (Hugging Face)"
    assert a1111_user_metadata(model)["huggingface"] == {
        "repo": "stabilityai/sdxl-vae",
        "repo_type": "model",
        "revision": "main",
        "commit": "c" * 40,
        "path": "sdxl_vae.safetensors",
        "license": "mit",
    }
    assert (
        fields["notes"]
        == f"Hugging Face: https://huggingface.co/stabilityai/sdxl-vae/blob/{'c' * 40}/sdxl_vae.safetensors"
    )


# -- the safe writer -------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path) -> Path:
    target = tmp_path / "outside.txt"
    target.write_text("precious")
    return target


def test_write_sidecar_writes_beside_the_model_and_leaves_no_partial_file(lora) -> None:
    model = put_model(lora / "sub" / "ink.safetensors")
    path = sidecars.write_sidecar(model, ".json", b"{}", lora)
    assert path == lora / "sub" / "ink.json"
    assert path.read_bytes() == b"{}"
    assert folder_names(lora / "sub") == ["ink.json", "ink.safetensors"]


@pytest.mark.parametrize("planted_at", ["ink.json", ".ink.json.part"])
def test_a_symlink_planted_at_the_sidecar_or_its_partial_name_is_refused(lora, outside, planted_at) -> None:
    model = put_model(lora / "ink.safetensors")
    (lora / planted_at).symlink_to(outside)
    assert code_of(sidecars.write_sidecar, model, ".json", b"{}", lora) == "sidecar_not_regular"
    assert outside.read_text() == "precious"
    assert (lora / planted_at).is_symlink()
    assert folder_names(lora) == sorted([planted_at, "ink.safetensors"])


def test_a_symlink_at_the_sidecar_is_not_read_through_either(lora, outside) -> None:
    model = put_model(lora / "ink.safetensors")
    (lora / "ink.json").symlink_to(outside)
    outcomes = sidecars.write_civitai_sidecars(model, lora, RECORD)
    assert outcomes[0].action == "refused"
    assert outside.read_text() == "precious"


def test_a_fifo_or_folder_at_the_sidecar_path_is_refused(lora) -> None:
    model = put_model(lora / "ink.safetensors")
    os.mkfifo(lora / "ink.json")  # opening it for reading without O_NONBLOCK would hang
    (lora / "ink.civitai.info").mkdir()
    assert code_of(sidecars.write_sidecar, model, ".json", b"{}", lora) == "sidecar_not_regular"
    assert code_of(sidecars.read_sidecar, model, ".json", lora) == "sidecar_not_regular"
    assert code_of(sidecars.write_sidecar, model, ".civitai.info", b"{}", lora) == "sidecar_not_regular"
    outcomes = sidecars.write_civitai_sidecars(model, lora, RECORD)
    assert [o.action for o in outcomes] == ["refused", "refused"]
    assert folder_names(lora) == ["ink.civitai.info", "ink.json", "ink.safetensors"]


def test_a_partial_file_left_by_an_interrupted_write_is_replaced(lora) -> None:
    model = put_model(lora / "ink.safetensors")
    (lora / ".ink.json.part").write_bytes(b'{"half')
    sidecars.write_sidecar(model, ".json", b"{}", lora)
    assert folder_names(lora) == ["ink.json", "ink.safetensors"]


def test_nothing_is_written_outside_the_root(tmp_path, lora) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    model = put_model(elsewhere / "x.safetensors")
    assert code_of(sidecars.write_sidecar, model, ".json", b"{}", lora) == "sidecar_outside"
    climbing = lora / ".." / ".." / "elsewhere" / "x.safetensors"
    assert code_of(sidecars.write_sidecar, climbing, ".json", b"{}", lora) == "sidecar_outside"
    (lora / "linked").symlink_to(elsewhere)  # a folder inside the root that leads out of it
    assert (
        code_of(sidecars.write_sidecar, lora / "linked" / "x.safetensors", ".json", b"{}", lora)
        == "sidecar_outside"
    )
    assert folder_names(elsewhere) == ["x.safetensors"]


def test_a_root_reached_through_a_symlink_is_fine(tmp_path, lora) -> None:
    (tmp_path / "link-to-lora").symlink_to(lora)
    model = put_model(lora / "ink.safetensors")
    sidecars.write_sidecar(
        tmp_path / "link-to-lora" / "ink.safetensors", ".json", b"{}", tmp_path / "link-to-lora"
    )
    assert (lora / "ink.json").read_bytes() == b"{}"
    assert model.exists()


def test_a_name_too_long_for_the_disk_is_refused(lora) -> None:
    model = lora / ("x" * 240 + ".safetensors")
    assert code_of(sidecars.write_sidecar, model, ".civitai.info", b"{}", lora) == "sidecar_name_too_long"


# -- which names are sidecars, and stems two models share ------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.json", True), ("a.civitai.info", True), ("a.civitai.json", True), ("a.preview.png", True),
        ("a.preview.JPEG", True), ("a.png", True), ("a.metadata.json", True), ("a.txt", True),
        ("a.yaml", True), ("a.api_info.json", True), ("a.html", True), ("a.preview.mp4", True),
        ("a.safetensors", False), ("a.ckpt", False), ("a.gguf", False), ("json", False),
        ("a.json.bin", False),
    ],
)  # fmt: skip
def test_is_sidecar(name, expected) -> None:
    assert sidecars.is_sidecar(name) is expected


def test_sidecar_paths_lists_the_models_sidecars_including_the_legacy_name(lora, outside) -> None:
    model = put_model(lora / "ink.safetensors")
    for name in ("ink.json", "ink.civitai.info", "ink.civitai.json", "ink.preview.jpeg", "inkwell.json"):
        (lora / name).write_text("{}")
    (lora / "ink.preview.png").symlink_to(outside)  # a link is not followed, nor deleted with it
    assert sorted(path.name for path in sidecars.sidecar_paths(model)) == [
        "ink.civitai.info",
        "ink.civitai.json",
        "ink.json",
        "ink.preview.jpeg",
    ]


def test_a_model_whose_stem_is_taken_by_another_gets_no_sidecars(lora, caplog) -> None:
    first = put_model(lora / "a.safetensors")
    sidecars.write_civitai_sidecars(first, lora, RECORD)
    before = (lora / "a.json").read_bytes()
    second = put_model(lora / "a.ckpt")
    outcomes = sidecars.write_civitai_sidecars(
        second, lora, {**RECORD, "id": 999}, preview=("image/png", PNG)
    )
    assert [o.action for o in outcomes] == ["skipped"]
    assert "a.safetensors" in outcomes[0].detail
    assert "shares its sidecar names" in caplog.text
    assert (lora / "a.json").read_bytes() == before
    assert civitai_helper_info(first)["id"] == 456
    # neither model may take the shared files with it when deleted
    assert sidecars.sidecar_paths(first) == []
    assert sidecars.sidecar_paths(second) == []


def test_a_stem_that_ends_like_a_sidecar_suffix_is_a_conflict_too(lora) -> None:
    """x.civitai.safetensors would write x.civitai.json: the legacy sidecar of x.safetensors."""
    put_model(lora / "x.safetensors")
    other = put_model(lora / "x.civitai.safetensors")
    assert sidecars.sidecar_conflicts(other) == [lora / "x.safetensors"]
    fields = sidecars.huggingface_user_metadata("o/r", "x.civitai.safetensors")
    assert [o.action for o in sidecars.write_huggingface_sidecar(other, lora, fields)] == ["skipped"]
    assert folder_names(lora) == ["x.civitai.safetensors", "x.safetensors"]


def test_models_with_different_stems_do_not_conflict(lora) -> None:
    put_model(lora / "a.safetensors")
    put_model(lora / "a.preview.png")  # a sidecar, not a model
    model = put_model(lora / "ab.safetensors")
    assert sidecars.sidecar_conflicts(model) == []
    assert sidecars.sidecar_conflicts(lora / "a.safetensors") == []


def test_a_file_whose_own_name_is_a_sidecar_name_gets_none_and_stays_as_downloaded(tmp_path: Path) -> None:
    """A repository's config.json: its `<stem>.json` would be itself, merged with our fields."""
    config = tmp_path / "vae" / "config.json"
    config.parent.mkdir()
    config.write_bytes(b'{"_class_name": "AutoencoderKL"}')
    record = {"repo": "acme/vae", "path": "config.json", "commit": "a" * 40}
    assert sidecars.write_description(config, tmp_path, "huggingface", record) == []
    assert config.read_bytes() == b'{"_class_name": "AutoencoderKL"}'
