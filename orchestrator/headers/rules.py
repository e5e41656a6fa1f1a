"""Tell what a model file is from its tensor names (and a few shapes), as the loaders do.

Every rule here is the check a loader itself makes before it accepts a file, so a file that
passes a rule is one that loader would take. The sources, all read from their own code:

- ComfyUI comfy/model_detection.py `detect_unet_config`: the one key that identifies each
  diffusion architecture (Flux, SD3 MMDiT, Wan, HunyuanVideo, LTXV, Qwen-Image, HiDream...),
  in the order ComfyUI tries them; `unet_prefix_from_state_dict`: where a checkpoint keeps
  its diffusion model; `convert_diffusers_mmdit` and `unet_config_from_diffusers_unet`: the
  diffusers layouts `load_diffusion_model_state_dict` (comfy/sd.py) also accepts.
- ComfyUI comfy/supported_models.py: which UNet widths make SD1, SD2, SDXL and the SDXL
  refiner (`context_dim`, `adm_in_channels`, `model_channels` of SD15, SD20, SDXL...), and
  each model's `vae_key_prefix` / `text_encoder_key_prefix` inside a checkpoint.
- ComfyUI comfy/sd.py: `VAE.__init__` (the key each VAE layout is known by), `detect_te_model`
  (CLIP-L/H/G, T5, Gemma, Qwen, Llama text encoders), `load_state_dict_guess_config` (a file
  without a VAE is loaded "as a diffusion model only").
- ComfyUI comfy/lora.py `load_lora` and comfy/weight_adapter/ (lora.py, loha.py, lokr.py,
  oft.py): the key suffixes of LoRA, LoHa, LoKr, OFT and DoRA weights; `model_lora_keys_unet`
  / `model_lora_keys_clip`: the module names each family's LoRAs use.
- AUTOMATIC1111 extensions-builtin/Lora/: networks.py `load_network` (a key is a module name,
  then "." and the network part), network_lora.py (lora_up/lora_down, lora_A/lora_B),
  network_hada.py, network_lokr.py, network_oft.py, network_full.py (diff).
- ComfyUI comfy/controlnet.py `load_controlnet_state_dict`; comfy/clip_vision.py
  `load_clipvision_from_sd`; comfy/sd1_clip.py `load_embed` and A1111
  modules/textual_inversion/textual_inversion.py (embeddings); comfy_extras/
  nodes_upscale_model.py and spandrel's architectures/ESRGAN/__init__.py (upscalers).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .header import Tensor


@dataclass(frozen=True)
class Verdict:
    kind: str | None  # None: decided that no kind fits (the evidence says why)
    family: str | None
    evidence: str


class Keys:
    """The tensor names of one file, with the few lookups the rules need."""

    def __init__(self, tensors: Mapping[str, Tensor]) -> None:
        self.tensors = tensors
        self.names = frozenset(tensors)

    def has(self, *names: str) -> bool:
        return all(name in self.names for name in names)

    def has_any(self, names: Iterable[str]) -> bool:
        return any(name in self.names for name in names)

    def starting(self, prefix: str) -> int:
        return sum(1 for name in self.names if name.startswith(prefix))

    def dim(self, name: str, index: int) -> int | None:
        tensor = self.tensors.get(name)
        if tensor is None or not -len(tensor.shape) <= index < len(tensor.shape):
            return None
        return tensor.shape[index]


# -- diffusion models ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Marker:
    family: str
    needs: tuple[str, ...]
    any_of: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()

    def matches(self, keys: Keys, prefix: str) -> bool:
        return (
            keys.has(*(prefix + k for k in self.needs))
            and (not self.any_of or keys.has_any(prefix + k for k in self.any_of))
            and not keys.has_any(prefix + k for k in self.unless)
        )


# model_detection.py detect_unet_config, in its order (the first match wins there too).
_DIT_MARKERS = (
    _Marker("sd3", ("joint_blocks.0.context_block.attn.qkv.weight",)),  # "mmdit model"
    _Marker("stable_cascade", ("clf.1.weight",)),
    _Marker("stable_audio", ("transformer.rotary_pos_emb.inv_freq",)),
    _Marker("aura_flow", ("double_layers.0.attn.w1q.weight",)),
    _Marker("hunyuan_dit", ("mlp_t5.0.weight",)),
    _Marker("hunyuan_video", ("txt_in.individual_token_refiner.blocks.0.norm1.weight",)),
    # Flux's check, with Chroma told apart by its distilled guidance layer (same branch).
    _Marker(
        "chroma",
        ("double_blocks.0.img_attn.norm.key_norm.scale",),
        any_of=("distilled_guidance_layer.0.norms.0.scale", "distilled_guidance_layer.norms.0.scale"),
    ),
    _Marker("flux", ("double_blocks.0.img_attn.norm.key_norm.scale", "img_in.weight")),
    _Marker("mochi", ("t5_yproj.weight",)),
    # The same timestep key without PixArt's diffusers "pos_embed.proj.bias" is Lightricks LTXV.
    _Marker("ltxv", ("adaln_single.emb.timestep_embedder.linear_1.bias",), unless=("pos_embed.proj.bias",)),
    _Marker("ace_step", ("genre_embedder.weight",)),
    _Marker("pixart", ("t_block.1.weight",)),
    _Marker("cosmos", ("blocks.block0.blocks.0.block.attn.to_q.0.weight",)),
    _Marker("lumina2", ("cap_embedder.1.weight",)),
    _Marker("wan", ("head.modulation",)),
    _Marker("hunyuan3d", ("latent_in.weight",)),
    _Marker("hunyuan3d", ("t_embedder.mlp.2.weight",)),
    _Marker("hidream", ("caption_projection.0.linear.weight",)),
    _Marker("cosmos", ("blocks.0.mlp.layer1.weight",)),  # Cosmos Predict2
    _Marker("omnigen2", ("time_caption_embed.timestep_embedder.linear_1.bias",)),
    _Marker("qwen_image", ("txt_norm.weight",)),
)

# Diffusers layouts, top-level keys only: model_detection.py convert_diffusers_mmdit.
_DIFFUSERS_MARKERS = (
    _Marker("aura_flow", ("joint_transformer_blocks.0.attn.add_k_proj.weight",)),
    # ComfyUI takes any "x_embedder.weight" as Flux here; a single-stream block makes it certain.
    _Marker("flux", ("x_embedder.weight", "single_transformer_blocks.0.attn.to_q.weight")),
    _Marker("sd3", ("transformer_blocks.0.attn.add_q_proj.weight", "pos_embed.proj.weight")),
)

# supported_models.py: (family, model_channels, adm_in_channels, context_dim) of SD15, SD20,
# SD21UnclipL, SD21UnclipH, SDXL (and SSD-1B, Vega, KOALA, which share its widths), SDXLRefiner.
_SD_UNETS = (
    ("sd1", 320, None, 768),
    ("sd2", 320, None, 1024),
    ("sd2", 320, 1536, 1024),
    ("sd2", 320, 2048, 1024),
    ("sdxl", 320, 2816, 2048),
    ("sdxl_refiner", 384, 2560, 1280),
)
_CROSS_ATTENTION = re.compile(
    r"^(input_blocks\.\d+|middle_block)\.1\.transformer_blocks\.0\.attn2\.to_k\.weight$"
)
_DIFFUSERS_CROSS_ATTENTION = re.compile(
    r"^(down_blocks\.\d+|mid_block)\.attentions\.0\.transformer_blocks\.0\.attn2\.to_k\.weight$"
)

# unet_prefix_from_state_dict: the prefix more than 5 keys share, else "model." (AuraFlow...).
_UNET_PREFIXES = ("model.diffusion_model.", "model.model.", "net.")
# BASE.vae_key_prefix and the overrides in supported_models.py (Flux, Wan... "vae.", Stable
# Audio "pretransform.model.", SV3D "conditioner.embedders.1.encoder.").
_VAE_PREFIXES = ("first_stage_model.", "vae.", "pretransform.model.", "conditioner.embedders.1.encoder.")
# BASE.text_encoder_key_prefix ("cond_stage_model."), "text_encoders." (SD3, Flux, Wan...),
# "text_encoder." (Stable Cascade), and SDXL's "conditioner.embedders." (process_clip_state_dict).
_TE_PREFIXES = ("cond_stage_model.", "text_encoders.", "text_encoder.", "conditioner.embedders.0.")


def diffusion(keys: Keys) -> Verdict | None:
    """A UNet or DiT: with a VAE beside it a checkpoint, alone a diffusion model."""
    prefix = _unet_prefix(keys)
    for candidate in (prefix, ""):
        if candidate is None:
            continue
        found = _architecture(keys, candidate)
        if found is not None:
            family, what = found
            return _package(keys, candidate, family, what)
    found = _diffusers_architecture(keys)
    if found is not None:
        family, what = found
        return Verdict("diffusion_model", family, f"{what} in diffusers layout, no VAE or text encoder")
    return None


def _unet_prefix(keys: Keys) -> str | None:
    counts = {prefix: keys.starting(prefix) for prefix in _UNET_PREFIXES}
    best = max(counts, key=lambda prefix: counts[prefix])
    if counts[best] > 5:
        return best
    return "model." if keys.starting("model.") else None


def _architecture(keys: Keys, prefix: str) -> tuple[str | None, str] | None:
    for marker in _DIT_MARKERS:
        if marker.matches(keys, prefix):
            return marker.family, f"{_label(marker.family)} keys ({prefix}{marker.needs[0]})"
    if keys.has(prefix + "input_blocks.0.0.weight"):
        return _sd_unet(keys, prefix)
    return None


def _sd_unet(keys: Keys, prefix: str) -> tuple[str | None, str]:
    channels = keys.dim(prefix + "input_blocks.0.0.weight", 0)
    adm = keys.dim(prefix + "label_emb.0.0.weight", 1)
    context = _first_dim(keys, prefix, _CROSS_ATTENTION, 1)
    family = _sd_family(channels, adm, context)
    widths = f"cross-attention width {context}" + (f", label_emb width {adm}" if adm else "")
    return family, f"UNet keys ({prefix}input_blocks..., {widths})"


def _diffusers_architecture(keys: Keys) -> tuple[str | None, str] | None:
    for marker in _DIFFUSERS_MARKERS:
        if marker.matches(keys, ""):
            return marker.family, f"{_label(marker.family)} transformer ({marker.needs[0]})"
    if keys.has("conv_in.weight", "down_blocks.0.resnets.0.conv1.weight"):
        family = _sd_family(
            keys.dim("conv_in.weight", 0),
            keys.dim("add_embedding.linear_1.weight", 1),
            _first_dim(keys, "", _DIFFUSERS_CROSS_ATTENTION, 1),
        )
        return family, f"{_label(family) if family else 'a'} UNet (conv_in, down_blocks...)"
    return None


def _first_dim(keys: Keys, prefix: str, pattern: re.Pattern[str], index: int) -> int | None:
    for name in sorted(keys.names):
        if name.startswith(prefix) and pattern.match(name[len(prefix) :]):
            return keys.dim(name, index)
    return None


def _sd_family(channels: int | None, adm: int | None, context: int | None) -> str | None:
    for family, want_channels, want_adm, want_context in _SD_UNETS:
        if (channels, adm, context) == (want_channels, want_adm, want_context):
            return family
    return None


def _package(keys: Keys, prefix: str, family: str | None, what: str) -> Verdict:
    if not prefix:
        return Verdict(
            "diffusion_model", family, f"{what}; the diffusion model alone, no VAE or text encoder"
        )
    vae = [p for p in _VAE_PREFIXES if keys.starting(p)]
    text = [p for p in _TE_PREFIXES if keys.starting(p)]
    if not vae:  # load_state_dict_guess_config: then only the diffusion model is usable
        return Verdict("diffusion_model", family, f"{what}; no VAE in the file, so the diffusion model alone")
    parts = f"a VAE ({vae[0]}*)" + (f" and text encoders ({text[0]}*)" if text else ", no text encoder")
    return Verdict("checkpoint", family, f"{what} with {parts}")


# -- LoRA and friends ------------------------------------------------------------------------

# The network part after a module name: comfy/weight_adapter/lora.py (kohya lora_up/lora_down,
# diffusers "_lora.up", ".lora.up", PEFT lora_A/lora_B, "lora_B.default", transformers
# "lora_linear_layer"), loha.py (hada_*), lokr.py (lokr_*), oft.py (oft_blocks), comfy/lora.py
# load_lora (dora_scale, diff), A1111 network_oft.py (oft_diag) and network_full.py (diff).
_ADAPTERS = (
    ("LoRA (kohya)", re.compile(r"(\.lora_(?:up|down|mid)\.weight)$")),
    (
        "LoRA (diffusers/PEFT)",
        re.compile(
            r"(\.lora_[AB](?:\.default)?(?:\.weight)?|_lora\.(?:up|down)\.weight"
            r"|\.lora\.(?:up|down)\.weight|\.lora_linear_layer\.(?:up|down)\.weight)$"
        ),
    ),
    ("LoHa (LyCORIS)", re.compile(r"(\.hada_(?:w1_a|w1_b|w2_a|w2_b|t1|t2))$")),
    ("LoKr (LyCORIS)", re.compile(r"(\.lokr_(?:w1|w2|w1_a|w1_b|w2_a|w2_b|t2))$")),
    ("OFT", re.compile(r"(\.oft_(?:blocks|diag))$")),
    ("DoRA", re.compile(r"(\.dora_scale)$")),
    ("LyCORIS full", re.compile(r"^(?:lora|lycoris)_\w+(\.diff(?:_b)?)$")),
)

# Module names (dots and underscores alike, as kohya flattens them) that only one family's
# LoRAs use, from the key maps in lora.py model_lora_keys_unet: HunyuanVideo's diffusion-pipe
# names ("_mod.linear", "modulation.linear", its token refiner), Chroma's distilled guidance,
# Flux's double/single blocks, HiDream's stream blocks, SD3's joint blocks, Wan's cross
# attention q/k/v/o, Qwen-Image's img_mlp/txt_mlp.
_LORA_MODULES = (
    ("hunyuan_video", re.compile(r"individual_token_refiner|(?:img|txt)_mod_linear|modulation_linear")),
    ("chroma", re.compile(r"distilled_guidance_layer")),
    ("flux", re.compile(r"(?:^|_)(?:double_blocks|single_blocks|single_transformer_blocks)_\d+_")),
    ("hidream", re.compile(r"(?:double|single)_stream_blocks_\d+_")),
    ("sd3", re.compile(r"(?:^|_)joint_blocks_\d+_")),
    ("wan", re.compile(r"(?:^|_)blocks_\d+_cross_attn_(?:q|k|v|o|k_img|v_img)$")),
    ("qwen_image", re.compile(r"(?:^|_)transformer_blocks_\d+_(?:img|txt)_mlp_")),
)
# The weight whose last dimension is the UNet's cross-attention width (a LoRA's down/A matrix
# is [rank, in_features]); lora.py maps these onto attn2.to_k, whose input is context_dim.
_LORA_CROSS_ATTENTION = re.compile(
    r"attn2[._]to_k(?:\.lora_down\.weight|\.lora_A(?:\.default)?\.weight|_lora\.down\.weight"
    r"|\.lora\.down\.weight|\.hada_w1_b)$"
)
_CONTEXT_FAMILIES = {768: "sd1", 1024: "sd2", 2048: "sdxl", 1280: "sdxl_refiner"}


def lora(keys: Keys) -> Verdict | None:
    styles: list[str] = []
    modules: list[str] = []
    sample = ""
    for name in sorted(keys.names):
        for style, pattern in _ADAPTERS:
            match = pattern.search(name)
            if match:
                if style not in styles:
                    styles.append(style)
                sample = sample or name
                modules.append(name[: match.start(1)])
                break
    if not styles:
        return None
    family, why = _lora_family(keys, modules)
    evidence = f"{', '.join(styles)} weights such as {sample[:120]!r}" + (f"; {why}" if why else "")
    return Verdict("lora", family, evidence)


def _lora_family(keys: Keys, modules: list[str]) -> tuple[str | None, str]:
    flat = [module.replace(".", "_") for module in modules]
    for family, pattern in _LORA_MODULES:
        hit = next((module for module in flat if pattern.search(module)), None)
        if hit is not None:
            return family, f"{_label(family)} module names ({hit[:80]})"
    for name in sorted(keys.names):
        if _LORA_CROSS_ATTENTION.search(name):
            width = keys.dim(name, -1)
            by_width = _CONTEXT_FAMILIES.get(width or 0)
            if by_width:
                return by_width, f"cross-attention width {width} ({_label(by_width)})"
    if any(module.startswith(("lora_te2_", "text_encoder_2")) for module in flat):
        return "sdxl", "a second text encoder (lora_te2_), as SDXL has"
    return None, ""


# -- ControlNet --------------------------------------------------------------------------------

# controlnet.py load_controlnet_state_dict, in its order.
_CONTROLNETS = (
    ("hunyuan_dit", ("after_proj_list.18.bias",), "Hunyuan-DiT ControlNet"),
    (None, ("lora_controlnet",), "Control-LoRA"),
    (None, ("controlnet_cond_embedding.conv_in.weight",), "diffusers ControlNet"),
    (
        "flux",
        ("controlnet_blocks.0.weight", "double_blocks.0.img_attn.norm.key_norm.scale"),
        "XLabs Flux ControlNet",
    ),
    ("sd3", ("controlnet_blocks.0.weight", "pos_embed_input.proj.weight"), "SD3 ControlNet"),
    (
        "qwen_image",
        ("controlnet_blocks.0.weight", "transformer_blocks.0.img_mlp.net.0.proj.weight"),
        "InstantX Qwen-Image ControlNet",
    ),
    ("flux", ("controlnet_blocks.0.weight", "controlnet_x_embedder.weight"), "InstantX Flux ControlNet"),
    ("flux", ("controlnet_blocks.0.linear.weight",), "Mistoline Flux ControlNet"),
    (None, ("control_model.zero_convs.0.0.weight",), "ControlNet (control_model.zero_convs)"),
    (None, ("zero_convs.0.0.weight",), "ControlNet (zero_convs)"),
)


def controlnet(keys: Keys) -> Verdict | None:
    for family, needs, what in _CONTROLNETS:
        if keys.has(*needs):
            return Verdict("controlnet", family or _controlnet_unet_family(keys), f"{what}: {needs[0]}")
    return None


def _controlnet_unet_family(keys: Keys) -> str | None:
    """An SD ControlNet copies the UNet's encoder, so its widths say SD1, SD2 or SDXL."""
    for prefix in ("control_model.", ""):
        if keys.has(prefix + "input_blocks.0.0.weight"):
            return _sd_unet(keys, prefix)[0]
    if keys.has("conv_in.weight"):
        return _sd_family(
            keys.dim("conv_in.weight", 0),
            keys.dim("add_embedding.linear_1.weight", 1),
            _first_dim(keys, "", _DIFFUSERS_CROSS_ATTENTION, 1),
        )
    return None


