"""Text that ComfyUI embeds in the images it saves: PNG text chunks and WebP EXIF strings.

ComfyUI's SaveImage (nodes.py) writes each value with Pillow's PngInfo.add_text: a `tEXt`
chunk named `prompt` (API format) and one per extra_pnginfo key, `workflow` (UI format)
among them. Other tools write the same keys as `iTXt` or `zTXt` (PNG spec, section 11.3.4).
SaveAnimatedWEBP (comfy_extras/nodes_images.py) stores them as EXIF strings in the RIFF
`EXIF` chunk instead: tag 0x0110 holds `prompt:<json>`, tags 0x010F downwards hold
`workflow:<json>` and the other keys, with or without the `Exif\\0\\0` prefix that the
frontend's pnginfo.ts also accepts. This module only finds those texts; what they mean
is workflow.py's job.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ..errors import OrchestratorError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_EXIF_PREFIX = b"Exif\x00\x00"
_EXIF_TEXT_TYPES = (2, 7)  # ASCII, UNDEFINED


@dataclass(frozen=True)
class Embedded:
    """The texts found in an image, by key; `kind` names the image format for messages."""

    kind: str  # "PNG" | "WebP"
    texts: dict[str, str]


def read_embedded(data: bytes, max_text_bytes: int) -> Embedded | None:
    """The texts of a PNG or WebP image, or None when the bytes are neither.

    A damaged or cut-short image gives the texts read before the damage. A compressed
    text that would inflate past max_text_bytes is refused (workflow_too_large).
    """
    if data.startswith(PNG_SIGNATURE):
        return Embedded("PNG", _png_texts(data, max_text_bytes))
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return Embedded("WebP", _webp_texts(data))
    return None


def _png_texts(data: bytes, limit: int) -> dict[str, str]:
    texts: dict[str, str] = {}
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        start = offset + 8
        end = start + length
        if end > len(data) or kind == b"IEND":
            break
        if kind in _PNG_TEXT_CHUNKS:
            found = _png_text(kind, data[start:end], limit)
            if found is not None:
                texts.setdefault(*found)
        offset = end + 4  # the chunk's CRC
    return texts


def _png_text(kind: bytes, chunk: bytes, limit: int) -> tuple[str, str] | None:
    """(keyword, text) of one text chunk, or None when the chunk cannot be read."""
    keyword, found, rest = chunk.partition(b"\x00")
    if not found or not keyword:
        return None
    if kind == b"tEXt":
        raw: bytes | None = rest
    elif kind == b"zTXt":
        raw = _inflate(rest[1:], limit) if rest[:1] == b"\x00" else None
    else:  # iTXt: compression flag, method, language tag\0, translated keyword\0, UTF-8 text
        if len(rest) < 2:
            return None
        compressed, method = rest[0], rest[1]
        parts = rest[2:].split(b"\x00", 2)
        if len(parts) != 3:
            return None
        raw = parts[2] if not compressed else (_inflate(parts[2], limit) if method == 0 else None)
    if raw is None:
        return None
    return keyword.decode("latin-1"), _decode(raw)


def _inflate(compressed: bytes, limit: int) -> bytes | None:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(compressed, limit + 1)
    except zlib.error:
        return None
    if len(out) > limit:
        raise OrchestratorError(
            "workflow_too_large",
            f"The image holds a compressed text of more than {limit // (1024 * 1024)} MB; "
            "that is too large for a workflow.",
            413,
        )
    return out


def _decode(raw: bytes) -> str:
    # The PNG spec says Latin-1 for tEXt, but browsers and some tools write UTF-8 there
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _webp_texts(data: bytes) -> dict[str, str]:
    (riff_size,) = struct.unpack_from("<I", data, 4)
    end = min(len(data), 8 + riff_size)
    offset = 12
    while offset + 8 <= end:
        fourcc, size = struct.unpack_from("<4sI", data, offset)
        start = offset + 8
        stop = start + size
        if stop > end:
            break
        if fourcc == b"EXIF":
            return _exif_texts(data[start:stop])
        offset = stop + (size & 1)  # RIFF chunks are padded to an even length
    return {}


def _exif_texts(exif: bytes) -> dict[str, str]:
    """`key:value` strings of the first IFD, split at the first colon."""
    if exif.startswith(_EXIF_PREFIX):
        exif = exif[len(_EXIF_PREFIX) :]
    order = {b"II": "<", b"MM": ">"}.get(exif[:2])
    if order is None or len(exif) < 8:
        return {}
    magic, ifd = struct.unpack_from(order + "HI", exif, 2)
    if magic != 42 or ifd + 2 > len(exif):
        return {}
    (count,) = struct.unpack_from(order + "H", exif, ifd)
    texts: dict[str, str] = {}
    for index in range(count):
        entry = ifd + 2 + 12 * index
        if entry + 12 > len(exif):
            break
        _tag, kind, length, pointer = struct.unpack_from(order + "HHII", exif, entry)
        if kind not in _EXIF_TEXT_TYPES:
            continue
        # values of up to four bytes sit in the entry itself (TIFF 6.0, section 2)
        raw = exif[entry + 8 : entry + 8 + length] if length <= 4 else exif[pointer : pointer + length]
        if len(raw) < length:
            continue
        key, colon, value = _decode(raw.rstrip(b"\x00")).partition(":")
        if colon and key:
            texts.setdefault(key, value)
    return texts
