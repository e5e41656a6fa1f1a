"""Where each UI reads models: for every model type, the folders it lives in, the default first.

A type has one folder under the models folder by a layout (config.LAYOUTS), and that
stays the default. A ComfyUI or AUTOMATIC1111 install, and ComfyUI's
extra_model_paths.yaml, add folders: downloads go to a type's first folder, presence
checks and the library look in all of them.

ComfyUI's rules come from its own loader:
- utils/extra_config.py (`load_extra_path_config`): top-level sections; `base_path` and
  `is_default` are popped, `~` and environment variables expanded in base_path, a
  relative base_path is relative to the yaml's folder; every other key is a folder name
  whose value is one path or several (split on newlines, a YAML block string); a path is
  joined to base_path (an absolute one stands alone), or without base_path made
  absolute from the yaml's folder; every path is normalised.
- folder_paths.py: `map_legacy` (`unet` -> `diffusion_models`, `clip` -> `text_encoders`);
  `add_model_folder_path` appends, or inserts at the front when is_default (a path
  already listed is moved to the front instead), so the last default added comes first;
  the built-in lists (`diffusion_models` also reads models/unet, `text_encoders` also
  models/clip, `controlnet` also models/t2i_adapter).
- main.py (`apply_custom_paths`): extra_model_paths.yaml beside main.py is read first,
  then each --extra-model-paths-config file.

AUTOMATIC1111's folders come from modules/paths_internal.py (models_path = data/models),
modules/cmd_args.py (--embeddings-dir defaults to data/embeddings, outside models/;
--hypernetwork-dir models/hypernetworks; --esrgan/--realesrgan-models-path),
modules/sd_models.py (models/Stable-diffusion), modules/sd_vae.py (models/VAE),
extensions-builtin/Lora/preload.py (--lora-dir models/Lora, --lyco-dir-backcompat
models/LyCORIS), sd-webui-controlnet scripts/global_state.py (models/ControlNet, and its
own models/ folder), sd-webui-animatediff scripts/animatediff_settings.py (motion
modules in the extension's model/ folder unless a setting says otherwise), and Forge's
modules_forge/main_entry.py (models/text_encoder).

Start-up errors are OrchestratorErrors; a folder that is merely absent (a second disk not
mounted) is dropped with a warning instead, unless downloads would go there.
"""

from __future__ import annotations

import logging
import os
import string
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from . import files
from .config import LAYOUTS, MODEL_TYPES, STAGING_FOLDER, folder_for
from .errors import OrchestratorError
from .sidecars import is_sidecar

log = logging.getLogger(__name__)

EXTRA_PATHS_FILE = "extra_model_paths.yaml"
# ComfyUI's folder name for each of our types; the key every folder list is kept under.
COMFY_DIR_FOR_TYPE: dict[str, str] = dict(LAYOUTS["comfyui"])
TYPE_FOR_COMFY_DIR: dict[str, str] = {folder: kind for kind, folder in COMFY_DIR_FOR_TYPE.items()}
LEGACY_COMFY_DIRS = {"unet": "diffusion_models", "clip": "text_encoders"}  # folder_paths.map_legacy
# Folders ComfyUI itself also reads for a type (folder_paths.py), after the one we download to.
COMFY_BUILTIN_EXTRAS = {
    "diffusion_models": ("unet",),
    "text_encoders": ("clip",),
    "controlnet": ("t2i_adapter",),
}
# Folders ComfyUI knows that have no type here (a workflow reader can still ask where they are).
COMFY_OTHER_DIRS: tuple[str, ...] = ()  # every folder folder_paths.py knows has a type now (config.py)
# An AUTOMATIC1111 / Forge install: folders relative to the install that its readers also
# look in, after the layout's folder (see the module docstring for each one's source).
A1111_EXTRAS = {
    "lora": ("models/LyCORIS",),
    "upscaler": ("models/RealESRGAN", "models/SwinIR", "models/DAT"),
    "controlnet": ("extensions/sd-webui-controlnet/models",),
}
A1111_EMBEDDINGS = "embeddings"  # --embeddings-dir: data/embeddings, not data/models/embeddings
A1111_ANIMATEDIFF = "extensions/sd-webui-animatediff"  # its motion modules live in model/

