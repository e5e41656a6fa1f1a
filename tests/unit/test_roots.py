"""The folders each model type lives in: the layout, ComfyUI's extra_model_paths.yaml, an A1111 install."""

from __future__ import annotations

import os
import subprocess
import unicodedata
from pathlib import Path

import pytest

from orchestrator import files, roots
from orchestrator.config import LAYOUTS, MODEL_TYPES, folder_for
from orchestrator.errors import OrchestratorError
from tests.fakes.trees import a1111_tree, comfyui_tree, put_model, second_disk


def code_of(call, *args, **kwargs) -> str:
    with pytest.raises(OrchestratorError) as caught:
        call(*args, **kwargs)
    return caught.value.code


def listing(base: Path) -> list[str]:
    return sorted(str(path.relative_to(base)) for path in base.rglob("*"))


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    return folder


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this user cannot write: mode 0555, or for root (who ignores modes) a read-only tmpfs."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {result.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


# -- today's layouts stay the default --------------------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_without_an_install_each_type_has_its_layout_folder_only(tmp_path, layout) -> None:
    models = tmp_path / "models"
    built = roots.build_roots(models, layout)
    for model_type in MODEL_TYPES:
        expected = files.model_folder(models, folder_for(model_type, layout))
        assert built.folders(model_type) == (expected,)
        assert built.default(model_type) == expected
    assert built.warnings == ()
    assert not models.exists()  # building the list creates nothing


def test_an_unknown_type_is_refused(tmp_path) -> None:
    built = roots.build_roots(tmp_path / "models")
    assert code_of(built.folders, "lycoris") == "unknown_type"


def test_layout_folders_are_found_by_comfyui_folder_name(tmp_path) -> None:
    built = roots.build_roots(tmp_path / "models", "a1111")
    assert built.folders_for_comfy_dir("loras") == (tmp_path / "models" / "Lora",)
    assert built.folders_for_comfy_dir("unet") == built.folders("diffusion_model")
    assert built.folders_for_comfy_dir("style_models") == built.folders("style_model")


# -- a ComfyUI install and its extra_model_paths.yaml ----------------------------------------------

# Two sections as people write them (the a1111 one as in ComfyUI's extra_model_paths.yaml.example):
# a default section on a second disk under ~, a relative base_path, block strings, legacy names.
EXTRA_PATHS = """\
    comfyui:
        base_path: ~/shared
        is_default: true
        checkpoints: models/checkpoints
        loras: |
            models/loras
            models/more_loras
        style_models: models/style_models
    a1111:
        base_path: ../stable-diffusion-webui/
        checkpoints: models/Stable-diffusion
        configs: models/Stable-diffusion
        vae: models/VAE
        loras: |
             models/Lora
             models/LyCORIS
        upscale_models: |
                      models/ESRGAN
                      models/RealESRGAN
        embeddings: embeddings
        hypernetworks: models/hypernetworks
        controlnet: models/ControlNet
        unet: models/Stable-diffusion
        clip: models/text_encoder
    empty_section:
"""


@pytest.fixture
def comfy_setup(tmp_path, home):
    shared = home / "shared" / "models"
    for folder in ("checkpoints", "loras", "more_loras", "style_models"):
        (shared / folder).mkdir(parents=True)
    webui = a1111_tree(tmp_path)
    comfy = comfyui_tree(tmp_path, EXTRA_PATHS)
    return comfy, webui, shared


