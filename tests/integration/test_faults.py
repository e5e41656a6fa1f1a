"""Faults the orchestrator must survive without losing data (docs/RELIABILITY.md)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, needs_aria2
from tests.fakes.origin import Origin

pytestmark = [pytest.mark.integration, needs_aria2]

MiB = 1024 * 1024


def aria2c_pids(state: Path) -> list[int]:
    marker = str(state / "aria2.runtime.conf")
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_app_killed_mid_download_resumes_from_disk(server_factory, origin, tmp_path):
    data = origin.add_file("/kill-app.bin", 16 * MiB, rate=256 * 1024)
    server = server_factory()
    job = server.submit(origin.url("/kill-app.bin"), "checkpoint")
    server.wait_until(job["id"], lambda j: j["downloaded"] > 3 * MiB)
    server.stop(signal.SIGKILL, kill_daemon=False)  # no shutdown code runs; aria2c is orphaned
    sent_before = origin.stats("/kill-app.bin")["bytes_sent"]

    again = server_factory(workdir=tmp_path)
    listed = again.job(job["id"])
    assert listed["state"] in ("downloading", "queued", "resolving")
    done = again.wait_for(job["id"], {"completed", "failed"}, timeout=120)
    assert done["state"] == "completed", done
    assert (again.models / "checkpoint" / "kill-app.bin").read_bytes() == data
    # continued from the bytes on disk: the rest, not the whole file again
    assert origin.stats("/kill-app.bin")["bytes_sent"] - sent_before < len(data) - 2 * MiB


def test_aria2c_killed_mid_download_is_restarted_and_resumes(server_factory, origin, connect):
    data = origin.add_file("/kill-aria2.bin", 16 * MiB, rate=96 * 1024)
    server = server_factory()
    client = connect(server)
    client.next()
    job = server.submit(origin.url("/kill-aria2.bin"), "lora")
    server.wait_until(job["id"], lambda j: j["downloaded"] > 9 * MiB)  # > auto-save-interval
    [pid] = aria2c_pids(server.state)
    os.kill(pid, signal.SIGKILL)

    # the page hears about it, and about the restart
    restarted = client.until(
        lambda m: m.get("type") == "engine" and "restarted" in m["data"]["message"], timeout=30
    )
    assert restarted["data"]["name"] == "aria2"
    done = server.wait_for(job["id"], {"completed", "failed"}, timeout=120)
    assert done["state"] == "completed", done
    assert (server.models / "lora" / "kill-aria2.bin").read_bytes() == data
    assert aria2c_pids(server.state) and aria2c_pids(server.state) != [pid]
    assert origin.stats("/kill-aria2.bin")["bytes_sent"] < len(data) * 1.6


@pytest.mark.parametrize("engine", ["aria2", "requests"])
def test_origin_down_for_a_while_then_back(server_factory, origin, engine):
    data = origin.add_file("/flaky503.bin", 4 * MiB, fail_times=2)
    server = server_factory("--engine", "auto" if engine == "aria2" else "requests")
    job = server.submit(origin.url("/flaky503.bin"), "vae")
    done = server.wait_for(job["id"], {"completed", "failed"}, timeout=90)
    assert done["state"] == "completed", done
    assert (server.models / "vae" / "flaky503.bin").read_bytes() == data


@pytest.mark.parametrize("engine", ["aria2", "requests"])
def test_origin_stalls_then_continues(server_factory, origin, engine):
    data = origin.add_file("/stall.bin", 6 * MiB, stall_after=2 * MiB, stall_seconds=4, rate=4 * MiB)
    server = server_factory("--engine", "auto" if engine == "aria2" else "requests")
    job = server.submit(origin.url("/stall.bin"), "vae")
    done = server.wait_for(job["id"], {"completed", "failed"}, timeout=90)
    assert done["state"] == "completed", done
    assert (server.models / "vae" / "stall.bin").read_bytes() == data


@pytest.mark.parametrize("engine", ["aria2", "requests"])
def test_a_connection_that_goes_silent_for_good_is_caught_by_the_stall_watchdog(
    server_factory, origin, engine, connect
):
    """No byte for minutes, no error either: the app asks again after --stall-seconds and
    continues from the bytes on disk, saying so; without the watchdog the job would hang."""
    data = origin.add_file("/silent.bin", 6 * MiB, stall_after=2 * MiB, stall_seconds=600, rate=4 * MiB)
    server = server_factory("--engine", "auto" if engine == "aria2" else "requests", "--stall-seconds", "2")
    watcher = connect(server)
    job = server.submit(origin.url("/silent.bin"), "vae")
    done = server.wait_for(job["id"], {"completed", "failed"}, timeout=40)
    assert done["state"] == "completed", done
    assert (server.models / "vae" / "silent.bin").read_bytes() == data
    if engine == "requests":  # one connection: only the watchdog can free it
        stalled = watcher.until(lambda m: m.get("job") == job["id"] and m["data"]["status"] == "stalled")
        assert "asking the server again" in stalled["data"]["message"]
        ranges = [r.range for r in origin.requests_for("/silent.bin") if r.method == "GET"]
        assert ranges[-1] is not None and ranges[-1].startswith("bytes=")  # continued, not restarted


def quick_giving_up_conf(tmp_path: Path) -> Path:
    """The shipped aria2.conf with fewer retries, so giving up happens within a test."""
    conf = tmp_path / "aria2-test.conf"
    text = (ROOT / "aria2.conf").read_text()
    text = text.replace("max-tries=10", "max-tries=2").replace("retry-wait=3", "retry-wait=1")
    conf.write_text(text)
    return conf


def test_origin_gone_fails_keeps_partial_data_then_retry_finishes(server_factory, tmp_path):
    origin = Origin("127.0.0.1").start()
    port = origin.port
    data = origin.add_file("/gone.bin", 16 * MiB, rate=128 * 1024)  # per connection: 2 MiB/s over 16
    conf = quick_giving_up_conf(tmp_path)
    server = server_factory(env={"ORCHESTRATOR_ARIA2_CONF": str(conf)})
    job = server.submit(origin.url("/gone.bin"), "lora")
    server.wait_until(job["id"], lambda j: j["downloaded"] > 6 * MiB)
    origin.stop()

    failed = server.wait_for(job["id"], {"failed"}, timeout=90)
    assert failed["error"]["code"] in ("network", "origin_error", "download_failed", "network_timeout")
    assert failed["error"]["message"]
    assert server.model_files() == []
    assert server.staging_files(), "the partial data should be kept for a retry"

    back = Origin("127.0.0.1", port).start()
    try:
        back.add_file("/gone.bin", data=data)
        server.api("POST", f"/api/downloads/{job['id']}/retry")
        done = server.wait_for(job["id"], {"completed", "failed"}, timeout=90)
        assert done["state"] == "completed", done
        assert (server.models / "lora" / "gone.bin").read_bytes() == data
        assert back.stats("/gone.bin")["bytes_sent"] < len(data) - 2 * MiB  # resumed, not begun again
    finally:
        back.stop()


def test_cancel_of_a_failed_job_removes_its_partial_data(server_factory, tmp_path):
    origin = Origin("127.0.0.1").start()
    origin.add_file("/gone2.bin", 16 * MiB, rate=128 * 1024)
    server = server_factory(env={"ORCHESTRATOR_ARIA2_CONF": str(quick_giving_up_conf(tmp_path))})
    job = server.submit(origin.url("/gone2.bin"), "lora")
    server.wait_until(job["id"], lambda j: j["downloaded"] > MiB)
    origin.stop()
    server.wait_for(job["id"], {"failed"}, timeout=90)
    assert server.staging_files()
    assert server.api("DELETE", f"/api/downloads/{job['id']}").json()["job"]["state"] == "cancelled"
    assert server.staging_files() == []


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MiB tmpfs: a disk that really fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_is_refused_early_and_other_jobs_finish(server_factory, origin, small_disk, tmp_path):
    fits = origin.add_file("/fits.bin", 8 * MiB)
    origin.add_file("/huge.bin", 64 * MiB)
    server = server_factory("--models-dir", str(small_disk))
    huge = server.submit(origin.url("/huge.bin"), "checkpoint")
    small = server.submit(origin.url("/fits.bin"), "checkpoint")
    refused = server.wait_for(huge["id"], {"failed", "completed"})
    assert refused["error"]["code"] == "disk_full"
    assert "free" in refused["error"]["message"]
    assert origin.stats("/huge.bin")["gets"] == 0  # checked before any byte moved
    assert server.wait_for(small["id"], {"completed", "failed"})["state"] == "completed"
    assert (small_disk / "checkpoint" / "fits.bin").read_bytes() == fits


def test_disk_filling_up_mid_download_fails_cleanly_and_retry_finishes(server_factory, origin, small_disk):
    """Both jobs fit when they start; then something else fills the disk."""
    a = origin.add_file("/a.bin", 10 * MiB, rate=1 * MiB)
    b = origin.add_file("/b.bin", 10 * MiB, rate=1 * MiB)
    server = server_factory("--models-dir", str(small_disk), "--engine", "requests")
    jobs = [server.submit(origin.url("/a.bin"), "lora"), server.submit(origin.url("/b.bin"), "lora")]
    for job in jobs:
        server.wait_until(job["id"], lambda j: j["downloaded"] > 0)
    filler = small_disk / "filler"
    with open(filler, "wb") as handle:  # another program takes all the space that is left
        try:
            while True:
                handle.write(b"\0" * MiB)
                handle.flush()
        except OSError:
            pass
    results = [server.wait_for(j["id"], {"completed", "failed"}, timeout=90) for j in jobs]
    assert any(r["state"] == "failed" for r in results)
    for result, data in zip(results, (a, b), strict=True):
        target = small_disk / "lora" / result["filename"]
        if result["state"] == "failed":
            assert result["error"]["code"] == "disk_full"
            assert result["error"]["message"] == "The disk is full."
            assert not target.exists()
        else:
            assert target.read_bytes() == data
    filler.unlink()
    for result, data in zip(results, (a, b), strict=True):
        if result["state"] == "failed":
            server.api("POST", f"/api/downloads/{result['id']}/retry")
            done = server.wait_for(result["id"], {"completed", "failed"}, timeout=90)
            assert done["state"] == "completed", done
            assert (small_disk / "lora" / result["filename"]).read_bytes() == data


def test_fifty_jobs_twenty_running_none_lost_none_duplicated(server_factory, origin):
    files = {
        f"/many/{n:02d}.bin": origin.add_file(f"/many/{n:02d}.bin", 512 * 1024, rate=384 * 1024)
        for n in range(50)
    }
    server = server_factory("--max-active", "20")
    submitted: list[dict] = []
    lock = threading.Lock()

    def submit(path: str) -> None:
        job = server.submit(origin.url(path), "embedding")
        with lock:
            submitted.append(job)

    threads = [threading.Thread(target=submit, args=(path,)) for path in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    most_running = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        jobs = server.api("GET", "/api/downloads").json()["jobs"]
        # fetching bytes; a finished one may still say downloading for a poll while aria2 starts
        # the next of its queue
        fetching = [j for j in jobs if j["state"] == "downloading" and j["downloaded"] < (j["total"] or 1)]
        most_running = max(most_running, len(fetching))
        if all(j["state"] in ("completed", "failed") for j in jobs):
            break
        time.sleep(0.2)
    assert len({j["id"] for j in submitted}) == 50
    assert len(jobs) == 50
    assert all(j["state"] == "completed" for j in jobs), [j["error"] for j in jobs if j["error"]]
    assert 1 < most_running <= 20
    for path, data in files.items():
        name = path.rsplit("/", 1)[1]
        assert (
            hashlib.sha256((server.models / "embedding" / name).read_bytes()).digest()
            == hashlib.sha256(data).digest()
        )
    assert len(server.model_files()) == 50
    assert requests.get(server.base + "/api/health", timeout=5).json()["jobs"]["active"] == 0


class SilentServer:
    """Accepts connections and never answers: a server that hangs every look-ahead."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                self.held.append(connection)  # kept open, silent

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