# -- textual inversion -------------------------------------------------------------------------

# sd1_clip.py load_embed: "string_to_param" (A1111's format), the "clip_l"/"clip_g" keys SDXL
# embeddings use, "emb_params", or else the file's only tensor (A1111's "diffuser concepts").
_EMBEDDING_WIDTHS = {768: "sd1", 1024: "sd2"}
_MAX_EMBEDDING_VECTORS = 75  # a CLIP prompt holds 77 tokens, two of them start and end


def embedding(keys: Keys) -> Verdict | None:
    names = keys.names
    if names and names <= {"clip_l", "clip_g"}:
        family = "sdxl" if "clip_g" in names else None
        return Verdict("embedding", family, f"textual inversion vectors for {' and '.join(sorted(names))}")
    if names == {"emb_params"}:
        return _single_embedding(keys, "emb_params")
    if any(n.startswith("string_to_param.") for n in names) and all(
        n.startswith(("string_to_param.", "string_to_token.")) for n in names
    ):
        return _single_embedding(keys, min(n for n in names if n.startswith("string_to_param.")))
    if len(names) == 1:
        (name,) = names
        shape = keys.tensors[name].shape
        if len(shape) in (1, 2) and shape[-1] in _EMBEDDING_WIDTHS and shape[0] <= _MAX_EMBEDDING_VECTORS:
            return _single_embedding(keys, name)
    return None


