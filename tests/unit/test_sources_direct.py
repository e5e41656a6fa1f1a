"""Checking a pasted link, and asking a (fake, local) server about the file it names."""

from __future__ import annotations

import socket

import pytest

from orchestrator import sources
from orchestrator.errors import OrchestratorError
from orchestrator.policy import GUARDED, OPEN
from orchestrator.sources import Credentials, direct, validate_url
from tests.fakes.origin import Origin

UTF8_CD = "attachment; filename*=UTF-8''%E6%A8%A1%E5%9E%8B.safetensors"


def url_code(raw) -> str:
    with pytest.raises(OrchestratorError) as caught:
        validate_url(raw)
    return caught.value.code


def resolve_code(url: str) -> str:
    with pytest.raises(OrchestratorError) as caught:
        direct.resolve(url, Credentials(), OPEN)
    return caught.value.code


# -- validate_url --------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, "", "   ", "\n\t", 5, b"http://h.example/x", ["http://h"]])
def test_empty_url(raw) -> None:
    assert url_code(raw) == "empty_url"


@pytest.mark.parametrize(
    "raw",
    [
        "http://h.example/a file.bin",
        "http://h.example/a\tb.bin",
        "http://h.example/a\x00b",
        "http://h.example/a\x1bb",
        '"http://h.example/m.safetensors"',
        "'http://h.example/m.safetensors'",
        "http://h.example/" + "a" * 10_000,
        "http://",
        "https:///only/a/path",
        "http://:8080/x",
        "http://h.example:99999/x",
        "http://h.example:port/x",
        "http://[::1/x",
        "h.example/m.safetensors",
        "//h.example/m.safetensors",
        "not a link at all",
    ],
)
def test_invalid_url(raw: str) -> None:
    assert url_code(raw) == "invalid_url"


@pytest.mark.parametrize(
    "raw",
    [
        "file:///etc/passwd",
        "ftp://h.example/m.bin",
        "javascript:alert(1)",
        "data:text/plain;base64,aGVsbG8=",
        "magnet:?xt=urn:btih:abc",
        "ws://h.example/socket",
    ],
)
def test_unsupported_scheme(raw: str) -> None:
    assert url_code(raw) == "unsupported_scheme"


def test_unsupported_scheme_message_names_the_scheme() -> None:
    with pytest.raises(OrchestratorError) as caught:
        validate_url("ftp://h.example/m.bin")
    assert "ftp" in caught.value.message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  https://h.example/m.safetensors \n", "https://h.example/m.safetensors"),
        ("HTTP://H.EXAMPLE:8080/a%20b.bin?x=1#f", "HTTP://H.EXAMPLE:8080/a%20b.bin?x=1#f"),
        ("http://127.0.0.1/x", "http://127.0.0.1/x"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
    ],
)
def test_valid_urls_come_back_trimmed(raw: str, expected: str) -> None:
    assert validate_url(raw) == expected


def test_every_http_link_is_a_direct_link() -> None:
    assert sources.identify("https://h.example/x.bin") == "direct"
    assert direct.matches("HTTP://h.example/x")
    assert not direct.matches("ftp://h.example/x")


def test_credentials_never_show_in_repr() -> None:
    text = repr(Credentials(civitai="civ-SECRET", huggingface="hf-SECRET"))
    assert "SECRET" not in text


# -- direct.resolve against the fake origin -----------------------------------------------------


def test_resolve_reports_size_and_name(origin: Origin) -> None:
    origin.add_file("/files/model.safetensors", 123_457)
    resolved = direct.resolve(origin.url("/files/model.safetensors"), Credentials(), OPEN)
    assert resolved.size == 123_457
    assert resolved.filename == "model.safetensors"
    assert resolved.urls == [origin.url("/files/model.safetensors")]
    assert resolved.source == "direct"
    assert resolved.metadata["host"] == "127.0.0.1"
    assert resolved.metadata["content_type"] == "application/octet-stream"
    # only headers were asked for: no body went over the wire
    assert origin.stats("/files/model.safetensors")["bytes_sent"] == 0


def test_resolve_takes_the_utf8_content_disposition_name(origin: Origin) -> None:
    origin.add_file("/download/123", 4096, content_disposition=UTF8_CD)
    resolved = direct.resolve(origin.url("/download/123"), Credentials(), OPEN)
    assert resolved.filename == "模型.safetensors"
    assert resolved.size == 4096