def test_slow_servers_never_freeze_the_app(server_factory, origin):
    """Eight links to servers that never answer: more than the resolve threads. Listing, pause
    and the models list still answer at once, and health says resolving is stuck."""
    silent = SilentServer()
    try:
        data = origin.add_file("/slow-neighbour.bin", 8 * MiB, rate=1 * MiB)
        server = server_factory("--resolve-deadline", "3")
        running = server.submit(origin.url("/slow-neighbour.bin"), "vae")
        server.wait_until(running["id"], lambda j: j["state"] == "downloading")
        hung = [server.submit(f"http://127.0.0.1:{silent.port}/m{n}.safetensors", "lora") for n in range(8)]
        # every call below would wait behind the hung look-aheads if they shared a pool with it
        assert server.api("GET", "/api/downloads").status_code == 200
        assert server.api("POST", f"/api/downloads/{running['id']}/pause").json()["job"]["state"] == "paused"
        assert server.api("POST", f"/api/downloads/{running['id']}/resume").status_code == 200
        assert server.api("GET", "/api/models").status_code == 200
        health = server.wait_until_health(lambda h: h["work"]["resolving"]["stuck"])
        assert health["status"] == "degraded" and health["work"]["resolving"]["waiting"] > 0
        for job in hung:
            failed = server.wait_for(job["id"], {"failed"}, timeout=60)
            assert failed["error"]["code"] == "resolve_timeout"
        done = server.wait_settled(running["id"], timeout=60)
        assert (server.models / "vae" / "slow-neighbour.bin").read_bytes() == data and done[
            "state"
        ] == "completed"
    finally:
        silent.close()


