"""Reading ComfyUI workflows (JSON, PNG, WebP) into the list of models a user would download."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.bundles.embedded import read_embedded
from orchestrator.bundles.workflow import (
    FOLDER_TYPES,
    LEGACY_FOLDERS,
    LOADERS,
    MAX_WORKFLOW_BYTES,
    Place,
    Workflow,
    read_workflow,
)
from orchestrator.config import MODEL_TYPES, folder_for
from orchestrator.errors import OrchestratorError
from tests.fakes import images

FIXTURES = Path(__file__).resolve().parent.parent / "fakes" / "workflows"
HF = "https://huggingface.co"
SDXL_SHA = "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b"
SHA = "ab" * 32


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def rows(workflow: Workflow) -> list[tuple[Any, ...]]:
    """What the page shows per model: name, folder, type, link, SHA-256, needed."""
    return [(m.name, m.directory, m.model_type, m.url, m.sha256, m.active) for m in workflow.models]


def node(
    node_id: int, node_type: str, widgets: Any = None, models: Any = None, mode: int = 0
) -> dict[str, Any]:
    item: dict[str, Any] = {"id": node_id, "type": node_type, "mode": mode, "properties": {}}
    if widgets is not None:
        item["widgets_values"] = widgets
    if models is not None:
        item["properties"]["models"] = models
    return item


def ui(*nodes: dict[str, Any], models: Any = None, **extra: Any) -> bytes:
    document: dict[str, Any] = {
        "last_node_id": 99,
        "nodes": list(nodes),
        "links": [],
        "version": 0.4,
        **extra,
    }
    if models is not None:
        document["models"] = models
    return json.dumps(document).encode()


def entry(name: str, directory: str | None = "loras", url: str | None = None, **more: str) -> dict[str, Any]:
    item: dict[str, Any] = {"name": name, **more}
    if directory is not None:
        item["directory"] = directory
    if url is not None:
        item["url"] = url
    return item


def refused(data: bytes, filename: str | None = None) -> OrchestratorError:
    with pytest.raises(OrchestratorError) as caught:
        read_workflow(data, filename)
    return caught.value


# --- the hand-written workflows ------------------------------------------------------------------


def test_sdxl_workflow_lists_checkpoint_lora_upscaler_and_the_bypassed_vae() -> None:
    workflow = read_workflow(fixture("sdxl_lora_upscale.json"), "sdxl_lora_upscale.json")

    assert workflow.format == "ui"
    assert rows(workflow) == [
        (
            "sd_xl_base_1.0.safetensors",
            "checkpoints",
            "checkpoint",
            f"{HF}/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
            SDXL_SHA,
            True,
        ),
        (
            "SDXL/detail-tweaker-xl.safetensors",
            "loras",
            "lora",
            "https://civitai.com/api/download/models/135867?type=Model&format=SafeTensor",
            None,
            True,
        ),
        ("sdxl_vae_fp16_fix.safetensors", "vae", "vae", None, None, False),
        (
            "4x-UltraSharp.pth",
            "upscale_models",
            "upscaler",
            f"{HF}/lokCX/4x-Ultrasharp/resolve/main/4x-UltraSharp.pth",
            None,
            True,
        ),
    ]
    checkpoint, lora, vae, upscaler = workflow.models
    assert checkpoint.places == (Place("4", "CheckpointLoaderSimple", "ckpt_name"),)
    assert lora.places == (Place("10", "LoraLoader", "lora_name"),)
    assert upscaler.places == (Place("12", "UpscaleModelLoader", "model_name"),)
    assert [m.hint for m in (checkpoint, lora, upscaler)] == [None, None, None]
    assert vae.places == (Place("14", "VAELoader", "vae_name"),)
    assert vae.hint is not None
    assert (vae.hint.kind, vae.hint.query) == ("search", "sdxl_vae_fp16_fix")


def test_flux_workflow_maps_legacy_folders_and_turns_hub_pages_into_download_links() -> None:
    workflow = read_workflow(fixture("flux_legacy_folders.json"))

    assert rows(workflow) == [
        (
            "flux1-dev.safetensors",
            "diffusion_models",
            "diffusion_model",
            f"{HF}/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors",
            None,
            True,
        ),
        (
            "t5xxl_fp8_e4m3fn.safetensors",
            "text_encoders",
            "text_encoder",
            f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp8_e4m3fn.safetensors",
            None,
            True,
        ),
        (
            "clip_l.safetensors",
            "text_encoders",
            "text_encoder",
            f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors",
            None,
            True,
        ),
        (
            "ae.safetensors",
            "vae",
            "vae",
            f"{HF}/black-forest-labs/FLUX.1-schnell/resolve/main/ae.safetensors",
            None,
            True,
        ),
        ("flux/realism_lora.safetensors", "loras", "lora", None, None, True),
    ]
    encoders = [m.places for m in workflow.models[1:3]]
    assert encoders == [
        (Place("2", "DualCLIPLoader", "clip_name1"),),
        (Place("2", "DualCLIPLoader", "clip_name2"),),
    ]
    lora = workflow.models[-1]
    assert lora.hint is not None
    assert (lora.hint.kind, lora.hint.query) == ("search", "realism_lora")
    assert "no link" in lora.hint.text


def test_subgraph_loaders_are_found_at_any_depth_and_unused_subgraphs_are_not_needed() -> None:
    workflow = read_workflow(fixture("subgraph_loader.json"))

    assert rows(workflow) == [
        (
            "dreamshaper_8.safetensors",
            "checkpoints",
            "checkpoint",
            "https://civitai.com/api/download/models/128713",
            "879db523c30d3b9017143d56705015e15a2cb5628762c11d086fed9538abd7fd",
            True,
        ),
        (
            "RealESRGAN_x4plus.pth",
            "upscale_models",
            "upscaler",
            f"{HF}/lllyasviel/Annotators/resolve/main/RealESRGAN_x4plus.pth",
            None,
            False,  # its only instance (node 21) is muted
        ),
        ("add_detail.safetensors", "loras", "lora", None, None, True),
    ]
    assert [m.places for m in workflow.models] == [
        (Place("1", "CheckpointLoaderSimple", "ckpt_name", "Base model"),),
        (Place("1", "UpscaleModelLoader", "model_name", "Hires fix"),),
        (Place("1", "LoraLoader", "lora_name", "Detail LoRA"),),
    ]


def test_template_models_list_fills_links_and_each_model_is_listed_once() -> None:
    workflow = read_workflow(fixture("template_models.json"))

    vae_url = f"{HF}/stabilityai/sd-vae-ft-mse-original/resolve/main/vae-ft-mse-840000-ema-pruned.safetensors"
    assert rows(workflow) == [
        (
            "v1-5-pruned-emaonly-fp16.safetensors",
            "checkpoints",
            "checkpoint",
            f"{HF}/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly-fp16.safetensors",
            "e9476a13728cd75d8279f6ec8bad753a66a1957ca375a1464dc63b37db6e3916",
            True,
        ),
        ("vae-ft-mse-840000-ema-pruned.safetensors", "vae", "vae", vae_url, None, True),
        (
            "control_v11p_sd15_canny.pth",
            "controlnet",
            "controlnet",
            f"{HF}/lllyasviel/ControlNet-v1-1/resolve/main/control_v11p_sd15_canny.pth",
            None,
            True,
        ),
        (
            "coadapter-style-sd15v1.pth",
            "style_models",
            "style_model",
            f"{HF}/TencentARC/T2I-Adapter/resolve/main/models/coadapter-style-sd15v1.pth",
            None,
            True,
        ),
    ]
    models_list = Place(None, None)
    assert workflow.models[0].places == (Place("1", "CheckpointLoaderSimple", "ckpt_name"), models_list)
    assert workflow.models[1].places == (
        Place("2", "VAELoader", "vae_name"),
        Place("3", "VAEDecodeTiled"),
        models_list,
    )
    assert workflow.models[3].places == (models_list,)


def test_api_prompt_lists_loader_inputs_without_links() -> None:
    workflow = read_workflow(fixture("api_prompt.json"))

    assert workflow.format == "api"
    assert rows(workflow) == [
        ("v1-5-pruned-emaonly.safetensors", "checkpoints", "checkpoint", None, None, True),
        ("SD15/epi_noiseoffset2.safetensors", "loras", "lora", None, None, True),
    ]  # VAELoader's built-in "taesd" and a ControlNetLoader fed by a link are not files
    assert [m.places for m in workflow.models] == [
        (Place("4", "CheckpointLoaderSimple", "ckpt_name"),),
        (Place("10", "LoraLoader", "lora_name"),),
    ]
    assert [m.hint.query if m.hint else None for m in workflow.models] == [
        "v1-5-pruned-emaonly",
        "epi_noiseoffset2",
    ]


def test_api_prompt_as_posted_to_the_prompt_endpoint() -> None:
    prompt = json.loads(fixture("api_prompt.json"))
    workflow = read_workflow(json.dumps({"client_id": "abc", "prompt": prompt}).encode())

    assert workflow.format == "api"
    assert [m.name for m in workflow.models] == [
        "v1-5-pruned-emaonly.safetensors",
        "SD15/epi_noiseoffset2.safetensors",
    ]


def test_public_is_the_json_the_page_gets() -> None:
    data = ui(
        node(
            7,
            "VAELoader",
            ["ae.safetensors"],
            [entry("ae.safetensors", "vae", f"{HF}/o/r/blob/main/ae.safetensors")],
        )
    )

    public = read_workflow(data).public()

    assert json.loads(json.dumps(public)) == {
        "format": "ui",
        "models": [
            {
                "name": "ae.safetensors",
                "directory": "vae",
                "model_type": "vae",
                "url": f"{HF}/o/r/resolve/main/ae.safetensors",
                "sha256": None,
                "hint": None,
                "active": True,
                "places": [{"node_id": "7", "node_type": "VAELoader", "input": "vae_name", "subgraph": None}],
            }
        ],
    }


def test_a_workflow_without_models_is_an_empty_list() -> None:
    workflow = read_workflow(ui(node(1, "KSampler", [1, "fixed", 20, 7, "euler", "normal", 1])))

    assert (workflow.format, workflow.models) == ("ui", ())


def test_a_byte_order_mark_is_allowed() -> None:
    workflow = read_workflow(b"\xef\xbb\xbf" + fixture("api_prompt.json"))

    assert len(workflow.models) == 2


# --- widgets_values by position ------------------------------------------------------------------


def test_widget_positions_follow_the_node_definition_order() -> None:
    data = ui(
        node(1, "CheckpointLoader", ["v1-inference.yaml", "sd15.ckpt"]),
        node(2, "TripleCLIPLoader", ["clip_l.safetensors", "clip_g.safetensors", "t5xxl.safetensors"]),
        node(3, "QuadrupleCLIPLoader", ["a.safetensors", "b.safetensors", "c.safetensors", "d.gguf"]),
        node(4, "CLIPLoader", ["umt5.safetensors", "wan", "default"]),
        node(5, "HypernetworkLoader", ["hn.pt", 1.0]),
        node(6, "ModelPatchLoader", ["patch.safetensors"]),
    )

    assert [(m.name, m.directory, m.places[0].input) for m in read_workflow(data).models] == [
        ("sd15.ckpt", "checkpoints", "ckpt_name"),
        ("clip_l.safetensors", "text_encoders", "clip_name1"),
        ("clip_g.safetensors", "text_encoders", "clip_name2"),
        ("t5xxl.safetensors", "text_encoders", "clip_name3"),
        ("a.safetensors", "text_encoders", "clip_name1"),
        ("b.safetensors", "text_encoders", "clip_name2"),
        ("c.safetensors", "text_encoders", "clip_name3"),
        ("d.gguf", "text_encoders", "clip_name4"),
        ("umt5.safetensors", "text_encoders", "clip_name"),
        ("hn.pt", "hypernetworks", "hypernetwork_name"),
        ("patch.safetensors", "model_patches", "name"),
    ]


def test_widgets_values_by_name_short_lists_and_built_in_choices() -> None:
    data = ui(
        node(
            1,
            "DualCLIPLoader",
            {"type": "flux", "clip_name2": "clip_l.safetensors", "clip_name1": "t5.safetensors"},
        ),
        node(2, "DualCLIPLoader", ["only_first.safetensors"]),
        node(3, "VAELoader", ["pixel_space"]),
        node(4, "LoraLoader", ["None", 1, 1]),
        node(5, "UNETLoader", [None, "default"]),
        node(6, "ControlNetLoader"),
    )

    assert [(m.name, m.places[0].input) for m in read_workflow(data).models] == [
        ("t5.safetensors", "clip_name1"),
        ("clip_l.safetensors", "clip_name2"),
        ("only_first.safetensors", "clip_name1"),
    ]


def test_the_same_file_in_two_inputs_of_one_node_keeps_both_places() -> None:
    data = ui(node(1, "DualCLIPLoader", ["clip_l.safetensors", "clip_l.safetensors", "sdxl"]))

    (model,) = read_workflow(data).models
    assert model.places == (
        Place("1", "DualCLIPLoader", "clip_name1"),
        Place("1", "DualCLIPLoader", "clip_name2"),
    )


# --- merging -------------------------------------------------------------------------------------


def test_one_model_named_in_many_places_is_one_entry_with_the_link_found_anywhere() -> None:
    link = f"{HF}/o/r/resolve/main/x.safetensors"
    data = ui(
        node(1, "LoraLoader", ["x.safetensors", 1, 1]),
        node(2, "LoraLoader", ["x.safetensors", 1, 1], [entry("x.safetensors", "loras", link)]),
        node(
            3,
            "LoraLoaderModelOnly",
            ["x.safetensors", 1],
            [entry("x.safetensors", "loras", f"{HF}/other/r/resolve/main/x.safetensors")],
        ),
        models=[entry("x.safetensors", "loras", hash=SHA.upper(), hash_type="SHA256")],
    )

    (model,) = read_workflow(data).models
    assert (model.name, model.url, model.sha256, model.hint) == ("x.safetensors", link, SHA, None)
    assert [place.node_id for place in model.places] == ["1", "2", "3", None]


def test_same_name_in_two_folders_is_two_models() -> None:
    data = ui(
        node(1, "CheckpointLoaderSimple", ["flux1-dev.safetensors"]),
        node(2, "UNETLoader", ["flux1-dev.safetensors", "default"]),
    )

    assert [(m.name, m.directory) for m in read_workflow(data).models] == [
        ("flux1-dev.safetensors", "checkpoints"),
        ("flux1-dev.safetensors", "diffusion_models"),
    ]


def test_backslash_and_slash_spellings_of_a_name_are_one_model() -> None:
    link = f"{HF}/o/r/resolve/main/SDXL/a.safetensors"
    data = ui(
        node(1, "LoraLoader", ["SDXL\\a.safetensors", 1, 1]),
        models=[entry("SDXL/a.safetensors", "loras", link)],
    )

    assert rows(read_workflow(data)) == [("SDXL/a.safetensors", "loras", "lora", link, None, True)]


def test_a_properties_entry_the_widgets_do_not_select_is_not_needed_but_lends_its_link() -> None:
    link = f"{HF}/o/r/resolve/main/old.safetensors"
    data = ui(
        node(1, "LoraLoader", ["new.safetensors", 1, 1], [entry("old.safetensors", "loras", link)]),
        node(2, "LoraLoader", ["old.safetensors", 1, 1]),
    )

    workflow = read_workflow(data)
    assert rows(workflow) == [
        ("new.safetensors", "loras", "lora", None, None, True),
        ("old.safetensors", "loras", "lora", link, None, True),
    ]
    assert workflow.models[1].places == (Place("2", "LoraLoader", "lora_name"),)


def test_a_node_without_text_widgets_keeps_all_its_properties_models() -> None:
    data = ui(
        node(
            1,
            "SomeCustomNode",
            [0.5, 3],
            [entry("custom.safetensors", "controlnet", f"{HF}/o/r/resolve/main/c.safetensors")],
        )
    )

    assert rows(read_workflow(data)) == [
        ("custom.safetensors", "controlnet", "controlnet", f"{HF}/o/r/resolve/main/c.safetensors", None, True)
    ]


def test_an_entry_without_a_folder_only_lends_its_link_by_name() -> None:
    link = f"{HF}/o/r/resolve/main/ip.safetensors"
    data = ui(
        node(1, "CLIPVisionLoader", ["ip.safetensors"]),
        models=[entry("ip.safetensors", None, link), entry("lost.bin", None, link)],
    )

    assert rows(read_workflow(data)) == [("ip.safetensors", "clip_vision", "clip_vision", link, None, True)]


def test_muted_and_bypassed_nodes_name_models_that_are_not_needed_unless_another_node_uses_them() -> None:
    data = ui(
        node(1, "LoraLoader", ["muted.safetensors", 1, 1], mode=2),
        node(2, "LoraLoader", ["bypassed.safetensors", 1, 1], mode=4),
        node(3, "LoraLoader", ["shared.safetensors", 1, 1], mode=4),
        node(4, "LoraLoaderModelOnly", ["shared.safetensors", 1]),
    )

    assert [(m.name, m.active) for m in read_workflow(data).models] == [
        ("muted.safetensors", False),
        ("bypassed.safetensors", False),
        ("shared.safetensors", True),
    ]


# --- hashes, links and hints ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hash_value", "hash_type", "expected"),
    [
        (SHA.upper(), "SHA256", SHA),
        (SHA, "sha256", SHA),
        (SHA, "SHA-256", SHA),
        (SHA[:-1], "SHA256", None),
        ("zz" * 32, "SHA256", None),
        (SHA, "blake3", None),
        (SHA, None, None),
    ],
)
def test_sha256_comes_only_from_a_valid_sha256_hash(
    hash_value: str, hash_type: str | None, expected: Any
) -> None:
    item = {"name": "m.safetensors", "directory": "loras", "hash": hash_value}
    if hash_type is not None:
        item["hash_type"] = hash_type

    (model,) = read_workflow(ui(models=[item])).models
    assert model.sha256 == expected
    assert model.hint is not None
    assert (model.hint.kind, model.hint.query) == (("civitai_hash", SHA) if expected else ("search", "m"))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"{HF}/o/r/blob/main/sub/m.safetensors?download=true", f"{HF}/o/r/resolve/main/sub/m.safetensors"),
        (f"{HF}/datasets/o/r/blob/v1/m.safetensors", f"{HF}/datasets/o/r/resolve/v1/m.safetensors"),
        (f"{HF}/gpt2/blob/main/m.safetensors", f"{HF}/gpt2/resolve/main/m.safetensors"),
        (f"{HF}/blob/blob/blob/main/m.safetensors", f"{HF}/blob/blob/resolve/main/m.safetensors"),
        ("https://hf.co/o/r/blob/main/m.safetensors", "https://hf.co/o/r/resolve/main/m.safetensors"),
        (
            "https://example.com/blob/x/m.safetensors?download=true&v=2",
            "https://example.com/blob/x/m.safetensors?v=2",
        ),
        ("  https://example.com/m.safetensors  ", "https://example.com/m.safetensors"),
    ],
)
def test_links_become_download_links(raw: str, expected: Any) -> None:
    (model,) = read_workflow(ui(models=[entry("m.safetensors", "loras", raw)])).models

    assert (model.url, model.hint) == (expected, None)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("ftp://example.com/m.safetensors", "not an http(s) link"),
        ("file:///etc/passwd", "not an http(s) link"),
        ("javascript:alert(1)", "not an http(s) link"),
        ("models/m.safetensors", "not an http(s) link"),
        ("http://[::1/m.safetensors", "not a valid web link"),
        ("https://user:hunter2@example.com/m.safetensors", "user name or password"),
        ("https://civitai.com/api/download/models/1?token=s3cret", "API token"),
        (f"{HF}/o/r", "does not point to a file"),
    ],
)
def test_a_link_that_cannot_be_used_is_dropped_and_said_so(raw: str, why: str) -> None:
    workflow = read_workflow(ui(models=[entry("m.safetensors", "loras", raw)]))

    (model,) = workflow.models
    assert model.url is None
    assert model.hint is not None
    assert model.hint.kind == "search"
    assert why in model.hint.text
    shown = json.dumps(workflow.public())
    assert "hunter2" not in shown
    assert "s3cret" not in shown


def test_a_dropped_link_is_replaced_by_a_good_one_found_elsewhere() -> None:
    good = f"{HF}/o/r/resolve/main/m.safetensors"
    data = ui(
        models=[
            entry("m.safetensors", "loras", "ftp://example.com/m.safetensors"),
            entry("m.safetensors", "loras", good),
        ]
    )

    (model,) = read_workflow(data).models
    assert (model.url, model.hint) == (good, None)


# --- images --------------------------------------------------------------------------------------


def sdxl_texts() -> dict[str, str]:
    return {
        "prompt": json.dumps(json.loads(fixture("api_prompt.json"))),
        "workflow": json.dumps(json.loads(fixture("sdxl_lora_upscale.json"))),
    }


@pytest.mark.parametrize("chunk", ["tEXt", "zTXt", "iTXt", "iTXt-compressed"])
def test_png_workflow_is_read_and_preferred_over_the_prompt(chunk: str) -> None:
    workflow = read_workflow(images.png(sdxl_texts(), chunk=chunk), "ComfyUI_00001_.png")

    assert workflow == read_workflow(fixture("sdxl_lora_upscale.json"))
    assert workflow.format == "ui"


def test_png_text_after_the_image_data_is_read() -> None:
    workflow = read_workflow(images.png(sdxl_texts(), before_image=False))

    assert workflow == read_workflow(fixture("sdxl_lora_upscale.json"))


def test_png_with_only_a_prompt_gives_the_api_list() -> None:
    workflow = read_workflow(images.png({"prompt": fixture("api_prompt.json").decode()}))

    assert workflow == read_workflow(fixture("api_prompt.json"))
    assert workflow.format == "api"


def test_png_with_a_damaged_workflow_falls_back_to_its_prompt() -> None:
    texts = {"workflow": '{"nodes": [', "prompt": fixture("api_prompt.json").decode()}

    assert read_workflow(images.png(texts)).format == "api"


def test_png_with_unicode_names_in_an_itxt_chunk() -> None:
    data = ui(node(1, "LoraLoader", ["スタイル/ネオン.safetensors", 1, 1]))

    (model,) = read_workflow(images.png({"workflow": data.decode()}, chunk="iTXt")).models
    assert model.name == "スタイル/ネオン.safetensors"


@pytest.mark.parametrize(("prefix", "byte_order"), [(False, "II"), (True, "II"), (False, "MM"), (True, "MM")])
def test_webp_exif_workflow_is_read_and_preferred_over_the_prompt(prefix: bool, byte_order: str) -> None:
    texts = sdxl_texts()
    exif = {images.EXIF_MODEL: "prompt:" + texts["prompt"], images.EXIF_MAKE: "workflow:" + texts["workflow"]}

    workflow = read_workflow(images.webp(exif, prefix=prefix, byte_order=byte_order), "ComfyUI_00001_.webp")

    assert workflow == read_workflow(fixture("sdxl_lora_upscale.json"))


def test_webp_exif_strings_short_enough_to_sit_in_their_entry_are_read_too() -> None:
    found = read_embedded(images.webp({0x0131: "a:b", images.EXIF_MAKE: "workflow:{}"}), 1024)

    assert found is not None
    assert (found.kind, found.texts) == ("WebP", {"a": "b", "workflow": "{}"})


def test_webp_with_only_a_prompt_gives_the_api_list() -> None:
    exif = {images.EXIF_MODEL: "prompt:" + fixture("api_prompt.json").decode()}

    assert read_workflow(images.webp(exif)) == read_workflow(fixture("api_prompt.json"))


@pytest.mark.parametrize(
    "data",
    [
        images.png(),
        images.png({"parameters": "a cat\nSteps: 20, Sampler: Euler"}),
        images.webp(),
        images.webp({0x010E: "a short description", 0x0131: "Paint"}),
        images.png({"workflow": "x"})[:40],  # cut short before the text
    ],
    ids=["png-no-text", "png-a1111-text", "webp-no-exif", "webp-other-exif", "png-truncated"],
)
def test_an_image_without_a_workflow_is_workflow_not_found(data: bytes) -> None:
    error = refused(data, "holiday.png")

    assert error.code == "workflow_not_found"
    assert "'holiday.png'" in error.message


def test_an_image_whose_workflow_texts_are_all_unreadable_is_workflow_invalid() -> None:
    error = refused(images.png({"workflow": "null", "prompt": "{ not json"}))

    assert error.code == "workflow_invalid"


def test_a_compressed_text_that_inflates_past_the_limit_is_workflow_too_large() -> None:
    bomb = images.png({"workflow": " " * (MAX_WORKFLOW_BYTES + 1)}, chunk="zTXt")

    assert len(bomb) < MAX_WORKFLOW_BYTES
    assert refused(bomb).code == "workflow_too_large"


# --- bad input -----------------------------------------------------------------------------------


def test_more_than_the_size_limit_is_refused_before_reading() -> None:
    error = refused(b" " * (MAX_WORKFLOW_BYTES + 1), "huge.json")

    assert (error.code, error.status) == ("workflow_too_large", 413)
    assert "'huge.json'" in error.message


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json at all",
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",  # a JPEG
        b"\xff\xfe{\x00}\x00",  # UTF-16
        b"[]",
        b'"nodes"',
        b"42",
        b"{}",
        b'{"a": 1}',
        b'{"nodes": "none"}',
        b'{"1": {"inputs": {}}}',
        b'{"1": {"class_type": "KSampler"}, "2": 5}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"nodes": [' * 50_000,
    ],
    ids=[
        "empty",
        "text",
        "jpeg",
        "utf16",
        "list",
        "string",
        "number",
        "empty-object",
        "other-object",
        "nodes-not-a-list",
        "api-without-class-type",
        "api-with-junk",
        "deep-lists",
        "deep-unclosed",
    ],
)
def test_what_is_not_a_workflow_is_workflow_invalid(data: bytes) -> None:
    assert refused(data).code == "workflow_invalid"


def test_json_nested_deeper_than_python_can_parse_is_workflow_invalid() -> None:
    deep = "[" * 100_000 + "]" * 100_000

    error = refused(deep.encode(), "deep.json")
    assert (error.code, error.message) == (
        "workflow_invalid",
        "'deep.json' is nested too deeply to be a ComfyUI workflow.",
    )
    assert refused(images.png({"workflow": deep})).code == "workflow_invalid"


@pytest.mark.parametrize(
    "data",
    [
        ui(node(1, "LoraLoader"), models="all of them"),
        ui(node(1, "LoraLoader", ["a.safetensors"], models={"name": "a.safetensors"})),
        ui(node(1, "LoraLoader", ["a.safetensors"], models=["a.safetensors"])),
        ui(models=[{"directory": "loras", "url": f"{HF}/o/r/resolve/main/a.safetensors"}]),
        ui(models=[{"name": "  ", "directory": "loras"}]),
        json.dumps({"nodes": ["not a node"]}).encode(),
        json.dumps(
            {"nodes": [], "definitions": {"subgraphs": [{"id": "x", "name": "X", "nodes": 3}]}}
        ).encode(),
    ],
    ids=[
        "models-not-list",
        "models-object",
        "models-of-strings",
        "entry-without-name",
        "blank-name",
        "node-string",
        "subgraph-nodes",
    ],
)
def test_a_damaged_workflow_is_workflow_invalid(data: bytes) -> None:
    assert refused(data).code == "workflow_invalid"


@pytest.mark.parametrize(
    "directory",
    [
        "../loras",
        "loras/../../etc",
        "/models/loras",
        "C:\\ComfyUI\\models\\loras",
        "custom_nodes",
        "ipadapter",
        "loras/sdxl",
        "",
        " ",
    ],
)
def test_a_folder_comfyui_does_not_have_fails_the_whole_read(directory: str) -> None:
    data = ui(
        node(1, "CheckpointLoaderSimple", ["fine.safetensors"]),
        node(
            2,
            "LoraLoader",
            ["evil.safetensors", 1, 1],
            [{"name": "evil.safetensors", "directory": directory}],
        ),
    )
    if not directory.strip():
        # a blank folder is no folder: the entry can only lend its link, and nothing fails
        assert [m.name for m in read_workflow(data).models] == ["fine.safetensors", "evil.safetensors"]
        return

    error = refused(data)
    assert error.code == "workflow_bad_directory"
    assert "node 2 (LoraLoader)" in error.message
    assert "evil.safetensors" in error.message


@pytest.mark.parametrize(
    ("directory", "expected"),
    [
        ("models/checkpoints", "checkpoints"),
        ("models\\loras", "loras"),
        ("Checkpoints", "checkpoints"),
        ("loras/", "loras"),
        ("unet", "diffusion_models"),
        ("models/unet", "diffusion_models"),
        ("clip", "text_encoders"),
        ("text_encoders", "text_encoders"),
        ("vae_approx", "vae_approx"),
        ("photomaker", "photomaker"),
        ("gligen", "gligen"),
        ("audio_encoders", "audio_encoders"),
        ("animatediff_models", "animatediff_models"),
    ],
)
def test_folders_are_normalised_to_comfyui_folder_names(directory: str, expected: Any) -> None:
    (model,) = read_workflow(ui(models=[entry("m.safetensors", directory)])).models

    assert (model.directory, model.model_type) == (expected, FOLDER_TYPES[expected])


BAD_NAMES = [
    "../x.safetensors",
    "sub/../../x.safetensors",
    "..\\..\\x.safetensors",
    "/etc/x.safetensors",
    "\\\\server\\share\\x.safetensors",
    "C:\\models\\x.safetensors",
    "c:x.safetensors",
    "a\x00b.safetensors",
    "a\nb.safetensors",
    "a\x7fb.safetensors",
    "a\x85b.safetensors",
    "x" * 2000 + ".safetensors",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_name_that_could_leave_its_folder_fails_the_whole_read(name: str) -> None:
    entries = [entry(name, "loras", f"{HF}/o/r/resolve/main/x.safetensors")]
    for data in (
        ui(node(3, "LoraLoader", [name, 1, 1])),
        ui(node(3, "SomeNode", None, entries)),
        ui(models=entries),
        json.dumps({"3": {"class_type": "LoraLoader", "inputs": {"lora_name": name}}}).encode(),
    ):
        error = refused(data)
        assert error.code == "workflow_bad_name"
        assert "\x00" not in error.message
        assert "\n" not in error.message


def test_a_bad_name_message_says_where_it_is() -> None:
    subgraph = {"id": "s1", "name": "Loaders", "nodes": [node(5, "VAELoader", ["../../vae.safetensors"])]}
    data = ui(node(1, "s1"), definitions={"subgraphs": [subgraph]})

    error = refused(data)
    assert error.code == "workflow_bad_name"
    assert "node 5 (VAELoader) in subgraph 'Loaders'" in error.message
    assert "'../../vae.safetensors'" in error.message


def test_node_ids_and_types_quoted_in_messages_are_cleaned_and_cut() -> None:
    data = ui({"id": "7\n" * 500, "type": "Evil\x1b[2J" * 500, "properties": {"models": [entry("../x.bin")]}})

    error = refused(data)
    assert error.code == "workflow_bad_name"
    assert "\n" not in error.message
    assert "\x1b" not in error.message
    assert len(error.message) < 600


def test_the_file_name_in_messages_has_no_path_or_control_characters() -> None:
    error = refused(b"nope", "C:\\Users\\me\\Downloads\\wf\x1b[31m.json")

    assert "'wf[31m.json'" in error.message
    assert "Users" not in error.message


def test_subgraphs_that_instantiate_each_other_are_read_once() -> None:
    loop_a = {"id": "a", "name": "A", "nodes": [node(1, "b"), node(2, "LoraLoader", ["a.safetensors", 1, 1])]}
    loop_b = {"id": "b", "name": "B", "nodes": [node(1, "a"), node(2, "LoraLoader", ["b.safetensors", 1, 1])]}
    data = ui(node(1, "a"), definitions={"subgraphs": [loop_a, loop_b]})

    assert [(m.name, m.active) for m in read_workflow(data).models] == [
        ("a.safetensors", True),
        ("b.safetensors", True),
    ]


def test_many_nested_subgraph_instances_are_read_in_linear_time() -> None:
    # each level instantiates the next ten times: flattening instances would mean 10**30 nodes
    levels = [
        {"id": f"s{level}", "name": f"S{level}", "nodes": [node(i, f"s{level + 1}") for i in range(10)]}
        for level in range(30)
    ]
    levels.append({"id": "s30", "name": "S30", "nodes": [node(1, "LoraLoader", ["deep.safetensors", 1, 1])]})
    data = ui(node(1, "s0"), definitions={"subgraphs": levels})

    (model,) = read_workflow(data).models
    assert (model.name, model.active, model.places) == (
        "deep.safetensors",
        True,
        (Place("1", "LoraLoader", "lora_name", "S30"),),
    )


# --- the tables ----------------------------------------------------------------------------------


def test_folder_types_agree_with_the_comfyui_layout() -> None:
    for model_type in MODEL_TYPES:
        assert FOLDER_TYPES[folder_for(model_type, "comfyui")] == model_type
    assert not set(LEGACY_FOLDERS) & set(FOLDER_TYPES)
    assert set(LEGACY_FOLDERS.values()) <= set(FOLDER_TYPES)
    assert "custom_nodes" not in FOLDER_TYPES


def test_every_loader_input_names_a_known_folder() -> None:
    for node_type, inputs in LOADERS.items():
        folders = [folder for _, folder in inputs if folder is not None]
        assert folders, node_type
        assert set(folders) <= set(FOLDER_TYPES), node_type
