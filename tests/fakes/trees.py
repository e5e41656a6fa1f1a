"""Install trees as the UIs lay them out on disk: a ComfyUI with an extra_model_paths.yaml, an A1111.

The folder names are the ones each UI creates or reads (ComfyUI's folder_paths.py, A1111's
modules/paths_internal.py, cmd_args.py and extensions-builtin/Lora/preload.py); the files
in them are small stand-ins with a model's name, never real weights.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

COMFY_MODEL_FOLDERS = (
    "checkpoints", "configs", "loras", "vae", "text_encoders", "clip", "unet", "diffusion_models",
    "clip_vision", "style_models", "embeddings", "controlnet", "t2i_adapter", "upscale_models",
    "hypernetworks", "animatediff_models",
)  # fmt: skip
A1111_MODEL_FOLDERS = (
    "Stable-diffusion", "Lora", "LyCORIS", "VAE", "ESRGAN", "RealESRGAN", "hypernetworks",
    "ControlNet", "text_encoder",
)  # fmt: skip


def put_model(path: Path, content: bytes = b"weights") -> Path:
    """A stand-in model file (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@dataclass
class ComfyTree:
    root: Path  # the ComfyUI install (where main.py is)

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def extra_paths(self) -> Path:
        return self.root / "extra_model_paths.yaml"

    def write_extra_paths(self, text: str) -> Path:
        self.extra_paths.write_text(textwrap.dedent(text), encoding="utf-8")
        return self.extra_paths


def comfyui_tree(base: Path, extra_paths: str | None = None) -> ComfyTree:
    """ComfyUI/ with main.py and its models/ folders; `extra_paths` becomes extra_model_paths.yaml."""
    tree = ComfyTree(base / "ComfyUI")
    for folder in COMFY_MODEL_FOLDERS:
        (tree.models / folder).mkdir(parents=True)
    (tree.root / "main.py").write_text("# ComfyUI\n")
    if extra_paths is not None:
        tree.write_extra_paths(extra_paths)
    return tree


def a1111_tree(base: Path, *, animatediff: bool = False) -> Path:
    """stable-diffusion-webui/ with models/, embeddings/ at the top, and optionally the AnimateDiff
    extension with its own model/ folder."""
    root = base / "stable-diffusion-webui"
    for folder in A1111_MODEL_FOLDERS:
        (root / "models" / folder).mkdir(parents=True)
    (root / "embeddings").mkdir()
    (root / "webui.py").write_text("# AUTOMATIC1111\n")
    if animatediff:
        (root / "extensions" / "sd-webui-animatediff" / "model").mkdir(parents=True)
    return root


def second_disk(base: Path, *folders: str) -> Path:
    """A folder standing for another disk, with the given folders under it."""
    disk = base / "disk2"
    for folder in folders:
        (disk / folder).mkdir(parents=True, exist_ok=True)
    disk.mkdir(exist_ok=True)
    return disk
