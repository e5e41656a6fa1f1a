"""Reading a remote file's header with ranged GETs, against a real HTTP server on loopback."""

from __future__ import annotations

import struct

import pytest

from orchestrator import net
from orchestrator.errors import OrchestratorError
from orchestrator.headers import RemoteFinding, fetch_finding
from orchestrator.headers.remote import GGUF_FIRST_BLOCK
from orchestrator.policy import GUARDED, OPEN
from tests.fakes import model_files as m
from tests.fakes.origin import Origin

BODY = 64 * 1024 * 1024  # far more than any socket buffer holds: reading it would show


def big_safetensors() -> bytes:
    return m.safetensors_file(m.flux_dit() | {"zz.padding": (BODY // 2,)})


def header_end(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def ranges(origin: Origin, path: str) -> list[str | None]:
    return [request.range for request in origin.requests_for(path)]


def fetch(url: str, headers: dict[str, str] | None = None) -> RemoteFinding:
    with net.session(OPEN) as session:
        return fetch_finding(session, url, headers)


def test_safetensors_header_takes_two_ranges_and_none_of_the_body(origin: Origin) -> None:
    data = origin.add_file("/flux.safetensors", data=big_safetensors())
    end = header_end(data)
    result = fetch(origin.url("/flux.safetensors"))
    assert result.status == "found"
    assert result.finding is not None
    assert (result.finding.kind, result.finding.family) == ("diffusion_model", "flux")
    assert (result.size, result.bytes_read) == (len(data), end)
    assert ranges(origin, "/flux.safetensors") == ["bytes=0-7", f"bytes=8-{end - 1}"]
    assert origin.stats("/flux.safetensors")["bytes_sent"] == end
    for request in origin.requests_for("/flux.safetensors"):
        assert request.header("Accept-Encoding") == "identity"


def test_a_server_without_ranges_is_detected_without_reading_the_body(origin: Origin) -> None:
    data = origin.add_file("/flux.safetensors", data=big_safetensors(), accept_ranges=False)
    result = fetch(origin.url("/flux.safetensors"))
    assert result.status == "no_range_support"
    assert result.finding is None
    assert "byte ranges" in result.detail
    assert origin.stats("/flux.safetensors")["gets"] == 1
    assert origin.stats("/flux.safetensors")["bytes_sent"] < len(data) // 4
    assert result.public()["finding"] is None


def test_gguf_reads_a_first_block_and_more_only_when_asked(origin: Origin) -> None:
    layout, metadata = m.gguf_llama_text_encoder(60_000)  # a tokenizer past the first block
    data = origin.add_file("/te.gguf", data=m.gguf_file(layout | {"zz.padding": (BODY // 2,)}, metadata))
    result = fetch(origin.url("/te.gguf"))
    assert result.status == "found" and result.finding is not None
    assert result.finding.kind == "text_encoder"
    asked = ranges(origin, "/te.gguf")
    assert asked[:2] == ["bytes=0-7", f"bytes=8-{GGUF_FIRST_BLOCK - 1}"]
    assert len(asked) > 2
    assert origin.stats("/te.gguf")["bytes_sent"] == result.bytes_read < len(data) // 16


def test_a_small_gguf_header_fits_the_first_block(origin: Origin) -> None:
    data = origin.add_file("/flux.gguf", data=m.gguf_file(m.flux_dit(), {"general.architecture": "flux"}))
    result = fetch(origin.url("/flux.gguf"))
    assert result.finding is not None and result.finding.family == "flux"
    assert ranges(origin, "/flux.gguf") == ["bytes=0-7", f"bytes=8-{len(data) - 1}"]  # the file is smaller


def test_redirects_are_followed_and_extra_headers_stay_on_the_link_host(
    origin: Origin, origin2: Origin
) -> None:
    origin2.add_file(
        "/blob/lora.safetensors", data=m.safetensors_file(m.sdxl_kohya_lora(), m.KOHYA_SDXL_METADATA)
    )
    origin.add_redirect("/dl/lora.safetensors", origin2.url("/blob/lora.safetensors"))
    result = fetch(origin.url("/dl/lora.safetensors"), {"Cookie": "download_warning=secret"})
    assert result.finding is not None
    assert (result.finding.kind, result.finding.family) == ("lora", "sdxl")
    assert result.finding.metadata["ss_output_name"] == "style_xl"
    assert len(origin.requests_for("/dl/lora.safetensors")) == 1  # later ranges go straight to the blob
    assert origin.requests_for("/dl/lora.safetensors")[0].header("Cookie") == "download_warning=secret"
    assert all(r.header("Cookie") is None for r in origin2.requests_for("/blob/lora.safetensors"))
    assert len(origin2.requests_for("/blob/lora.safetensors")) == 2


def test_a_web_page_is_an_unknown_format(origin: Origin) -> None:
    origin.add_html("/login")
    result = fetch(origin.url("/login"))
    assert result.status == "unknown_format"
    assert "web page" in result.detail


def test_a_pickled_ckpt_is_an_unknown_format_after_nine_bytes(origin: Origin) -> None:
    origin.add_file("/model.ckpt", data=m.ckpt_file() + bytes(BODY))
    result = fetch(origin.url("/model.ckpt"))
    assert result.status == "unknown_format"
    assert ranges(origin, "/model.ckpt") == ["bytes=0-7", "bytes=8-8"]


@pytest.mark.parametrize(("size", "detail"), [(0, "empty"), (5, "neither safetensors nor GGUF")])
def test_files_too_small_to_be_models(origin: Origin, size: int, detail: str) -> None:
    origin.add_file("/tiny.safetensors", data=bytes(size))
    result = fetch(origin.url("/tiny.safetensors"))
    assert result.status == "unknown_format"
    assert detail in result.detail


def test_a_header_length_of_2_40_is_refused_after_nine_bytes(origin: Origin) -> None:
    origin.add_file("/bad.safetensors", data=struct.pack("<Q", 2**40) + b'{"a": 1}' + bytes(1024))
    with pytest.raises(OrchestratorError) as caught:
        fetch(origin.url("/bad.safetensors"))
    assert caught.value.code == "header_too_large"
    assert ranges(origin, "/bad.safetensors") == ["bytes=0-7", "bytes=8-8"]


def test_a_lying_gguf_is_invalid(origin: Origin) -> None:
    origin.add_file("/bad.gguf", data=b"GGUF" + struct.pack("<IQQ", 3, 2**60, 1) + bytes(4096))
    with pytest.raises(OrchestratorError) as caught:
        fetch(origin.url("/bad.gguf"))
    assert caught.value.code == "gguf_invalid"


def test_a_file_served_cut_short_does_not_fit_its_header(origin: Origin) -> None:
    whole = m.safetensors_file(m.flux_dit())
    origin.add_file("/cut.safetensors", data=whole[: len(whole) - 100])
    with pytest.raises(OrchestratorError) as caught:
        fetch(origin.url("/cut.safetensors"))
    assert caught.value.code == "header_offsets_invalid"
    assert "cut short" in caught.value.message


def test_a_missing_file_is_the_origins_error(origin: Origin) -> None:
    with pytest.raises(OrchestratorError) as caught:
        fetch(origin.url("/nothing.safetensors"))
    assert caught.value.code == "origin_not_found"


def test_an_unreachable_server_is_header_unreachable() -> None:
    gone = Origin("127.0.0.1").start()
    url = gone.url("/model.safetensors")
    gone.stop()
    with pytest.raises(OrchestratorError) as caught:
        fetch(url)
    assert caught.value.code == "header_unreachable"
    assert "127.0.0.1" in caught.value.message


def test_the_callers_session_and_its_policy_are_used(origin: Origin) -> None:
    origin.add_file("/flux.safetensors", data=m.safetensors_file(m.flux_dit()))
    with net.session(GUARDED) as session, pytest.raises(OrchestratorError) as caught:
        fetch_finding(session, origin.url("/flux.safetensors"))
    assert caught.value.code == "blocked_target"
    assert origin.requests_for("/flux.safetensors") == []


def test_public_result_carries_no_url(origin: Origin) -> None:
    origin.add_file("/v.safetensors", data=m.safetensors_file(m.wan21_vae()))
    public = fetch(origin.url("/v.safetensors?token=secret")).public()
    assert public["status"] == "found"
    assert public["finding"]["kind"] == "vae"
    assert "secret" not in repr(public)