def test_damaged_job_records_are_set_aside_and_the_server_starts_anyway(server_factory, origin, tmp_path):
    import sqlite3

    data = origin.add_file("/good.bin", 256 * 1024)
    server = server_factory()
    good = server.submit(origin.url("/good.bin"), "vae")
    server.wait_settled(good["id"])
    server.stop()
    db = sqlite3.connect(server.state / "jobs.sqlite3")
    db.execute("INSERT INTO jobs VALUES ('badjson00000', 'queued', 1.0, '{not json')")
    weird = '{"id": "badstate0000", "state": "weird"}'
    db.execute("INSERT INTO jobs VALUES ('badstate0000', 'queued', 2.0, ?)", (weird,))
    db.commit()
    db.close()

    again = server_factory(workdir=tmp_path)
    health = again.api("GET", "/api/health").json()
    assert [j["id"] for j in again.api("GET", "/api/downloads").json()["jobs"]] == [good["id"]]
    [notice] = health["notices"]
    assert "2 damaged download record(s)" in notice
    assert list(again.state.glob("jobs.sqlite3.before-repair-*"))  # the file as it was, kept
    assert (again.models / "vae" / "good.bin").read_bytes() == data


def test_a_job_list_that_is_no_database_any_more_is_kept_aside_and_a_new_one_started(
    server_factory, origin, tmp_path
):
    server = server_factory()
    server.stop()
    path = server.state / "jobs.sqlite3"
    path.write_bytes(b"this is not a database at all" * 100)
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)

    again = server_factory(workdir=tmp_path)
    health = again.api("GET", "/api/health").json()
    assert health["notices"] and "was damaged" in health["notices"][0]
    assert list(again.state.glob("jobs.sqlite3.damaged-*"))
    origin.add_file("/after.bin", 1024)
    job = again.submit(origin.url("/after.bin"), "vae")
    assert again.wait_settled(job["id"])["state"] == "completed"  # the new list works
