"""Reads a ComfyUI workflow and lists every model file it names, with the folder it belongs in.

Input: the UI-format JSON ComfyUI saves, the API ("prompt") format, or a PNG/WebP that
ComfyUI saved with them embedded (see embedded.py). Where the rules come from:

- The UI format is ComfyUI_frontend's zod schema (platform/workflow/validation/schemas/
  workflowSchema.ts): `nodes[]` with `type`, `mode`, `widgets_values` (a list, or a record
  by widget name) and `properties.models[]` entries `{name, url, hash?, hash_type?,
  directory}`; a top-level `models[]`; subgraphs under `definitions.subgraphs[]`, which may
  hold `definitions` of their own. A node whose `type` is a definition's id is an instance
  of that subgraph. The API format is `{"<id>": {"class_type", "inputs"}}`.
- Like the frontend's missing-model scan (platform/missingModel/missingModelScan.ts and
  workbench/utils/modelMetadataUtil.ts), a node's `properties.models` entry counts only
  when one of the node's widget values selects it (a node with no text widget values keeps
  them all), and a muted (mode 2) or bypassed (mode 4) node needs nothing; such models are
  still listed, with `active` false, and their links still fill other entries.
- Model folders and their legacy names are ComfyUI's folder_paths.py
  (`folder_names_and_paths`, `map_legacy`: `unet` -> `diffusion_models`, `clip` ->
  `text_encoders`).

A model is one entry per (folder, name), wherever it is named. A bad folder or file name
anywhere (a path that climbs out, an absolute path, control characters, a folder ComfyUI
does not have) fails the whole read: such a workflow is not to be trusted with a disk.
A bad link is only dropped: the model is listed without it, with a hint saying why.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..config import LAYOUTS, MORE_MODEL_TYPES
from ..errors import OrchestratorError
from ..sources import validate_url
from ..sources.huggingface import HOSTS as HUGGING_FACE_HOSTS
from .embedded import Embedded, read_embedded

MAX_WORKFLOW_BYTES = 50 * 1024 * 1024
MAX_NAME_LENGTH = 1024

# ComfyUI model folder -> this project's model type: the comfyui layout, and the other model
# folders of folder_paths.py that config.py names as types. `custom_nodes` is a folder of
# code, not of models, so it is not here.
FOLDER_TYPES: dict[str, str] = {
    **{folder: model_type for model_type, (_, folder) in MORE_MODEL_TYPES.items()},
    **{folder: model_type for model_type, folder in LAYOUTS["comfyui"].items()},
}
LEGACY_FOLDERS = {"unet": "diffusion_models", "clip": "text_encoders"}

# Loader nodes and the inputs that name model files, from ComfyUI's nodes.py and
# comfy_extras/ (each input declared with folder_paths.get_filename_list(<folder>)).
# Each tuple lists the node's widget inputs in definition order up to its last file name,
# so a position in widgets_values maps to an input: LiteGraph's LGraphNode.serialize stores
# widgets_values[i] for the node's i-th widget, and the frontend makes one widget per
# widget input (required, then optional; sockets such as MODEL or CLIP have none; an input
# with control_after_generate adds one more value after it, which none of these has before
# a file name). None marks a widget that is not a model to fetch.
LOADERS: dict[str, tuple[tuple[str, str | None], ...]] = {
    # nodes.py
    "CheckpointLoaderSimple": (("ckpt_name", "checkpoints"),),
    "CheckpointLoader": (("config_name", None), ("ckpt_name", "checkpoints")),  # configs ship with ComfyUI
    "unCLIPCheckpointLoader": (("ckpt_name", "checkpoints"),),
    "LoraLoader": (("lora_name", "loras"),),
    "LoraLoaderModelOnly": (("lora_name", "loras"),),
    "VAELoader": (("vae_name", "vae"),),
    "UNETLoader": (("unet_name", "diffusion_models"),),
    "CLIPLoader": (("clip_name", "text_encoders"),),
    "DualCLIPLoader": (("clip_name1", "text_encoders"), ("clip_name2", "text_encoders")),
    "CLIPVisionLoader": (("clip_name", "clip_vision"),),
    "ControlNetLoader": (("control_net_name", "controlnet"),),
    "DiffControlNetLoader": (("control_net_name", "controlnet"),),
    "StyleModelLoader": (("style_model_name", "style_models"),),
    "GLIGENLoader": (("gligen_name", "gligen"),),
    # comfy_extras/
    "ImageOnlyCheckpointLoader": (("ckpt_name", "checkpoints"),),  # nodes_video_model.py
    "UpscaleModelLoader": (("model_name", "upscale_models"),),  # nodes_upscale_model.py
    "HypernetworkLoader": (("hypernetwork_name", "hypernetworks"),),  # nodes_hypernetwork.py
    "PhotoMakerLoader": (("photomaker_model_name", "photomaker"),),  # nodes_photomaker.py
    "TripleCLIPLoader": tuple((f"clip_name{i}", "text_encoders") for i in (1, 2, 3)),  # nodes_sd3.py
    "QuadrupleCLIPLoader": tuple((f"clip_name{i}", "text_encoders") for i in (1, 2, 3, 4)),  # nodes_hidream
    "ModelPatchLoader": (("name", "model_patches"),),  # nodes_model_patch.py
    "AudioEncoderLoader": (("audio_encoder_name", "audio_encoders"),),  # nodes_audio_encoder.py
    "LatentUpscaleModelLoader": (("model_name", "latent_upscale_models"),),  # nodes_hunyuan.py
    "LTXVAudioVAELoader": (("ckpt_name", "checkpoints"),),  # nodes_lt_audio.py
    "FrameInterpolationModelLoader": (("model_name", "frame_interpolation"),),  # nodes_frame_interpolation
}
# A loader's choice is a model file only with one of these endings (folder_paths.py's
# supported_pt_extensions, plus .gguf and .onnx as the frontend's scan allows); the rest,
# such as VAELoader's "taesd" or "pixel_space", are built in.
MODEL_EXTENSIONS = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft", ".gguf", ".onnx")
_INACTIVE_MODES = (2, 4)  # LGraphEventMode.NEVER (muted), BYPASS
_HEX = re.compile(r"[0-9a-fA-F]+")
_DRIVE = re.compile(r"[A-Za-z]:")


@dataclass(frozen=True)
class Place:
    """Where a workflow names a model: a node (maybe inside a subgraph), or its models list."""

    node_id: str | None  # None: the workflow's top-level models list
    node_type: str | None
    input: str | None = None  # the loader input holding the file name, e.g. "ckpt_name"
    subgraph: str | None = None  # the subgraph's name when the node is inside one

    def describe(self) -> str:
        if self.node_id is None:
            return "the workflow's models list"
        where = f"node {_shown(self.node_id)} ({_shown(self.node_type)})"
        return f"{where} in subgraph {_shown(self.subgraph)!r}" if self.subgraph else where


@dataclass(frozen=True)
class Hint:
    """How a model with no link might be found: CivitAI by its SHA-256, or a search by name."""

    kind: str  # "civitai_hash" | "search"
    query: str  # the SHA-256, or the file name without folder and extension
    text: str


@dataclass(frozen=True)
class ModelRef:
    """One model file the workflow needs."""

    name: str  # as the workflow writes it, with "/" between subfolders
    directory: str  # the ComfyUI folder: checkpoints, loras, text_encoders...
    model_type: str  # this project's type for that folder
    url: str | None
    sha256: str | None
    hint: Hint | None  # only when url is None
    places: tuple[Place, ...]
    active: bool  # false when only muted or bypassed nodes (or unused subgraphs) name it

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "directory": self.directory,
            "model_type": self.model_type,
            "url": self.url,
            "sha256": self.sha256,
            "hint": None if self.hint is None else asdict(self.hint),
            "active": self.active,
            "places": [asdict(place) for place in self.places],
        }


@dataclass(frozen=True)
class Workflow:
    format: str  # "ui" | "api"
    models: tuple[ModelRef, ...]

    def public(self) -> dict[str, Any]:
        return {"format": self.format, "models": [model.public() for model in self.models]}


def read_workflow(data: bytes, filename: str | None = None) -> Workflow:
    """Every model a workflow (JSON, or a PNG/WebP ComfyUI saved) names, or an OrchestratorError."""
    label = _label(filename)
    if len(data) > MAX_WORKFLOW_BYTES:
        raise OrchestratorError(
            "workflow_too_large",
            f"{label} is larger than {MAX_WORKFLOW_BYTES // (1024 * 1024)} MB; no workflow is that big.",
            413,
        )
    image = read_embedded(data, MAX_WORKFLOW_BYTES)
    if image is not None:
        return _from_image(image, label)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _not_a_workflow(label) from None
    return _from_document(_parse(text, label), label)


def _label(filename: str | None) -> str:
    shown = _shown((filename or "").replace("\\", "/").rsplit("/", 1)[-1])
    return repr(shown) if shown else "The file"


def _shown(text: object) -> str:
    """A workflow's own text as a message may quote it: no control characters, not too long."""
    return "".join(ch for ch in str(text) if unicodedata.category(ch) != "Cc")[:80]


