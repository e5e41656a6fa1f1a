"""What a model file is, told from its header: every kind and family, from real built files."""

from __future__ import annotations

import pytest

from orchestrator.config import MODEL_TYPES
from orchestrator.headers import Finding, NeedMore, inspect_bytes
from tests.fakes import model_files as m


def finding_of(data: bytes) -> Finding:
    result = inspect_bytes(data, len(data))
    assert isinstance(result, Finding)
    return result


def safetensors_finding(layout: m.Layout, metadata: dict[str, str] | None = None) -> Finding:
    return finding_of(m.safetensors_file(layout, metadata))


SAFETENSORS_CASES = [
    # checkpoints: diffusion model + VAE + text encoders in one file
    ("sd1 checkpoint", m.sd1_checkpoint(), "checkpoint", "sd1"),
    ("sd2 checkpoint", m.sd2_checkpoint(), "checkpoint", "sd2"),
    ("sdxl checkpoint", m.sdxl_checkpoint(), "checkpoint", "sdxl"),
    ("sdxl refiner checkpoint", m.sdxl_refiner_checkpoint(), "checkpoint", "sdxl_refiner"),
    ("sd3 checkpoint", m.sd3_checkpoint(), "checkpoint", "sd3"),
    ("flux all-in-one", m.flux_checkpoint(), "checkpoint", "flux"),
    # the diffusion model alone, bare or under the checkpoint prefix
    ("sdxl unet", m.sdxl_unet(), "diffusion_model", "sdxl"),
    ("sd1 unet with prefix", m.prefixed("model.diffusion_model.", m.sd1_unet()), "diffusion_model", "sd1"),
    ("flux dit", m.flux_dit(), "diffusion_model", "flux"),
    ("flux dit with prefix", m.prefixed("model.diffusion_model.", m.flux_dit()), "diffusion_model", "flux"),
    ("chroma", m.chroma_dit(), "diffusion_model", "chroma"),
    ("sd3 mmdit", m.sd3_mmdit(), "diffusion_model", "sd3"),
    ("wan", m.wan_dit(), "diffusion_model", "wan"),
    ("hunyuan video", m.hunyuan_video_dit(), "diffusion_model", "hunyuan_video"),
    ("ltxv", m.ltxv_dit(), "diffusion_model", "ltxv"),
    ("qwen image", m.qwen_image_dit(), "diffusion_model", "qwen_image"),
    ("hidream", m.hidream_dit(), "diffusion_model", "hidream"),
    ("flux diffusers", m.flux_diffusers_transformer(), "diffusion_model", "flux"),
    ("sdxl diffusers unet", m.sdxl_diffusers_unet(), "diffusion_model", "sdxl"),
    # LoRA and LyCORIS
    ("sd1 kohya lora", m.sd1_kohya_lora(), "lora", "sd1"),
    ("sdxl kohya lora", m.sdxl_kohya_lora(), "lora", "sdxl"),
    ("flux kohya lora", m.flux_kohya_lora(), "lora", "flux"),
    ("flux peft lora", m.flux_peft_lora(), "lora", "flux"),
    ("sd3 lora", m.sd3_kohya_lora(), "lora", "sd3"),
    ("wan lora", m.wan_lora(), "lora", "wan"),
    ("qwen image lora", m.qwen_image_lora(), "lora", "qwen_image"),
    ("hunyuan video lora", m.hunyuan_video_lora(), "lora", "hunyuan_video"),
    ("loha", m.loha_sd1(), "lora", "sd1"),
    ("lokr without metadata", m.lokr_sdxl(), "lora", None),
    ("dora", m.dora_flux(), "lora", "flux"),
    # VAEs
    ("sd vae", m.sd_vae(), "vae", None),
    ("16-channel vae", m.sd_vae(16), "vae", None),
    ("diffusers vae", m.diffusers_vae(), "vae", None),
    ("wan 2.1 vae", m.wan21_vae(), "vae", "wan"),
    ("wan 2.2 vae", m.wan22_vae(), "vae", "wan"),
    ("ltxv vae", m.ltxv_vae(), "vae", "ltxv"),
    # text encoders
    ("clip-l", m.clip_l(), "text_encoder", None),
    ("clip-g", m.clip_g(), "text_encoder", None),
    ("t5-xxl", m.t5_xxl(), "text_encoder", None),
    ("umt5-xxl", m.umt5_xxl(), "text_encoder", None),
    ("qwen 2.5 vl", m.qwen25_vl_7b(), "text_encoder", None),
    ("llama 3", m.llama3_8b(), "text_encoder", None),
    # ControlNets
    ("sd1 controlnet", m.sd1_controlnet(), "controlnet", "sd1"),
    ("sdxl diffusers controlnet", m.sdxl_diffusers_controlnet(), "controlnet", "sdxl"),
    ("flux instantx controlnet", m.flux_instantx_controlnet(), "controlnet", "flux"),
    ("control-lora", m.control_lora(), "controlnet", None),
    # upscalers, embeddings, image encoders
    ("esrgan", m.esrgan(), "upscaler", None),
    ("real-esrgan", m.real_esrgan(), "upscaler", None),
    ("sd1 embedding", m.sd1_embedding(), "embedding", "sd1"),
    ("sdxl embedding", m.sdxl_embedding(), "embedding", "sdxl"),
    ("a1111 embedding", m.a1111_embedding(), "embedding", "sd1"),
    ("clip vision h", m.clip_vision_h(), "clip_vision", None),
    ("clip vision l", m.clip_vision_l(), "clip_vision", None),
]