def test_comfyui_install_reads_its_extra_model_paths_like_comfyui(tmp_path, comfy_setup) -> None:
    comfy, webui, shared = comfy_setup
    before = listing(tmp_path)
    built = roots.build_roots(tmp_path / "unused", comfyui=comfy.root)

    # is_default: the section's folders come first, so downloads go to the second disk
    assert built.default("checkpoint") == shared / "checkpoints"
    assert built.folders("checkpoint") == (
        shared / "checkpoints",
        comfy.models / "checkpoints",
        webui / "models" / "Stable-diffusion",
    )
    # a block string: one folder per line; ComfyUI inserts each default at the front, so the
    # last line of a default section ends up first
    assert built.folders("lora") == (
        shared / "more_loras",
        shared / "loras",
        comfy.models / "loras",
        webui / "models" / "Lora",
        webui / "models" / "LyCORIS",
    )
    assert built.folders("upscaler")[1:] == (webui / "models" / "ESRGAN", webui / "models" / "RealESRGAN")
    assert built.folders("embedding")[-1] == webui / "embeddings"
    # legacy names: unet is diffusion_models, clip is text_encoders (folder_paths.map_legacy)
    assert built.folders("diffusion_model") == (
        comfy.models / "diffusion_models",
        comfy.models / "unet",
        webui / "models" / "Stable-diffusion",
    )
    assert built.folders("text_encoder") == (
        comfy.models / "text_encoders",
        comfy.models / "clip",
        webui / "models" / "text_encoder",
    )
    assert built.folders("controlnet") == (
        comfy.models / "controlnet",
        comfy.models / "t2i_adapter",
        webui / "models" / "ControlNet",
    )
    # folder names without a type here are kept for a workflow reader
    assert built.folders_for_comfy_dir("style_models") == (
        shared / "style_models",
        comfy.models / "style_models",
    )
    assert built.folders_for_comfy_dir("configs")[-1] == webui / "models" / "Stable-diffusion"
    assert built.folders_for_comfy_dir("models/loras") == built.folders("lora")
    assert built.folders_for_comfy_dir("unet") == built.folders("diffusion_model")
    assert built.warnings == ()
    assert listing(tmp_path) == before


def test_a_comfyui_install_without_the_yaml_has_comfyuis_own_folders(tmp_path) -> None:
    comfy = comfyui_tree(tmp_path)
    built = roots.build_roots(tmp_path / "unused", comfyui=comfy.root)
    assert built.default("lora") == comfy.models / "loras"
    assert built.folders("diffusion_model") == (comfy.models / "diffusion_models", comfy.models / "unet")
    assert built.folders_for_comfy_dir("gligen") == (comfy.models / "gligen",)


def test_the_extra_paths_flag_is_read_after_the_installs_own_file(tmp_path, home) -> None:
    """ComfyUI reads extra_model_paths.yaml first, then --extra-model-paths-config: a default in
    the later file is inserted in front of the earlier one."""
    disk = second_disk(tmp_path, "first", "second")
    comfy = comfyui_tree(tmp_path, f"one:\n  base_path: {disk}\n  is_default: true\n  vae: first\n")
    flag_file = tmp_path / "more.yaml"
    flag_file.write_text("two:\n  base_path: disk2\n  is_default: true\n  vae: second\n")
    built = roots.build_roots(tmp_path / "unused", comfyui=comfy.root, comfyui_extra_paths=flag_file)
    assert built.folders("vae") == (disk / "second", disk / "first", comfy.models / "vae")


def test_a_path_already_listed_moves_to_the_front_when_a_default_names_it(tmp_path) -> None:
    comfy = comfyui_tree(tmp_path, "again:\n  base_path: models\n  is_default: true\n  loras: loras\n")
    built = roots.build_roots(tmp_path / "unused", comfyui=comfy.root)
    assert built.folders("lora") == (comfy.models / "loras",)


def test_paths_without_base_path_are_relative_to_the_yaml_and_absolute_ones_stand_alone(tmp_path) -> None:
    disk = second_disk(tmp_path, "vae")
    (tmp_path / "beside" / "loras").mkdir(parents=True)
    yaml_file = tmp_path / "beside" / "paths.yaml"
    yaml_file.write_text(f"plain:\n  loras: loras\n  vae: {disk / 'vae'}\n")
    built = roots.build_roots(tmp_path / "models", comfyui_extra_paths=yaml_file)
    assert built.folders("lora") == (tmp_path / "models" / "lora", tmp_path / "beside" / "loras")
    assert built.folders("vae") == (tmp_path / "models" / "vae", disk / "vae")


