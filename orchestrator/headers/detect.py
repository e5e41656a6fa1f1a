"""Which format the first bytes of a file are in, and what the file is.

GGUF files start with the magic `GGUF` (ggml docs/gguf.md). Safetensors files have no magic:
they start with an 8-byte header length, and the header itself starts with "{"
(safetensors/src/tensor.rs, InvalidHeaderStart). Anything else, such as a pickled `.ckpt` (a
zip, "PK...") or a web page, is neither and gets `unknown_format`.
"""

from __future__ import annotations

from ..errors import OrchestratorError
from . import gguf, safetensors
from .classify import Finding, classify
from .header import Header, NeedMore, bad_header


def parse_header(data: bytes, file_size: int | None = None) -> Header | NeedMore:
    """The header of a safetensors or GGUF file from its first bytes (or what more to read)."""
    if data[: len(gguf.MAGIC)] == gguf.MAGIC:
        return gguf.parse(data, file_size)
    if len(data) < len(gguf.MAGIC) and gguf.MAGIC.startswith(data) and file_size != len(data):
        return NeedMore(safetensors.LENGTH_BYTES)  # enough for either format to speak
    try:
        return safetensors.parse(data, file_size)
    except OrchestratorError as exc:
        if exc.code == "not_safetensors":
            raise unknown_format() from None
        raise


def inspect_bytes(data: bytes, file_size: int | None = None) -> Finding | NeedMore:
    """What the file starting with `data` is; `file_size` when the whole file's size is known.

    Raises OrchestratorError for a damaged header (its code names the problem) and
    `unknown_format` for a file that is neither safetensors nor GGUF.
    """
    header = parse_header(data, file_size)
    if isinstance(header, NeedMore):
        return header
    return classify(header)


def unknown_format() -> OrchestratorError:
    return bad_header(
        "unknown_format",
        "This file is neither safetensors nor GGUF (a pickled .ckpt/.pt, a web page, or "
        "something else), so its header cannot say what it is.",
    )
