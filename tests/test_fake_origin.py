"""Self-tests for the fake HTTP origin used by the integration tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

try:
    from tests.fakes.origin import Origin, parse_range
except ModuleNotFoundError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from fakes.origin import Origin, parse_range

UTF8_DISPOSITION = "attachment; filename*=UTF-8''%E6%A8%A1%E5%9E%8B.safetensors"


@pytest.fixture
def origin() -> Iterator[Origin]:
    with Origin() as o:
        yield o


def _read_until_error(url: str) -> bytes:
    """GET url, returning whatever body bytes arrived before the connection died."""
    got = bytearray()
    try:
        with requests.get(url, stream=True, timeout=5) as r:
            for chunk in r.iter_content(8192):
                got += chunk
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
        pass
    return bytes(got)


def _raw_exchange(origin: Origin, request: bytes) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    with socket.create_connection((origin.host, origin.port), timeout=3) as sock:
        sock.sendall(request)
        out = bytearray()
        while chunk := sock.recv(65536):
            out += chunk
    return bytes(out)


def test_full_get_matches_returned_bytes(origin: Origin) -> None:
    data = origin.add_file("/m/model.safetensors", 300_000)
    r = requests.get(origin.url("/m/model.safetensors"), timeout=5)
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Content-Length"] == "300000"
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["ETag"] and r.headers["Last-Modified"]
    assert origin.stats("/m/model.safetensors") == {"gets": 1, "heads": 0, "bytes_sent": 300_000}


def test_bytes_are_deterministic_and_query_is_ignored(origin: Origin) -> None:
    a = origin.add_file("/a.bin", 1000)
    assert Origin().add_file("/a.bin", 1000) == a  # same path, same bytes, any instance
    assert origin.add_file("/b.bin", 1000, seed=7) == Origin().add_file("/x", 1000, seed=7)
    assert origin.add_file("/c.bin", data=b"hello") == b"hello"
    r = requests.get(origin.url("/a.bin?token=abc&x=1"), timeout=5)
    assert r.content == a
    rec = origin.requests_for("/a.bin")[0]
    assert (rec.method, rec.path, rec.query) == ("GET", "/a.bin", "token=abc&x=1")


def test_head_headers_and_verbatim_disposition(origin: Origin) -> None:
    origin.add_file("/f", 4096, content_disposition=UTF8_DISPOSITION, content_type="x/y")
    r = requests.head(origin.url("/f"), timeout=5)
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["Content-Length"] == "4096"
    assert r.headers["Content-Type"] == "x/y"
    # requests decodes header values as latin-1; the value is pure ASCII so it is exact.
    assert r.headers["Content-Disposition"] == UTF8_DISPOSITION
    assert origin.stats("/f") == {"gets": 0, "heads": 1, "bytes_sent": 0}


def test_head_not_allowed(origin: Origin) -> None:
    data = origin.add_file("/nohead", 100, head_allowed=False)
    assert requests.head(origin.url("/nohead"), timeout=5).status_code == 405
    assert requests.get(origin.url("/nohead"), timeout=5).content == data


def test_range_slice_suffix_and_416(origin: Origin) -> None:
    data = origin.add_file("/r", 10_000)
    url = origin.url("/r")
    r = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=5)
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "bytes 100-199/10000"
    assert r.content == data[100:200]

    r = requests.get(url, headers={"Range": "bytes=9000-"}, timeout=5)
    assert r.headers["Content-Range"] == "bytes 9000-9999/10000"
    assert r.content == data[9000:]

    r = requests.get(url, headers={"Range": "bytes=-500"}, timeout=5)
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "bytes 9500-9999/10000"
    assert r.content == data[-500:]

    r = requests.get(url, headers={"Range": "bytes=10000-"}, timeout=5)
    assert r.status_code == 416
    assert r.headers["Content-Range"] == "bytes */10000"
    assert r.content == b""


def test_parse_range_edge_cases() -> None:
    assert parse_range("bytes=0-99999", 10) == (0, 9)  # end clamped to the file
    assert parse_range("bytes=-50", 10) == (0, 9)  # suffix longer than the file
    assert parse_range("bytes=0-1,5-6", 10) is None  # multi-range: full body
    assert parse_range("bytes=5-2", 10) is None  # invalid: ignored
    assert parse_range("items=0-1", 10) is None


def test_accept_ranges_false_ignores_range(origin: Origin) -> None:
    data = origin.add_file("/norange", 5000, accept_ranges=False)
    r = requests.get(origin.url("/norange"), headers={"Range": "bytes=100-199"}, timeout=5)
    assert r.status_code == 200
    assert "Accept-Ranges" not in r.headers
    assert r.content == data


def test_cross_host_redirect(origin: Origin) -> None:
    with Origin(host="127.0.0.2") as cdn:
        data = cdn.add_file("/blob/abc", 20_000)
        origin.add_redirect("/dl/model", cdn.url("/blob/abc?sig=1"))
        r = requests.get(origin.url("/dl/model"), timeout=5)
        assert r.status_code == 200
        assert r.content == data
        assert r.history[0].status_code == 302
        assert r.history[0].headers["Location"] == cdn.url("/blob/abc?sig=1")
        assert cdn.base_url.startswith("http://127.0.0.2:")
        assert cdn.requests_for("/blob/abc")[0].client[0] == "127.0.0.1"


def test_throttle_per_connection(origin: Origin) -> None:
    data = origin.add_file("/slow", 256 * 1024, rate=512 * 1024)
    t0 = time.monotonic()
    assert requests.get(origin.url("/slow"), timeout=5).content == data
    assert time.monotonic() - t0 >= 0.4

    # Four parallel connections each get the full rate: ~0.5 s, not ~2 s if it were shared.
    origin.add_file("/slow4", 64 * 1024, rate=128 * 1024)
    results: list[int] = []

    def fetch() -> None:
        results.append(len(requests.get(origin.url("/slow4"), timeout=5).content))

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    assert results == [64 * 1024] * 4
    assert 0.4 <= elapsed < 1.5


def test_drop_after_then_serves_normally(origin: Origin) -> None:
    size = 200_000
    data = origin.add_file("/flaky", size, drop_after=50_000, drop_times=1)
    first = _read_until_error(origin.url("/flaky"))
    assert len(first) < size
    assert first == data[: len(first)]
    assert requests.get(origin.url("/flaky"), timeout=5).content == data
    assert origin.stats("/flaky")["gets"] == 2


def test_drop_writes_exactly_drop_after_bytes(origin: Origin) -> None:
    origin.add_file("/cut", 10_000, drop_after=1234)
    raw = _raw_exchange(origin, b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Length: 10000" in head
    assert len(body) == 1234
    assert origin.stats("/cut")["bytes_sent"] == 1234


def test_error_statuses(origin: Origin) -> None:
    origin.add_file("/gone", 10, status=404)
    origin.add_file("/private", 10, status=403)
    origin.add_file("/broken", 10, status=500)
    r = requests.get(origin.url("/gone"), timeout=5)
    assert (r.status_code, r.text) == (404, "Not Found")
    assert r.headers["Content-Type"].startswith("text/plain")
    r = requests.get(origin.url("/private"), timeout=5)
    assert r.status_code == 403
    assert r.headers["Content-Type"] == "application/json"
    assert "error" in r.json()
    assert requests.get(origin.url("/broken"), timeout=5).status_code == 500
    assert requests.get(origin.url("/never-added"), timeout=5).status_code == 404


def test_html_page(origin: Origin) -> None:
    origin.add_html("/login")
    r = requests.get(origin.url("/login"), timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Sign in" in r.text


def test_requests_are_recorded_with_headers(origin: Origin) -> None:
    origin.add_file("/secure", 10)
    headers = {"Authorization": "Bearer hf_secret", "Range": "bytes=0-3"}
    requests.get(origin.url("/secure"), headers=headers, timeout=5)
    rec = origin.requests_for("/secure")[0]
    assert rec.header("authorization") == "Bearer hf_secret"
    assert rec.headers["Authorization"] == "Bearer hf_secret"
    assert rec.range == "bytes=0-3"
    assert origin.requests[-1] is rec


def test_corrupt_same_length_different_bytes(origin: Origin) -> None:
    data = origin.add_file("/bad", 4096, corrupt=True)
    body = requests.get(origin.url("/bad"), timeout=5).content
    assert len(body) == len(data)
    assert body != data
    ranged = requests.get(origin.url("/bad"), headers={"Range": "bytes=10-19"}, timeout=5)
    assert ranged.content != data[10:20]


def test_keep_alive_and_connection_close(origin: Origin) -> None:
    origin.add_file("/k", 100)
    with requests.Session() as s:
        s.get(origin.url("/k"), timeout=5)
        s.get(origin.url("/k"), timeout=5)
    clients = {rec.client for rec in origin.requests_for("/k")}
    assert len(clients) == 1  # the second request reused the connection

    # With Connection: close the server answers once and closes, so recv() reaches EOF.
    raw = _raw_exchange(origin, b"GET /k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200")
    assert b"Connection: close" in raw
    assert len(raw.partition(b"\r\n\r\n")[2]) == 100


def test_stop_is_prompt_and_closes_socket() -> None:
    o = Origin().start()
    data = o.add_file("/x", 10)
    # A kept-alive connection that has finished a request and now sits idle.
    idle = socket.create_connection((o.host, o.port), timeout=3)
    idle.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = b""
    while not reply.endswith(b"\r\n\r\n" + data):  # headers and body may arrive apart
        reply += idle.recv(4096)
    port = o.port
    t0 = time.monotonic()
    o.stop()
    assert time.monotonic() - t0 < 1.0
    assert idle.recv(1) == b""  # the server hung up on it
    idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