# What a model file is named: ComfyUI's supported_pt_extensions (folder_paths.py), and GGUF
# and ONNX, which loaders of both UIs read too.
MODEL_EXTENSIONS = frozenset(
    {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft", ".gguf", ".onnx"}
)
SUBFOLDER_MAX_DEPTH = 4
# Placeholders a subfolder template may use; a source fills those it knows.
TEMPLATE_FIELDS = ("base_model", "model_name", "model_type", "source", "repo_owner", "repo_name")
_RESERVED_CHARACTERS = set('<>:"|?*')
_WINDOWS_DEVICES = {"con", "prn", "aux", "nul"} | {
    f"{kind}{n}" for kind in ("com", "lpt") for n in range(1, 10)
}


# -- the folders of each type ----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRoots:
    """Folders by ComfyUI folder name, default first; our types are looked up through their names."""

    by_comfy_dir: Mapping[str, tuple[Path, ...]]
    warnings: tuple[str, ...] = ()

    def folders(self, model_type: str) -> tuple[Path, ...]:
        """Every folder of a type, the download folder first; unknown types are refused."""
        folder_for(model_type, "default")  # the one place that names the error for a bad type
        return self.by_comfy_dir.get(COMFY_DIR_FOR_TYPE[model_type], ())

    def default(self, model_type: str) -> Path:
        """Where a download of that type goes."""
        return self.folders(model_type)[0]

    def folders_for_comfy_dir(self, name: str) -> tuple[Path, ...]:
        """The folders ComfyUI reads for one of its folder names (`loras`, `unet`, `models/vae`...)."""
        plain = name.replace("\\", "/").strip("/").removeprefix("models/")
        return self.by_comfy_dir.get(LEGACY_COMFY_DIRS.get(plain, plain), ())

    def typed_folders(self) -> Iterator[tuple[str, Path]]:
        """(type, folder) for every folder of every type, in MODEL_TYPES order."""
        for model_type in MODEL_TYPES:
            for folder in self.folders(model_type):
                yield model_type, folder


@dataclass
class _Entry:
    path: Path
    where: str  # for messages: "layout", or the yaml file and section it came from
    from_user_file: bool = False  # paths someone wrote in a yaml file are checked; built-in ones not


@dataclass
class _Collector:
    """Folder lists by ComfyUI folder name, with folder_paths.add_model_folder_path's ordering."""

    lists: dict[str, list[_Entry]] = field(default_factory=dict)

    def add(self, comfy_dir: str, entry: _Entry, is_default: bool = False) -> None:
        entries = self.lists.setdefault(LEGACY_COMFY_DIRS.get(comfy_dir, comfy_dir), [])
        same = [index for index, known in enumerate(entries) if known.path == entry.path]
        if same:
            if is_default:
                entries.insert(0, entries.pop(same[0]))
            return
        if is_default:
            entries.insert(0, entry)
        else:
            entries.append(entry)

    def add_type(self, model_type: str, entry: _Entry, is_default: bool = False) -> None:
        self.add(COMFY_DIR_FOR_TYPE[model_type], entry, is_default)


def build_roots(
    models_dir: Path,
    layout: str = "default",
    *,
    comfyui: Path | None = None,
    comfyui_extra_paths: Path | None = None,
    a1111: Path | None = None,
) -> ModelRoots:
    """The folders of every type, from the flags.

    Without an install the base is today's: `models_dir` with `layout`. With `--comfyui DIR`
    the base is DIR/models with the comfyui layout, then DIR/extra_model_paths.yaml if present;
    with `--a1111 DIR` (and no --comfyui) DIR/models with the a1111 layout. An A1111 install
    next to a ComfyUI one only adds folders. `--comfyui-extra-paths FILE` is read last, as
    ComfyUI reads --extra-model-paths-config after its own file.
    """
    collector = _Collector()
    if comfyui is not None:
        install = _install_dir(comfyui, "--comfyui", "ComfyUI")
        _add_comfyui_install(collector, install)
        if (install / EXTRA_PATHS_FILE).is_file():
            _add_extra_paths(collector, install / EXTRA_PATHS_FILE)
    elif a1111 is None:
        _add_layout(collector, models_dir, layout)
    if a1111 is not None:
        _add_a1111_install(collector, _install_dir(a1111, "--a1111", "AUTOMATIC1111"))
    if comfyui_extra_paths is not None:
        _add_extra_paths(collector, _absolute(comfyui_extra_paths))
    return _finish(collector)


def _add_layout(collector: _Collector, models_dir: Path, layout: str) -> None:
    """Today's folders: files.model_folder refuses any that would lead outside the models folder."""
    for model_type in MODEL_TYPES:
        folder = files.model_folder(models_dir, folder_for(model_type, layout))
        collector.add_type(model_type, _Entry(folder, "layout"))


def _add_comfyui_install(collector: _Collector, install: Path) -> None:
    models = install / "models"
    for model_type, folder in COMFY_DIR_FOR_TYPE.items():
        collector.add_type(model_type, _Entry(models / folder, "ComfyUI"))
        for extra in COMFY_BUILTIN_EXTRAS.get(folder, ()):
            collector.add(folder, _Entry(models / extra, "ComfyUI"))
    for folder in COMFY_OTHER_DIRS:
        collector.add(folder, _Entry(models / folder, "ComfyUI"))


def _add_a1111_install(collector: _Collector, install: Path) -> None:
    models = install / "models"
    animatediff = install / A1111_ANIMATEDIFF
    for model_type in MODEL_TYPES:
        folder = models / folder_for(model_type, "a1111")
        if model_type == "embedding":
            folder = install / A1111_EMBEDDINGS
        if model_type == "motion_module" and animatediff.is_dir():
            # the extension reads only its own folder unless its setting points elsewhere
            collector.add_type(model_type, _Entry(animatediff / "model", "AUTOMATIC1111"))
        collector.add_type(model_type, _Entry(folder, "AUTOMATIC1111"))
        for extra in A1111_EXTRAS.get(model_type, ()):
            collector.add_type(model_type, _Entry(install / extra, "AUTOMATIC1111"))


def _install_dir(path: Path, flag: str, name: str) -> Path:
    install = _absolute(path)
    if not install.is_dir():
        raise OrchestratorError(
            "install_missing", f"{flag} {install} is not a folder; give the folder {name} is installed in."
        )
    return install


def _absolute(path: Path | str) -> Path:
    return Path(os.path.normpath(os.path.abspath(os.path.expanduser(path))))


# -- extra_model_paths.yaml ------------------------------------------------------------------------


class ExtraPath(NamedTuple):
    """One folder a ComfyUI extra_model_paths.yaml adds."""

    comfy_dir: str  # as written; legacy names are mapped when the folder is added
    path: Path
    is_default: bool
    section: str


def read_extra_model_paths(yaml_path: Path) -> list[ExtraPath]:
    """The folders a ComfyUI extra_model_paths.yaml names, in ComfyUI's order; nothing is checked on disk.

    Stricter than ComfyUI where it would crash or misread: every section is a mapping, every
    folder value a string, is_default a boolean; a relative path may not climb out of its
    base with `..`. Lines are stripped of surrounding spaces (ComfyUI keeps them, naming a
    folder that does not exist).
    """
    yaml_path = _absolute(yaml_path)
    config = _load_yaml(yaml_path)
    yaml_dir = yaml_path.parent
    found: list[ExtraPath] = []
    for section, conf in config.items():
        if conf is None:  # an empty section, skipped as ComfyUI does
            continue
        label = f"{yaml_path.name}, section {str(section)!r}"
        if not isinstance(conf, dict):
            raise _invalid(yaml_path, f"section {str(section)!r} is not a mapping of folder names to paths")
        settings = dict(conf)
        base = _base_path(settings.pop("base_path", None), yaml_dir, yaml_path, label)
        is_default = settings.pop("is_default", False)
        if not isinstance(is_default, bool):
            raise _invalid(yaml_path, f"{label}: is_default must be true or false")
        for comfy_dir, value in settings.items():
            for path in _folder_paths(comfy_dir, value, base or yaml_dir, yaml_path, label):
                found.append(ExtraPath(str(comfy_dir), path, is_default, str(section)))
    return found


def _load_yaml(yaml_path: Path) -> dict[Any, Any]:
    if not yaml_path.is_file():
        raise OrchestratorError(
            "extra_paths_missing",
            f"{yaml_path} does not exist or is not a file; give ComfyUI's model paths file.",
        )
    try:
        config = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _invalid(yaml_path, f"it is not valid YAML ({type(exc).__name__})") from None
    if config is None:  # an empty file names no folders
        return {}
    if not isinstance(config, dict):
        raise _invalid(yaml_path, "it must be a mapping of sections (like `comfyui:` or `a1111:`)")
    return config


def _base_path(raw: Any, yaml_dir: Path, yaml_path: Path, label: str) -> Path | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise _invalid(yaml_path, f"{label}: base_path must be a path")
    expanded = os.path.expandvars(os.path.expanduser(raw.strip()))
    return Path(os.path.normpath(os.path.join(yaml_dir, expanded)))  # join keeps an absolute one


def _folder_paths(comfy_dir: Any, value: Any, base: Path, yaml_path: Path, label: str) -> list[Path]:
    if not isinstance(comfy_dir, str) or not comfy_dir.strip():
        raise _invalid(yaml_path, f"{label}: {comfy_dir!r} is not a folder name")
    if not isinstance(value, str):
        raise _invalid(yaml_path, f"{label}: {comfy_dir} must be a path, or several on separate lines")
    paths = []
    for line in value.split("\n"):
        text = line.strip()
        if not text:
            continue
        full = Path(os.path.normpath(os.path.join(base, text)))
        if not os.path.isabs(text) and base != full and base not in full.parents:
            raise OrchestratorError(
                "extra_paths_outside",
                f"{yaml_path}, {label}: {comfy_dir} path {line.strip()!r} climbs out of {base} with '..'. "
                "Write it as an absolute path, or move base_path up.",
            )
        paths.append(full)
    return paths


def _invalid(yaml_path: Path, why: str) -> OrchestratorError:
    return OrchestratorError("extra_paths_invalid", f"{yaml_path} cannot be used: {why}.")


def _add_extra_paths(collector: _Collector, yaml_path: Path) -> None:
    for extra in read_extra_model_paths(yaml_path):
        where = f"{yaml_path}, section {extra.section!r}"
        collector.add(extra.comfy_dir, _Entry(extra.path, where, from_user_file=True), extra.is_default)


def _finish(collector: _Collector) -> ModelRoots:
    """Check the folders users wrote: a download folder must exist and be writable, others may be absent."""
    warnings: list[str] = []
    by_comfy_dir: dict[str, tuple[Path, ...]] = {}
    for comfy_dir, entries in collector.lists.items():
        kept = []
        for index, entry in enumerate(entries):
            downloads_here = index == 0 and comfy_dir in TYPE_FOR_COMFY_DIR
            if entry.from_user_file and not _usable(entry, comfy_dir, downloads_here, warnings):
                continue
            kept.append(entry.path)
        if kept:
            by_comfy_dir[comfy_dir] = tuple(kept)
    for text in warnings:
        log.warning("%s", text)
    return ModelRoots(by_comfy_dir, tuple(warnings))


def _usable(entry: _Entry, comfy_dir: str, downloads_here: bool, warnings: list[str]) -> bool:
    if not entry.path.is_dir():
        what = "is not a folder" if entry.path.exists() else "does not exist"
        if downloads_here:
            raise OrchestratorError(
                "extra_paths_missing",
                f"{entry.where}: the {comfy_dir} folder {entry.path} {what}, and downloads of that type "
                "would go there (it comes first). Mount the disk or fix the path.",
            )
        warnings.append(f"{entry.where}: the {comfy_dir} folder {entry.path} {what}; it is left out.")
        return False
    if downloads_here and not os.access(entry.path, os.W_OK | os.X_OK):
        raise OrchestratorError(
            "extra_paths_unwritable",
            f"{entry.where}: downloads of {comfy_dir} would go to {entry.path}, which this user cannot "
            "write. Fix its permissions, or set is_default on a section you can write.",
        )
    return True


# -- subfolders a request may name -----------------------------------------------------------------


def check_subfolder(text: str) -> str:
    """A subfolder inside a type folder (`SDXL/styles`), normalised, or `invalid_subfolder`.

    Backslashes become slashes and one trailing slash is dropped; `..`, absolute paths,
    control and reserved characters, empty and hidden parts, more than
    SUBFOLDER_MAX_DEPTH levels and parts over files.MAX_NAME_BYTES are refused. The empty
    text means no subfolder.
    """
    if not isinstance(text, str):
        raise _bad_subfolder(str(text), "it is not text")
    value = unicodedata.normalize("NFC", text).replace("\\", "/")
    if not value:
        return ""
    if value.startswith("/"):
        raise _bad_subfolder(text, "it is an absolute path; give a folder inside the type's folder")
    parts = value.removesuffix("/").split("/")
    if len(parts) > SUBFOLDER_MAX_DEPTH:
        raise _bad_subfolder(text, f"it is more than {SUBFOLDER_MAX_DEPTH} folders deep")
    for part in parts:
        _check_part(part, text)
    return "/".join(parts)


def _check_part(part: str, text: str) -> None:
    if not part:
        raise _bad_subfolder(text, "it has an empty folder name (two slashes in a row)")
    if part in (".", ".."):
        raise _bad_subfolder(text, "'.' and '..' are not folder names")
    if any(unicodedata.category(char) == "Cc" or char in _RESERVED_CHARACTERS for char in part):
        raise _bad_subfolder(text, 'folder names cannot hold control characters or any of <>:"|?*')
    if part.startswith("."):
        raise _bad_subfolder(text, "folder names cannot start with a dot (hidden folders)")
    if part != part.strip() or part.endswith("."):
        raise _bad_subfolder(text, "folder names cannot start or end with a space, or end with a dot")
    if len(part.encode()) > files.MAX_NAME_BYTES:
        raise _bad_subfolder(text, f"a folder name is longer than {files.MAX_NAME_BYTES} bytes")
    if part.split(".")[0].lower() in _WINDOWS_DEVICES:
        raise _bad_subfolder(text, f"{part!r} is a reserved device name on Windows")


def _bad_subfolder(text: str, why: str) -> OrchestratorError:
    return OrchestratorError("invalid_subfolder", f"{text[:80]!r} is not a usable subfolder: {why}.")


def check_subfolder_template(template: str) -> str:
    """A subfolder setting like `{base_model}` or `loras/{repo_owner}`, checked once at start-up."""
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise _bad_template(template, str(exc)) from None
    for _, name, spec, conversion in pieces:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or spec or conversion:
            known = ", ".join("{" + field + "}" for field in TEMPLATE_FIELDS)
            raise _bad_template(template, f"{{{name}}} is not a placeholder; use {known}")
    # the fixed text must already make a good subfolder, whatever the placeholders become
    check_subfolder(template.format(**dict.fromkeys(TEMPLATE_FIELDS, "x")))
    return template


def subfolder_from_template(template: str, facts: Mapping[str, str | None]) -> str:
    """The template filled from a download's facts, then checked like any subfolder.

    Each fact becomes one folder name (slashes and reserved characters turn into `_`); a
    folder part whose facts are all unknown is left out, so `{base_model}/{repo_name}`
    on a CivitAI model is just the base model.
    """
    check_subfolder_template(template)
    filled = {name: _fact_text(facts.get(name)) for name in TEMPLATE_FIELDS}
    parts = []
    for piece in template.replace("\\", "/").split("/"):
        names = [name for _, name, _, _ in string.Formatter().parse(piece) if name]
        if names and not any(filled[name] for name in names):
            continue
        parts.append(piece.format(**filled))
    return check_subfolder("/".join(parts))


def repo_facts(repo_id: str) -> dict[str, str | None]:
    """`{repo_owner}` and `{repo_name}` of a Hugging Face repository id like `stabilityai/sdxl-vae`."""
    owner, _, name = repo_id.rpartition("/")
    return {"repo_owner": owner or None, "repo_name": name or None}


def _fact_text(value: str | None) -> str:
    if not value:
        return ""
    text = unicodedata.normalize("NFC", str(value))
    unsafe = _RESERVED_CHARACTERS | {"/", "\\"}
    text = "".join("_" if unicodedata.category(char) == "Cc" or char in unsafe else char for char in text)
    text = text.strip().lstrip(". ").rstrip(". ")
    return text.encode()[: files.MAX_NAME_BYTES].decode(errors="ignore").rstrip(". ")


def _bad_template(template: str, why: str) -> OrchestratorError:
    return OrchestratorError("invalid_subfolder_template", f"Subfolder setting {template[:80]!r}: {why}.")


# -- what is on disk -------------------------------------------------------------------------------


def find_present(roots: ModelRoots, model_type: str, relative_name: str) -> list[Path]:
    """Where a file of that relative name (`SDXL/x.safetensors`) exists, in every folder of the type.

    Only regular files count, and a symlink only when it stays inside the folder.
    """
    subfolder, _, name = relative_name.replace("\\", "/").rpartition("/")
    if files.sanitize_filename(name) != name:
        raise OrchestratorError("invalid_filename", f"{name[:80]!r} is not a usable file name.")
    relative = Path(check_subfolder(subfolder)) / name
    found = []
    for folder in roots.folders(model_type):
        candidate = folder / relative
        if candidate.is_file() and _inside(candidate, folder):
            found.append(candidate)
    return found


class ModelFile(NamedTuple):
    model_type: str
    root: Path
    relative: Path


def iter_models(roots: ModelRoots) -> Iterator[ModelFile]:
    """Every model file in every folder of every type: regular files with a model extension that
    are not hidden, not in .staging and not sidecars.

    A symlink is followed only while it stays inside its root. A folder that is itself another
    root, or listed again under a second type (A1111 keeps checkpoints and diffusion models
    together), is walked once, under the first type that lists it.
    """
    all_roots = {os.path.realpath(folder) for _, folder in roots.typed_folders()}
    walked: set[str] = set()
    for model_type, folder in roots.typed_folders():
        real = os.path.realpath(folder)
        if real in walked or not os.path.isdir(real):
            continue
        walked.add(real)
        for relative in _walk(real, real, all_roots - {real}, {real}):
            yield ModelFile(model_type, folder, relative)


def _walk(root: str, directory: str, other_roots: set[str], seen: set[str]) -> Iterator[Path]:
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(".") or entry.name == STAGING_FOLDER:
            continue
        # realpath only where it can differ from the name (a link) or is needed (a folder):
        # a library of thousands of files is listed on every GET /api/models
        if entry.is_symlink() and not _under(os.path.realpath(entry.path), root):
            continue
        if entry.is_dir():
            real = os.path.realpath(entry.path)
            if real not in seen and real not in other_roots:
                seen.add(real)
                for inner in _walk(root, entry.path, other_roots, seen):
                    yield Path(entry.name) / inner
        elif entry.is_file() and is_model_name(entry.name):
            yield Path(entry.name)


def is_model_name(name: str) -> bool:
    """A model file's name (not a sidecar, a config, a README)."""
    return os.path.splitext(name)[1].lower() in MODEL_EXTENSIONS and not is_sidecar(name)


def _inside(path: Path, folder: Path) -> bool:
    return _under(os.path.realpath(path), os.path.realpath(folder))


def _under(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)