@pytest.mark.parametrize(
    ("layout", "kind", "family"),
    [case[1:] for case in SAFETENSORS_CASES],
    ids=[case[0] for case in SAFETENSORS_CASES],
)
def test_safetensors_kind_and_family(layout: m.Layout, kind: str, family: str | None) -> None:
    finding = safetensors_finding(layout)
    assert (finding.format, finding.kind, finding.family) == ("safetensors", kind, family)
    assert finding.kind in MODEL_TYPES
    assert finding.evidence
    assert finding.tensor_count == len(layout)


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (m.sd1_checkpoint(), "model.diffusion_model.input_blocks"),
        (m.flux_dit(), "double_blocks.0.img_attn.norm.key_norm.scale"),
        (m.flux_kohya_lora(), "lora_unet_double_blocks_0"),
        (m.sdxl_kohya_lora(), "cross-attention width 2048"),
        (m.wan21_vae(), "decoder.middle.0.residual.0.gamma"),
    ],
)
def test_evidence_names_the_deciding_keys(layout: m.Layout, expected: str) -> None:
    assert expected in safetensors_finding(layout).evidence


def test_checkpoint_evidence_says_what_travels_with_the_unet() -> None:
    evidence = safetensors_finding(m.sdxl_checkpoint()).evidence
    assert "first_stage_model." in evidence and "conditioner.embedders.0." in evidence


def test_a_checkpoint_without_its_text_encoders_is_still_a_checkpoint() -> None:
    # sd3_medium.safetensors ships the MMDiT and the VAE, the text encoders come separately.
    layout = m.prefixed("model.diffusion_model.", m.sd3_mmdit()) | m.prefixed(
        "first_stage_model.", m.sd_vae(16)
    )
    finding = safetensors_finding(layout)
    assert (finding.kind, finding.family) == ("checkpoint", "sd3")
    assert "no text encoder" in finding.evidence


def test_a_civitai_checkpoint_holding_only_a_dit_is_a_diffusion_model() -> None:
    # The Flux/Wan/Qwen-Image uploads that land in checkpoints/ and fail there.
    layout = m.prefixed("model.diffusion_model.", m.wan_dit()) | m.prefixed("text_encoders.", m.umt5_xxl())
    finding = safetensors_finding(layout)
    assert (finding.kind, finding.family) == ("diffusion_model", "wan")
    assert "no VAE" in finding.evidence


def test_lora_family_comes_from_kohya_metadata_first() -> None:
    finding = safetensors_finding(m.lokr_sdxl(), {"ss_base_model_version": "sdxl_base_v1-0"})
    assert (finding.kind, finding.family) == ("lora", "sdxl")
    assert "ss_base_model_version" in finding.evidence


@pytest.mark.parametrize(
    ("metadata", "family"),
    [
        ({"ss_base_model_version": "sd_v1"}, "sd1"),
        ({"ss_base_model_version": "sd_v2_v"}, "sd2"),
        ({"ss_v2": "True"}, "sd2"),
        ({"ss_base_model_version": "flux1"}, "flux"),
        ({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "sdxl"),
        ({"modelspec.architecture": "flux-1-dev/lora"}, "flux"),
        ({"ss_output_name": "x"}, None),  # metadata that names no base model says nothing
    ],
)
def test_lora_metadata_families(metadata: dict[str, str], family: str | None) -> None:
    assert safetensors_finding(m.lokr_sdxl(), metadata).family == family


def test_metadata_worth_showing_is_kept_and_the_rest_left_out() -> None:
    finding = safetensors_finding(m.sd1_kohya_lora(), m.KOHYA_SD1_METADATA)
    assert finding.metadata == {
        "ss_output_name": "my_character_v1",
        "ss_base_model_version": "sd_v1",
        "ss_network_module": "networks.lora",
    }
    assert "ss_tag_frequency" not in finding.public()["metadata"]


def test_shown_metadata_is_cut_short_and_on_one_line() -> None:
    finding = safetensors_finding(m.sdxl_kohya_lora(), {"modelspec.title": "A\nlong\ttitle " + "x" * 500})
    title = finding.metadata["modelspec.title"]
    assert title.startswith("A long title ") and len(title) == 200


def test_public_is_plain_json_data() -> None:
    finding = safetensors_finding(m.sdxl_kohya_lora(), m.KOHYA_SDXL_METADATA)
    assert finding.public() == {
        "format": "safetensors",
        "kind": "lora",
        "family": "sdxl",
        "evidence": finding.evidence,
        "metadata": {
            "ss_output_name": "style_xl",
            "ss_base_model_version": "sdxl_base_v1-0",
            "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
            "modelspec.title": "Style XL",
        },
        "tensors": len(m.sdxl_kohya_lora()),
    }


# -- nothing decides: kind None, never a guess -------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "words"),
    [
        (m.full_clip(), "whole CLIP"),
        ({"some.layer.weight": (2, 2), "other.layer.bias": (2,)}, "no loader's rule matches"),
        ({}, "no tensors"),
        # an SD-style UNet whose widths match no known model still gets no family
        (m._sd_unet(320, 512, (1, 2), None), "cross-attention width 512"),
    ],
)
def test_undecided_files_say_why(layout: m.Layout, words: str) -> None:
    finding = safetensors_finding(layout)
    assert words in finding.evidence
    assert finding.family is None


