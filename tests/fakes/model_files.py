"""Real, tiny safetensors and GGUF files with the tensor layouts of real models.

`safetensors_file` and `gguf_file` write the formats exactly (huggingface/safetensors README
"Format"; ggml docs/gguf.md "File Structure"), with zero-filled tensor data. The layouts below
use the key names the loaders look for, taken from their code: ComfyUI comfy/model_detection.py
(diffusion models), comfy/supported_models.py (checkpoint prefixes, UNet widths), comfy/sd.py
(VAEs, text encoders), comfy/lora.py and comfy/weight_adapter/ (LoRA keys), comfy/controlnet.py,
comfy/clip_vision.py, comfy/sd1_clip.py (embeddings), spandrel's ESRGAN detection (upscalers)
and ComfyUI-GGUF loader.py (GGUF). Each layout names its source.

Shapes are real wherever a classifier reads them (a cross-attention width, a label_emb width,
a vocabulary size); every other dimension is shrunk to 1 so the files stay a few KB.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile
from collections.abc import Mapping, Sequence

Shape = tuple[int, ...]
Layout = dict[str, Shape]

_DTYPE_SIZES = {"F16": 2, "BF16": 2, "F32": 4, "U8": 1, "I64": 8}


# -- the two formats -----------------------------------------------------------------------------


def opaque_safetensors(body: bytes) -> bytes:
    """`body`'s size and most of its bytes, made a real safetensors file: one U8 tensor holding
    the rest. For tests that need a valid file of a given size (the app refuses a
    `.safetensors` whose header is not one); too small to hold a header, `body` is returned."""
    size = len(body)
    widest = _one_tensor_header(size)  # the header's length with the most digits it can need
    tensor = size - 8 - len(widest)
    if tensor <= 0:
        return body
    text = _one_tensor_header(tensor).ljust(len(widest), b" ")  # the format allows space padding
    header = len(text).to_bytes(8, "little") + text
    return header + body[len(header) :]


def _one_tensor_header(length: int) -> bytes:
    entry = {"dtype": "U8", "shape": [length], "data_offsets": [0, length]}
    return json.dumps({"data": entry}, separators=(",", ":")).encode()


def safetensors_file(
    tensors: Mapping[str, Sequence[int]],
    metadata: Mapping[str, str] | None = None,
    dtype: str = "F16",
) -> bytes:
    """A valid safetensors file: header padded to 8 bytes with spaces, as the reference writes."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, shape in tensors.items():
        size = math.prod(shape) * _DTYPE_SIZES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


def safetensors_raw(header: bytes, body: bytes = b"") -> bytes:
    """A file with exactly this header text (for damaged headers)."""
    return struct.pack("<Q", len(header)) + header + body


GGUF_F32, GGUF_F16 = 0, 1
_GGUF_TYPE_SIZES = {GGUF_F32: 4, GGUF_F16: 2}


def gguf_file(
    tensors: Mapping[str, Sequence[int]],
    metadata: Mapping[str, object] | None = None,
    *,
    version: int = 3,
    alignment: int = 32,
    ggml_type: int = GGUF_F16,
    orig_shapes: Mapping[str, Sequence[int]] | None = None,
) -> bytes:
    """A valid GGUF file. Shapes are given outermost first and stored innermost first (ggml order).

    `orig_shapes` writes ComfyUI-GGUF's `comfy.gguf.orig_shape.<name>` INT32 arrays, which its
    converter adds for tensors it stored reshaped (tools/convert.py).
    """
    kvs = dict(metadata or {})
    if alignment != 32:
        kvs["general.alignment"] = alignment
    for name, shape in (orig_shapes or {}).items():
        kvs[f"comfy.gguf.orig_shape.{name}"] = [int(n) for n in shape]
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)))
    for key, value in kvs.items():
        out += gguf_string(key) + gguf_value(value)
    offset = 0
    sizes = []
    for name, shape in tensors.items():
        dims = list(reversed(shape))
        out += gguf_string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ggml_type, offset)
        size = math.prod(shape) * _GGUF_TYPE_SIZES[ggml_type]
        sizes.append(size)
        offset += size + (-size % alignment)
    out += bytes(-len(out) % alignment)
    for size in sizes:
        out += bytes(size + (-size % alignment))
    return bytes(out)


def gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf_value(value: object) -> bytes:
    """Type tag and value: str -> STRING, bool -> BOOL, int -> UINT32, float -> FLOAT32,
    list of str -> ARRAY of STRING, list of int -> ARRAY of INT32."""
    if isinstance(value, str):
        return struct.pack("<I", 8) + gguf_string(value)
    if isinstance(value, bool):
        return struct.pack("<IB", 7, value)
    if isinstance(value, int):
        return struct.pack("<II", 4, value)
    if isinstance(value, float):
        return struct.pack("<If", 6, value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return struct.pack("<IIQ", 9, 8, len(value)) + b"".join(gguf_string(v) for v in value)
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return struct.pack("<IIQ", 9, 5, len(value)) + b"".join(struct.pack("<i", v) for v in value)
    raise TypeError(f"no GGUF encoding for {value!r}")


def ckpt_file() -> bytes:
    """What a pickled .ckpt/.pt looks like on the wire: torch.save writes a zip archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/version", b"3\n")
    return buffer.getvalue()


def prefixed(prefix: str, layout: Layout) -> Layout:
    return {prefix + name: shape for name, shape in layout.items()}


# -- SD UNets (ldm layout) ---------------------------------------------------------------------
# model_detection.py detect_unet_config reads input_blocks.0.0.weight (shape[0] is
# model_channels), label_emb.0.0.weight (shape[1] is adm_in_channels), and each block's
# transformer_blocks.0.attn2.to_k.weight (shape[1] is context_dim); supported_models.py gives
# the widths: SD15 320/None/768, SD20 320/None/1024, SDXL 320/2816/2048, SDXLRefiner 384/2560/1280.


def _sd_unet(channels: int, context: int, attention_blocks: Sequence[int], adm: int | None) -> Layout:
    layout: Layout = {
        "time_embed.0.weight": (1, channels),
        "input_blocks.0.0.weight": (channels, 4, 3, 3),
        "input_blocks.0.0.bias": (channels,),
        "input_blocks.3.0.op.weight": (1, 1, 3, 3),
        "input_blocks.6.0.op.weight": (1, 1, 3, 3),
        "middle_block.0.in_layers.0.weight": (1,),
        "middle_block.1.proj_in.weight": (1, 1),
        "middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1, context),
        "out.2.weight": (4, 1, 3, 3),
    }
    for block in (1, 2, 4, 5, 7, 8):
        layout[f"input_blocks.{block}.0.in_layers.0.weight"] = (1,)
        layout[f"input_blocks.{block}.0.out_layers.3.weight"] = (channels, 1, 3, 3)
        if block in attention_blocks:
            layout[f"input_blocks.{block}.1.proj_in.weight"] = (1, 1)
            layout[f"input_blocks.{block}.1.transformer_blocks.0.attn1.to_q.weight"] = (1, 1)
            layout[f"input_blocks.{block}.1.transformer_blocks.0.attn2.to_k.weight"] = (1, context)
    if adm is not None:
        layout["label_emb.0.0.weight"] = (1, adm)
    return layout


def sd1_unet() -> Layout:
    return _sd_unet(320, 768, (1, 2, 4, 5, 7, 8), None)


def sd2_unet() -> Layout:
    return _sd_unet(320, 1024, (1, 2, 4, 5, 7, 8), None)


def sdxl_unet() -> Layout:
    return _sd_unet(320, 2048, (4, 5, 7, 8), 2816)  # SDXL transformer_depth [0, 0, 2, 2, 10, 10]


def sdxl_refiner_unet() -> Layout:
    return _sd_unet(384, 1280, (4, 5, 7, 8), 2560)


# -- VAEs (comfy/sd.py VAE.__init__) -------------------------------------------------------------


def sd_vae(latent_channels: int = 4) -> Layout:
    """The ldm AutoencoderKL: decoder.conv_in.weight's shape[1] is the latent width."""
    layout: Layout = {
        "encoder.conv_in.weight": (1, 3, 3, 3),
        "encoder.down.0.block.0.conv1.weight": (1, 1, 3, 3),
        "encoder.conv_out.weight": (2 * latent_channels, 1, 3, 3),
        "decoder.conv_in.weight": (1, latent_channels, 3, 3),
        "decoder.mid.block_1.conv1.weight": (1, 1, 3, 3),
        "decoder.up.0.block.0.conv1.weight": (1, 1, 3, 3),
        "decoder.conv_out.weight": (3, 1, 3, 3),
    }
    if latent_channels == 4:  # SD1/SDXL VAEs have the quant convs; Flux's and SD3's do not
        layout["quant_conv.weight"] = (8, 8, 1, 1)
        layout["post_quant_conv.weight"] = (4, 4, 1, 1)
    return layout


def diffusers_vae() -> Layout:
    return {
        "encoder.conv_in.weight": (1, 3, 3, 3),
        "decoder.conv_in.weight": (1, 4, 3, 3),
        "decoder.up_blocks.0.resnets.0.norm1.weight": (1,),
        "decoder.mid_block.attentions.0.to_q.weight": (1, 1),
    }


def wan21_vae() -> Layout:
    return {
        "encoder.conv1.weight": (1, 3, 3, 3, 3),
        "decoder.conv1.weight": (1, 16, 3, 3, 3),
        "decoder.middle.0.residual.0.gamma": (1, 1, 1, 1),
        "decoder.upsamples.0.residual.0.gamma": (1, 1, 1, 1),
        "conv1.weight": (32, 32, 1, 1, 1),
    }


def wan22_vae() -> Layout:
    return wan21_vae() | {"decoder.upsamples.0.upsamples.0.residual.2.weight": (1, 1, 3, 3, 3)}


def ltxv_vae() -> Layout:
    return {
        "decoder.conv_in.conv.weight": (1, 128, 3, 3, 3),
        "decoder.up_blocks.0.res_blocks.0.conv1.conv.weight": (1, 1, 3, 3, 3),
        "encoder.down_blocks.1.conv.conv.bias": (1,),
    }


# -- text encoders (comfy/sd.py detect_te_model) -------------------------------------------------


def clip_text(layers: int, width: int) -> Layout:
    layout: Layout = {
        "text_model.embeddings.token_embedding.weight": (49408, 1),
        "text_model.embeddings.position_embedding.weight": (77, 1),
        "text_model.final_layer_norm.weight": (width,),
    }
    for layer in range(layers):
        layout[f"text_model.encoder.layers.{layer}.mlp.fc1.weight"] = (1, width)
        layout[f"text_model.encoder.layers.{layer}.self_attn.q_proj.weight"] = (1, width)
    return layout


def clip_l() -> Layout:
    return clip_text(12, 768)


def clip_g() -> Layout:
    return clip_text(32, 1280) | {"text_projection.weight": (1, 1280)}


def t5_xxl(vocabulary: int = 32128) -> Layout:
    """T5 v1.1 XXL encoder: wi_1's last dimension is d_model 4096; umT5 has 256384 tokens."""
    layout: Layout = {"shared.weight": (vocabulary, 1), "encoder.final_layer_norm.weight": (1,)}
    for block in range(24):
        layout[f"encoder.block.{block}.layer.0.SelfAttention.k.weight"] = (1, 4096)
        layout[f"encoder.block.{block}.layer.1.DenseReluDense.wi_0.weight"] = (1, 4096)
        layout[f"encoder.block.{block}.layer.1.DenseReluDense.wi_1.weight"] = (1, 4096)
    return layout


def umt5_xxl() -> Layout:
    return t5_xxl(256384)


def qwen25_vl_7b() -> Layout:
    """Qwen 2.5 (Qwen-Image's text encoder): k_proj has a bias, 512 wide on the 7B."""
    layout: Layout = {"model.embed_tokens.weight": (152064, 1), "model.norm.weight": (1,)}
    for layer in range(2):
        layout[f"model.layers.{layer}.self_attn.k_proj.weight"] = (512, 1)
        layout[f"model.layers.{layer}.self_attn.k_proj.bias"] = (512,)
        layout[f"model.layers.{layer}.post_attention_layernorm.weight"] = (1,)
    return layout


def llama3_8b() -> Layout:
    layout: Layout = {"model.embed_tokens.weight": (128256, 1), "model.norm.weight": (1,)}
    for layer in range(2):
        layout[f"model.layers.{layer}.self_attn.k_proj.weight"] = (1024, 1)
        layout[f"model.layers.{layer}.input_layernorm.weight"] = (1,)
        layout[f"model.layers.{layer}.post_attention_layernorm.weight"] = (1,)
    return layout


# -- checkpoints: UNet/DiT + VAE + text encoders (supported_models.py prefixes) ----------------


def sd1_checkpoint() -> Layout:
    """SD15: model.diffusion_model., first_stage_model., cond_stage_model.transformer. (CLIP-L)."""
    return (
        prefixed("model.diffusion_model.", sd1_unet())
        | prefixed("first_stage_model.", sd_vae())
        | prefixed("cond_stage_model.transformer.", clip_l())
    )


def sd2_checkpoint() -> Layout:
    """SD20: the OpenCLIP-H text encoder under cond_stage_model.model. (process_clip_state_dict)."""
    text = {
        "cond_stage_model.model.token_embedding.weight": (49408, 1),
        "cond_stage_model.model.transformer.resblocks.0.ln_1.weight": (1024,),
        "cond_stage_model.model.transformer.resblocks.22.ln_1.weight": (1024,),
    }
    return prefixed("model.diffusion_model.", sd2_unet()) | prefixed("first_stage_model.", sd_vae()) | text


def sdxl_checkpoint() -> Layout:
    """SDXL: conditioner.embedders.0.transformer.text_model (CLIP-L), .1.model. (OpenCLIP-G)."""
    text = prefixed("conditioner.embedders.0.transformer.", clip_l()) | {
        "conditioner.embedders.1.model.token_embedding.weight": (49408, 1),
        "conditioner.embedders.1.model.transformer.resblocks.0.ln_1.weight": (1280,),
        "conditioner.embedders.1.model.text_projection": (1280, 1),
    }
    return prefixed("model.diffusion_model.", sdxl_unet()) | prefixed("first_stage_model.", sd_vae()) | text


def sdxl_refiner_checkpoint() -> Layout:
    """SDXLRefiner: OpenCLIP-G alone, under conditioner.embedders.0.model."""
    text = {
        "conditioner.embedders.0.model.token_embedding.weight": (49408, 1),
        "conditioner.embedders.0.model.transformer.resblocks.0.ln_1.weight": (1280,),
    }
    unet = prefixed("model.diffusion_model.", sdxl_refiner_unet())
    return unet | prefixed("first_stage_model.", sd_vae()) | text


def sd3_mmdit() -> Layout:
    """The "mmdit model" branch: joint_blocks.0.context_block.attn.qkv.weight."""
    return {
        "x_embedder.proj.weight": (1536, 16, 2, 2),
        "pos_embed": (1, 36864, 1),
        "context_embedder.weight": (1, 4096),
        "y_embedder.mlp.0.weight": (1, 2048),
        "joint_blocks.0.context_block.attn.qkv.weight": (1, 1),
        "joint_blocks.0.x_block.attn.qkv.weight": (1, 1),
        "final_layer.linear.weight": (64, 1),
    }


def sd3_checkpoint() -> Layout:
    """SD3: first_stage_model. (16-channel VAE) and text_encoders.clip_l/clip_g/t5xxl."""
    text = (
        prefixed("text_encoders.clip_l.transformer.", clip_text(1, 768))
        | prefixed("text_encoders.clip_g.transformer.", clip_text(1, 1280))
        | {"text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.k.weight": (1, 4096)}
    )
    return prefixed("model.diffusion_model.", sd3_mmdit()) | prefixed("first_stage_model.", sd_vae(16)) | text


# -- DiTs alone (model_detection.py detect_unet_config) ----------------------------------------


def flux_dit() -> Layout:
    """The Flux branch: double_blocks.0.img_attn.norm.key_norm.scale with img_in.weight."""
    return {
        "img_in.weight": (1, 64),
        "time_in.in_layer.weight": (1, 256),
        "vector_in.in_layer.weight": (1, 768),
        "guidance_in.in_layer.weight": (1, 256),
        "txt_in.weight": (1, 4096),
        "double_blocks.0.img_attn.norm.key_norm.scale": (128,),
        "double_blocks.0.img_attn.qkv.weight": (1, 1),
        "double_blocks.0.txt_mlp.0.weight": (1, 1),
        "double_blocks.18.img_mod.lin.weight": (1, 1),
        "single_blocks.0.linear1.weight": (1, 1),
        "single_blocks.37.modulation.lin.weight": (1, 1),
        "final_layer.linear.weight": (64, 1),
    }


def flux_checkpoint() -> Layout:
    """An all-in-one Flux: the Flux config's vae_key_prefix "vae." and "text_encoders."."""
    text = prefixed("text_encoders.clip_l.transformer.", clip_text(1, 768)) | {
        "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.k.weight": (1, 4096)
    }
    return prefixed("model.diffusion_model.", flux_dit()) | prefixed("vae.", sd_vae(16)) | text


def chroma_dit() -> Layout:
    """Chroma: Flux's branch plus distilled_guidance_layer, and no guidance_in or vector_in."""
    layout = {k: v for k, v in flux_dit().items() if not k.startswith(("guidance_in", "vector_in"))}
    return layout | {
        "distilled_guidance_layer.in_proj.weight": (1, 64),
        "distilled_guidance_layer.norms.0.scale": (1,),
    }


def wan_dit() -> Layout:
    """Wan 2.1/2.2: head.modulation."""
    return {
        "patch_embedding.weight": (1, 16, 1, 2, 2),
        "text_embedding.0.weight": (1, 4096),
        "time_embedding.0.weight": (1, 256),
        "blocks.0.self_attn.q.weight": (1, 1),
        "blocks.0.self_attn.norm_q.weight": (1,),
        "blocks.0.cross_attn.k.weight": (1, 1),
        "blocks.0.ffn.0.weight": (1, 1),
        "blocks.0.modulation": (1, 6, 1),
        "head.head.weight": (64, 1),
        "head.modulation": (1, 2, 1),
    }


def hunyuan_video_dit() -> Layout:
    """HunyuanVideo: txt_in.individual_token_refiner.blocks.0.norm1.weight."""
    return {
        "img_in.proj.weight": (1, 16, 1, 2, 2),
        "txt_in.input_embedder.weight": (1, 4096),
        "txt_in.individual_token_refiner.blocks.0.norm1.weight": (1,),
        "double_blocks.0.img_attn_qkv.weight": (1, 1),
        "double_blocks.0.img_attn.norm.key_norm.scale": (1,),
        "single_blocks.0.linear1.weight": (1, 1),
        "final_layer.linear.weight": (64, 1),
    }


def ltxv_dit() -> Layout:
    """Lightricks LTXV: adaln_single.emb.timestep_embedder.linear_1.bias, no pos_embed.proj.bias."""
    return {
        "patchify_proj.weight": (1, 128),
        "adaln_single.emb.timestep_embedder.linear_1.bias": (1,),
        "caption_projection.linear_1.weight": (1, 4096),
        "transformer_blocks.0.attn2.to_k.weight": (1, 4096),
        "transformer_blocks.0.scale_shift_table": (6, 1),
        "scale_shift_table": (2, 1),
    }


def qwen_image_dit() -> Layout:
    """Qwen-Image: txt_norm.weight."""
    return {
        "img_in.weight": (1, 64),
        "txt_norm.weight": (3584,),
        "txt_in.weight": (1, 3584),
        "transformer_blocks.0.img_mlp.net.0.proj.weight": (1, 1),
        "transformer_blocks.0.txt_mlp.net.0.proj.weight": (1, 1),
        "transformer_blocks.0.attn.add_q_proj.weight": (1, 1),
        "proj_out.weight": (64, 1),
    }


def hidream_dit() -> Layout:
    """HiDream: caption_projection.0.linear.weight."""
    return {
        "x_embedder.proj.weight": (1, 64),
        "caption_projection.0.linear.weight": (1, 4096),
        "double_stream_blocks.0.block.ff_i.shared_experts.w3.weight": (1, 1),
        "single_stream_blocks.0.block.attn1.to_q.weight": (1, 1),
        "final_layer.linear.weight": (64, 1),
    }


def flux_diffusers_transformer() -> Layout:
    """model_detection.py convert_diffusers_mmdit's Flux layout (x_embedder.weight)."""
    return {
        "x_embedder.weight": (1, 64),
        "x_embedder.bias": (1,),
        "context_embedder.weight": (1, 4096),
        "transformer_blocks.0.attn.add_q_proj.weight": (1, 1),
        "single_transformer_blocks.0.attn.to_q.weight": (1, 1),
        "proj_out.weight": (64, 1),
    }


def sdxl_diffusers_unet() -> Layout:
    """unet_config_from_diffusers_unet: conv_in (channels), add_embedding (adm), attn2.to_k (context)."""
    return {
        "conv_in.weight": (320, 4, 3, 3),
        "time_embedding.linear_1.weight": (1, 320),
        "add_embedding.linear_1.weight": (1, 2816),
        "down_blocks.0.resnets.0.conv1.weight": (1, 1, 3, 3),
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (1, 2048),
        "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight": (1, 2048),
        "conv_out.weight": (4, 1, 3, 3),
    }


# -- LoRAs (comfy/lora.py key maps, comfy/weight_adapter/, A1111 extensions-builtin/Lora) -------


def _kohya_pair(module: str, in_features: int = 1, rank: int = 4) -> Layout:
    return {
        f"{module}.lora_down.weight": (rank, in_features),
        f"{module}.lora_up.weight": (1, rank),
        f"{module}.alpha": (),
    }


def _peft_pair(module: str, in_features: int = 1, rank: int = 4) -> Layout:
    return {f"{module}.lora_A.weight": (rank, in_features), f"{module}.lora_B.weight": (1, rank)}


def sd1_kohya_lora() -> Layout:
    """kohya SD1: diffusers module names flattened (lora_unet_down_blocks_...), CLIP as lora_te_."""
    return (
        _kohya_pair("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 768)
        | _kohya_pair("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", 320)
        | _kohya_pair("lora_unet_mid_block_attentions_0_proj_in", 1280)
        | _kohya_pair("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 768)
    )


def sdxl_kohya_lora() -> Layout:
    """kohya SDXL: compvis names (lora_unet_input_blocks_...), two text encoders lora_te1_/lora_te2_."""
    return (
        _kohya_pair("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 2048)
        | _kohya_pair("lora_unet_output_blocks_0_1_transformer_blocks_9_attn1_to_q", 1280)
        | _kohya_pair("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768)
        | _kohya_pair("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 1280)
    )


def flux_kohya_lora() -> Layout:
    """kohya Flux: lora_unet_double_blocks_N_... and lora_unet_single_blocks_N_..."""
    return (
        _kohya_pair("lora_unet_double_blocks_0_img_attn_qkv", 3072)
        | _kohya_pair("lora_unet_double_blocks_0_img_mod_lin", 3072)
        | _kohya_pair("lora_unet_single_blocks_0_linear1", 3072)
    )


def flux_peft_lora() -> Layout:
    """diffusers Flux LoRA: transformer.single_transformer_blocks.N... with lora_A/lora_B."""
    return _peft_pair("transformer.single_transformer_blocks.0.attn.to_q") | _peft_pair(
        "transformer.transformer_blocks.0.attn.add_q_proj"
    )


def sd3_kohya_lora() -> Layout:
    return _kohya_pair("lora_unet_joint_blocks_0_x_block_attn_qkv") | _kohya_pair(
        "lora_unet_joint_blocks_0_context_block_mlp_fc1"
    )


def wan_lora() -> Layout:
    """Wan LoRAs name the diffusion model's own modules: blocks.N.cross_attn.q/k/v/o."""
    return (
        _peft_pair("diffusion_model.blocks.0.cross_attn.q")
        | _peft_pair("diffusion_model.blocks.0.cross_attn.k")
        | _peft_pair("diffusion_model.blocks.0.self_attn.o")
        | _peft_pair("diffusion_model.blocks.0.ffn.0")
    )


def qwen_image_lora() -> Layout:
    """QwenImage LoRA format: transformer_blocks.N.img_mlp / txt_mlp (lora.py model_lora_keys_unet)."""
    return _peft_pair("transformer_blocks.0.img_mlp.net.0.proj") | _peft_pair(
        "transformer_blocks.0.txt_mlp.net.2"
    )


def hunyuan_video_lora() -> Layout:
    """diffusion-pipe HunyuanVideo LoRA: img_mod.linear, img_attn_qkv (lora.py's HunyuanVideo map)."""
    return _peft_pair("transformer.double_blocks.0.img_mod.linear") | _peft_pair(
        "transformer.double_blocks.0.img_attn_qkv"
    )


def loha_sd1() -> Layout:
    """LyCORIS LoHa (weight_adapter/loha.py): hada_w1_a/w1_b/w2_a/w2_b; w1_b is [rank, in]."""
    module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    return {
        f"{module}.hada_w1_a": (1, 4),
        f"{module}.hada_w1_b": (4, 768),
        f"{module}.hada_w2_a": (1, 4),
        f"{module}.hada_w2_b": (4, 768),
        f"{module}.alpha": (),
    }


def lokr_sdxl() -> Layout:
    """LyCORIS LoKr (weight_adapter/lokr.py): lokr_w1 and lokr_w2_a/lokr_w2_b."""
    module = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    return {
        f"{module}.lokr_w1": (1, 1),
        f"{module}.lokr_w2_a": (1, 4),
        f"{module}.lokr_w2_b": (4, 1),
        f"{module}.alpha": (),
    }


def dora_flux() -> Layout:
    """DoRA: a LoRA plus dora_scale per module (comfy/lora.py load_lora)."""
    module = "lora_unet_double_blocks_0_img_attn_proj"
    return _kohya_pair(module, 3072) | {f"{module}.dora_scale": (1, 3072)}


KOHYA_SD1_METADATA = {
    "ss_base_model_version": "sd_v1",
    "ss_output_name": "my_character_v1",
    "ss_network_module": "networks.lora",
    "ss_tag_frequency": json.dumps({"img": {"1girl": 10}}),
}
KOHYA_SDXL_METADATA = {
    "ss_base_model_version": "sdxl_base_v1-0",
    "ss_output_name": "style_xl",
    "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
    "modelspec.title": "Style XL",
}


# -- ControlNets (comfy/controlnet.py load_controlnet_state_dict) ------------------------------


def sd1_controlnet() -> Layout:
    """The ldm ControlNet: control_model.zero_convs..., a copy of the UNet's encoder."""
    unet = {
        k: v for k, v in sd1_unet().items() if k.startswith(("input_blocks", "middle_block", "time_embed"))
    }
    return prefixed("control_model.", unet) | {
        "control_model.zero_convs.0.0.weight": (320, 320, 1, 1),
        "control_model.input_hint_block.0.weight": (16, 3, 3, 3),
        "control_model.middle_block_out.0.weight": (1, 1, 1, 1),
    }


def sdxl_diffusers_controlnet() -> Layout:
    return sdxl_diffusers_unet() | {
        "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
        "controlnet_cond_embedding.conv_out.weight": (320, 1, 3, 3),
        "controlnet_down_blocks.0.weight": (320, 320, 1, 1),
        "controlnet_mid_block.weight": (1, 1, 1, 1),
    }


def flux_instantx_controlnet() -> Layout:
    return {
        "controlnet_blocks.0.weight": (1, 1),
        "controlnet_x_embedder.weight": (1, 64),
        "x_embedder.weight": (1, 64),
        "transformer_blocks.0.attn.to_q.weight": (1, 1),
        "single_transformer_blocks.0.attn.to_q.weight": (1, 1),
    }


def control_lora() -> Layout:
    """Stability's Control-LoRA: the "lora_controlnet" marker and up/down pairs."""
    return {
        "lora_controlnet": (),
        "input_blocks.1.1.proj_in.up": (1, 4),
        "input_blocks.1.1.proj_in.down": (4, 1),
        "input_hint_block.0.weight": (16, 3, 3, 3),
    }


# -- upscalers (spandrel architectures/ESRGAN detect; nodes_upscale_model.py) -----------------


def esrgan() -> Layout:
    layout: Layout = {"model.0.weight": (64, 3, 3, 3), "model.0.bias": (64,)}
    for block in range(2):
        for rdb in (1, 2, 3):
            layout[f"model.1.sub.{block}.RDB{rdb}.conv1.0.weight"] = (1, 1, 3, 3)
    layout |= {
        "model.1.sub.23.weight": (64, 64, 3, 3),
        "model.3.weight": (1, 1, 3, 3),
        "model.10.weight": (3, 1, 3, 3),
    }
    return layout


def real_esrgan() -> Layout:
    return {
        "conv_first.weight": (64, 3, 3, 3),
        "body.0.rdb1.conv1.weight": (1, 1, 3, 3),
        "body.0.rdb2.conv1.weight": (1, 1, 3, 3),
        "conv_body.weight": (64, 64, 3, 3),
        "conv_up1.weight": (1, 1, 3, 3),
        "conv_up2.weight": (1, 1, 3, 3),
        "conv_hr.weight": (1, 1, 3, 3),
        "conv_last.weight": (3, 64, 3, 3),
    }


# -- embeddings (comfy/sd1_clip.py load_embed) -------------------------------------------------


def sd1_embedding() -> Layout:
    return {"emb_params": (4, 768)}


def sdxl_embedding() -> Layout:
    return {"clip_l": (4, 768), "clip_g": (4, 1280)}


def a1111_embedding() -> Layout:
    """A1111's format (textual_inversion.py Embedding.save: string_to_param {"*": vec}), flattened."""
    return {"string_to_param.*": (2, 768)}


# -- image encoders (comfy/clip_vision.py load_clipvision_from_sd) ----------------------------


def clip_vision(layers: int, width: int) -> Layout:
    layout: Layout = {
        "vision_model.embeddings.patch_embedding.weight": (width, 3, 1, 1),
        "vision_model.embeddings.position_embedding.weight": (257, 1),
        "vision_model.post_layernorm.weight": (width,),
        "visual_projection.weight": (1, width),
    }
    for layer in range(layers):
        layout[f"vision_model.encoder.layers.{layer}.layer_norm1.weight"] = (width,)
    return layout


def clip_vision_h() -> Layout:
    return clip_vision(32, 1280)


def clip_vision_l() -> Layout:
    return clip_vision(24, 1024)


def full_clip() -> Layout:
    """openai/clip-vit-large-patch14 as one file: a text and a vision tower."""
    return clip_l() | clip_vision_l()


# -- GGUF (ComfyUI-GGUF loader.py; llama.cpp naming for text models) ---------------------------


def gguf_text_encoder_t5() -> tuple[Layout, dict[str, object]]:
    """A T5 encoder as llama.cpp writes it (ComfyUI-GGUF's T5_SD_MAP reverses these names)."""
    layout: Layout = {"token_embd.weight": (32128, 1), "enc.output_norm.weight": (1,)}
    for block in range(2):
        layout[f"enc.blk.{block}.attn_q.weight"] = (1, 4096)
        layout[f"enc.blk.{block}.ffn_up.weight"] = (1, 4096)
    return layout, {"general.architecture": "t5encoder", "general.name": "t5-v1_1-xxl"}


def gguf_llama_text_encoder(vocabulary: int) -> tuple[Layout, dict[str, object]]:
    """A Llama-architecture text model with its tokenizer vocabulary in the header."""
    layout: Layout = {
        "token_embd.weight": (vocabulary, 1),
        "blk.0.attn_q.weight": (1, 1),
        "output_norm.weight": (1,),
    }
    tokens = [f"token{n}" for n in range(vocabulary)]
    return layout, {
        "general.architecture": "llama",
        "general.name": "llava-llama-3-8b",
        "tokenizer.ggml.tokens": tokens,
    }


def gguf_mmproj() -> tuple[Layout, dict[str, object]]:
    layout: Layout = {
        "v.patch_embd.weight": (1, 3, 1, 1),
        "v.blk.0.attn_q.weight": (1, 1),
        "mm.0.weight": (1, 1),
    }
    return layout, {"general.architecture": "clip", "general.type": "mmproj"}