def _not_a_workflow(label: str) -> OrchestratorError:
    return OrchestratorError(
        "workflow_invalid",
        f"{label} is not a ComfyUI workflow. Use the .json file ComfyUI saves (Workflow > Save or "
        "Export, or Export (API)), or a PNG or WebP image ComfyUI made.",
    )


def _parse(text: str, label: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise OrchestratorError(
            "workflow_invalid", f"{label} is nested too deeply to be a ComfyUI workflow."
        ) from None
    except ValueError:
        raise _not_a_workflow(label) from None


def _from_image(image: Embedded, label: str) -> Workflow:
    """The UI workflow when the image has a usable one, else its API prompt."""
    keys = [key for key in ("workflow", "prompt") if key in image.texts]
    if not keys:
        raise OrchestratorError(
            "workflow_not_found",
            f"{label} is a {image.kind} image without a ComfyUI workflow in it. Only images that "
            "ComfyUI saved (with metadata on) carry one.",
        )
    for key in keys:
        try:
            return _from_document(_parse(image.texts[key], label), label)
        except OrchestratorError as error:
            if error.code != "workflow_invalid":
                raise  # a workflow naming unsafe paths is not read through its prompt either
    raise OrchestratorError(
        "workflow_invalid",
        f"{label} carries a ComfyUI {' and a '.join(keys)} text, but none is a readable workflow; "
        "the image may have been edited. Use the workflow's .json file instead.",
    )


def _from_document(document: Any, label: str) -> Workflow:
    if isinstance(document, dict) and isinstance(document.get("nodes"), list):
        return Workflow("ui", _UiReader(document).read())
    api = _api_nodes(document)
    if api is not None:
        return Workflow("api", _read_api(api))
    raise _not_a_workflow(label)


# --- one model file as the workflow describes it -------------------------------------------------


@dataclass
class _Found:
    """What one place says about a model file; merged with the others into a ModelRef."""

    name: str
    directory: str | None  # None: an entry without a folder, which can only lend its link
    url: str | None = None
    sha256: str | None = None
    refused: str | None = None  # why the entry's link was dropped


@dataclass
class _Entry:
    """One model of the result while it is being gathered."""

    name: str
    directory: str
    url: str | None = None
    sha256: str | None = None
    refused: str | None = None
    places: list[Place] = field(default_factory=list)
    active: bool = False


class _Models:
    """Models keyed by (folder, name) in the order first met; later mentions add places and links."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], _Entry] = {}
        self.lenders: list[_Found] = []

    def add(self, found: _Found, place: Place, active: bool) -> None:
        if found.directory is None:
            self.lend(found)
            return
        entry = self.entries.setdefault((found.directory, found.name), _Entry(found.name, found.directory))
        _lend(found, entry)
        entry.active = entry.active or active
        # a loader that also lists the file in its properties.models is one place: its input
        node = (place.node_id, place.subgraph)
        same_node = [seen for seen in entry.places if (seen.node_id, seen.subgraph) == node]
        if place.input is None and any(seen.input is not None for seen in same_node):
            return
        if place.input is not None:
            entry.places[:] = [
                seen for seen in entry.places if seen.input is not None or seen not in same_node
            ]
        if place not in entry.places:
            entry.places.append(place)

    def lend(self, found: _Found) -> None:
        """A link from a place that does not itself make the model needed."""
        self.lenders.append(found)

    def result(self) -> tuple[ModelRef, ...]:
        for lender in self.lenders:
            for (directory, name), entry in self.entries.items():
                if name == lender.name and lender.directory in (None, directory):
                    _lend(lender, entry)
        return tuple(_model_ref(entry) for entry in self.entries.values())


def _lend(source: _Found, target: _Entry) -> None:
    if target.url is None and source.url is not None:
        target.url = source.url
    target.sha256 = target.sha256 or source.sha256
    target.refused = target.refused or source.refused


def _model_ref(entry: _Entry) -> ModelRef:
    return ModelRef(
        name=entry.name,
        directory=entry.directory,
        model_type=FOLDER_TYPES[entry.directory],
        url=entry.url,
        sha256=entry.sha256,
        hint=None if entry.url else _hint(entry),
        places=tuple(entry.places),
        active=entry.active,
    )


def _hint(entry: _Entry) -> Hint:
    if entry.refused:
        why = f"The workflow's link for it was dropped: {entry.refused} "
    else:
        why = "The workflow has no link for it. "
    if entry.sha256:
        return Hint(
            "civitai_hash", entry.sha256, why + "CivitAI can be asked for the file with this SHA-256."
        )
    stem = entry.name.rsplit("/", 1)[-1]
    if stem.lower().endswith(MODEL_EXTENSIONS):
        stem = stem.rsplit(".", 1)[0]
    return Hint("search", stem, why + f"Search Hugging Face or CivitAI for {stem!r} and paste its link.")


def _model_file(item: Any, place: Place) -> _Found:
    """A `{name, url, directory, hash?, hash_type?}` entry, checked."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
        raise OrchestratorError(
            "workflow_invalid",
            f"A model entry of {place.describe()} has no file name; the workflow is damaged.",
        )
    name = _checked_name(item["name"], place)
    raw_directory = item.get("directory")
    blank = raw_directory is None or (isinstance(raw_directory, str) and not raw_directory.strip())
    directory = None if blank else _checked_directory(raw_directory, name, place)
    url, refused = _clean_url(item.get("url"))
    return _Found(name, directory, url, _sha256(item.get("hash"), item.get("hash_type")), refused)


def _checked_name(raw: str, place: Place) -> str:
    """The name with "/" between folders, or workflow_bad_name for one that could leave its folder."""
    name = raw.replace("\\", "/")
    parts = name.split("/")
    bad = (
        len(name) > MAX_NAME_LENGTH
        or name.startswith("/")
        or _DRIVE.match(name) is not None
        or ".." in parts
        or any(unicodedata.category(ch) == "Cc" for ch in name)
    )
    if bad:
        raise OrchestratorError(
            "workflow_bad_name",
            f"The model file {raw[:80]!r} named by {place.describe()} is not a plain file name (it "
            "climbs out of its folder, is an absolute path or holds control characters). The "
            "workflow was not read, to be safe; fix that name in ComfyUI and save it again.",
        )
    return name


def _checked_directory(raw: Any, name: str, place: Place) -> str:
    """A ComfyUI model folder name: `models/checkpoints` -> `checkpoints`, `unet` -> `diffusion_models`."""
    text = raw.replace("\\", "/").strip().rstrip("/") if isinstance(raw, str) else ""
    parts = text.split("/")
    if len(parts) == 2 and parts[0].lower() == "models":
        parts = parts[1:]
    folder = parts[0].lower() if len(parts) == 1 else ""
    folder = LEGACY_FOLDERS.get(folder, folder)
    if folder not in FOLDER_TYPES:
        raise OrchestratorError(
            "workflow_bad_directory",
            f"The folder {str(raw)[:80]!r} that {place.describe()} gives for {name[:80]!r} is not a "
            "ComfyUI model folder (checkpoints, loras, vae, text_encoders, diffusion_models...). The "
            "workflow was not read, to be safe; fix that entry and save it again.",
        )
    return folder


def _clean_url(raw: Any) -> tuple[str | None, str | None]:
    """(the link as a download link, None) or (None, why it was dropped)."""
    if not isinstance(raw, str) or not raw.strip():
        return None, None
    url = raw.strip()
    try:
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            return None, "it is not an http(s) link."
        return validate_url(_download_link(url)), None
    except ValueError:
        return None, "it is not a valid web link."
    except OrchestratorError as error:
        return None, error.message


def _download_link(url: str) -> str:
    """Hugging Face `/blob/` pages become `/resolve/` links; `download=true` goes."""
    parts = urlsplit(url)
    path = parts.path
    if (parts.hostname or "").lower() in HUGGING_FACE_HOSTS:
        segments = path.split("/")
        start = 2 if len(segments) > 1 and segments[1] in ("datasets", "spaces") else 1
        # owner/name/blob/..., else an old single-name repo: name/blob/...
        for marker in (start + 2, start + 1):
            if len(segments) > marker + 1 and segments[marker] == "blob":
                segments[marker] = "resolve"
                break
        path = "/".join(segments)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(key, value) for key, value in pairs if key.lower() != "download"]
    query = urlencode(kept) if len(kept) < len(pairs) else parts.query  # untouched unless changed
    return urlunsplit((parts.scheme, parts.netloc, path, query, parts.fragment))