def test_environment_variables_in_base_path_are_expanded(tmp_path, monkeypatch) -> None:
    disk = second_disk(tmp_path, "loras")
    monkeypatch.setenv("MODEL_DISK", str(disk))
    yaml_file = tmp_path / "paths.yaml"
    yaml_file.write_text("env:\n  base_path: $MODEL_DISK\n  loras: loras\n")
    built = roots.build_roots(tmp_path / "models", comfyui_extra_paths=yaml_file)
    assert built.folders("lora")[-1] == disk / "loras"


def test_read_extra_model_paths_lists_folders_in_file_order(tmp_path, comfy_setup) -> None:
    comfy, webui, shared = comfy_setup
    found = roots.read_extra_model_paths(comfy.extra_paths)
    assert found[0] == roots.ExtraPath("checkpoints", shared / "checkpoints", True, "comfyui")
    assert ("unet", webui / "models" / "Stable-diffusion", False, "a1111") in found
    assert {extra.section for extra in found} == {"comfyui", "a1111"}  # the empty section names nothing


# -- an AUTOMATIC1111 install ----------------------------------------------------------------------


def test_a1111_install_uses_its_models_folder_and_top_level_embeddings(tmp_path) -> None:
    webui = a1111_tree(tmp_path)
    built = roots.build_roots(tmp_path / "unused", a1111=webui)
    assert built.default("checkpoint") == webui / "models" / "Stable-diffusion"
    assert built.folders("embedding") == (webui / "embeddings",)  # --embeddings-dir: data/embeddings
    assert built.folders("lora") == (webui / "models" / "Lora", webui / "models" / "LyCORIS")
    assert built.default("upscaler") == webui / "models" / "ESRGAN"
    assert built.default("text_encoder") == webui / "models" / "text_encoder"  # Forge's folder
    assert built.default("motion_module") == webui / "models" / "animatediff_models"


def test_a1111_with_animatediff_puts_motion_modules_where_the_extension_reads_them(tmp_path) -> None:
    webui = a1111_tree(tmp_path, animatediff=True)
    built = roots.build_roots(tmp_path / "unused", a1111=webui)
    assert built.default("motion_module") == webui / "extensions" / "sd-webui-animatediff" / "model"


def test_an_a1111_install_beside_a_comfyui_one_only_adds_folders(tmp_path) -> None:
    comfy = comfyui_tree(tmp_path)
    webui = a1111_tree(tmp_path)
    built = roots.build_roots(tmp_path / "unused", comfyui=comfy.root, a1111=webui)
    assert built.folders("checkpoint") == (
        comfy.models / "checkpoints",
        webui / "models" / "Stable-diffusion",
    )


@pytest.mark.parametrize("flag", ["comfyui", "a1111"])
def test_an_install_that_is_not_a_folder_is_refused(tmp_path, flag) -> None:
    (tmp_path / "a-file").write_text("x")
    for path in (tmp_path / "missing", tmp_path / "a-file"):
        assert code_of(roots.build_roots, tmp_path / "models", **{flag: path}) == "install_missing"


# -- bad extra_model_paths.yaml --------------------------------------------------------------------


def build_with(tmp_path: Path, text: str | bytes) -> roots.ModelRoots:
    yaml_file = tmp_path / "extra.yaml"
    if isinstance(text, bytes):
        yaml_file.write_bytes(text)
    else:
        yaml_file.write_text(text, encoding="utf-8")
    return roots.build_roots(tmp_path / "models", comfyui_extra_paths=yaml_file)


@pytest.mark.parametrize(
    "text",
    [
        "comfyui:\n  loras: [unclosed\n",  # not YAML
        "comfyui:\n\tloras: x\n",  # a tab is not YAML indentation
        "- a list\n- of paths\n",  # not a mapping
        "just text\n",
        "comfyui: models/loras\n",  # a section that is not a mapping
        "comfyui:\n  loras:\n    - a\n    - b\n",  # a list where ComfyUI splits a string
        "comfyui:\n  loras:\n",  # no value
        "comfyui:\n  loras: 3\n",
        "comfyui:\n  is_default: sometimes\n  loras: x\n",
        "comfyui:\n  base_path: [a]\n  loras: x\n",
        b"comfyui:\n  loras: \xff\xfe\n",  # not UTF-8
    ],
)
def test_a_yaml_that_cannot_be_read_is_refused_and_nothing_is_written(tmp_path, text) -> None:
    before_models = (tmp_path / "models").exists()
    assert code_of(build_with, tmp_path, text) == "extra_paths_invalid"
    assert (tmp_path / "models").exists() == before_models


