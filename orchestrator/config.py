"""Settings from flags and environment; model types and the folder layouts they map to."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import OrchestratorError
from .security import is_loopback

# A model type is a word the user picks; a layout decides which folder it lands in.
MODEL_TYPES: dict[str, str] = {
    "checkpoint": "Checkpoint (full Stable Diffusion model)",
    "lora": "LoRA / LyCORIS / LoCon / DoRA",
    "vae": "VAE",
    "embedding": "Textual inversion embedding",
    "upscaler": "Upscaler (ESRGAN and friends)",
    "controlnet": "ControlNet",
    "hypernetwork": "Hypernetwork",
    "motion_module": "AnimateDiff motion module",
    "clip_vision": "CLIP vision encoder",
    "text_encoder": "Text encoder (CLIP, T5)",
    "diffusion_model": "Diffusion model / UNet only",
}
# ComfyUI's other model folders (folder_paths.py), so a workflow's every model has a home.
MORE_MODEL_TYPES: dict[str, tuple[str, str]] = {  # type -> (description, ComfyUI folder)
    "style_model": ("Style model (ComfyUI)", "style_models"),
    "gligen": ("GLIGEN model", "gligen"),
    "photomaker": ("PhotoMaker model", "photomaker"),
    "vae_approx": ("VAE approximation (TAESD)", "vae_approx"),
    "model_patch": ("Model patch (ComfyUI)", "model_patches"),
    "audio_encoder": ("Audio encoder", "audio_encoders"),
    "latent_upscaler": ("Latent upscale model", "latent_upscale_models"),
    "config": ("Model config (.yaml)", "configs"),
    "diffusers": ("Diffusers folder", "diffusers"),
    "classifier": ("Classifier", "classifiers"),
    "background_removal": ("Background removal model", "background_removal"),
    "frame_interpolation": ("Frame interpolation model", "frame_interpolation"),
    "geometry_estimation": ("Geometry estimation model", "geometry_estimation"),
    "optical_flow": ("Optical flow model", "optical_flow"),
    "detection": ("Detection model", "detection"),
}
MODEL_TYPES.update({name: text for name, (text, _) in MORE_MODEL_TYPES.items()})

LAYOUTS: dict[str, dict[str, str]] = {
    "default": {name: name for name in MODEL_TYPES if name not in MORE_MODEL_TYPES},
    # AUTOMATIC1111 / Forge keep these under webui/models/ (embeddings: point
    # --embeddings-dir at models/embeddings, see README).
    "a1111": {
        "checkpoint": "Stable-diffusion",
        "lora": "Lora",
        "vae": "VAE",
        "embedding": "embeddings",
        "upscaler": "ESRGAN",
        "controlnet": "ControlNet",
        "hypernetwork": "hypernetworks",
        "motion_module": "animatediff_models",
        "clip_vision": "clip_vision",
        "text_encoder": "text_encoder",
        "diffusion_model": "Stable-diffusion",
    },
    "comfyui": {
        "checkpoint": "checkpoints",
        "lora": "loras",
        "vae": "vae",
        "embedding": "embeddings",
        "upscaler": "upscale_models",
        "controlnet": "controlnet",
        "hypernetwork": "hypernetworks",
        "motion_module": "animatediff_models",
        "clip_vision": "clip_vision",
        "text_encoder": "text_encoders",
        "diffusion_model": "diffusion_models",
    },
}
for _name, (_, _comfy_folder) in MORE_MODEL_TYPES.items():
    LAYOUTS["default"][_name] = _name
    LAYOUTS["a1111"][_name] = _comfy_folder
    LAYOUTS["comfyui"][_name] = _comfy_folder

ENGINES = ("auto", "aria2", "requests")
STAGING_FOLDER = ".staging"
OUTSIDE_DOWNLOADS_FOLDER = "downloads"
# Not a folder: the source picks the type (only CivitAI says what a model is).
AUTO_TYPE = "auto"
AUTO_DESCRIPTION = "Auto: what the link says (CivitAI's type) or the file itself (its header)"
SWITCHES = {"on": True, "off": False, "true": True, "false": False, "1": True, "0": False}


def folder_for(model_type: str, layout: str) -> str:
    """The folder (relative to the models folder) for a model type; unknown types are refused."""
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        known = ", ".join(MODEL_TYPES)
        raise OrchestratorError(
            "unknown_type", f"Unknown model type {str(model_type)[:40]!r}. Pick one of: {known}."
        )
    return LAYOUTS[layout][model_type]


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    models_dir: Path = field(default_factory=lambda: Path("models"))
    state_dir: Path = field(default_factory=lambda: Path("state"))
    engine: str = "auto"
    aria2_rpc_url: str = "http://127.0.0.1:6800/jsonrpc"
    aria2_secret: str | None = None
    layout: str = "default"
    poll_interval: float = 1.0
    max_active: int = 5
    keep_partial_bytes: int = 20 * 1024**3  # failed downloads' partial data kept for retries, at most
    resolve_deadline: float = 120.0  # seconds one link may take to resolve (its server's answers)
    stall_seconds: float = 60.0  # a download that gets almost nothing for this long is asked again
    ipv6: str = "auto"  # aria2's IPv6: auto (off when this machine has no IPv6 route) | on | off
    log_level: str = "info"
    access_token: str | None = None
    block_private: str = "auto"  # refuse private/loopback download targets: auto | on | off
    private_allow: frozenset[str] = frozenset()  # hosts or addresses let through anyway (a NAS)
    sidecars: bool = True  # <name>.json, <name>.civitai.info and <name>.preview.<ext> beside models
    comfyui: Path | None = None  # a ComfyUI install: its models/ tree and extra_model_paths.yaml
    comfyui_extra_paths: Path | None = None  # an extra_model_paths.yaml of one's own
    a1111: Path | None = None  # an AUTOMATIC1111 / Forge install: models/, embeddings/
    subfolder_template: str = ""  # e.g. "{base_model}": a subfolder for downloads that name none
    library_lookups: bool = True  # ask CivitAI by hash: unknown files, updates, workflow models

    @property
    def exposed(self) -> bool:
        """Listening beyond this machine: the access token is then always required."""
        return not is_loopback(self.host)

    @property
    def blocks_private_targets(self) -> bool:
        return self.guards(request_exposed=False)

    def guards(self, request_exposed: bool) -> bool:
        """Whether a download asked for in this request may not reach private addresses: `auto`
        decides per request, since a tunnel or proxy exposes an app that listens on loopback."""
        if self.block_private == "auto":
            return self.exposed or request_exposed
        return self.block_private == "on"

    @property
    def staging_dir(self) -> Path:
        return self.models_dir / STAGING_FOLDER

    @property
    def outside_downloads_dir(self) -> Path:
        """Where aria2 puts a download another RPC client added without a `dir`: in sight, and
        never among the staging folders the app installs from."""
        return self.models_dir / OUTSIDE_DOWNLOADS_FOLDER

    @property
    def database_path(self) -> Path:
        return self.state_dir / "jobs.sqlite3"


# flag name -> (environment variable, default, help)
_FLAGS: dict[str, tuple[str, str | None, str]] = {
    "host": ("ORCHESTRATOR_HOST", "127.0.0.1", "address to listen on"),
    "port": ("ORCHESTRATOR_PORT", "8000", "port to listen on"),
    "models-dir": (
        "ORCHESTRATOR_MODELS_DIR",
        None,
        "where model folders live (default ./models, or the models/ of --comfyui or --a1111)",
    ),
    "state-dir": ("ORCHESTRATOR_STATE_DIR", "state", "job database, aria2 session and secret"),
    "engine": (
        "ORCHESTRATOR_ENGINE",
        "auto",
        "auto | aria2 (a daemon run elsewhere, e.g. supervisord) | requests",
    ),
    "aria2-rpc-url": ("ARIA2_RPC_URL", "http://127.0.0.1:6800/jsonrpc", "aria2 JSON-RPC URL"),
    "aria2-secret": ("ARIA2_SECRET", None, "aria2 RPC secret (default: kept in the state dir)"),
    "layout": ("ORCHESTRATOR_LAYOUT", "default", "folder names: default | a1111 | comfyui"),
    "poll-interval": ("ORCHESTRATOR_POLL_INTERVAL", "1.0", "seconds between progress polls"),
    "max-active": ("ORCHESTRATOR_MAX_ACTIVE", "5", "downloads at once (fallback; own aria2c)"),
    "keep-partial": (
        "ORCHESTRATOR_KEEP_PARTIAL",
        "20",
        "GiB of partial data failed downloads keep for a retry, together (freed first when space runs low)",
    ),
    "resolve-deadline": (
        "ORCHESTRATOR_RESOLVE_DEADLINE",
        "120",
        "seconds a link's server may take to answer the look-ahead before the download fails",
    ),
    "stall-seconds": (
        "ORCHESTRATOR_STALL_SECONDS",
        "60",
        "a download that receives under 64 KiB in this many seconds is asked for again",
    ),
    "ipv6": (
        "ORCHESTRATOR_IPV6",
        "auto",
        "aria2's IPv6: auto (off when this machine has no IPv6 route) | on | off (for a broken IPv6)",
    ),
    "log-level": ("ORCHESTRATOR_LOG_LEVEL", "info", "debug | info | warning | error"),
    "token": ("ORCHESTRATOR_TOKEN", None, "access token for the page and API (default: generated at start)"),
    "private-allow": (
        "ORCHESTRATOR_PRIVATE_ALLOW",
        "",
        "hosts or addresses downloads may come from although --block-private refuses private ones "
        "(comma-separated, e.g. a NAS: nas.local,192.168.1.20)",
    ),
    "block-private": (
        "ORCHESTRATOR_BLOCK_PRIVATE",
        "auto",
        "refuse downloads from private/loopback addresses: auto (when exposed) | on | off",
    ),
    "comfyui": (
        "ORCHESTRATOR_COMFYUI",
        None,
        "a ComfyUI install: downloads go where it reads models (its models/ and extra_model_paths.yaml)",
    ),
    "comfyui-extra-paths": (
        "ORCHESTRATOR_COMFYUI_EXTRA_PATHS",
        None,
        "a ComfyUI extra_model_paths.yaml: its folders are read, its is_default one gets downloads",
    ),
    "a1111": ("ORCHESTRATOR_A1111", None, "an AUTOMATIC1111/Forge install: its models/ and embeddings/"),
    "subfolder-template": (
        "ORCHESTRATOR_SUBFOLDER_TEMPLATE",
        "",
        "a subfolder for downloads that name none, e.g. {base_model} or {repo_name}",
    ),
    "sidecars": (
        "ORCHESTRATOR_SIDECARS",
        "on",
        "write <name>.json, <name>.civitai.info and <name>.preview.<ext> beside models: on | off",
    ),
    "library-lookups": (
        "ORCHESTRATOR_LIBRARY_LOOKUPS",
        "on",
        "ask CivitAI by SHA-256 what files of unknown source are, whether newer versions exist, and where"
        " a workflow's models known only by hash are: on | off",
    ),
}


def add_settings_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """Add the named flags; each defaults to its environment variable."""
    for name in names:
        env, default, text = _FLAGS[name]
        parser.add_argument(f"--{name}", default=os.environ.get(env, default), help=f"{text} (env {env})")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Build Settings from parsed flags, checking each value so a typo fails at start."""
    values = vars(args)

    def optional(name: str) -> str | None:
        value = values.get(name.replace("-", "_"), _FLAGS[name][1])
        return None if value is None else str(value)

    def pick(name: str) -> str:
        value = optional(name)
        return value if value is not None else str(_FLAGS[name][1] or "")

    engine = pick("engine")
    layout = pick("layout")
    if engine not in ENGINES:
        raise SystemExit(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if pick("block-private") not in ("auto", "on", "off"):
        raise SystemExit("--block-private must be auto, on or off")
    if pick("ipv6") not in ("auto", "on", "off"):
        raise SystemExit("--ipv6 must be auto, on or off")
    if layout not in LAYOUTS:
        raise SystemExit(f"--layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    # read from the environment too when the command has no --sidecars flag
    sidecars = str(values.get("sidecars") or os.environ.get("ORCHESTRATOR_SIDECARS") or "on").lower()
    if sidecars not in SWITCHES:
        raise SystemExit(f"--sidecars must be on or off, not {sidecars!r}")
    lookups = str(values.get("library_lookups") or os.environ.get("ORCHESTRATOR_LIBRARY_LOOKUPS") or "on")
    if lookups.lower() not in SWITCHES:
        raise SystemExit(f"--library-lookups must be on or off, not {lookups!r}")
    try:
        port = int(pick("port"))
        poll = float(pick("poll-interval"))
        max_active = int(pick("max-active"))
        stall = float(pick("stall-seconds"))
        deadline = float(pick("resolve-deadline"))
        keep_partial = float(pick("keep-partial"))
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"bad number in settings: {exc}") from None
    comfyui, a1111 = _path(optional("comfyui")), _path(optional("a1111"))
    # an install's own models/ holds the staging folder too, so an install is one rename
    install = comfyui or a1111
    models_dir = optional("models-dir") or (str(install / "models") if install else "models")
    return Settings(
        host=pick("host"),
        port=port,
        models_dir=Path(models_dir).expanduser().absolute(),
        state_dir=Path(pick("state-dir")).expanduser().absolute(),
        engine=engine,
        aria2_rpc_url=pick("aria2-rpc-url"),
        aria2_secret=optional("aria2-secret") or None,
        layout=layout,
        poll_interval=max(0.1, poll),
        max_active=max(1, max_active),
        stall_seconds=max(1.0, stall),
        resolve_deadline=max(1.0, deadline),
        keep_partial_bytes=int(max(0.0, keep_partial) * 1024**3),
        ipv6=pick("ipv6"),
        log_level=pick("log-level"),
        access_token=optional("token") or None,
        block_private=pick("block-private"),
        private_allow=frozenset(
            host.strip().lower().strip("[]") for host in pick("private-allow").split(",") if host.strip()
        ),
        sidecars=SWITCHES[sidecars],
        comfyui=comfyui,
        comfyui_extra_paths=_path(optional("comfyui-extra-paths")),
        a1111=a1111,
        subfolder_template=pick("subfolder-template"),
        library_lookups=SWITCHES[lookups.lower()],
    )


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser().absolute() if value else None
