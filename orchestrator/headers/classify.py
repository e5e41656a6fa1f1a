"""Say what kind of model a parsed header belongs to, in this project's type names.

The kinds are keys of orchestrator.config.MODEL_TYPES. The tensor-name rules live in rules.py
(each one cites the loader it comes from); this module runs them in an order where no rule can
steal another's files, adds what GGUF files say about themselves, and reads the trainer's
metadata a LoRA carries. When nothing decides, the kind is None: a wrong folder is worse than
asking the person.

Metadata facts: kohya's `ss_base_model_version` ("sd_v1", "sd_v2", "sdxl_base_v1-0", "flux1",
"chroma"...; AUTOMATIC1111 extensions-builtin/Lora/network.py `detect_version` reads it, and
`ss_v2`), and `modelspec.architecture` ("stable-diffusion-xl-v1-base/lora"..., kohya's
library/sai_model_spec.py). For GGUF, ComfyUI-GGUF loader.py: `general.architecture` in
IMG_ARCH_LIST is a diffusion model, in TXT_ARCH_LIST a text encoder; a `general.type` of
"clip-vision"/"mmproj" is the vision part its text-encoder loader picks up from the same
folder (`gguf_mmproj_loader`), so it belongs with the text encoders; and a file without an
architecture (stable-diffusion.cpp's) is told by its tensor names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import rules
from .header import FileFormat, Header
from .rules import Keys, Verdict

# Metadata worth showing a person, in this order; values are cut short (they are the file's words).
SHOWN_METADATA = (
    "ss_output_name",
    "ss_base_model_version",
    "ss_network_module",
    "ss_sd_model_name",
    "modelspec.architecture",
    "modelspec.title",
    "modelspec.author",
    "modelspec.trigger_phrase",
    "general.architecture",
    "general.type",
    "general.name",
)
_SHOWN_LENGTH = 200


@dataclass(frozen=True)
class Finding:
    """What a file is: a MODEL_TYPES kind (None when unsure), its architecture family, and why."""

    format: FileFormat
    kind: str | None
    family: str | None
    evidence: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    tensor_count: int = 0

    def public(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "kind": self.kind,
            "family": self.family,
            "evidence": self.evidence,
            "metadata": dict(self.metadata),
            "tensors": self.tensor_count,
        }


# Most specific first: a ControlNet or LoRA reuses the diffusion model's module names, and a
# Control-LoRA has LoRA-like keys, so those go before the diffusion rules; a single-tensor
# embedding would match nothing else.
_RULES: tuple[Callable[[Keys], Verdict | None], ...] = (
    rules.controlnet,
    rules.lora,
    rules.embedding,
    rules.diffusion,
    rules.vae,
    rules.encoder,
    rules.upscaler,
)

# ComfyUI-GGUF loader.py IMG_ARCH_LIST, with the family each name means here.
GGUF_IMAGE_ARCHITECTURES = {
    "flux": "flux",
    "sd1": "sd1",
    "sdxl": "sdxl",
    "sd3": "sd3",
    "aura": "aura_flow",
    "hidream": "hidream",
    "cosmos": "cosmos",
    "ltxv": "ltxv",
    "hyvid": "hunyuan_video",
    "wan": "wan",
    "lumina2": "lumina2",
    "qwen_image": "qwen_image",
}
# loader.py TXT_ARCH_LIST and VIS_TYPE_LIST.
GGUF_TEXT_ARCHITECTURES = frozenset({"t5", "t5encoder", "llama", "qwen2vl", "qwen3", "qwen3vl", "gemma3"})
GGUF_VISION_TYPES = frozenset({"clip-vision", "mmproj"})
_GGUF_NO_ARCHITECTURE = (None, "pig")  # loader.py: detect from the tensor names instead

# sai_model_spec.py ARCH_* (prefixes of modelspec.architecture), most specific first.
_MODELSPEC_FAMILIES = (
    ("stable-diffusion-xl-v1-refiner", "sdxl_refiner"),
    ("stable-diffusion-xl", "sdxl"),
    ("stable-diffusion-v1", "sd1"),
    ("stable-diffusion-v2", "sd2"),
    ("stable-diffusion-3", "sd3"),
    ("flux-1", "flux"),
    ("chroma", "chroma"),
    ("lumina", "lumina2"),
)
# kohya ss_base_model_version values (model_util.get_model_version_str_for_sd1_sd2,
# sdxl_model_util MODEL_VERSION_SDXL_BASE_V1_0, flux_utils MODEL_VERSION_FLUX_V1/CHROMA).
_KOHYA_FAMILIES = (
    ("sdxl_", "sdxl"),
    ("sd_v1", "sd1"),
    ("sd_v2", "sd2"),
    ("sd3", "sd3"),
    ("flux1", "flux"),
    ("chroma", "chroma"),
)


def classify(header: Header) -> Finding:
    keys = Keys(header.tensors)
    verdict = _gguf_verdict(header, keys) if header.format == "gguf" else _by_keys(keys)
    verdict = _with_metadata(verdict, header.metadata)
    return Finding(
        format=header.format,
        kind=verdict.kind if verdict else None,
        family=verdict.family if verdict else None,
        evidence=verdict.evidence if verdict else _undecided(keys),
        metadata=shown_metadata(header.metadata),
        tensor_count=len(header.tensors),
    )


def _by_keys(keys: Keys) -> Verdict | None:
    for rule in _RULES:
        verdict = rule(keys)
        if verdict is not None:
            return verdict
    return None


def _gguf_verdict(header: Header, keys: Keys) -> Verdict | None:
    architecture = header.metadata.get("general.architecture")
    gguf_type = header.metadata.get("general.type")
    if gguf_type in GGUF_VISION_TYPES:
        return Verdict(
            "text_encoder",
            None,
            f"a GGUF vision projector (general.type {gguf_type!r}), which ComfyUI-GGUF loads "
            "from beside its text encoder",
        )
    if gguf_type == "adapter":  # llama.cpp's LoRA for a language model, not for an image model
        return Verdict(
            None, None, "a llama.cpp adapter (general.type 'adapter'), which no image model loader takes"
        )
    if architecture in GGUF_TEXT_ARCHITECTURES:
        return Verdict("text_encoder", None, f"a GGUF text model (general.architecture {architecture!r})")
    by_keys = rules.diffusion(keys)
    if architecture in GGUF_IMAGE_ARCHITECTURES:
        family = by_keys.family if by_keys and by_keys.family else GGUF_IMAGE_ARCHITECTURES[architecture]
        evidence = f"a GGUF diffusion model (general.architecture {architecture!r})"
        return Verdict("diffusion_model", family, evidence + (f"; {by_keys.evidence}" if by_keys else ""))
    if architecture in _GGUF_NO_ARCHITECTURE and by_keys is not None:
        return Verdict(
            "diffusion_model", by_keys.family, f"a GGUF without an architecture name; {by_keys.evidence}"
        )
    if architecture is not None:
        return Verdict(
            None, None, f"a GGUF of architecture {architecture[:40]!r}, which no image model loader takes"
        )
    return None


def _with_metadata(verdict: Verdict | None, metadata: Mapping[str, str]) -> Verdict | None:
    """The trainer's own word on a LoRA's or embedding's base model beats what the keys suggest."""
    if verdict is None or verdict.kind not in ("lora", "embedding"):
        return verdict
    family, source = metadata_family(metadata)
    if family is None or family == verdict.family:
        return verdict
    return Verdict(verdict.kind, family, f"{verdict.evidence}; {source} says {family}")


def metadata_family(metadata: Mapping[str, str]) -> tuple[str | None, str]:
    version = metadata.get("ss_base_model_version", "")
    for prefix, family in _KOHYA_FAMILIES:
        if version.startswith(prefix):
            return family, f"ss_base_model_version {version[:40]!r}"
    if metadata.get("ss_v2") == "True":  # network.py detect_version
        return "sd2", "ss_v2"
    architecture = metadata.get("modelspec.architecture", "")
    for prefix, family in _MODELSPEC_FAMILIES:
        if architecture.startswith(prefix):
            return family, f"modelspec.architecture {architecture[:60]!r}"
    return None, ""


def shown_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    shown: dict[str, str] = {}
    for key in SHOWN_METADATA:
        value = metadata.get(key)
        if value:
            clean = " ".join(value.split())[:_SHOWN_LENGTH]
            if clean:
                shown[key] = clean
    return shown


def _undecided(keys: Keys) -> str:
    if not keys.names:
        return "the file holds no tensors"
    sample = ", ".join(repr(name[:60]) for name in sorted(keys.names)[:3])
    return f"no loader's rule matches its {len(keys.names)} tensors (first: {sample})"
