"""The header parsers: bad files get their named error, prefixes ask for more, lies cost nothing."""

from __future__ import annotations

import contextlib
import json
import struct
import tracemalloc
from collections.abc import Callable

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.headers import Finding, Header, NeedMore, gguf, inspect_bytes, parse_header, safetensors
from tests.fakes import model_files as m

Parser = Callable[[bytes, int | None], Header | NeedMore]


def code_of(parse: Callable[[], object]) -> str:
    with pytest.raises(OrchestratorError) as caught:
        parse()
    assert caught.value.message  # a sentence for the person, not only a code
    return caught.value.code


def peak_allocation(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        with contextlib.suppress(OrchestratorError):
            action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- safetensors -------------------------------------------------------------------------------


def test_a_valid_file_parses_to_its_tensors_and_metadata() -> None:
    data = m.safetensors_file({"a.weight": (2, 2), "b": ()}, {"note": "hi"}, dtype="F32")
    header = safetensors.parse(data, len(data))
    assert isinstance(header, Header)
    assert {name: (t.dtype, t.shape) for name, t in header.tensors.items()} == {
        "a.weight": ("F32", (2, 2)),
        "b": ("F32", ()),
    }
    assert header.metadata == {"note": "hi"}
    assert header.size == len(data) - 5 * 4  # the data starts right after the header


def test_header_length_2_40_is_refused_without_reading_or_allocating() -> None:
    data = struct.pack("<Q", 2**40) + b"{"
    assert code_of(lambda: safetensors.parse(data)) == "header_too_large"
    assert peak_allocation(lambda: safetensors.parse(data)) < 64 * 1024


def test_a_huge_length_alone_asks_for_the_one_byte_that_decides() -> None:
    # Eight bytes of a zip would read as a huge length: byte 8 tells "too large" from "not safetensors".
    assert safetensors.parse(struct.pack("<Q", 2**40)) == NeedMore(9)


@pytest.mark.parametrize(
    "header",
    [
        b"this is not json at all!",
        b'{"a": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}',  # cut short
        b"{\xff\xfe}",  # not UTF-8
        b'{"a": NaN}',
    ],
)
def test_a_header_that_is_not_json_is_invalid(header: bytes) -> None:
    data = m.safetensors_raw(header)
    if not header.startswith(b"{"):
        assert code_of(lambda: safetensors.parse(data)) == "not_safetensors"
    else:
        assert code_of(lambda: safetensors.parse(data)) == "header_invalid"


@pytest.mark.parametrize(
    "document",
    [
        b"[1, 2, 3]  ",
        b'"just a string"',
        b'{"__metadata__": {"n": 1}}',
        b'{"__metadata__": ["x"]}',
        b'{"a": [1, 2]}',
        b'{"a": {"dtype": "F16", "shape": [-1], "data_offsets": [0, 0]}}',
        b'{"a": {"dtype": "F16", "shape": [true], "data_offsets": [0, 2]}}',
        b'{"a": {"dtype": 5, "shape": [1], "data_offsets": [0, 2]}}',
        b'{"a": {"shape": [1], "data_offsets": [0, 2]}}',
        b'{"a": {"dtype": "F16", "shape": [1], "data_offsets": [0]}}',
        b'{"a": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}, '
        b'"a": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}}',  # duplicate key
    ],
)
def test_a_header_that_is_not_a_proper_object_is_invalid(document: bytes) -> None:
    data = m.safetensors_raw(document)
    expected = "header_invalid" if document.startswith(b"{") else "not_safetensors"
    assert code_of(lambda: safetensors.parse(data)) == expected


def tensor(begin: int, end: int, shape: list[int], dtype: str = "F16") -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


@pytest.mark.parametrize(
    ("tensors", "body"),
    [
        ({"a": tensor(0, 2, [1]), "b": tensor(4, 6, [1])}, 6),  # a gap
        ({"a": tensor(0, 4, [2]), "b": tensor(2, 6, [2])}, 6),  # an overlap
        ({"a": tensor(0, 4, [3])}, 4),  # three F16 values are 6 bytes, not 4
        ({"a": tensor(2, 4, [1])}, 4),  # the data does not start at 0
        ({"a": tensor(4, 2, [1])}, 4),  # end before begin
        ({"a": tensor(0, 2, [1])}, 10),  # 8 bytes at the end belong to nothing
        ({"a": tensor(0, 2**20, [2**19])}, 100),  # the file is cut short inside the data
    ],
)
def test_offsets_that_do_not_fit_the_file(tensors: dict[str, object], body: int) -> None:
    data = m.safetensors_raw(json.dumps(tensors).encode(), bytes(body))
    assert code_of(lambda: safetensors.parse(data, len(data))) == "header_offsets_invalid"


def test_offsets_are_checked_against_the_file_only_when_its_size_is_known() -> None:
    data = m.safetensors_raw(json.dumps({"a": tensor(0, 2**20, [2**19])}).encode())
    assert isinstance(safetensors.parse(data), Header)


def test_a_file_cut_inside_its_header_is_truncated() -> None:
    whole = m.safetensors_file(m.flux_dit())
    cut = whole[:500]
    assert code_of(lambda: safetensors.parse(cut, len(cut))) == "header_truncated"


@pytest.mark.parametrize(
    "data",
    [
        m.ckpt_file(),
        b"<!DOCTYPE html><html><body>Sign in</body></html>",
        b"\x00" * 7,
        b"\x01" + b"\x00" * 7 + b"{",
    ],
    ids=["ckpt zip", "web page", "seven bytes", "one-byte header"],
)
def test_a_file_that_says_safetensors_and_is_not(data: bytes) -> None:
    assert code_of(lambda: safetensors.parse(data, len(data))) == "not_safetensors"
    assert code_of(lambda: inspect_bytes(data, len(data))) == "unknown_format"


def test_unknown_dtypes_are_accepted_but_nonsense_ones_are_not() -> None:
    newer = m.safetensors_raw(json.dumps({"a": tensor(0, 3, [5], "F5_NEW")}).encode(), bytes(3))
    assert isinstance(safetensors.parse(newer, len(newer)), Header)
    nonsense = m.safetensors_raw(json.dumps({"a": tensor(0, 2, [1], "f16; rm -rf")}).encode(), bytes(2))
    assert code_of(lambda: safetensors.parse(nonsense, len(nonsense))) == "header_invalid"


# -- GGUF --------------------------------------------------------------------------------------


def gguf_head(tensor_count: int, kv_count: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensor_count, kv_count)


def test_a_valid_gguf_parses_to_its_tensors_and_metadata() -> None:
    data = m.gguf_file(
        {"a.weight": (2, 3), "b": (4,)},
        {"general.architecture": "flux", "flag": True, "n": 7, "scale": 0.5, "list": ["x", "y"]},
    )
    header = gguf.parse(data, len(data))
    assert isinstance(header, Header)
    assert {name: (t.dtype, t.shape) for name, t in header.tensors.items()} == {
        "a.weight": ("F16", (2, 3)),  # stored innermost first, shown outermost first
        "b": ("F16", (4,)),
    }
    assert header.metadata == {"general.architecture": "flux", "flag": "true", "n": "7", "scale": "0.5"}
    assert header.size % 32 == 0


def test_version_2_and_other_alignments_are_read() -> None:
    data = m.gguf_file({"a": (8,)}, {"general.architecture": "wan"}, version=2, alignment=64)
    header = gguf.parse(data, len(data))
    assert isinstance(header, Header) and header.size % 64 == 0


@pytest.mark.parametrize(
    "data",
    [
        gguf_head(2**60, 0),
        gguf_head(0, 2**60),
    ],
    ids=["2**60 tensors", "2**60 key-values"],
)
def test_lying_counts_are_invalid_without_allocating(data: bytes) -> None:
    assert code_of(lambda: gguf.parse(data)) == "gguf_invalid"
    assert peak_allocation(lambda: gguf.parse(data)) < 64 * 1024


def test_counts_that_cannot_fit_in_the_known_file_are_invalid() -> None:
    data = gguf_head(1000, 0) + bytes(100)
    assert code_of(lambda: gguf.parse(data, len(data))) == "gguf_invalid"


def test_a_string_longer_than_any_cap_is_invalid_without_allocating() -> None:
    data = gguf_head(0, 1) + struct.pack("<Q", 2**40) + b"general.architecture"
    assert code_of(lambda: gguf.parse(data)) == "gguf_invalid"
    assert peak_allocation(lambda: gguf.parse(data)) < 64 * 1024


def test_a_string_length_past_the_end_of_the_file_is_invalid() -> None:
    data = gguf_head(0, 1) + struct.pack("<Q", 5000) + b"general"
    assert code_of(lambda: gguf.parse(data, len(data))) == "gguf_invalid"
    assert gguf.parse(data) == NeedMore(len(gguf_head(0, 1)) + 8 + 5000)  # size unknown: ask


def test_an_array_longer_than_the_file_is_invalid() -> None:
    kv = m.gguf_string("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 2**22)
    data = gguf_head(0, 1) + kv + bytes(64)
    assert code_of(lambda: gguf.parse(data, len(data))) == "gguf_invalid"


@pytest.mark.parametrize(
    ("kv", "words"),
    [
        (m.gguf_string("a") + struct.pack("<IB", 7, 2), "neither 0 nor 1"),
        (m.gguf_string("a") + struct.pack("<I", 13) + bytes(8), "unknown value type"),
        (m.gguf_string("a") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 6, "nests arrays"),
        (m.gguf_string("general.alignment") + struct.pack("<II", 4, 12), "multiple of 8"),
        (m.gguf_string("a") + struct.pack("<IIQ", 9, 99, 1), "unknown type"),
    ],
)
def test_malformed_values_are_invalid(kv: bytes, words: str) -> None:
    data = gguf_head(0, 1) + kv + bytes(64)
    with pytest.raises(OrchestratorError) as caught:
        gguf.parse(data, len(data))
    assert caught.value.code == "gguf_invalid" and words in caught.value.message


def test_a_key_that_is_not_utf8_is_invalid() -> None:
    data = gguf_head(0, 1) + struct.pack("<Q", 2) + b"\xff\xfe" + struct.pack("<IB", 7, 1) + bytes(32)
    assert code_of(lambda: gguf.parse(data, len(data))) == "gguf_invalid"


def tensor_info(name: str, dims: list[int], offset: int = 0, n_dims: int | None = None) -> bytes:
    count = len(dims) if n_dims is None else n_dims
    return (
        m.gguf_string(name)
        + struct.pack("<I", count)
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<IQ", 1, offset)
    )


@pytest.mark.parametrize(
    ("infos", "words"),
    [
        (tensor_info("a", [2], offset=3), "not aligned"),
        (tensor_info("a", [2]) + tensor_info("a", [2], offset=32), "listed twice"),
        (tensor_info("a", [1] * 9), "dimensions"),
    ],
)
def test_malformed_tensor_infos_are_invalid(infos: bytes, words: str) -> None:
    count = infos.count(m.gguf_string("a"))
    data = gguf_head(count, 0) + infos + bytes(256)
    with pytest.raises(OrchestratorError) as caught:
        gguf.parse(data, len(data))
    assert caught.value.code == "gguf_invalid" and words in caught.value.message


@pytest.mark.parametrize("version", [1, 4, 0x03000000])
def test_unsupported_versions(version: int) -> None:
    data = gguf_head(0, 0, version=version)
    assert code_of(lambda: gguf.parse(data, len(data))) == "gguf_version_unsupported"


@pytest.mark.parametrize("cut", [10, 400, 600, 800])
def test_a_gguf_cut_inside_its_header_is_truncated(cut: int) -> None:
    # Cut after the counts' smallest possible size (below that, the counts cannot be true).
    whole = m.gguf_file(m.flux_dit(), {"general.architecture": "flux"})
    assert code_of(lambda: gguf.parse(whole[:cut], cut)) == "header_truncated"


def test_a_gguf_header_beyond_its_cap_is_too_large() -> None:
    # An array within the element cap whose 8-byte elements need 128 MiB: past the 64 MiB cap.
    data = gguf_head(0, 1) + m.gguf_string("a") + struct.pack("<IIQ", 9, 10, gguf.MAX_ARRAY_LENGTH)
    assert code_of(lambda: gguf.parse(data)) == "header_too_large"
    assert peak_allocation(lambda: gguf.parse(data)) < 64 * 1024


def test_a_file_that_says_gguf_and_is_not() -> None:
    assert code_of(lambda: gguf.parse(b"PK\x03\x04rest")) == "gguf_invalid"


# -- prefixes: every cut asks for more, never fails, until the header is whole -------------------


@pytest.mark.parametrize(
    "data",
    [
        m.safetensors_file(m.flux_kohya_lora(), m.KOHYA_SDXL_METADATA),
        m.gguf_file(m.flux_dit(), {"general.architecture": "flux", "general.name": "tiny"}),
    ],
    ids=["safetensors", "gguf"],
)
def test_every_prefix_asks_for_more_until_the_header_is_complete(data: bytes) -> None:
    full = parse_header(data, len(data))
    assert isinstance(full, Header)
    cut = 0
    while isinstance(result := parse_header(data[:cut]), NeedMore):
        assert cut < result.size <= full.size
        cut += 1
    assert result == full  # complete once the last tensor is described (padding is not needed)
    assert all(parse_header(data[:longer]) == full for longer in range(cut, full.size + 1))
    assert isinstance(inspect_bytes(data[:cut]), Finding)


def test_growing_by_what_is_asked_reaches_the_header_in_few_steps() -> None:
    data = m.safetensors_file(m.sdxl_checkpoint())
    held, steps = b"", 0
    while isinstance(result := inspect_bytes(held), NeedMore):
        held = data[: result.size]
        steps += 1
    assert steps == 2  # the length, then the rest of the header
    assert result.kind == "checkpoint"
