"""Read a GGUF header from the first bytes of a file, without trusting any count in it.

The layout is ggml's docs/gguf.md ("File Structure"): the magic `GGUF`, a u32 version, a u64
tensor count and a u64 key/value count, then the key/values (a GGUF string key, a u32 value
type, the value), then one info per tensor (name, u32 n_dims, n_dims u64 dimensions, u32 ggml
type, u64 offset), padded to `general.alignment` (default 32, a multiple of 8). Strings are a
u64 length then UTF-8 bytes; arrays are a u32 element type, a u64 count, then the elements,
and may nest. Versions 2 and 3 share this layout (version 1 used 32-bit counts).

Every count and length is checked before it is used, so a lying header cannot make this
allocate or loop: counts against fixed caps and against the smallest size their items could
take, strings against a length cap, and everything against the bytes really there. Dimensions
are stored innermost first (ggml order); shapes here are outermost first, as ComfyUI-GGUF's
loader.py rebuilds them (`reversed(tensor.shape)`), and its `comfy.gguf.orig_shape.<name>`
arrays restore the shape of tensors its converter reshaped (tools/convert.py).
"""

from __future__ import annotations

import struct

from .header import Header, NeedMore, Tensor, bad_header, truncated

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
# Caps far above any real model and far below what a lie would ask for. A GGUF header holding
# an LLM's tokenizer (the text encoders) is a few MB; diffusion models need tens of KB.
MAX_HEADER_SIZE = 64 * 1024 * 1024
MAX_TENSORS = 1 << 20
MAX_KEY_VALUES = 1 << 20
MAX_ARRAY_LENGTH = 1 << 24
MAX_STRING_LENGTH = 16 * 1024 * 1024
MAX_KEY_LENGTH = 65535  # gguf.md: a key "must be at most 2^16-1/65535 bytes long"
MAX_DIMENSIONS = 8  # gguf.md says "currently at most 4"; some slack for what comes next
MAX_ARRAY_DEPTH = 4
DEFAULT_ALIGNMENT = 32
_FIXED_HEADER = 24  # magic, version, two counts
_MIN_KV = 8 + 1 + 4 + 1  # key length, a one-byte key, value type, the smallest value
_MIN_TENSOR_INFO = 8 + 4 + 4 + 8  # name length, n_dims, type, offset
_ORIG_SHAPE = "comfy.gguf.orig_shape."

# gguf_metadata_value_type -> struct format of a fixed-size value; 8 is string, 9 is array.
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<B",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY, _BOOL = 8, 9, 7
# enum ggml_type, for showing a tensor's type; unknown (newer) types are kept as numbers.
_GGML_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS",
    24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0",
    35: "TQ2_0", 39: "MXFP4",
}  # fmt: skip


class _Short(Exception):
    """The bytes end before the header does; `needed` is the smallest total that could do."""

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


class _Cursor:
    """Reads little-endian values from the prefix, refusing to step past what is there."""

    def __init__(self, data: bytes, file_size: int | None) -> None:
        self.data = memoryview(data)
        self.file_size = file_size
        self.limit = MAX_HEADER_SIZE if file_size is None else min(file_size, MAX_HEADER_SIZE)
        self.at = 0

    def declared(self, length: int, what: str) -> None:
        """A length read from the file cannot exceed the whole file. (One that only runs past
        its end may be a file cut short: `take` reports that as truncation.)"""
        if self.file_size is not None and length > self.file_size:
            raise _invalid(f"{what} claims {length} bytes, more than the whole file")

    def take(self, count: int) -> memoryview:
        end = self.at + count
        if end > self.limit:
            raise _past_limit(end, self.limit, self.file_size)
        if end > len(self.data):
            raise _Short(end)
        piece = self.data[self.at : end]
        self.at = end
        return piece

    def unpack(self, fmt: str) -> int | float:
        value: int | float = struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        return value

    def u32(self) -> int:
        return int(self.unpack("<I"))

    def u64(self) -> int:
        return int(self.unpack("<Q"))

    def string(self, cap: int, what: str) -> str:
        try:
            return str(self.string_bytes(cap, what), "utf-8")
        except UnicodeDecodeError:
            raise _invalid(f"{what} is not UTF-8") from None

    def string_bytes(self, cap: int, what: str) -> memoryview:
        length = self.u64()
        if length > cap:
            raise _invalid(f"{what} claims to be {length} bytes long")
        self.declared(length, what)
        return self.take(length)