def _sha256(raw_hash: Any, raw_type: Any) -> str | None:
    if not isinstance(raw_hash, str) or not isinstance(raw_type, str):
        return None
    if raw_type.upper().replace("-", "").replace("_", "") != "SHA256":
        return None
    value = raw_hash.strip()
    return value.lower() if len(value) == 64 and _HEX.fullmatch(value) else None


def _loader_value(raw: Any, place: Place, directory: str) -> _Found | None:
    """A loader's chosen file, or None when the choice is empty or built in."""
    if not isinstance(raw, str) or not raw.strip() or raw == "None":
        return None
    name = _checked_name(raw, place)
    return _Found(name, directory) if name.lower().endswith(MODEL_EXTENSIONS) else None


# --- the UI format -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Graph:
    nodes: list[dict[str, Any]]
    subgraph: str | None  # the subgraph's name; None for the workflow itself
    definition_id: str | None


class _UiReader:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.models = _Models()

    def read(self) -> tuple[ModelRef, ...]:
        graphs = [
            _Graph(_dicts(self.document["nodes"], "its node list"), None, None),
            *_definitions(self.document),
        ]
        active = _active_graphs(graphs)
        for graph in graphs:
            for node in graph.nodes:
                self._read_node(node, graph, graph.definition_id in active and _runs(node))
        for item in _dicts(self.document.get("models"), "its models list"):
            self.models.add(_model_file(item, Place(None, None)), Place(None, None), True)
        return self.models.result()

    def _read_node(self, node: dict[str, Any], graph: _Graph, active: bool) -> None:
        node_type = node.get("type")
        node_type = node_type if isinstance(node_type, str) else ""
        place = Place(str(node.get("id")), node_type, None, graph.subgraph)
        values = node.get("widgets_values")
        for position, (input_name, folder) in enumerate(LOADERS.get(node_type, ())):
            raw = values.get(input_name) if isinstance(values, dict) else _at(values, position)
            at_input = Place(place.node_id, node_type, input_name, graph.subgraph)
            found = _loader_value(raw, at_input, folder) if folder else None
            if found is not None:
                self.models.add(found, at_input, active)
        properties = node.get("properties")
        embedded = properties.get("models") if isinstance(properties, dict) else None
        chosen = _chosen_names(values)
        for item in _dicts(embedded, f"the models of node {_shown(place.node_id)}"):
            found = _model_file(item, place)
            if chosen and found.name not in chosen:
                self.models.lend(found)  # a choice the node no longer makes
            else:
                self.models.add(found, place, active)


