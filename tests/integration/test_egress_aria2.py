"""A real aria2c daemon downloading through the egress proxy: every hop is checked where it connects.

The daemon runs with the project's own aria2.conf (its runtime copy) and is driven over
RPC with aria2p, each download getting the proxy's per-download options, as the app
will. Host names are resolved by the proxy's test resolver, so aria2 never resolves
them: 127.0.0.8 plays a public CDN, 127.0.0.9 (and 127.0.0.1) the machine's own network.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aria2p
import pytest
import requests

from orchestrator.egress import Refusal
from orchestrator.engines.aria2_daemon import aria2c_command, free_port, write_runtime_config
from tests.conftest import needs_aria2
from tests.fakes.origin import Origin
from tests.unit.test_egress import BLOCKED, PUBLIC, NameTable, running_proxy, via

pytestmark = [pytest.mark.integration, needs_aria2]

MiB = 1024 * 1024
FINAL = {"complete", "error", "removed"}


class Aria2:
    """aria2c with the project's config on a free port, its secret in the 0600 runtime config."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.downloads = workdir / "downloads"
        self.secret = secrets.token_urlsafe(16)
        self.port = free_port()
        config = write_runtime_config(workdir / "state", self.secret, self.port, self.downloads)
        self.log = workdir / "aria2.log"
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(
                [*aria2c_command(config, owner_pid=os.getpid()), *extra],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.client = aria2p.Client(host="http://127.0.0.1", port=self.port, secret=self.secret)
        deadline = time.monotonic() + 15
        while True:
            try:
                self.client.get_version()
                return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"aria2c did not start: {self.log.read_text()}") from None
                time.sleep(0.05)

    def fetch(self, url: str, name: str, options: dict[str, str], timeout: float = 60) -> dict[str, str]:
        """Add a download, wait until it ends; its final status."""
        gid = self.client.add_uri([url], options={**options, "out": name})
        deadline = time.monotonic() + timeout
        keys = ["status", "errorCode", "errorMessage", "completedLength"]
        while True:
            status = self.client.tell_status(gid, keys)
            if status["status"] in FINAL:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"download still {status}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def aria2(tmp_path: Path) -> Iterator[Aria2]:
    daemon = Aria2(tmp_path)
    yield daemon
    daemon.stop()


@pytest.fixture
def public_origin() -> Iterator[Origin]:
    with Origin(PUBLIC) as server:
        yield server