def parse(data: bytes, file_size: int | None = None) -> Header | NeedMore:
    """The header at the start of `data`; `file_size` when `data` is a prefix of a known-size file."""
    if len(data) < len(MAGIC) and (file_size is None or file_size >= len(MAGIC)):
        return NeedMore(len(MAGIC))
    if data[: len(MAGIC)] != MAGIC:
        raise bad_header("gguf_invalid", "This is not a GGUF file: it does not start with 'GGUF'.")
    cursor = _Cursor(data, file_size)
    try:
        return _read(cursor, file_size)
    except _Short as short:
        return NeedMore(short.needed)


def _read(cursor: _Cursor, file_size: int | None) -> Header:
    cursor.take(len(MAGIC))
    version = cursor.u32()
    if version not in SUPPORTED_VERSIONS:
        raise bad_header(
            "gguf_version_unsupported",
            f"This GGUF file is version {version}; only versions 2 and 3 are read "
            "(version 1 is obsolete, and a huge number usually means a big-endian file).",
        )
    tensor_count, kv_count = cursor.u64(), cursor.u64()
    _check_counts(tensor_count, kv_count, cursor.limit)
    metadata: dict[str, str] = {}
    orig_shapes: dict[str, tuple[int, ...]] = {}
    for _ in range(kv_count):
        key = cursor.string(MAX_KEY_LENGTH, "a metadata key")
        kind = cursor.u32()
        if key.startswith(_ORIG_SHAPE) and kind == _ARRAY:
            orig_shapes[key[len(_ORIG_SHAPE) :]] = _int_array(cursor, key)
        else:
            value = _value(cursor, kind, key, depth=0)
            if value is not None:
                metadata[key] = value
    alignment = _alignment(metadata)
    tensors: dict[str, Tensor] = {}
    for _ in range(tensor_count):
        name, tensor = _tensor_info(cursor, alignment)
        if name in tensors:
            raise _invalid(f"tensor {name[:80]!r} is listed twice")
        tensors[name] = Tensor(tensor.dtype, orig_shapes.get(name, tensor.shape))
    size = cursor.at + (-cursor.at) % alignment
    if file_size is not None and size > file_size:
        raise truncated("GGUF", size, file_size)
    return Header(format="gguf", tensors=tensors, metadata=metadata, size=size)


def _check_counts(tensor_count: int, kv_count: int, limit: int) -> None:
    if tensor_count > MAX_TENSORS or kv_count > MAX_KEY_VALUES:
        raise _invalid(f"it claims {tensor_count} tensors and {kv_count} metadata entries")
    smallest = _FIXED_HEADER + tensor_count * _MIN_TENSOR_INFO + kv_count * _MIN_KV
    if smallest > limit:
        raise _invalid(
            f"its {tensor_count} tensors and {kv_count} metadata entries cannot fit in {limit} bytes "
            "(the counts are false, or the file is cut short)"
        )


def _value(cursor: _Cursor, kind: int, key: str, depth: int) -> str | None:
    """A scalar as text; arrays are walked over and dropped (tokenizer vocabularies are huge)."""
    if kind == _STRING:
        return cursor.string(MAX_STRING_LENGTH, f"the value of {key[:80]!r}")
    if kind == _ARRAY:
        _skip_array(cursor, key, depth)
        return None
    fmt = _SCALARS.get(kind)
    if fmt is None:
        raise _invalid(f"{key[:80]!r} has an unknown value type {kind}")
    value = cursor.unpack(fmt)
    if kind == _BOOL:
        if value not in (0, 1):  # gguf.md: anything else is invalid
            raise _invalid(f"{key[:80]!r} is a boolean that is neither 0 nor 1")
        return "true" if value else "false"
    return str(value)