def test_an_empty_yaml_adds_nothing(tmp_path) -> None:
    assert build_with(tmp_path, "").folders("lora") == (tmp_path / "models" / "lora",)


def test_a_yaml_that_does_not_exist_is_refused(tmp_path) -> None:
    missing = tmp_path / "nowhere.yaml"
    assert (
        code_of(roots.build_roots, tmp_path / "models", comfyui_extra_paths=missing) == "extra_paths_missing"
    )


@pytest.mark.parametrize(
    "text",
    [
        "x:\n  base_path: base\n  loras: ../../etc\n",
        "x:\n  base_path: base\n  loras: |\n    loras\n    sub/../../escape\n",
        "x:\n  loras: ../next-to-the-yaml\n",  # no base_path: the yaml's folder is the base
    ],
)
def test_a_relative_path_climbing_out_of_its_base_is_refused(tmp_path, text) -> None:
    (tmp_path / "base" / "loras").mkdir(parents=True)
    assert code_of(build_with, tmp_path, text) == "extra_paths_outside"


def test_dotdot_that_stays_inside_the_base_is_fine(tmp_path) -> None:
    (tmp_path / "base" / "loras").mkdir(parents=True)
    built = build_with(tmp_path, "x:\n  base_path: base\n  loras: sub/../loras\n")
    assert built.folders("lora")[-1] == tmp_path / "base" / "loras"


def test_a_missing_second_disk_is_left_out_with_a_warning(tmp_path, caplog) -> None:
    (tmp_path / "here" / "vae").mkdir(parents=True)
    (tmp_path / "here" / "a-file").write_text("not a folder")
    text = "disk:\n  base_path: /mnt/not-mounted-disk\n  loras: loras\nhere:\n  base_path: here\n"
    text += "  vae: |\n    vae\n    a-file\n  ipadapter: gone\n"
    built = build_with(tmp_path, text)
    assert built.folders("lora") == (tmp_path / "models" / "lora",)
    assert built.folders("vae") == (tmp_path / "models" / "vae", tmp_path / "here" / "vae")
    assert built.folders_for_comfy_dir("ipadapter") == ()
    assert len(built.warnings) == 3
    assert "/mnt/not-mounted-disk/loras does not exist" in built.warnings[0]
    assert "a-file is not a folder" in built.warnings[1]
    assert "/mnt/not-mounted-disk/loras" in caplog.text


def test_a_default_that_does_not_exist_refuses_start_up(tmp_path) -> None:
    text = "disk:\n  base_path: /mnt/not-mounted-disk\n  is_default: true\n  loras: loras\n"
    assert code_of(build_with, tmp_path, text) == "extra_paths_missing"


def test_a_default_that_is_a_file_refuses_start_up(tmp_path) -> None:
    (tmp_path / "loras").write_text("not a folder")
    assert code_of(build_with, tmp_path, "x:\n  is_default: true\n  loras: loras\n") == "extra_paths_missing"


def test_a_missing_default_for_a_folder_without_a_type_only_warns(tmp_path) -> None:
    built = build_with(tmp_path, "x:\n  is_default: true\n  ipadapter: nowhere\n")  # a custom node's folder
    assert built.folders_for_comfy_dir("ipadapter") == ()
    assert "nowhere does not exist" in built.warnings[0]


def test_a_default_this_user_cannot_write_refuses_start_up(tmp_path, read_only_folder) -> None:
    text = (
        f"ro:\n  base_path: {read_only_folder.parent}\n  is_default: true\n  loras: {read_only_folder.name}\n"
    )
    assert code_of(build_with, tmp_path, text) == "extra_paths_unwritable"