def test_resolve_falls_back_to_a_ranged_get_when_head_is_refused(origin: Origin) -> None:
    origin.add_file("/signed/model.ckpt", 50_000, head_allowed=False)
    resolved = direct.resolve(origin.url("/signed/model.ckpt"), Credentials(), OPEN)
    assert resolved.size == 50_000
    assert resolved.filename == "model.ckpt"
    methods = [(r.method, r.range) for r in origin.requests_for("/signed/model.ckpt")]
    assert methods == [("HEAD", None), ("GET", "bytes=0-0")]


def test_resolve_ranged_get_on_a_server_without_ranges_still_sizes_the_file(origin: Origin) -> None:
    origin.add_file("/plain/model.ckpt", 70_000, head_allowed=False, accept_ranges=False)
    resolved = direct.resolve(origin.url("/plain/model.ckpt"), Credentials(), OPEN)
    assert resolved.size == 70_000


def test_resolve_follows_a_redirect_to_another_host(origin: Origin, origin2: Origin) -> None:
    origin2.add_file("/cdn/blob/real-name.safetensors", 8_000)
    origin.add_redirect("/dl", origin2.url("/cdn/blob/real-name.safetensors"))
    resolved = direct.resolve(origin.url("/dl"), Credentials(), OPEN)
    assert resolved.size == 8_000
    assert resolved.filename == "real-name.safetensors"
    assert resolved.urls == [origin.url("/dl")]
    assert origin2.stats("/cdn/blob/real-name.safetensors")["heads"] == 1


def test_resolve_keeps_the_links_own_name_over_the_redirect_target(origin: Origin, origin2: Origin) -> None:
    origin2.add_file("/blobs/sha256-abc", 1_000)
    origin.add_redirect("/models/nice-name.safetensors", origin2.url("/blobs/sha256-abc"))
    resolved = direct.resolve(origin.url("/models/nice-name.safetensors"), Credentials(), OPEN)
    assert resolved.filename == "nice-name.safetensors"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (404, "origin_not_found"),
        (410, "origin_not_found"),
        (401, "origin_forbidden"),
        (403, "origin_forbidden"),
        (429, "origin_rate_limited"),
        (500, "origin_error"),
        (503, "origin_error"),
    ],
)
def test_resolve_error_statuses(origin: Origin, status: int, code: str) -> None:
    origin.add_file("/f.bin", 100, status=status)
    with pytest.raises(OrchestratorError) as caught:
        direct.resolve(origin.url("/f.bin"), Credentials(), OPEN)
    assert caught.value.code == code
    assert caught.value.status == 502


def test_resolve_unknown_path_is_not_found(origin: Origin) -> None:
    assert resolve_code(origin.url("/nothing-here.bin")) == "origin_not_found"


def test_resolve_web_page_is_not_a_file(origin: Origin) -> None:
    origin.add_html("/login")
    with pytest.raises(OrchestratorError) as caught:
        direct.resolve(origin.url("/login"), Credentials(), OPEN)
    assert caught.value.code == "not_a_file"
    assert caught.value.status == 422


def test_resolve_redirect_to_a_login_page_is_not_a_file(origin: Origin, origin2: Origin) -> None:
    origin2.add_html("/sso/login")
    origin.add_redirect("/private/model.safetensors", origin2.url("/sso/login"))
    assert resolve_code(origin.url("/private/model.safetensors")) == "not_a_file"


def test_resolve_redirect_loop(origin: Origin) -> None:
    origin.add_redirect("/a", origin.url("/b"))
    origin.add_redirect("/b", origin.url("/a"))
    assert resolve_code(origin.url("/a")) == "too_many_redirects"


def test_resolve_unreachable_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # nothing listens there now
    with pytest.raises(OrchestratorError) as caught:
        direct.resolve(f"http://127.0.0.1:{port}/m.safetensors", Credentials(), OPEN)
    assert caught.value.code == "unreachable"
    assert "127.0.0.1" in caught.value.message


def test_sources_resolve_dispatches_to_direct(origin: Origin) -> None:
    origin.add_file("/m.bin", 10)
    assert sources.resolve(origin.url("/m.bin"), Credentials(), OPEN).source == "direct"


def test_private_targets_are_refused_when_asked(origin: Origin) -> None:
    origin.add_file("/m.bin", 10)
    with pytest.raises(OrchestratorError) as caught:
        sources.resolve(origin.url("/m.bin"), Credentials(), GUARDED)
    assert caught.value.code == "blocked_target"
    assert "--block-private off" in caught.value.message
    assert origin.requests_for("/m.bin") == []  # refused before any request
    # off (the default on loopback): the same link resolves
    assert sources.resolve(origin.url("/m.bin"), Credentials(), OPEN).size == 10
