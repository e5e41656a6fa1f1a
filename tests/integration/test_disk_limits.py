"""One origin cannot fill the disk: answers longer than announced, compressed ones, endless ones.

Each origin here is a small raw HTTP server, because it must do what well-behaved fakes
never do: announce one size and send another, send gzip when asked for identity, or
send a body with no length that never ends.
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_aria2

pytestmark = [pytest.mark.integration, needs_aria2]

MiB = 1024 * 1024
ENGINES = ["aria2", "requests"]


class RawOrigin:
    """answer(method, path) -> (head lines, body chunks): whatever a test wants on the wire."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.sent = 0
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                request = connection.recv(65536).decode("latin-1")
                method, path = request.split(" ")[:2]
                head, body = self.answer(method, path)
                connection.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
                if method == "HEAD":
                    return
                for chunk in body:
                    if self.stopping.is_set():
                        return
                    connection.sendall(chunk)
                    self.sent += len(chunk)
            except (OSError, ValueError):
                return

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()


def paced(total: int | None, rate: int) -> Iterator[bytes]:
    """`total` bytes (forever when None) at about `rate` bytes a second."""
    chunk, sent, started = bytes(64 * 1024), 0, time.monotonic()
    while total is None or sent < total:
        piece = chunk if total is None else chunk[: total - sent]
        yield piece
        sent += len(piece)
        delay = started + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


@pytest.fixture
def raw():
    made: list[RawOrigin] = []

    def make(answer) -> RawOrigin:
        made.append(RawOrigin(answer))
        return made[-1]

    yield make
    for origin in made:
        origin.close()


def server_for(server_factory, engine: str, *extra: str):
    return server_factory("--engine", "auto" if engine == "aria2" else "requests", *extra)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_answer_longer_than_announced_is_stopped_and_its_data_removed(server_factory, raw, engine):
    def answer(method: str, path: str):
        size = MiB if method == "HEAD" else 48 * MiB  # the look-ahead hears 1 MiB; the GET says 48
        head = ["HTTP/1.1 200 OK", f"Content-Length: {size}", "Content-Type: application/octet-stream"]
        return head, paced(size, 4 * MiB)

    origin = raw(answer)
    server = server_for(server_factory, engine)
    job = server.submit(origin.url("/model.safetensors"), "lora")
    done = server.wait_for(job["id"], {"failed", "completed"}, timeout=60)
    assert done["state"] == "failed" and done["error"]["code"] == "size_mismatch", done
    assert server.model_files() == [] and server.staging_files() == []
    assert origin.sent < 24 * MiB  # stopped early, not after the whole lie


def test_a_compressed_answer_is_never_inflated_into_the_models_folder(server_factory, raw):
    packed = gzip.compress(bytes(64 * MiB))  # 64 MiB of zeros: about 64 KB on the wire

    def answer(method: str, path: str):
        head = [
            "HTTP/1.1 200 OK",
            f"Content-Length: {len(packed)}",
            "Content-Type: application/octet-stream",
            "Content-Encoding: gzip",  # although the app asks for identity
        ]
        return head, [packed]

    origin = raw(answer)
    server = server_for(server_factory, "requests")
    job = server.submit(origin.url("/zeros.safetensors"), "lora")
    done = server.wait_for(job["id"], {"failed", "completed"}, timeout=60)
    assert done["state"] == "failed" and done["error"]["code"] == "origin_error", done["error"]
    assert "compressed" in done["error"]["message"]
    assert server.model_files() == []
    written = sum(p.stat().st_size for p in (server.models / ".staging").rglob("*") if p.is_file())
    assert written <= len(packed)  # never the 64 MiB it would inflate to


@pytest.fixture
def small_models(tmp_path) -> Iterator[Path]:
    """A 40 MiB tmpfs as the models folder: a disk that really fills up."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "models"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_endless_answer_of_unknown_size_cannot_fill_the_disk(
    server_factory, raw, small_models, origin, engine
):
    def answer(method: str, path: str):
        head = ["HTTP/1.1 200 OK", "Content-Type: application/octet-stream", "Connection: close"]
        return head, paced(None, 16 * MiB)  # no length, never ends

    endless = raw(answer)
    server = server_for(server_factory, engine)
    job = server.submit(endless.url("/forever.bin"), "lora")
    done = server.wait_for(job["id"], {"failed", "completed"}, timeout=60)
    assert done["state"] == "failed" and done["error"]["code"] in ("disk_full", "disk_error"), done
    # its partial data is freed: the disk has room again for a download that fits
    server.wait_until(job["id"], lambda _: shutil.disk_usage(small_models).used < 8 * MiB, timeout=30)
    data = origin.add_file("/fits.bin", 8 * MiB)
    after = server.wait_settled(server.submit(origin.url("/fits.bin"), "vae")["id"])
    assert after["state"] == "completed" and (small_models / "vae" / "fits.bin").read_bytes() == data


def mount_tmpfs(where: Path, *options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(("size=4m", *options)), "tmpfs", str(where)],
        capture_output=True,
    )
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")


@pytest.fixture
def mounts():
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made: list[Path] = []
    yield made
    for where in made:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_type_folder_on_another_disk_that_is_full_is_named_and_left_clean(
    server_factory, origin, mounts, tmp_path
):
    """models/lora is a 4 MiB disk of its own: the 8 MiB file is copied there first (another file
    system), runs out of room, and the job says so; no .part is left in the folder."""
    lora = tmp_path / "models" / "lora"
    mount_tmpfs(lora)
    mounts.append(lora)
    origin.add_file("/big.safetensors", 8 * MiB)
    server = server_factory()
    job = server.submit(origin.url("/big.safetensors"), "lora")
    done = server.wait_for(job["id"], {"failed", "completed"}, timeout=60)
    assert done["state"] == "failed" and done["error"]["code"] == "disk_full", done
    assert "lora/" in done["error"]["message"]
    assert list(lora.iterdir()) == []


def test_a_read_only_type_folder_is_named(server_factory, origin, mounts, tmp_path):
    vae = tmp_path / "models" / "vae"
    mount_tmpfs(vae, "ro")
    mounts.append(vae)
    origin.add_file("/v.safetensors", 1 * MiB)
    server = server_factory()
    job = server.submit(origin.url("/v.safetensors"), "vae")
    done = server.wait_for(job["id"], {"failed", "completed"}, timeout=60)
    assert done["state"] == "failed" and done["error"]["code"] == "folder_not_writable", done
