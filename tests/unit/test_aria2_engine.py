"""The aria2 engine: error mapping without a daemon, and a few checks with a real aria2c."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import aria2p
import pytest

from orchestrator.engines.aria2 import Aria2Engine, describe_error
from orchestrator.engines.aria2_daemon import EmbeddedDaemon, aria2c_path, free_port
from orchestrator.engines.base import ACTIVE, COMPLETE, ERROR, MISSING, PAUSED, REMOVED, WAITING, Transfer
from tests.fakes.origin import Origin

needs_aria2 = pytest.mark.skipif(aria2c_path() is None, reason="aria2c is not installed")


# -- error mapping (no daemon) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "ours", "http_status"),
    [
        ("3", "Resource not found", "origin_not_found", None),
        ("9", "No space left on device", "disk_full", None),
        ("13", "File already exists", "file_exists", None),
        ("24", "Authorization failed", "origin_forbidden", None),
        ("32", "Checksum validation failed", "checksum_mismatch", None),
        ("22", "Invalid response. status=403", "origin_forbidden", 403),
        ("22", "Invalid response. status=503", "origin_error", 503),
        ("22", "Invalid response. status=404", "origin_not_found", 404),
        ("22", "Invalid response. status=429", "origin_rate_limited", 429),
        ("22", "Invalid response", "origin_error", None),
        ("19", "Name resolution failed", "dns", None),
        ("999", "something new", "download_failed", None),
        (None, None, "download_failed", None),
    ],
)
def test_describe_error(code, message, ours: str, http_status) -> None:
    got_code, sentence, got_status = describe_error(code, message)
    assert got_code == ours
    assert got_status == http_status
    assert sentence and "status=" not in sentence


def test_status_from_an_error_answer() -> None:
    answer = [
        {
            "gid": "a",
            "status": "error",
            "totalLength": "100",
            "completedLength": "40",
            "downloadSpeed": "0",
            "errorCode": "22",
            "errorMessage": "Invalid response. status=403",
        }
    ]
    status = Aria2Engine._status("a", answer)
    assert status.state == ERROR
    assert (status.completed, status.total) == (40, 100)
    assert status.error_code == "origin_forbidden"
    assert status.http_status == 403


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("active", ACTIVE),
        ("waiting", WAITING),
        ("paused", PAUSED),
        ("complete", COMPLETE),
        ("removed", REMOVED),
        ("weird", MISSING),
    ],
)
def test_status_states(raw: str, state: str) -> None:
    answer = [
        {"gid": "a", "status": raw, "totalLength": "0", "completedLength": "0", "downloadSpeed": "1500"}
    ]
    status = Aria2Engine._status("a", answer)
    assert status.state == state
    assert status.total is None  # 0 means aria2 does not know yet
    assert status.error_code is None


@pytest.mark.parametrize("fault", [{"code": 1, "message": "GID not found"}, [], None])
def test_status_of_a_fault_is_missing(fault) -> None:
    assert Aria2Engine._status("g", fault).state == MISSING


def test_unreachable_daemon() -> None:
    engine = Aria2Engine(f"http://127.0.0.1:{free_port()}/jsonrpc", "secret", timeout=2)
    assert engine.reachable() is False
    info = engine.describe()
    assert info["connected"] is False
    assert info["version"] is None


def test_poll_of_nothing_asks_nothing(mocker) -> None:
    engine = Aria2Engine(f"http://127.0.0.1:{free_port()}/jsonrpc", "secret", timeout=2)
    post = mocker.spy(aria2p.Client, "post")
    assert engine.poll([]) == {}
    assert post.call_count == 0


# -- with a real aria2c ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedDaemon, str]]:
    if aria2c_path() is None:
        pytest.skip("aria2c is not installed")
    state = tmp_path_factory.mktemp("aria2-state")
    secret = secrets.token_urlsafe(16)
    port = free_port()
    process = EmbeddedDaemon(state, secret, port, state / "downloads")
    process.start()
    url = f"http://127.0.0.1:{port}/jsonrpc"
    probe = Aria2Engine(url, secret, timeout=2)
    deadline = time.monotonic() + 15
    while not probe.reachable():
        if not process.running or time.monotonic() > deadline:
            process.stop()
            log = (state / "aria2.log").read_text(errors="replace")
            raise RuntimeError(f"aria2c did not start:\n{log}")
        time.sleep(0.05)
    try:
        yield process, url
    finally:
        process.stop()


@pytest.fixture
def engine(daemon: tuple[EmbeddedDaemon, str]) -> Aria2Engine:
    process, url = daemon
    return Aria2Engine(url, process.secret, timeout=5)


def wait_state(engine: Aria2Engine, handle: str, states: set[str], timeout: float = 15):
    deadline = time.monotonic() + timeout
    while True:
        status = engine.poll([handle])[handle]
        if status.state in states:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"stayed {status.state}, wanted {states}: {status}")
        time.sleep(0.05)


@needs_aria2
def test_wrong_secret_is_not_reachable(daemon: tuple[EmbeddedDaemon, str]) -> None:
    _, url = daemon
    assert Aria2Engine(url, "not-the-secret", timeout=2).reachable() is False


@needs_aria2
def test_describe_a_running_daemon(engine: Aria2Engine) -> None:
    info = engine.describe()
    assert info["connected"] is True
    assert info["name"] == "aria2"
    assert info["version"].count(".") == 2


@needs_aria2
def test_download_completes_with_the_right_bytes(engine: Aria2Engine, origin: Origin, tmp_path: Path) -> None:
    data = origin.add_file("/m.safetensors", 1_500_000)
    handle = engine.start(
        Transfer(
            urls=[origin.url("/m.safetensors")],
            directory=tmp_path / "job",
            filename="model.safetensors",
            size=len(data),
        )
    )
    status = wait_state(engine, handle, {COMPLETE, ERROR})
    assert status.state == COMPLETE, status
    assert status.completed == status.total == len(data)
    assert (tmp_path / "job" / "model.safetensors").read_bytes() == data
    engine.forget(handle)
    assert engine.poll([handle])[handle].state == MISSING


@needs_aria2
def test_the_published_checksum_is_left_to_the_app_so_a_finished_file_frees_its_slot(
    engine: Aria2Engine, origin: Origin, tmp_path: Path
) -> None:
    """aria2 would re-read a finished file to check it, one file at a time, holding a download
    slot meanwhile; the pipeline hashes it faster after aria2 let go (pipeline/steps.py)."""
    origin.add_file("/m.bin", 200_000)
    handle = engine.start(
        Transfer(urls=[origin.url("/m.bin")], directory=tmp_path / "bad", filename="m.bin", sha256="0" * 64)
    )
    assert engine.verifies_sha256 is False
    assert wait_state(engine, handle, {COMPLETE, ERROR}).state == COMPLETE
    assert "checksum" not in engine.client.get_option(handle.split(".")[0])


@needs_aria2
def test_poll_of_three_transfers_is_one_rpc_request(
    engine: Aria2Engine, origin: Origin, tmp_path: Path, mocker
) -> None:
    handles = []
    for n in range(3):
        origin.add_file(f"/f{n}.bin", 50_000 + n)
        handles.append(
            engine.start(Transfer(urls=[origin.url(f"/f{n}.bin")], directory=tmp_path, filename=f"f{n}.bin"))
        )
    for handle in handles:
        wait_state(engine, handle, {COMPLETE})
    post = mocker.spy(aria2p.Client, "post")
    statuses = engine.poll([*handles, "0123456789abcdef"])
    assert post.call_count == 1
    assert [statuses[h].state for h in handles] == [COMPLETE] * 3
    assert [statuses[h].completed for h in handles] == [50_000, 50_001, 50_002]
    assert statuses["0123456789abcdef"].state == MISSING


@needs_aria2
def test_unknown_gid_is_missing(engine: Aria2Engine) -> None:
    assert engine.poll(["00000000deadbeef"])["00000000deadbeef"].state == MISSING


@needs_aria2
def test_pause_resume_remove(engine: Aria2Engine, origin: Origin, tmp_path: Path) -> None:
    data = origin.add_file("/slow.bin", 3_000_000, rate=150_000)
    handle = engine.start(
        Transfer(urls=[origin.url("/slow.bin")], directory=tmp_path, filename="slow.bin", size=len(data))
    )
    wait_state(engine, handle, {ACTIVE})
    engine.pause(handle)
    paused = wait_state(engine, handle, {PAUSED})
    assert paused.completed < len(data)
    engine.resume(handle)
    assert wait_state(engine, handle, {ACTIVE, WAITING}).state in (ACTIVE, WAITING)
    engine.remove(handle)
    # remove() waits for aria2 to let go, then drops the record
    assert engine.poll([handle])[handle].state == MISSING
    engine.remove(handle)  # unknown now: no error


@needs_aria2
def test_extra_headers_reach_the_origin(engine: Aria2Engine, origin: Origin, tmp_path: Path) -> None:
    origin.add_file("/h.bin", 1000)
    handle = engine.start(
        Transfer(
            urls=[origin.url("/h.bin")], directory=tmp_path, filename="h.bin", headers=["Cookie: warning=ok"]
        )
    )
    wait_state(engine, handle, {COMPLETE})
    assert all(r.header("Cookie") == "warning=ok" for r in origin.requests_for("/h.bin"))
