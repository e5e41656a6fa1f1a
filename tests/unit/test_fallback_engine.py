"""The requests-based fallback engine, over real sockets against the fake origin."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.engines import fallback
from orchestrator.engines.base import ACTIVE, COMPLETE, ERROR, MISSING, PAUSED, REMOVED, WAITING, Transfer
from orchestrator.engines.fallback import MAX_READ, MIN_READ, RequestsEngine
from tests.fakes.origin import Origin

DONE = {COMPLETE, ERROR, REMOVED}


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Skip the waits between retries (the engine asks for 2 s, 4 s, ...); record them."""
    asked: list[float] = []

    def no_wait(self, run, seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr(RequestsEngine, "_sleep", no_wait)
    return asked


@pytest.fixture
def engine() -> Iterator[RequestsEngine]:
    made = RequestsEngine(max_active=2, retries=3, timeout=(5, 10))
    try:
        yield made
    finally:
        made.close()


def transfer(
    origin: Origin,
    path: str,
    directory: Path,
    size: int | None = None,
    filename: str = "model.safetensors",
    sha256: str | None = None,
) -> Transfer:
    """sha256: the hash a source published; only then does the engine hash while streaming."""
    return Transfer(urls=[origin.url(path)], directory=directory, filename=filename, size=size, sha256=sha256)


def wait_for(engine: RequestsEngine, handle: str, check, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while True:
        status = engine.poll([handle])[handle]
        if check(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting; last status {status}")
        time.sleep(0.02)


def wait_state(engine: RequestsEngine, handle: str, states: set[str], timeout: float = 15):
    return wait_for(engine, handle, lambda s: s.state in states, timeout)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gets(origin: Origin, path: str) -> list[str | None]:
    return [r.range for r in origin.requests_for(path) if r.method == "GET"]


def resumed_from(range_header: str | None) -> int:
    assert range_header is not None and range_header.startswith("bytes=")
    assert range_header.endswith("-")
    return int(range_header.removeprefix("bytes=").removesuffix("-"))


def vouch_for(path: Path, count: int) -> None:
    """What the engine writes beside a staged file while bytes arrive: how many did."""
    path.with_name(path.name + ".fallback").write_text(json.dumps({"bytes": count}))


def test_full_download(engine: RequestsEngine, origin: Origin, tmp_path: Path) -> None:
    data = origin.add_file("/m.safetensors", 700_001)
    handle = engine.start(transfer(origin, "/m.safetensors", tmp_path / "stage", sha256=sha(data)))
    status = wait_state(engine, handle, DONE)
    assert status.state == COMPLETE
    assert status.completed == status.total == len(data)
    assert status.sha256 == sha(data)
    assert (tmp_path / "stage" / "model.safetensors").read_bytes() == data
    assert gets(origin, "/m.safetensors") == [None]
    # beside it, the record of how many bytes really arrived (kept until the file is installed)
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == [
        "model.safetensors",
        "model.safetensors.fallback",
    ]
    assert json.loads((tmp_path / "stage" / "model.safetensors.fallback").read_text()) == {"bytes": len(data)}


def test_empty_file(engine: RequestsEngine, origin: Origin, tmp_path: Path) -> None:
    origin.add_file("/empty.bin", data=b"")
    handle = engine.start(transfer(origin, "/empty.bin", tmp_path, filename="empty.bin", sha256=sha(b"")))
    status = wait_state(engine, handle, DONE)
    assert status.state == COMPLETE
    assert status.sha256 == sha(b"")
    assert (tmp_path / "empty.bin").read_bytes() == b""


def test_dropped_connection_resumes_with_a_range(
    engine: RequestsEngine, origin: Origin, tmp_path: Path, backoffs: list[float]
) -> None:
    data = origin.add_file("/drop.bin", 600_000, drop_after=250_000)
    handle = engine.start(transfer(origin, "/drop.bin", tmp_path, size=len(data), sha256=sha(data)))
    status = wait_state(engine, handle, DONE)
    assert status.state == COMPLETE, status
    ranges = gets(origin, "/drop.bin")
    assert ranges[0] is None
    assert len(ranges) == 2
    assert 0 < resumed_from(ranges[1]) <= 250_000
    assert (tmp_path / "model.safetensors").read_bytes() == data
    assert status.sha256 == sha(data)
    assert len(backoffs) == 1


def test_server_ignoring_range_after_a_drop_still_gives_right_bytes(
    engine: RequestsEngine, origin: Origin, tmp_path: Path, backoffs: list[float]
) -> None:
    data = origin.add_file("/norange.bin", 500_000, drop_after=200_000, accept_ranges=False)
    handle = engine.start(transfer(origin, "/norange.bin", tmp_path, sha256=sha(data)))
    status = wait_state(engine, handle, DONE)
    assert status.state == COMPLETE, status
    ranges = gets(origin, "/norange.bin")
    assert len(ranges) == 2
    assert resumed_from(ranges[1]) > 0  # it asked to continue; the server sent it all again
    assert (tmp_path / "model.safetensors").read_bytes() == data
    assert status.sha256 == sha(data)
    assert status.completed == len(data)


def test_pause_then_resume_continues_from_the_partial_file(
    engine: RequestsEngine, origin: Origin, tmp_path: Path
) -> None:
    data = origin.add_file("/slow.bin", 400_000, rate=200_000)
    handle = engine.start(transfer(origin, "/slow.bin", tmp_path, size=len(data), sha256=sha(data)))
    wait_for(engine, handle, lambda s: s.state == ACTIVE and s.completed > 0)
    engine.pause(handle)
    paused = engine.poll([handle])[handle]
    assert paused.state == PAUSED
    partial = (tmp_path / "model.safetensors").stat().st_size
    assert 0 < partial < len(data)
    assert paused.speed == 0.0

    origin.add_file("/slow.bin", data=data)  # same file, now without the throttle
    engine.resume(handle)
    status = wait_state(engine, handle, DONE)
    assert status.state == COMPLETE
    ranges = gets(origin, "/slow.bin")
    assert len(ranges) == 2
    assert resumed_from(ranges[1]) == partial
    assert (tmp_path / "model.safetensors").read_bytes() == data
    assert status.sha256 == sha(data)


def test_remove_stops_the_transfer(engine: RequestsEngine, origin: Origin, tmp_path: Path) -> None:
    data = origin.add_file("/slow.bin", 2_000_000, rate=200_000)
    handle = engine.start(transfer(origin, "/slow.bin", tmp_path, size=len(data)))
    wait_for(engine, handle, lambda s: s.completed > 0)
    engine.remove(handle)
    assert engine.poll([handle])[handle].state == REMOVED
    size_then = (tmp_path / "model.safetensors").stat().st_size
    time.sleep(0.3)  # bytes would keep arriving here if the worker still ran
    assert (tmp_path / "model.safetensors").stat().st_size == size_then
    assert size_then < len(data)
    assert engine.poll([handle])[handle].state == REMOVED
    engine.forget(handle)
    assert engine.poll([handle])[handle].state == MISSING


def test_unknown_handle_is_missing(engine: RequestsEngine) -> None:
    status = engine.poll(["r-never-started"])["r-never-started"]
    assert status.state == MISSING
    engine.remove("r-never-started")  # nothing to do, no error


@pytest.mark.parametrize(("status", "code"), [(404, "origin_not_found"), (403, "origin_forbidden")])
def test_error_status(engine: RequestsEngine, origin: Origin, tmp_path: Path, status: int, code: str) -> None:
    origin.add_file("/gone.bin", 1000, status=status)
    handle = engine.start(transfer(origin, "/gone.bin", tmp_path))
    result = wait_state(engine, handle, DONE)
    assert result.state == ERROR
    assert result.error_code == code
    assert result.error_message
    assert len(gets(origin, "/gone.bin")) == 1  # not retried


def test_web_page_is_not_a_file(engine: RequestsEngine, origin: Origin, tmp_path: Path) -> None:
    origin.add_html("/model.safetensors")
    handle = engine.start(transfer(origin, "/model.safetensors", tmp_path))
    result = wait_state(engine, handle, DONE)
    assert result.state == ERROR
    assert result.error_code == "not_a_file"


def test_transient_errors_give_up_after_the_retries(
    engine: RequestsEngine, origin: Origin, tmp_path: Path, backoffs: list[float]
) -> None:
    origin.add_file("/busy.bin", 1000, status=503)
    handle = engine.start(transfer(origin, "/busy.bin", tmp_path))
    result = wait_state(engine, handle, DONE)
    assert result.state == ERROR
    assert result.error_code == "network"
    assert len(gets(origin, "/busy.bin")) == engine.retries + 1
    assert backoffs == sorted(backoffs)  # waits grow


def test_pre_existing_partial_file_is_continued(
    engine: RequestsEngine, origin: Origin, tmp_path: Path
) -> None:
    data = origin.add_file("/big.bin", 500_000)
    (tmp_path / "model.safetensors").write_bytes(data[:180_000])
    vouch_for(tmp_path / "model.safetensors", 180_000)
    handle = engine.start(transfer(origin, "/big.bin", tmp_path, size=len(data), sha256=sha(data)))
    status = wait_state(engine, handle, DONE)
    assert status.state == COMPLETE
    assert gets(origin, "/big.bin") == ["bytes=180000-"]
    assert origin.stats("/big.bin")["bytes_sent"] == len(data) - 180_000
    assert (tmp_path / "model.safetensors").read_bytes() == data
    assert status.sha256 == sha(data)


def test_pre_existing_partial_file_with_unknown_size(
    engine: RequestsEngine, origin: Origin, tmp_path: Path
) -> None:
    data = origin.add_file("/big.bin", 300_000)
    (tmp_path / "model.safetensors").write_bytes(data[:1000])
    vouch_for(tmp_path / "model.safetensors", 1000)
    handle = engine.start(transfer(origin, "/big.bin", tmp_path, sha256=sha(data)))
    status = wait_state(engine, handle, DONE)
    assert status.state == COMPLETE
    assert status.total == len(data)
    assert gets(origin, "/big.bin") == ["bytes=1000-"]
    assert status.sha256 == sha(data)


def test_staged_bytes_without_their_record_are_never_continued(
    engine: RequestsEngine, origin: Origin, tmp_path: Path
) -> None:
    """A full-size file of zeros (preallocated, or left by someone else) with no record of
    what arrived: the engine starts from zero instead of calling it complete."""
    data = origin.add_file("/big.bin", 300_000)
    (tmp_path / "model.safetensors").write_bytes(bytes(len(data)))
    assert not engine.trusts_staged_bytes(tmp_path, "model.safetensors")
    handle = engine.start(transfer(origin, "/big.bin", tmp_path, size=len(data)))
    status = wait_state(engine, handle, DONE)
    assert status.state == COMPLETE
    assert gets(origin, "/big.bin") == [None]  # the whole file, from byte 0
    assert (tmp_path / "model.safetensors").read_bytes() == data
    assert engine.trusts_staged_bytes(tmp_path, "model.safetensors")


def test_bytes_written_after_the_last_record_are_cut_off(
    engine: RequestsEngine, origin: Origin, tmp_path: Path
) -> None:
    """The app was killed after writing more than it had recorded: only the recorded part counts."""
    data = origin.add_file("/big.bin", 300_000)
    (tmp_path / "model.safetensors").write_bytes(data[:1000] + bytes(5000))
    vouch_for(tmp_path / "model.safetensors", 1000)
    handle = engine.start(transfer(origin, "/big.bin", tmp_path, size=len(data), sha256=sha(data)))
    status = wait_state(engine, handle, DONE)
    assert gets(origin, "/big.bin") == ["bytes=1000-"]
    assert status.sha256 == sha(data)
    assert (tmp_path / "model.safetensors").read_bytes() == data


def test_complete_file_on_disk_is_only_hashed(engine: RequestsEngine, origin: Origin, tmp_path: Path) -> None:
    data = origin.add_file("/done.bin", 100_000)
    (tmp_path / "model.safetensors").write_bytes(data)
    vouch_for(tmp_path / "model.safetensors", len(data))
    handle = engine.start(transfer(origin, "/done.bin", tmp_path, size=len(data), sha256=sha(data)))
    status = wait_state(engine, handle, DONE)
    assert status.state == COMPLETE
    assert status.sha256 == sha(data)
    assert gets(origin, "/done.bin") == []


def test_complete_file_with_unknown_size_gets_416_and_finishes(
    engine: RequestsEngine, origin: Origin, tmp_path: Path
) -> None:
    data = origin.add_file("/done.bin", 100_000)
    (tmp_path / "model.safetensors").write_bytes(data)
    vouch_for(tmp_path / "model.safetensors", len(data))
    handle = engine.start(transfer(origin, "/done.bin", tmp_path, sha256=sha(data)))
    status = wait_state(engine, handle, DONE)
    assert status.state == COMPLETE
    assert status.sha256 == sha(data)
    assert (tmp_path / "model.safetensors").read_bytes() == data
    assert origin.stats("/done.bin")["bytes_sent"] == 0


def test_longer_file_on_disk_than_expected_is_fetched_again(
    engine: RequestsEngine, origin: Origin, tmp_path: Path
) -> None:
    data = origin.add_file("/m.bin", 50_000)
    (tmp_path / "model.safetensors").write_bytes(b"x" * 80_000)
    handle = engine.start(transfer(origin, "/m.bin", tmp_path, size=len(data), sha256=sha(data)))
    status = wait_state(engine, handle, DONE)
    assert status.state == COMPLETE
    assert (tmp_path / "model.safetensors").read_bytes() == data
    assert status.sha256 == sha(data)


def test_extra_headers_are_sent(engine: RequestsEngine, origin: Origin, tmp_path: Path) -> None:
    origin.add_file("/c.bin", 10)
    job = Transfer(
        urls=[origin.url("/c.bin")],
        directory=tmp_path,
        filename="c.bin",
        headers=["Cookie: download_warning=abc"],
    )
    wait_state(engine, engine.start(job), DONE)
    [request] = origin.requests_for("/c.bin")
    assert request.header("Cookie") == "download_warning=abc"


def test_slots_limit_concurrent_transfers(origin: Origin, tmp_path: Path) -> None:
    engine = RequestsEngine(max_active=1, chunk_size=16 * 1024)
    try:
        origin.add_file("/slow.bin", 2_000_000, rate=200_000)
        second_data = origin.add_file("/quick.bin", 10_000)
        first = engine.start(transfer(origin, "/slow.bin", tmp_path / "a"))
        wait_for(engine, first, lambda s: s.state == ACTIVE and s.completed > 0)
        second = engine.start(transfer(origin, "/quick.bin", tmp_path / "b", sha256=sha(second_data)))
        time.sleep(0.3)  # room for the second to start, if the limit did not hold it
        assert engine.poll([second])[second].state == WAITING
        assert gets(origin, "/quick.bin") == []
        engine.remove(first)
        status = wait_state(engine, second, DONE)
        assert status.state == COMPLETE
        assert status.sha256 == sha(second_data)
    finally:
        engine.close()


def test_describe(engine: RequestsEngine) -> None:
    info = engine.describe()
    assert info["name"] == "requests"
    assert info["connected"] is True


def test_the_engine_says_from_its_thread_when_a_transfer_ends(origin: Origin, tmp_path: Path) -> None:
    engine = RequestsEngine(max_active=2, retries=0)
    ended: list[str] = []
    engine.on_finish = lambda: ended.append(threading.current_thread().name)
    origin.add_file("/ok.bin", 100_000)
    origin.add_file("/gone.bin", 10, status=404)
    origin.add_file("/slow.bin", 400_000, rate=100_000)
    try:
        runs = [
            engine.start(transfer(origin, name, tmp_path / name.strip("/")))
            for name in ("/ok.bin", "/gone.bin", "/slow.bin")
        ]
        ok, gone, slow = runs
        wait_for(engine, slow, lambda s: s.completed > 0)
        engine.pause(slow)  # a pause is not an end
        for handle in (ok, gone):
            engine._runs[handle].thread.join(timeout=15)
        assert engine.poll([ok])[ok].state == COMPLETE
        assert engine.poll([gone])[gone].state == ERROR
        assert len(ended) == 2
        assert threading.main_thread().name not in ended
    finally:
        engine.close()


def test_reads_are_big_on_a_fast_link_and_small_on_a_slow_one(
    engine: RequestsEngine, origin: Origin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: dict[str, list[int]] = {}
    real_read = fallback._read

    def spy(response, size: int) -> bytes:
        asked.setdefault(response.url.rsplit("/", 1)[-1], []).append(size)
        return real_read(response, size)

    monkeypatch.setattr(fallback, "_read", spy)
    fast = origin.add_file("/fast.bin", 48 * 1024 * 1024)
    slow = origin.add_file("/slow.bin", 300_000, rate=200_000)  # 50 KB per 0.25 s: below MIN_READ
    for name, data in (("fast.bin", fast), ("slow.bin", slow)):
        handle = engine.start(transfer(origin, f"/{name}", tmp_path / name, size=len(data), sha256=sha(data)))
        status = wait_state(engine, handle, DONE, timeout=60)
        assert status.state == COMPLETE, status
        assert status.sha256 == sha(data)
    assert asked["fast.bin"][0] == MIN_READ  # no rate known yet
    assert 1024 * 1024 <= max(asked["fast.bin"]) <= MAX_READ
    assert set(asked["slow.bin"]) == {MIN_READ}  # progress (and a pause) every 64 KiB


def test_a_plain_link_is_not_hashed_while_streaming(
    engine: RequestsEngine, origin: Origin, tmp_path: Path
) -> None:
    """No published hash, nothing to check: the manager hashes the installed file later."""
    data = origin.add_file("/plain.bin", 300_000)
    handle = engine.start(transfer(origin, "/plain.bin", tmp_path))
    status = wait_state(engine, handle, DONE)
    assert status.state == COMPLETE
    assert status.sha256 is None
    assert (tmp_path / "model.safetensors").read_bytes() == data


def test_bytes_before_a_silence_are_vouched_for_however_quickly_they_came(
    origin: Origin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 MiB, then a connection that goes silent: the record beside the file must already count
    most of them even when they all came within one timed record's interval (a busy machine
    reads what piled up in the socket at once), or the stall watchdog's new request would have
    to start over from zero."""
    monkeypatch.setattr(fallback, "CONTROL_EVERY", 3600.0)  # no timed record in this test
    engine = RequestsEngine(max_active=1, retries=0, timeout=(5, 3))
    try:
        origin.add_file(
            "/silent.bin",
            4 * 1024 * 1024,
            stall_after=2 * 1024 * 1024,
            stall_seconds=20,
            rate=4 * 1024 * 1024,
        )
        handle = engine.start(transfer(origin, "/silent.bin", tmp_path))
        wait_for(engine, handle, lambda s: s.completed >= 1024 * 1024)
        time.sleep(0.3)
        recorded = json.loads((tmp_path / "model.safetensors.fallback").read_text())["bytes"]
        assert recorded >= 1024 * 1024
        assert (tmp_path / "model.safetensors").stat().st_size >= recorded
    finally:
        engine.close()


def test_close_lets_no_waiting_run_take_a_freed_slot_and_finish(origin: Origin, tmp_path: Path) -> None:
    """A shutdown pauses everything: the slot the running download frees must not go to a
    queued one that then completes before it too is told to stop."""
    engine = RequestsEngine(max_active=1)
    origin.add_file("/slow.bin", 1_000_000, rate=200_000)
    running = engine.start(transfer(origin, "/slow.bin", tmp_path / "slow"))
    queued = []
    for n in range(20):
        origin.add_file(f"/tiny{n}.bin", 1000)
        queued.append(engine.start(transfer(origin, f"/tiny{n}.bin", tmp_path / f"t{n}")))
    wait_for(engine, running, lambda s: s.completed > 0)
    engine.close()
    time.sleep(0.5)  # a run that slipped through would have finished by now
    states = {status.state for status in engine.poll([running, *queued]).values()}
    assert states == {PAUSED}
    assert not any((tmp_path / f"t{n}" / "model.safetensors").exists() for n in range(20))


def test_close_pauses_what_runs_and_keeps_its_bytes(origin: Origin, tmp_path: Path) -> None:
    engine = RequestsEngine(max_active=1)
    origin.add_file("/slow.bin", 1_000_000, rate=200_000)
    origin.add_file("/next.bin", 1000)
    running = engine.start(transfer(origin, "/slow.bin", tmp_path / "a"))
    waiting = engine.start(transfer(origin, "/next.bin", tmp_path / "b"))  # no free slot yet
    wait_for(engine, running, lambda s: s.completed > 0)
    engine.close()
    statuses = engine.poll([running, waiting])
    assert statuses[running].state == PAUSED
    assert statuses[waiting].state == PAUSED
    assert 0 < (tmp_path / "a" / "model.safetensors").stat().st_size < 1_000_000