def _at(values: Any, position: int) -> Any:
    return values[position] if isinstance(values, list) and position < len(values) else None


def _chosen_names(values: Any) -> set[str]:
    """The text widget values of a node, which select among its properties.models."""
    if isinstance(values, dict):
        values = list(values.values())
    if not isinstance(values, list):
        return set()
    return {value.replace("\\", "/") for value in values if isinstance(value, str) and value.strip()}


def _runs(node: dict[str, Any]) -> bool:
    return node.get("mode") not in _INACTIVE_MODES


def _dicts(value: Any, what: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise OrchestratorError(
            "workflow_invalid", f"The workflow is damaged: {what} is not a list of entries."
        )
    return value


def _definitions(document: dict[str, Any]) -> list[_Graph]:
    """Every subgraph definition, nested ones included, each once (the first with its id wins)."""
    graphs: list[_Graph] = []
    seen: set[str] = set()
    pending = [document]
    while pending:
        holder = pending.pop(0)
        definitions = holder.get("definitions")
        subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
        for definition in _dicts(subgraphs, "its list of subgraphs"):
            graph_id = definition.get("id")
            if not isinstance(graph_id, str) or graph_id in seen:
                continue
            seen.add(graph_id)
            name = definition.get("name")
            label = name if isinstance(name, str) and name else graph_id
            graphs.append(
                _Graph(
                    _dicts(definition.get("nodes"), f"the node list of subgraph {label!r}"), label, graph_id
                )
            )
            pending.append(definition)
    return graphs


def _active_graphs(graphs: list[_Graph]) -> set[str | None]:
    """The graphs that run: the workflow itself, and each subgraph a running node instantiates."""
    active: set[str | None] = {None}
    by_id = {graph.definition_id: graph for graph in graphs}
    pending: list[_Graph] = [graphs[0]]
    while pending:
        graph = pending.pop()
        for node in graph.nodes:
            inner = node.get("type")
            if isinstance(inner, str) and inner in by_id and inner not in active and _runs(node):
                active.add(inner)
                pending.append(by_id[inner])
    return active


# --- the API format ------------------------------------------------------------------------------


def _api_nodes(document: Any) -> dict[str, dict[str, Any]] | None:
    """The nodes of an API-format prompt (also as sent to /prompt, under "prompt"), or None."""
    wrapped = document.get("prompt") if isinstance(document, dict) else None
    if isinstance(wrapped, dict) and "class_type" not in wrapped:
        document = wrapped
    if not isinstance(document, dict) or not document:
        return None
    if all(isinstance(node, dict) and isinstance(node.get("class_type"), str) for node in document.values()):
        return document
    return None


def _read_api(nodes: dict[str, dict[str, Any]]) -> tuple[ModelRef, ...]:
    models = _Models()
    for node_id, node in nodes.items():
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            continue
        for input_name, folder in LOADERS.get(node["class_type"], ()):
            place = Place(str(node_id), node["class_type"], input_name)
            found = _loader_value(inputs.get(input_name), place, folder) if folder else None
            if found is not None:
                models.add(found, place, True)
    return models.result()