def _single_embedding(keys: Keys, name: str) -> Verdict:
    width = keys.dim(name, -1)
    family = _EMBEDDING_WIDTHS.get(width or 0)
    return Verdict("embedding", family, f"textual inversion vectors {name[:60]!r} of width {width}")


# -- VAE -------------------------------------------------------------------------------------

# sd.py VAE.__init__, in its order: (family, keys, what).
_VAES = (
    (None, ("decoder.up_blocks.0.resnets.0.norm1.weight",), "a diffusers-layout VAE"),
    (None, ("decoder.mid.block_1.mix_factor",), "a temporal (SVD) VAE"),
    (None, ("taesd_decoder.1.weight",), "a TAESD preview VAE"),
    ("stable_cascade", ("vquantizer.codebook.weight",), "Stable Cascade's stage A"),
    (None, ("decoder.conv_in.weight",), "an image VAE"),
    ("stable_audio", ("decoder.layers.1.layers.0.beta",), "Stable Audio's VAE"),
    ("mochi", ("decoder.blocks.2.blocks.3.stack.5.weight",), "Mochi's VAE"),
    ("ltxv", ("decoder.up_blocks.0.res_blocks.0.conv1.conv.weight",), "LTXV's video VAE"),
    ("hunyuan_video", ("decoder.conv_in.conv.weight",), "HunyuanVideo's video VAE"),
    ("cosmos", ("decoder.unpatcher3d.wavelets",), "Cosmos' video tokenizer"),
    (
        "wan",
        ("decoder.middle.0.residual.0.gamma", "decoder.upsamples.0.upsamples.0.residual.2.weight"),
        "Wan 2.2's VAE",
    ),
    ("wan", ("decoder.middle.0.residual.0.gamma",), "Wan 2.1's VAE (Qwen-Image uses it too)"),
)


