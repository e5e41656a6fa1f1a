"""The egress proxy on its own: the address policy, and real clients through a real proxy.

Hosts are names a test resolver maps to chosen loopback addresses; the policy given to
the proxy counts 127.0.0.8 as the "public" internet, everything else as the default says.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from orchestrator.egress import (
    AddressPolicy,
    EgressProxy,
    Limits,
    Refusal,
    Resolver,
    default_policy,
    system_resolver,
)
from orchestrator.policy import IPAddress
from tests.fakes.origin import Origin

PUBLIC = "127.0.0.8"  # stands in for a public address
BLOCKED = "127.0.0.9"  # a loopback address the policy refuses, as it would any private one
MiB = 1024 * 1024


def public_on_loopback(host: str, address: IPAddress) -> str | None:
    return None if str(address) == PUBLIC else default_policy(host, address)


class NameTable:
    """A resolver from a dict of name -> addresses; `then` holds the answers after the first look-up."""

    def __init__(self, names: dict[str, list[str]], then: dict[str, list[str]] | None = None) -> None:
        self.names = names
        self.then = then or {}
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        answer = self.then.get(host) if host in self.calls else None
        self.calls.append(host)
        answer = answer or self.names.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.ip_address(a) for a in answer]


class ProxyThread:
    """An EgressProxy running on its own event loop in a thread, for synchronous tests."""

    def __init__(self, proxy: EgressProxy) -> None:
        self.proxy = proxy
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="egress")

    def __enter__(self) -> EgressProxy:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)
        return self.proxy

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def running_proxy(
    resolver: Resolver, policy: AddressPolicy = public_on_loopback, limits: Limits | None = None
) -> Iterator[EgressProxy]:
    with ProxyThread(EgressProxy(policy, resolver, limits=limits)) as proxy:
        yield proxy


def proxy_url(proxy: EgressProxy, download_id: str) -> str:
    user, password = proxy.credentials_for(download_id)
    return f"http://{user}:{password}@127.0.0.1:{proxy.port}"


def via(proxy: EgressProxy, download_id: str) -> dict[str, str]:
    return {"http": proxy_url(proxy, download_id)}


@pytest.fixture
def public_origin() -> Iterator[Origin]:
    with Origin(PUBLIC) as server:
        yield server


@pytest.fixture
def private_origin() -> Iterator[Origin]:
    with Origin(BLOCKED) as server:
        yield server


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[int]:
    """A plain TCP echo on the "public" address: what a CONNECT tunnel carries is not HTTP."""
    server = socketserver.ThreadingTCPServer((PUBLIC, 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def raw_request(proxy: EgressProxy, text: str, timeout: float = 10) -> bytes:
    """Send a request as bytes, read until the proxy closes."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout) as sock:
        sock.sendall(text.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def auth_header(proxy: EgressProxy, download_id: str) -> str:
    user, password = proxy.credentials_for(download_id)
    return "Proxy-Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def connect(proxy: EgressProxy, target: str, download_id: str = "dl") -> tuple[socket.socket, bytes]:
    """Open a CONNECT tunnel; return the socket and the proxy's answer head."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(
        f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth_header(proxy, download_id)}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    return sock, head


# -- the policy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.255.0.9", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fc00::1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("100.64.0.1", "a shared (carrier-grade NAT) address"),
        ("100.127.255.254", "a shared (carrier-grade NAT) address"),
        ("169.254.169.254", "a link-local address"),  # the cloud metadata service
        ("fe80::1", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("239.255.255.250", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("fec0::1", "a site-local address"),
        ("240.0.0.1", "a private address"),
        ("255.255.255.255", "a private address"),
        ("192.0.2.10", "a private address"),  # documentation range
        ("2001:db8::1", "a private address"),
        ("::ffff:127.0.0.1", "a loopback address in IPv6 form"),
        ("::ffff:10.0.0.1", "a private address in IPv6 form"),
        ("::ffff:169.254.169.254", "a link-local address in IPv6 form"),
        ("2002:7f00:1::", "a loopback address in IPv6 form"),  # 6to4 around 127.0.0.1
        ("2002:c0a8:101::", "a private address in IPv6 form"),  # 6to4 around 192.168.1.1
        ("64:ff9b::7f00:1", "a loopback address in IPv6 form"),  # NAT64 around 127.0.0.1
        ("64:ff9b::a00:1", "a private address in IPv6 form"),
        ("64:ff9b:1::a00:1", "a reserved address"),  # local-use NAT64 (RFC 8215)
        ("::127.0.0.1", "a reserved address"),  # IPv4-compatible, deprecated
        ("2001::1", "a private address"),  # Teredo
    ],
)
def test_policy_refuses_every_non_public_form(address: str, reason: str) -> None:
    assert default_policy("files.example", ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808",
     "2002:808:808::"],
)  # fmt: skip
def test_policy_allows_public_addresses_also_wrapped(address: str) -> None:
    assert default_policy("files.example", ipaddress.ip_address(address)) is None


def test_system_resolver_answers_literals_without_a_name_server() -> None:
    assert asyncio.run(system_resolver("127.0.0.9", 80)) == [ipaddress.ip_address("127.0.0.9")]
    assert asyncio.run(system_resolver("::1", 443)) == [ipaddress.ip_address("::1")]


def test_a_refusal_becomes_the_error_people_see() -> None:
    error = Refusal("files.example", "10.0.0.5", "a private address").error()
    assert error.code == "blocked_target" and error.status == 403
    assert "files.example (10.0.0.5) is a private address" in error.message


# -- plain http through the proxy ---------------------------------------------------------------


def test_forwards_a_download_in_origin_form_and_keeps_the_bytes(public_origin: Origin) -> None:
    data = public_origin.add_file("/models/a.safetensors", 3 * MiB)
    names = NameTable({"cdn.example": [PUBLIC]})
    with running_proxy(names) as proxy:
        url = f"http://cdn.example:{public_origin.port}/models/a.safetensors?sig=abc"
        answer = requests.get(url, proxies=via(proxy, "dl"), timeout=30)
        ranged = requests.get(url, proxies=via(proxy, "dl"), headers={"Range": "bytes=10-19"}, timeout=30)
    assert (
        answer.status_code == 200 and hashlib.sha256(answer.content).digest() == hashlib.sha256(data).digest()
    )
    assert answer.headers["Connection"] == "close"
    assert ranged.status_code == 206 and ranged.content == data[10:20]
    seen = public_origin.requests_for("/models/a.safetensors")[0]
    assert (seen.path, seen.query) == ("/models/a.safetensors", "sig=abc")
    assert seen.header("Host") == f"cdn.example:{public_origin.port}"
    assert seen.header("Proxy-Authorization") is None and seen.header("Connection") == "close"


def test_requests_without_the_download_credentials_get_407(public_origin: Origin) -> None:
    public_origin.add_file("/f.bin", 1000)
    names = NameTable({"cdn.example": [PUBLIC]})
    url = f"http://cdn.example:{public_origin.port}/f.bin"
    with running_proxy(names) as proxy:
        user, _ = proxy.credentials_for("dl")
        anonymous = requests.get(url, proxies={"http": proxy.url}, timeout=10)
        wrong = requests.get(url, proxies={"http": f"http://{user}:nope@127.0.0.1:{proxy.port}"}, timeout=10)
        assert requests.get(url, proxies=via(proxy, "dl"), timeout=10).status_code == 200
        old = proxy_url(proxy, "dl")
        proxy.forget("dl")
        forgotten = requests.get(url, proxies={"http": old}, timeout=10)
    for answer in (anonymous, wrong, forgotten):
        assert answer.status_code == 407
        assert answer.headers["Proxy-Authenticate"].startswith("Basic")
    assert public_origin.stats("/f.bin")["gets"] == 1  # only the authenticated request got through


def test_credentials_are_per_download_and_stable() -> None:
    with running_proxy(NameTable({})) as proxy:
        first = proxy.credentials_for("a")
        assert proxy.credentials_for("a") == first
        assert proxy.credentials_for("b") != first
        options = proxy.aria2_options("a")
    assert options["all-proxy"] == options["http-proxy"] == options["https-proxy"] == proxy.url
    assert (options["all-proxy-user"], options["all-proxy-passwd"]) == first
    assert options["no-proxy"] == ""


def test_a_host_with_any_private_address_is_refused_and_recorded(
    public_origin: Origin, private_origin: Origin
) -> None:
    private_origin.add_file("/admin", 10)
    names = NameTable({"mixed.example": [PUBLIC, BLOCKED]})
    with running_proxy(names) as proxy:
        url = f"http://mixed.example:{private_origin.port}/admin"
        answer = requests.get(url, proxies=via(proxy, "dl"), timeout=10)
        other = proxy.refusals("someone-else")
        refusals = proxy.refusals("dl")
    assert answer.status_code == 403
    assert answer.text.startswith("blocked_target: mixed.example (127.0.0.9) is a loopback address")
    assert refusals == [Refusal("mixed.example", BLOCKED, "a loopback address")]
    assert other == []
    assert private_origin.requests == [] and public_origin.requests == []


def test_the_proxy_connects_to_the_address_it_checked(public_origin: Origin, private_origin: Origin) -> None:
    """A resolver that switches to a private address after its first answer (DNS rebinding)."""
    data = public_origin.add_file("/f.bin", 100_000)
    private_origin.add_file("/f.bin", 100_000)
    names = NameTable({"rebind.example": [PUBLIC]}, then={"rebind.example": [BLOCKED]})
    with running_proxy(names) as proxy:
        url = f"http://rebind.example:{public_origin.port}/f.bin"
        answer = requests.get(url, proxies=via(proxy, "dl"), timeout=10)
        again = requests.get(url, proxies=via(proxy, "dl"), timeout=10)
    assert answer.status_code == 200 and answer.content == data
    assert again.status_code == 403  # the name now points inside: refused, not followed
    assert names.calls == ["rebind.example", "rebind.example"]  # one look-up per request, never a second
    assert private_origin.requests == []


def test_unresolvable_and_unreachable_hosts_get_502(public_origin: Origin) -> None:
    names = NameTable({"down.example": [PUBLIC]})
    closed = socket.socket()
    closed.bind((PUBLIC, 0))  # a port nothing listens on
    port = closed.getsockname()[1]
    with running_proxy(names) as proxy:
        unknown = requests.get("http://nowhere.example/f", proxies=via(proxy, "dl"), timeout=10)
        refused = requests.get(f"http://down.example:{port}/f", proxies=via(proxy, "dl"), timeout=10)
        refusals = proxy.refusals("dl")
    closed.close()
    assert unknown.status_code == 502 and "could not resolve nowhere.example" in unknown.text
    assert refused.status_code == 502 and f"could not connect to down.example port {port}" in refused.text
    assert refusals == []  # failures, not policy refusals


def test_an_answer_that_is_not_http_gets_502(echo: int) -> None:
    """The echo server sends the request back: a head that starts with GET is no response."""
    with running_proxy(NameTable({"mirror.example": [PUBLIC]})) as proxy:
        answer = requests.get(f"http://mirror.example:{echo}/", proxies=via(proxy, "dl"), timeout=10)
    assert answer.status_code == 502 and "not valid HTTP" in answer.text


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        ("GET ftp://cdn.example/f.bin HTTP/1.1", 501),
        ("GET https://cdn.example/f.bin HTTP/1.1", 501),  # https must be tunnelled
        ("GET /f.bin HTTP/1.1", 400),  # origin-form: someone took the proxy for a server
        ("GET http://user@/f.bin HTTP/1.1", 400),
        ("CONNECT cdn.example HTTP/1.1", 400),  # no port
        ("GET http://cdn.example/ SPDY/3", 400),
    ],
)
def test_requests_it_does_not_speak_are_refused_with_a_status(request_line: str, status: int) -> None:
    with running_proxy(NameTable({"cdn.example": [PUBLIC]})) as proxy:
        answer = raw_request(proxy, f"{request_line}\r\nHost: x\r\n{auth_header(proxy, 'dl')}\r\n\r\n")
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]


def test_a_head_larger_than_the_limit_gets_431() -> None:
    with running_proxy(NameTable({}), limits=Limits(max_head=4096)) as proxy:
        answer = raw_request(proxy, "GET http://cdn.example/ HTTP/1.1\r\nX-Big: " + "a" * 10_000 + "\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_a_client_that_never_finishes_its_request_gets_408() -> None:
    with running_proxy(NameTable({}), limits=Limits(head_timeout=0.3)) as proxy:
        answer = raw_request(proxy, "GET http://cdn.example/ HTTP/1.1\r\nHost: cdn.ex")
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_a_client_that_stops_reading_does_not_make_the_proxy_buffer_the_file(public_origin: Origin) -> None:
    """The origin can only send what socket buffers and the proxy's bounded buffers hold."""
    size = 96 * MiB
    data = public_origin.add_file("/big.bin", size)
    names = NameTable({"cdn.example": [PUBLIC]})
    with running_proxy(names) as proxy:
        user, password = proxy.credentials_for("dl")
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(
                f"GET http://cdn.example:{public_origin.port}/big.bin HTTP/1.1\r\n"
                f"Host: cdn.example\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode()
            )
            stalled = _wait_until_steady(lambda: public_origin.stats("/big.bin")["bytes_sent"])
            received = bytearray()
            while chunk := sock.recv(1024 * 1024):
                received += chunk
    assert 0 < stalled < size // 3
    body = bytes(received).split(b"\r\n\r\n", 1)[1]
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()  # and it resumes intact


def _wait_until_steady(read: Callable[[], int], timeout: float = 30) -> int:
    """The value once it has stopped changing for a second."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif now and time.monotonic() - since >= 1.0:
            return now
    raise AssertionError(f"still changing after {timeout} s: {last}")


# -- CONNECT tunnels --------------------------------------------------------------------------


def test_connect_tunnels_bytes_both_ways_on_any_port(echo: int) -> None:
    names = NameTable({"mirror.example": [PUBLIC]})
    with running_proxy(names) as proxy:
        sock, head = connect(proxy, f"mirror.example:{echo}")
        with sock:
            assert head.startswith(b"HTTP/1.1 200 ")
            payload = bytes(range(256)) * 4096
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)  # a half-close travels through
            back = bytearray()
            while chunk := sock.recv(65536):
                back += chunk
    assert bytes(back) == payload


def test_connect_to_a_private_address_is_refused_and_recorded(echo: int) -> None:
    names = NameTable({"inside.example": ["10.0.0.7"], "meta.example": ["169.254.169.254"]})
    with running_proxy(names) as proxy:
        for target in ("inside.example:443", "meta.example:80", f"127.0.0.1:{proxy.port}", "[::1]:22"):
            sock, head = connect(proxy, target)
            sock.close()
            assert head.startswith(b"HTTP/1.1 403 "), (target, head)
        refusals = proxy.refusals("dl")
    assert [(r.host, r.reason) for r in refusals] == [
        ("inside.example", "a private address"),
        ("meta.example", "a link-local address"),
        ("127.0.0.1", "a loopback address"),  # the proxy itself, the app, aria2's RPC port
        ("::1", "a loopback address"),
    ]


def test_connections_beyond_the_cap_get_503(echo: int) -> None:
    names = NameTable({"mirror.example": [PUBLIC]})
    with running_proxy(names, limits=Limits(max_connections=2)) as proxy:
        tunnels = [connect(proxy, f"mirror.example:{echo}") for _ in range(2)]
        assert all(head.startswith(b"HTTP/1.1 200 ") for _, head in tunnels)
        extra, head = connect(proxy, f"mirror.example:{echo}")
        extra.close()
        assert head.startswith(b"HTTP/1.1 503 ")
        for sock, _ in tunnels:
            sock.close()


def test_a_silent_tunnel_is_closed_after_the_idle_timeout(echo: int) -> None:
    names = NameTable({"mirror.example": [PUBLIC]})
    with running_proxy(names, limits=Limits(idle_timeout=0.5)) as proxy:
        sock, head = connect(proxy, f"mirror.example:{echo}")
        with sock:
            assert head.startswith(b"HTTP/1.1 200 ")
            assert sock.recv(1) == b""  # closed by the proxy, not by us or the echo server


def test_stopping_the_proxy_ends_its_tunnels(echo: int) -> None:
    names = NameTable({"mirror.example": [PUBLIC]})
    with running_proxy(names) as proxy:
        sock, head = connect(proxy, f"mirror.example:{echo}")
        assert head.startswith(b"HTTP/1.1 200 ")
    with sock:
        assert sock.recv(1) == b""


def test_refusals_are_logged_without_the_password(
    private_origin: Origin, caplog: pytest.LogCaptureFixture
) -> None:
    names = NameTable({"inside.example": [BLOCKED]})
    with caplog.at_level(logging.DEBUG), running_proxy(names) as proxy:
        _, password = proxy.credentials_for("dl")
        requests.get(f"http://inside.example:{private_origin.port}/x", proxies=via(proxy, "dl"), timeout=10)
        raw_request(
            proxy, f"GET http://inside.example/ HTTP/1.1\r\nProxy-Authorization: Basic {password}\r\n\r\n"
        )
    assert "inside.example" in caplog.text
    assert password not in caplog.text