def test_a_read_only_folder_that_is_not_the_default_is_kept_for_presence_checks(
    tmp_path, read_only_folder
) -> None:
    built = build_with(tmp_path, f"ro:\n  loras: {read_only_folder}\n")
    assert built.folders("lora") == (tmp_path / "models" / "lora", read_only_folder)
    assert built.warnings == ()


# -- subfolders ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SDXL/styles", "SDXL/styles"),
        ("SDXL\\styles", "SDXL/styles"),
        ("SDXL/", "SDXL"),
        ("a/b/c/d", "a/b/c/d"),
        ("", ""),
        ("Pony v6", "Pony v6"),
        ("Cafe\u0301", unicodedata.normalize("NFC", "Caf\u00e9")),
        ("模型/风格", "模型/风格"),
        ("x" * files.MAX_NAME_BYTES, "x" * files.MAX_NAME_BYTES),
    ],
)
def test_check_subfolder_normalises_good_subfolders(text, expected) -> None:
    assert roots.check_subfolder(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "..",
        "../x",
        "a/../b",
        "a/..",
        "./a",
        "/abs/path",
        "\\\\server\\share",
        "C:/models",
        "a//b",
        "/",
        ".hidden",
        "a/.git",
        ".staging/x",
        "a\x00b",
        "a\nb",
        "a\x7fb",
        "a|b",
        "a?b",
        "a/b/c/d/e",
        "x" * (files.MAX_NAME_BYTES + 1),
        "é" * (files.MAX_NAME_BYTES // 2 + 1),
        " leading",
        "trailing ",
        "dot.",
        "CON",
        "nul.txt",
        "a/LPT1",
    ],
)
def test_check_subfolder_refuses_unsafe_subfolders(text) -> None:
    assert code_of(roots.check_subfolder, text) == "invalid_subfolder"


@pytest.mark.parametrize(
    ("template", "facts", "expected"),
    [
        ("{base_model}", {"base_model": "SDXL 1.0"}, "SDXL 1.0"),
        ("{repo_owner}/{repo_name}", roots.repo_facts("stabilityai/sdxl-vae"), "stabilityai/sdxl-vae"),
        ("loras/{base_model}", {"base_model": "Pony/Illustrious"}, "loras/Pony_Illustrious"),
        ("{base_model}/{repo_name}", {"base_model": "SD 1.5"}, "SD 1.5"),
        ("{base_model}", {}, ""),
        ("{base_model}", {"base_model": "../../etc"}, "_.._etc"),
        ("{model_name}", {"model_name": ".hidden:name"}, "hidden_name"),
        ("by-{source}", {"source": "civitai"}, "by-civitai"),
    ],
)
def test_subfolder_templates_are_filled_and_checked(template, facts, expected) -> None:
    assert roots.subfolder_from_template(template, facts) == expected


@pytest.mark.parametrize(
    "template", ["{author}", "{base_model!r}", "{base_model:>9}", "{base_model.x}", "{", "{0}"]
)
def test_unknown_placeholders_are_refused_at_start_up(template) -> None:
    assert code_of(roots.check_subfolder_template, template) == "invalid_subfolder_template"


@pytest.mark.parametrize(
    "template", ["../{base_model}", "/abs/{base_model}", "a//{base_model}", ".x/{repo_name}"]
)
def test_templates_whose_fixed_text_is_unsafe_are_refused_at_start_up(template) -> None:
    assert code_of(roots.check_subfolder_template, template) == "invalid_subfolder"


# -- what is on disk -------------------------------------------------------------------------------