def vae(keys: Keys) -> Verdict | None:
    for family, needs, what in _VAES:
        if keys.has(*needs):
            latent = keys.dim("decoder.conv_in.weight", 1)
            detail = f", {latent}-channel latent" if latent and family is None else ""
            return Verdict("vae", family, f"{what}: {needs[0]}{detail}")
    return None


# -- text and image encoders -------------------------------------------------------------------

# sd.py detect_te_model, in its order, plus load_text_encoder_state_dicts' OpenCLIP layout.
_TEXT_ENCODERS = (
    ("text_model.encoder.layers.30.mlp.fc1.weight", "CLIP-G"),
    ("text_model.encoder.layers.22.mlp.fc1.weight", "CLIP-H"),
    ("text_model.encoder.layers.0.mlp.fc1.weight", "CLIP-L"),
    ("transformer.resblocks.0.ln_1.weight", "an OpenCLIP text encoder"),
    ("encoder.block.23.layer.1.DenseReluDense.wi_1.weight", "T5"),
    ("encoder.block.23.layer.1.DenseReluDense.wi.weight", "T5-XXL (old layout)"),
    ("encoder.block.0.layer.0.SelfAttention.k.weight", "T5-base or ByT5"),
    ("model.layers.0.post_feedforward_layernorm.weight", "Gemma"),
    ("model.layers.0.self_attn.k_proj.bias", "Qwen 2.5"),
    ("model.layers.0.post_attention_layernorm.weight", "a Llama-style LLM"),
)
# clip_vision.py load_clipvision_from_sd (and load(): OpenCLIP's "visual." layout), in order.
_IMAGE_ENCODERS = (
    ("vision_model.encoder.layers.47.layer_norm1.weight", "CLIP ViT-bigG"),
    ("vision_model.encoder.layers.30.layer_norm1.weight", "CLIP ViT-H"),
    ("vision_model.encoder.layers.22.layer_norm1.weight", "CLIP ViT-L or SigLIP"),
    ("visual.transformer.resblocks.0.attn.in_proj_weight", "an OpenCLIP image encoder"),
    ("encoder.layer.39.layer_scale2.lambda1", "DINOv2 giant"),
    ("encoder.layer.23.layer_scale2.lambda1", "DINOv2 large"),
)
_UMT5_VOCABULARY = 256384  # ComfyUI-GGUF loader.py: a T5 with this vocabulary is "probably UMT5"


