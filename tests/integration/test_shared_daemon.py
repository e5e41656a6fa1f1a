"""Other aria2 clients on the same daemon: what they remove is gone, and no unproven byte is installed.

aria2p's own CLI is the outside client. Its `remove` also removes the download result and
deletes the `.aria2` control file, leaving a preallocated, full-size staged file of which
only part is real. The app must tell that removal from a daemon that lost the transfer,
and never resume into such a file.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import aria2p
import pytest

from tests.conftest import needs_aria2

pytestmark = [pytest.mark.integration, needs_aria2]

MiB = 1024 * 1024
ARIA2P = Path(sys.executable).with_name("aria2p")


def secret_of(server) -> str:
    return (server.state / "aria2.secret").read_text().strip()


def outside_client(server) -> aria2p.API:
    return aria2p.API(
        aria2p.Client(host="http://127.0.0.1", port=server.aria2_port, secret=secret_of(server))
    )


def gid_of(server, job_id: str) -> str:
    staging = str(server.models / ".staging" / job_id)
    return next(d.gid for d in outside_client(server).get_downloads() if str(d.dir) == staging)


def aria2p_cli(server, *words: str) -> None:
    command = [str(ARIA2P), "-H", "http://127.0.0.1", "-p", str(server.aria2_port), "-s", secret_of(server)]
    done = subprocess.run([*command, *words], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"aria2p {' '.join(words)} failed: {done.stdout}{done.stderr}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed(server, folder: str, name: str) -> bytes:
    return (server.models / folder / name).read_bytes()


def test_a_download_removed_with_aria2ps_cli_is_cancelled_and_a_retry_installs_the_real_bytes(
    server_factory, origin
):
    data = origin.add_file("/plain.safetensors", 32 * MiB, rate=128 * 1024)  # per connection: 2 MiB/s over 16
    server = server_factory()
    job = server.submit(origin.url("/plain.safetensors"), "lora")
    server.wait_until(job["id"], lambda j: j["downloaded"] > 8 * MiB)
    staged = server.models / ".staging" / job["id"] / "plain.safetensors"
    aria2p_cli(server, "remove", gid_of(server, job["id"]))

    removed = server.wait_for(job["id"], {"cancelled", "completed", "failed"}, timeout=20)
    assert removed["state"] == "cancelled", removed
    assert server.model_files() == []  # nothing installed
    assert staged.stat().st_size == len(data)  # preallocated: full size, partly zeros
    assert not staged.with_name(staged.name + ".aria2").exists()  # aria2p deleted the control file
    # the removed result is gone from aria2's list too (nothing of ours is left there)
    assert [d for d in outside_client(server).get_downloads() if job["id"] in str(d.dir)] == []

    server.api("POST", f"/api/downloads/{job['id']}/retry")
    done = server.wait_settled(job["id"], timeout=90)
    assert done["state"] == "completed", done
    assert sha256(installed(server, "lora", "plain.safetensors")) == sha256(data) == done["sha256"]


def test_a_remove_then_clear_stopped_in_a_web_front_end_is_not_undone(server_factory, origin):
    """AriaNg's "remove" then "clear stopped": aria2.remove, then removeDownloadResult."""
    origin.add_file("/undone.safetensors", 32 * MiB, rate=128 * 1024)  # per connection: 2 MiB/s over 16
    server = server_factory()
    job = server.submit(origin.url("/undone.safetensors"), "lora")
    server.wait_until(job["id"], lambda j: j["downloaded"] > 4 * MiB)
    client = outside_client(server).client
    gid = gid_of(server, job["id"])
    client.remove(gid)
    client.remove_download_result(gid)

    removed = server.wait_for(job["id"], {"cancelled", "completed", "failed"}, timeout=20)
    assert removed["state"] == "cancelled", removed
    assert server.job(job["id"])["state"] == "cancelled"  # and it stays so
    assert server.model_files() == []


def test_a_lost_control_file_under_a_preallocated_file_means_starting_over_after_a_restart(
    server_factory, origin, tmp_path
):
    data = origin.add_file(
        "/restart.safetensors", 32 * MiB, rate=128 * 1024
    )  # per connection: 2 MiB/s over 16
    server = server_factory()
    job = server.submit(origin.url("/restart.safetensors"), "checkpoint")
    server.wait_until(job["id"], lambda j: j["downloaded"] > 8 * MiB)
    server.stop()  # the app and its aria2c stop (aria2c saves its session and control files)
    staged = server.models / ".staging" / job["id"] / "restart.safetensors"
    assert staged.stat().st_size == len(data)
    staged.with_name(staged.name + ".aria2").unlink()  # a full-size file of unknown bytes

    restarted = server_factory(workdir=tmp_path)
    done = restarted.wait_settled(job["id"], timeout=90)
    assert done["state"] == "completed", done
    assert sha256(installed(restarted, "checkpoint", "restart.safetensors")) == sha256(data)


def test_an_outside_clients_download_without_a_dir_lands_in_sight_not_in_staging(server_factory, origin):
    data = origin.add_file("/theirs.bin", 256 * 1024)
    server = server_factory()
    theirs = outside_client(server).add_uris([origin.url("/theirs.bin")])
    for _ in range(200):
        theirs.update()
        if theirs.status == "complete":
            break
        time.sleep(0.05)
    assert theirs.status == "complete"
    assert (server.models / "downloads" / "theirs.bin").read_bytes() == data
    assert not (server.models / ".staging" / "theirs.bin").exists()
    assert server.api("GET", "/api/downloads").json()["jobs"] == []  # left alone by the app


def test_a_paused_job_shows_its_progress_after_a_restart(server_factory, origin, tmp_path):
    origin.add_file("/paused.safetensors", 32 * MiB, rate=128 * 1024)  # per connection: 2 MiB/s over 16
    server = server_factory()
    job = server.submit(origin.url("/paused.safetensors"), "lora")
    server.wait_until(job["id"], lambda j: j["downloaded"] > 4 * MiB)
    paused = server.api("POST", f"/api/downloads/{job['id']}/pause").json()["job"]
    server.stop()  # SIGTERM: aria2c saves its session and control files, the app its job list

    restarted = server_factory(workdir=tmp_path)
    for _ in range(20):  # a few polls of the reloaded, still paused transfer
        again = restarted.job(job["id"])
        time.sleep(0.25)
    assert again["state"] == "paused"
    assert again["downloaded"] >= paused["downloaded"] > 0
    assert again["progress"] > 0.1
