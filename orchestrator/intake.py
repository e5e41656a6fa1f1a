"""What a download request says, checked once for every door: REST, the WebSocket and the CLI.

Nothing here touches the network or the disk; a request that passes is one the
pipeline can start. Errors name the field that is wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from . import files, roots, sources
from .config import AUTO_TYPE, folder_for
from .errors import OrchestratorError
from .sources import Credentials

MAX_REQUEST_ID_BYTES = 1024


@dataclass(frozen=True)
class DownloadRequest:
    url: str
    model_type: str  # a name from MODEL_TYPES, or "auto"
    folder: str  # relative to the models folder; "" until the source names the type (auto)
    source: str
    name: str | None = None  # the filename asked for, sanitised
    subfolder: str = ""  # inside the type folder, checked
    sha256: str | None = None  # the expected SHA-256 a client knows (a workflow's hash), lower case
    overwrite: bool = False
    verify_existing: bool = False  # a file of that name and size in place is compared byte for byte
    credentials: Credentials = field(default_factory=Credentials, repr=False)
    request_id: Any = None  # the client's id, echoed in the job's events


def parse_download(body: Any, layout: str, request_id: Any = None) -> DownloadRequest:
    """The request, or the OrchestratorError that says what is wrong with it."""
    if not isinstance(body, dict):
        raise OrchestratorError("invalid_message", "A download needs an object with url and type.")
    request_id = check_request_id(request_id)
    url = sources.validate_url(body.get("url"))
    model_type = body.get("type")
    source = sources.identify(url)
    folder = requested_folder(model_type, source, layout)
    name = body.get("name") or None
    return DownloadRequest(
        url=url,
        model_type=str(model_type),  # requested_folder accepted it: a known type's name
        folder=folder,
        source=source,
        name=files.sanitize_filename(name) if name is not None else None,
        subfolder=roots.check_subfolder(body.get("subfolder") or ""),
        sha256=expected_sha256(body.get("sha256")),
        overwrite=flag(body.get("overwrite"), "overwrite"),
        verify_existing=flag(body.get("verify_existing"), "verify_existing"),
        credentials=Credentials(
            civitai=token(body.get("civitai_token")), huggingface=token(body.get("hf_token"))
        ),
        request_id=request_id,
    )


def requested_folder(model_type: Any, source: str, layout: str) -> str:
    """The folder a request names; with `auto` it stays empty until the link says the type (its
    service, or the file's own header)."""
    if model_type != AUTO_TYPE:
        return folder_for(model_type, layout)
    return ""


def expected_sha256(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value.strip()):
        raise OrchestratorError("invalid_message", "'sha256' must be 64 hexadecimal digits.")
    return value.strip().lower()


def flag(value: Any, name: str) -> bool:
    """A JSON boolean; anything else (e.g. the string "false") is refused, not guessed."""
    if value is None or isinstance(value, bool):
        return bool(value)
    raise OrchestratorError("invalid_message", f"{name!r} must be true or false.")


def check_request_id(value: Any) -> Any:
    """The client's id is echoed to every client, so it must be small, plain JSON."""
    try:
        size = len(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        size = None
    if size is None or size > MAX_REQUEST_ID_BYTES:
        raise OrchestratorError("invalid_message", "The message id must be plain JSON under 1 KiB.")
    return value


def token(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