def test_unknown_unet_widths_keep_the_kind_but_not_the_family() -> None:
    finding = safetensors_finding(m._sd_unet(320, 512, (1, 2), None))
    assert (finding.kind, finding.family) == ("diffusion_model", None)


def test_a_random_single_tensor_is_not_an_embedding() -> None:
    finding = safetensors_finding({"weight": (300, 768)})  # far more vectors than a prompt holds
    assert finding.kind is None


# -- GGUF --------------------------------------------------------------------------------------


def gguf_finding(
    layout: m.Layout, metadata: dict[str, object], orig_shapes: dict[str, m.Shape] | None = None
) -> Finding:
    return finding_of(m.gguf_file(layout, metadata, orig_shapes=orig_shapes))


@pytest.mark.parametrize(
    ("layout", "architecture", "family"),
    [
        (m.flux_dit(), "flux", "flux"),
        (m.chroma_dit(), "flux", "chroma"),  # same GGUF architecture name, the keys say Chroma
        (m.wan_dit(), "wan", "wan"),
        (m.qwen_image_dit(), "qwen_image", "qwen_image"),
        (m.hunyuan_video_dit(), "hyvid", "hunyuan_video"),
        (m.sd3_mmdit(), "sd3", "sd3"),
        ({"some.tensor": (1,)}, "ltxv", "ltxv"),  # keys unknown: the architecture name decides
    ],
)
def test_gguf_diffusion_models(layout: m.Layout, architecture: str, family: str) -> None:
    finding = gguf_finding(layout, {"general.architecture": architecture})
    assert (finding.format, finding.kind, finding.family) == ("gguf", "diffusion_model", family)
    assert architecture in finding.evidence


def test_gguf_reshaped_tensors_get_their_original_shape_back() -> None:
    # ComfyUI-GGUF's converter stores SDXL's label_emb reshaped and records the true shape.
    layout = m.sdxl_unet() | {"label_emb.0.0.weight": (11, 256)}
    finding = gguf_finding(
        layout, {"general.architecture": "sdxl"}, orig_shapes={"label_emb.0.0.weight": (1, 2816)}
    )
    assert finding.family == "sdxl"
    assert "label_emb width 2816" in finding.evidence


def test_gguf_without_an_architecture_is_told_by_its_keys() -> None:
    # stable-diffusion.cpp writes no general.architecture; ComfyUI-GGUF detects from the names.
    finding = gguf_finding(m.prefixed("model.diffusion_model.", m.sdxl_unet()), {})
    assert (finding.kind, finding.family) == ("diffusion_model", "sdxl")


def test_gguf_text_encoder() -> None:
    layout, metadata = m.gguf_text_encoder_t5()
    finding = gguf_finding(layout, metadata)
    assert (finding.kind, finding.family) == ("text_encoder", None)
    assert finding.metadata == {"general.architecture": "t5encoder", "general.name": "t5-v1_1-xxl"}


def test_gguf_vision_projector_goes_with_the_text_encoders() -> None:
    layout, metadata = m.gguf_mmproj()
    finding = gguf_finding(layout, metadata)
    assert finding.kind == "text_encoder"
    assert "vision projector" in finding.evidence


def test_gguf_of_an_architecture_no_image_loader_takes() -> None:
    finding = gguf_finding({"blk.0.attn_q.weight": (1, 1)}, {"general.architecture": "gpt2"})
    assert finding.kind is None
    assert "gpt2" in finding.evidence


def test_the_first_eight_bytes_ask_for_exactly_the_rest_of_the_header() -> None:
    data = m.safetensors_file(m.flux_dit())
    header_length = int.from_bytes(data[:8], "little")
    assert inspect_bytes(data[:8]) == NeedMore(8 + header_length)
    assert isinstance(inspect_bytes(data[: 8 + header_length]), Finding)  # no tensor byte needed