def _skip_array(cursor: _Cursor, key: str, depth: int) -> None:
    if depth >= MAX_ARRAY_DEPTH:
        raise _invalid(f"{key[:80]!r} nests arrays more than {MAX_ARRAY_DEPTH} deep")
    kind, length = _array_head(cursor, key)
    fmt = _SCALARS.get(kind)
    if fmt is not None:
        size = length * struct.calcsize(fmt)
        cursor.declared(size, f"the array {key[:80]!r}")
        cursor.take(size)  # fixed-size elements: one step, no loop
        return
    if kind == _STRING:  # a vocabulary: step over each string without decoding it
        for _ in range(length):
            cursor.string_bytes(MAX_STRING_LENGTH, f"a string in {key[:80]!r}")
    elif kind == _ARRAY:
        for _ in range(length):
            _skip_array(cursor, key, depth + 1)
    else:
        raise _invalid(f"{key[:80]!r} is an array of an unknown type {kind}")


def _array_head(cursor: _Cursor, key: str) -> tuple[int, int]:
    kind, length = cursor.u32(), cursor.u64()
    if length > MAX_ARRAY_LENGTH:
        raise _invalid(f"{key[:80]!r} claims {length} elements")
    return kind, length


def _int_array(cursor: _Cursor, key: str) -> tuple[int, ...]:
    """ComfyUI-GGUF writes the original shape as an array of int32 (loader.py get_orig_shape)."""
    kind, length = _array_head(cursor, key)
    if kind not in (4, 5) or length > MAX_DIMENSIONS:
        raise _invalid(f"{key[:80]!r} is not a short array of 32-bit integers")
    fmt = "<I" if kind == 4 else "<i"
    shape = tuple(int(cursor.unpack(fmt)) for _ in range(length))
    if any(n < 0 for n in shape):
        raise _invalid(f"{key[:80]!r} holds a negative dimension")
    return shape


def _alignment(metadata: dict[str, str]) -> int:
    raw = metadata.get("general.alignment")
    if raw is None:
        return DEFAULT_ALIGNMENT
    alignment = _as_int(raw)
    if alignment is None or alignment <= 0 or alignment % 8:  # gguf.md: "must be a multiple of 8"
        raise _invalid(f"its general.alignment ({raw[:20]}) is not a positive multiple of 8")
    return alignment


def _as_int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _tensor_info(cursor: _Cursor, alignment: int) -> tuple[str, Tensor]:
    name = cursor.string(MAX_KEY_LENGTH, "a tensor name")
    n_dims = cursor.u32()
    if n_dims > MAX_DIMENSIONS:
        raise _invalid(f"tensor {name[:80]!r} claims {n_dims} dimensions")
    dims = tuple(cursor.u64() for _ in range(n_dims))
    ggml_type = cursor.u32()
    offset = cursor.u64()
    if offset % alignment:  # gguf.md: "Must be a multiple of ALIGNMENT"
        raise _invalid(f"tensor {name[:80]!r} starts at an offset that is not aligned")
    dtype = _GGML_TYPES.get(ggml_type, str(ggml_type))
    return name, Tensor(dtype, tuple(reversed(dims)))


def _past_limit(needed: int, limit: int, file_size: int | None) -> Exception:
    if file_size is not None and needed > file_size:
        return truncated("GGUF", needed, file_size)
    return bad_header(
        "header_too_large",
        f"The GGUF header would need more than {MAX_HEADER_SIZE} bytes (limit {limit}); the file is damaged.",
    )


def _invalid(why: str) -> Exception:
    return bad_header("gguf_invalid", f"The GGUF header is damaged: {why}.")