def encoder(keys: Keys) -> Verdict | None:
    text = next(((key, what) for key, what in _TEXT_ENCODERS if keys.has(key)), None)
    image = next(((key, what) for key, what in _IMAGE_ENCODERS if keys.has(key)), None)
    if text and image and text[0].startswith(("text_model.", "transformer.")):
        # A whole CLIP: both loaders would take it, so the file does not say where it goes.
        return Verdict(None, None, f"a whole CLIP model, text ({text[1]}) and image ({image[1]}) towers")
    if text:
        return Verdict("text_encoder", None, f"{_text_encoder_name(keys, *text)} text encoder: {text[0]}")
    if image:
        return Verdict("clip_vision", None, f"{image[1]} image encoder: {image[0]}")
    return None


def _text_encoder_name(keys: Keys, key: str, what: str) -> str:
    if what == "T5":
        if keys.dim("shared.weight", 0) == _UMT5_VOCABULARY:
            return "umT5-XXL"
        return {4096: "T5-XXL", 2048: "T5-XL"}.get(keys.dim(key, -1) or 0, "T5")
    if what == "Qwen 2.5":
        return {256: "Qwen 2.5 3B", 512: "Qwen 2.5 7B"}.get(keys.dim(key, 0) or 0, what)
    return what


# -- upscalers ---------------------------------------------------------------------------------