def test_find_present_looks_in_every_folder_of_the_type(tmp_path, comfy_setup) -> None:
    comfy, webui, shared = comfy_setup
    built = roots.build_roots(tmp_path / "unused", comfyui=comfy.root)
    on_disk2 = put_model(shared / "checkpoints" / "a.safetensors")
    in_comfy = put_model(comfy.models / "checkpoints" / "a.safetensors")
    nested = put_model(webui / "models" / "Stable-diffusion" / "SDXL" / "b.safetensors")
    assert roots.find_present(built, "checkpoint", "a.safetensors") == [on_disk2, in_comfy]
    assert roots.find_present(built, "checkpoint", "SDXL/b.safetensors") == [nested]
    assert roots.find_present(built, "checkpoint", "SDXL\\b.safetensors") == [nested]
    assert roots.find_present(built, "lora", "a.safetensors") == []
    assert (
        code_of(roots.find_present, built, "checkpoint", "../checkpoints/a.safetensors")
        == "invalid_subfolder"
    )
    assert code_of(roots.find_present, built, "checkpoint", "SDXL/..") == "invalid_filename"


def test_a_symlink_out_of_the_root_is_not_present(tmp_path) -> None:
    models = tmp_path / "models"
    outside = put_model(tmp_path / "elsewhere" / "real.safetensors")
    (models / "lora").mkdir(parents=True)
    (models / "lora" / "linked.safetensors").symlink_to(outside)
    built = roots.build_roots(models)
    assert roots.find_present(built, "lora", "linked.safetensors") == []
    assert list(roots.iter_models(built)) == []


def test_iter_models_lists_models_only(tmp_path) -> None:
    models = tmp_path / "models"
    lora = models / "lora"
    put_model(lora / "a.safetensors")
    put_model(lora / "SDXL" / "styles" / "b.ckpt")
    put_model(lora / "q.gguf")
    for not_a_model in (
        ".hidden.safetensors",
        ".staging/job1/c.safetensors",
        ".cache/d.safetensors",
        "a.json",
        "a.civitai.info",
        "a.civitai.json",
        "a.preview.png",
        "a.png",
        "a.txt",
        "a.yaml",
        "e.safetensors.aria2",
        ".a.json.part",
        "notes.md",
    ):
        put_model(lora / not_a_model, b"{}")
    os.mkfifo(lora / "fifo.safetensors")
    put_model(models / "checkpoint" / "SDXL" / "real.safetensors")
    (models / "checkpoint" / "alias.safetensors").symlink_to(
        models / "checkpoint" / "SDXL" / "real.safetensors"
    )
    (models / "checkpoint" / "loop").symlink_to(models / "checkpoint")
    built = roots.build_roots(models)
    found = {(item.model_type, item.root.name, str(item.relative)) for item in roots.iter_models(built)}
    assert found == {
        ("lora", "lora", "a.safetensors"),
        ("lora", "lora", "SDXL/styles/b.ckpt"),
        ("lora", "lora", "q.gguf"),
        ("checkpoint", "checkpoint", "SDXL/real.safetensors"),
        ("checkpoint", "checkpoint", "alias.safetensors"),
    }


def test_a_folder_shared_by_two_types_is_listed_once(tmp_path) -> None:
    """A1111 keeps checkpoints and UNet-only diffusion models both in models/Stable-diffusion."""
    webui = a1111_tree(tmp_path)
    put_model(webui / "models" / "Stable-diffusion" / "x.safetensors")
    built = roots.build_roots(tmp_path / "unused", a1111=webui)
    assert [(item.model_type, str(item.relative)) for item in roots.iter_models(built)] == [
        ("checkpoint", "x.safetensors")
    ]


def test_a_root_inside_another_root_is_walked_as_its_own(tmp_path) -> None:
    base = tmp_path / "pool"
    put_model(base / "loras" / "l.safetensors")
    put_model(base / "c.safetensors")
    yaml_file = tmp_path / "paths.yaml"
    yaml_file.write_text(f"pool:\n  base_path: {base}\n  checkpoints: .\n  loras: loras\n")
    built = roots.build_roots(tmp_path / "models", comfyui_extra_paths=yaml_file)
    found = sorted((item.model_type, str(item.relative)) for item in roots.iter_models(built))
    assert found == [("checkpoint", "c.safetensors"), ("lora", "l.safetensors")]
