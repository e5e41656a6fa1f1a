"""Read a safetensors header from the first bytes of a file, checked the way the format says.

The layout (huggingface/safetensors README, "Format"): 8 bytes N, a little-endian u64, then N
bytes of UTF-8 JSON, then the tensor data. The JSON is an object mapping each tensor name to
{dtype, shape, data_offsets: [begin, end]}, offsets relative to the first data byte, plus an
optional "__metadata__" object of strings (docs/safetensors.schema.json).

The checks follow the reference reader, `SafeTensors::read_metadata` and `Metadata::validate`
in safetensors/src/tensor.rs: a header over 100 MB is refused before anything is read
(MAX_HEADER_SIZE, "HeaderTooLarge"); the header must be UTF-8 JSON and start with "{"
(InvalidHeaderStart); duplicate keys are disallowed (README, "Notes"); sorted by offset, the
tensors must tile the data exactly, each one `prod(shape) * dtype size` bytes (InvalidOffset,
TensorInvalidInfo); and the last offset must be the end of the file (MetadataIncompleteBuffer).

The bytes given may be only the start of the file. When they end before the header does, the
answer is `NeedMore(n)`; when the file's full size is known, the offsets are checked against it.
"""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any

from .header import Header, NeedMore, Tensor, bad_header, truncated

# safetensors/src/tensor.rs MAX_HEADER_SIZE: larger headers are refused unread.
MAX_HEADER_SIZE = 100_000_000
LENGTH_BYTES = 8
# The schema's size_t: "a natural integer no more than 48 bits".
_MAX_SIZE = 2**48 - 1
# Bits per element, from the Dtype enum of the reference (tensor.rs) and its newer sub-byte types.
_DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}
# A dtype this reader does not know yet is accepted if it looks like one (its size is not checked).
_DTYPE_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,15}$")


def parse(data: bytes, file_size: int | None = None) -> Header | NeedMore:
    """The header at the start of `data`; `file_size` when `data` is a prefix of a known-size file."""
    if len(data) < LENGTH_BYTES:
        if file_size is not None and file_size < LENGTH_BYTES:
            raise _not_safetensors("it is shorter than the 8-byte length every safetensors file starts with")
        return NeedMore(LENGTH_BYTES)
    (length,) = struct.unpack_from("<Q", data)
    if len(data) > LENGTH_BYTES and data[LENGTH_BYTES] != ord("{"):
        raise _not_safetensors("its header does not start with '{'")
    too_long = file_size is not None and file_size > LENGTH_BYTES and LENGTH_BYTES + length > file_size
    if len(data) == LENGTH_BYTES and (length > MAX_HEADER_SIZE or too_long):
        return NeedMore(LENGTH_BYTES + 1)  # one more byte tells "not safetensors" from a damaged header
    if length > MAX_HEADER_SIZE:
        raise bad_header(
            "header_too_large",
            f"The file says its safetensors header is {length} bytes; more than "
            f"{MAX_HEADER_SIZE} is refused (the format's own limit). The file is damaged or not safetensors.",
        )
    if length < 2:  # "{}" is the smallest header there is
        raise _not_safetensors(f"its header length ({length}) is too small for any header")
    end = LENGTH_BYTES + length
    if file_size is not None and end > file_size:
        raise truncated("safetensors", end, file_size)
    if len(data) < end:
        return NeedMore(end)
    tensors, metadata = _read_json(data[LENGTH_BYTES:end])
    _check_offsets(tensors, end, file_size)
    return Header(
        format="safetensors",
        tensors={name: Tensor(dtype, shape) for name, (dtype, shape, _) in tensors.items()},
        metadata=metadata,
        size=end,
    )


_Entry = tuple[str, tuple[int, ...], tuple[int, int]]


def _read_json(raw: bytes) -> tuple[dict[str, _Entry], dict[str, str]]:
    try:
        text = raw.decode("utf-8")
        document = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _invalid(f"it is not valid UTF-8 JSON ({_short(exc)})") from None
    if not isinstance(document, dict):
        raise _invalid("it is not a JSON object")
    metadata = _metadata(document.pop("__metadata__", {}))
    tensors = {name: _entry(name, value) for name, value in document.items()}
    return tensors, metadata


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key[:80]!r}")
        seen[key] = value
    return seen


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _invalid('its "__metadata__" is not an object of strings')
    return value


def _entry(name: str, value: Any) -> _Entry:
    if not isinstance(value, dict):
        raise _invalid(f"tensor {name[:80]!r} is not described by an object")
    dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
    if not isinstance(dtype, str) or not _DTYPE_NAME.match(dtype):
        raise _invalid(f"tensor {name[:80]!r} has no valid dtype")
    if not isinstance(shape, list) or not all(_is_size(n) for n in shape):
        raise _invalid(f"tensor {name[:80]!r} has no valid shape")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_size(n) for n in offsets):
        raise _invalid(f"tensor {name[:80]!r} has no valid data_offsets")
    return dtype, tuple(shape), (offsets[0], offsets[1])


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_SIZE


def _check_offsets(tensors: dict[str, _Entry], data_start: int, file_size: int | None) -> None:
    """The tensors, sorted by offset, must tile the data from 0 to its end without gaps or overlaps."""
    position = 0
    for name, (dtype, shape, (begin, end)) in sorted(tensors.items(), key=lambda item: item[1][2]):
        if begin != position or end < begin:
            raise _bad_offsets(f"tensor {name[:80]!r} does not start where the previous one ends")
        bits = _DTYPE_BITS.get(dtype)
        if bits is not None and math.prod(shape) * bits != (end - begin) * 8:
            raise _bad_offsets(f"tensor {name[:80]!r} takes {end - begin} bytes, not what its shape says")
        position = end
    if file_size is not None and data_start + position != file_size:
        difference = data_start + position - file_size
        if difference > 0:
            raise _bad_offsets(
                f"the file is {difference} bytes shorter than its header says: it is cut short"
            )
        raise _bad_offsets(f"{-difference} bytes at the end of the file belong to no tensor")


def _not_safetensors(why: str) -> Exception:
    return bad_header("not_safetensors", f"This is not a safetensors file: {why}.")


def _invalid(why: str) -> Exception:
    return bad_header("header_invalid", f"The safetensors header is damaged: {why}.")


def _bad_offsets(why: str) -> Exception:
    return bad_header("header_offsets_invalid", f"The safetensors header does not fit the file: {why}.")


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:120]