# spandrel architectures/ESRGAN: its detect conditions (old ESRGAN, Real-ESRGAN, BSRGAN/RealSR,
# ESRGAN+); nodes_upscale_model.py: the SwinIR-style layout it unwraps from "module.".
_UPSCALERS = (
    (("model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"), "ESRGAN"),
    (
        ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_last.weight"),
        "Real-ESRGAN",
    ),
    (
        ("conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "trunk_conv.weight", "conv_last.weight"),
        "BSRGAN",
    ),
    (("model.0.weight", "model.1.sub.0.RDB1.conv1x1.weight"), "ESRGAN+"),
    (("conv_first.weight", "layers.0.residual_group.blocks.0.norm1.weight"), "SwinIR-style"),
    (("module.conv_first.weight", "module.layers.0.residual_group.blocks.0.norm1.weight"), "SwinIR-style"),
)


def upscaler(keys: Keys) -> Verdict | None:
    for needs, what in _UPSCALERS:
        if keys.has(*needs):
            return Verdict("upscaler", None, f"{what} upscaler: {needs[1]}")
    return None


# -- names -------------------------------------------------------------------------------------

_LABELS = {
    "sd1": "SD1",
    "sd2": "SD2",
    "sdxl": "SDXL",
    "sdxl_refiner": "SDXL refiner",
    "sd3": "SD3 MMDiT",
    "flux": "Flux",
    "chroma": "Chroma",
    "wan": "Wan",
    "hunyuan_video": "HunyuanVideo",
    "ltxv": "LTXV",
    "qwen_image": "Qwen-Image",
    "hidream": "HiDream",
    "aura_flow": "AuraFlow",
    "hunyuan_dit": "Hunyuan-DiT",
    "stable_cascade": "Stable Cascade",
    "stable_audio": "Stable Audio",
    "mochi": "Mochi",
    "ace_step": "ACE-Step",
    "pixart": "PixArt",
    "cosmos": "Cosmos",
    "lumina2": "Lumina 2",
    "hunyuan3d": "Hunyuan3D",
    "omnigen2": "OmniGen2",
}


def _label(family: str | None) -> str:
    return _LABELS.get(family or "", family or "unknown")