@pytest.fixture
def private_origin() -> Iterator[Origin]:
    with Origin(BLOCKED) as server:
        yield server


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class _Doorway(BaseHTTPRequestHandler):
    """HEAD says the file is here (what a check sees); GET redirects elsewhere (what aria2 gets)."""

    protocol_version = "HTTP/1.1"
    location = ""
    gets = 0
    port = 0

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1048576")
        self.end_headers()

    def do_GET(self) -> None:
        type(self).gets += 1
        self.send_response(302)
        self.send_header("Location", self.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def doorway() -> Iterator[type[_Doorway]]:
    class Doorway(_Doorway):  # a class of its own: the test sets where it points
        pass

    handler = Doorway
    server = ThreadingHTTPServer((PUBLIC, 0), handler)
    server.daemon_threads = True
    handler.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler
    server.shutdown()
    server.server_close()


# -- the tests --------------------------------------------------------------------------------


def test_a_download_through_the_proxy_arrives_intact(aria2: Aria2, public_origin: Origin) -> None:
    data = public_origin.add_file("/models/model.safetensors", 24 * MiB)
    names = NameTable({"cdn.example": [PUBLIC]})
    with running_proxy(names) as proxy:
        url = f"http://cdn.example:{public_origin.port}/models/model.safetensors?token=abc"
        status = aria2.fetch(url, "model.safetensors", proxy.aria2_options("job-1"))
        refusals = proxy.refusals("job-1")
    assert status["status"] == "complete", status
    assert sha256_file(aria2.downloads / "model.safetensors") == hashlib.sha256(data).hexdigest()
    assert refusals == []
    seen = public_origin.requests_for("/models/model.safetensors")
    assert len(seen) > 1  # aria2 still splits the file over several connections
    for request in seen:
        assert request.query == "token=abc"
        assert request.header("Host") == f"cdn.example:{public_origin.port}"
        assert request.header("Proxy-Authorization") is None


@pytest.mark.parametrize("inside", ["internal.example", "127.0.0.1"])
def test_a_redirect_to_the_inside_is_refused_at_the_hop(
    aria2: Aria2, doorway: type[_Doorway], private_origin: Origin, inside: str
) -> None:
    """The link checks out (HEAD 200 from a public host); aria2's GET is sent inside, to a
    private host or to aria2's own RPC port, and the proxy refuses that hop."""
    private_origin.add_file("/secret", 100)
    target = (
        f"{inside}:{private_origin.port}/secret"
        if inside != "127.0.0.1"
        else f"127.0.0.1:{aria2.port}/jsonrpc"
    )
    doorway.location = f"http://{target}"
    names = NameTable({"cdn.example": [PUBLIC], "internal.example": [BLOCKED]})
    url = f"http://cdn.example:{doorway.port}/model.bin"
    with running_proxy(names) as proxy:
        assert requests.head(url, proxies=via(proxy, "check"), timeout=10).status_code == 200
        status = aria2.fetch(url, "model.bin", proxy.aria2_options("job-2"))
        refusals = proxy.refusals("job-2")
    # how aria2 reports the proxy's 403: errorCode 22 with the status in the message
    assert status["status"] == "error"
    assert status["errorCode"] == "22" and "status=403" in status["errorMessage"]
    address = BLOCKED if inside == "internal.example" else "127.0.0.1"
    assert refusals == [Refusal(inside, address, "a loopback address")]
    error = refusals[0].error()
    assert error.code == "blocked_target" and f"{inside} ({address}) is a loopback address" in error.message
    assert doorway.gets >= 1 and private_origin.requests == []
    assert not (aria2.downloads / "model.bin").exists()


def test_a_name_rebound_after_the_check_is_refused(
    aria2: Aria2, public_origin: Origin, private_origin: Origin
) -> None:
    """The app's own look sees the public address; when aria2's request comes, the name points
    inside. The proxy resolves it itself and refuses: it never connects on an older answer."""
    public_origin.add_file("/model.bin", 2 * MiB)
    private_origin.add_file("/model.bin", 2 * MiB)
    names = NameTable({"rebind.example": [PUBLIC]}, then={"rebind.example": [BLOCKED]})
    first = asyncio.run(
        names("rebind.example", 80)
    )  # the app's own check (orchestrator/policy.py) looks first
    assert [str(a) for a in first] == [PUBLIC]
    with running_proxy(names) as proxy:
        url = f"http://rebind.example:{public_origin.port}/model.bin"
        status = aria2.fetch(url, "model.bin", proxy.aria2_options("job-3"))
        refusals = proxy.refusals("job-3")
    assert status["errorCode"] == "22" and "status=403" in status["errorMessage"]
    assert refusals == [Refusal("rebind.example", BLOCKED, "a loopback address")]
    assert private_origin.requests == [] and public_origin.requests == []


def test_the_connection_goes_to_the_address_that_was_checked(
    aria2: Aria2, public_origin: Origin, private_origin: Origin
) -> None:
    """The name switches inside right after the proxy's look-up: the transfer still comes from
    the checked address, and nothing reaches the inside."""
    data = public_origin.add_file("/model.bin", 512 * 1024)
    private_origin.add_file("/model.bin", 512 * 1024)
    names = NameTable({"pin.example": [PUBLIC]}, then={"pin.example": [BLOCKED]})
    with running_proxy(names) as proxy:
        url = f"http://pin.example:{public_origin.port}/model.bin"
        options = {**proxy.aria2_options("job-4"), "split": "1", "max-connection-per-server": "1"}
        status = aria2.fetch(url, "model.bin", options)
    assert status["status"] == "complete", status
    assert sha256_file(aria2.downloads / "model.bin") == hashlib.sha256(data).hexdigest()
    assert names.calls == ["pin.example"]
    assert private_origin.requests == []


def test_requests_without_the_download_credentials_get_407(aria2: Aria2, public_origin: Origin) -> None:
    public_origin.add_file("/model.bin", MiB)
    names = NameTable({"cdn.example": [PUBLIC]})
    with running_proxy(names) as proxy:
        url = f"http://cdn.example:{public_origin.port}/model.bin"
        anonymous = aria2.fetch(url, "a.bin", {"all-proxy": proxy.url})
        user, _ = proxy.credentials_for("job-5")
        guessed = aria2.fetch(url, "b.bin", {"all-proxy": f"http://{user}:guess@127.0.0.1:{proxy.port}"})
    for status in (anonymous, guessed):
        assert status["errorCode"] == "22" and "status=407" in status["errorMessage"], status
    assert public_origin.requests == []


# -- https through CONNECT ------------------------------------------------------------------------


class _TlsFile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    data = b""
    gets = 0
    port = 0

    def do_GET(self) -> None:
        type(self).gets += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        self.wfile.write(self.data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tls_origin(tmp_path: Path) -> Iterator[tuple[type[_TlsFile], Path]]:
    """An https origin on the "public" address with a self-signed certificate for secure.example."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make the test certificate (apt install openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=secure.example",
         "-addext", "subjectAltName=DNS:secure.example"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    class TlsFile(_TlsFile):
        data = os.urandom(3 * MiB)

    handler = TlsFile
    server = ThreadingHTTPServer((PUBLIC, 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    handler.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler, cert
    server.shutdown()
    server.server_close()


def test_https_is_tunnelled_with_connect_and_checked_too(
    tmp_path: Path, tls_origin: tuple[type[_TlsFile], Path], private_origin: Origin
) -> None:
    origin, cert = tls_origin
    daemon = Aria2(tmp_path, f"--ca-certificate={cert}")
    names = NameTable({"secure.example": [PUBLIC], "inside.example": [BLOCKED]})
    try:
        with running_proxy(names) as proxy:
            options = proxy.aria2_options("job-6")
            good = daemon.fetch(f"https://secure.example:{origin.port}/model.bin", "model.bin", options)
            bad = daemon.fetch(f"https://inside.example:{private_origin.port}/x", "x.bin", options)
            refusals = proxy.refusals("job-6")
    finally:
        daemon.stop()
    assert good["status"] == "complete", good
    assert sha256_file(daemon.downloads / "model.bin") == hashlib.sha256(origin.data).hexdigest()
    # a refused CONNECT is a generic error to aria2 (retried, then errorCode 1): the app reads the refusal
    assert bad["status"] == "error" and bad["errorCode"] == "1", bad
    assert "Proxy connection failed" in bad["errorMessage"]
    assert refusals == [Refusal("inside.example", BLOCKED, "a loopback address")]
    assert private_origin.requests == []
