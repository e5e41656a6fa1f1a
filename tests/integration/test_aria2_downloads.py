"""End to end with a real aria2c: the app as a user runs it, a local origin as the world."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time

import aria2p
import pytest

from tests.conftest import needs_aria2

pytestmark = [pytest.mark.integration, needs_aria2]

MiB = 1024 * 1024


def is_event(job_id: str, *statuses: str):
    def check(message: dict) -> bool:
        return (
            message.get("type") == "download"
            and message.get("job") == job_id
            and message["data"]["status"] in statuses
        )

    return check


def test_websocket_download_lands_verified_in_its_folder(server_factory, origin, origin2, connect):
    """The core promise: paste a link, watch progress, find the right bytes in models/<type>/."""
    data = origin2.add_file("/cdn/model.safetensors", 24 * MiB, rate=2 * MiB)
    origin.add_redirect("/get/model", origin2.url("/cdn/model.safetensors"))
    server = server_factory()
    watcher = connect(server)
    assert watcher.next()["type"] == "hello"
    client = connect(server)
    hello = client.next()
    assert hello["type"] == "hello" and hello["data"]["engine"]["name"] == "aria2"
    assert {t["name"] for t in hello["data"]["types"]} >= {
        "checkpoint",
        "lora",
        "vae",
        "embedding",
        "upscaler",
        "controlnet",
    }

    client.send(
        {"type": "download", "id": "req-1", "data": {"type": "checkpoint", "url": origin.url("/get/model")}}
    )
    started = client.until(lambda m: m.get("type") == "download" and m["data"]["status"] == "started")
    job_id = started["job"]
    assert started["id"] == "req-1"
    success = client.until(is_event(job_id, "success", "error"))

    assert success["data"]["status"] == "success", success
    assert success["id"] == "req-1"
    assert success["data"]["path"] == "checkpoint/model.safetensors"
    assert success["data"]["size"] == len(data)
    assert (server.models / "checkpoint" / "model.safetensors").read_bytes() == data
    # a plain link publishes no hash: the file is installed first, its SHA-256 follows
    assert success["data"]["sha256"] is None
    hashed = client.until(is_event(job_id, "hashed"))
    assert hashed["data"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert server.job(job_id)["sha256"] == hashed["data"]["sha256"]
    assert server.job(job_id)["hashing"] is False
    progress = [m["data"] for m in client.messages if is_event(job_id, "progress")(m)]
    moving = [p for p in progress if p["state"] == "downloading"]
    assert moving, "no progress event while bytes moved"
    assert all(0.0 <= p["progress"] <= 1.0 for p in progress)
    assert all(p["total"] == len(data) for p in moving)
    assert any(p["rate"] > 0 and p["eta"] is not None for p in moving)
    assert server.staging_files() == []
    # every client sees every job's events
    assert watcher.until(is_event(job_id, "success"))["data"]["path"] == "checkpoint/model.safetensors"
    assert watcher.until(is_event(job_id, "hashed"))["data"]["sha256"] == hashed["data"]["sha256"]
    # many connections, each a Range request on the storage host
    ranged = [r for r in origin2.requests_for("/cdn/model.safetensors") if r.range]
    assert len(ranged) >= 4


def test_dropped_connections_resume_instead_of_restarting(server_factory, origin):
    data = origin.add_file("/flaky.bin", 12 * MiB, drop_after=3 * MiB, drop_times=3)
    server = server_factory()
    job = server.submit(origin.url("/flaky.bin"), "vae")
    done = server.wait_for(job["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    assert (server.models / "vae" / "flaky.bin").read_bytes() == data
    # the bytes sent add up to little more than the file: resumed, not restarted from zero
    assert origin.stats("/flaky.bin")["bytes_sent"] < len(data) * 1.5


def test_content_disposition_names_the_file_and_cannot_escape(server_factory, origin):
    data = origin.add_file(
        "/dl", 1 * MiB, content_disposition='attachment; filename="../../../evil.safetensors"'
    )
    server = server_factory()
    job = server.submit(origin.url("/dl?id=7"), "lora")
    done = server.wait_for(job["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    assert done["path"] == "lora/evil.safetensors"
    assert (server.models / "lora" / "evil.safetensors").read_bytes() == data
    assert not (server.workdir / "evil.safetensors").exists()
    assert server.model_files() == ["lora/evil.safetensors"]


def test_explicit_name_wins_and_utf8_filename_star_is_read(server_factory, origin):
    origin.add_file(
        "/a",
        1 * MiB,
        content_disposition=(
            "attachment; filename=\"fallback.bin\"; filename*=UTF-8''%E6%A8%A1%E5%9E%8B.safetensors"
        ),
    )
    origin.add_file("/b", 1 * MiB, content_disposition='attachment; filename="server.bin"')
    server = server_factory()
    first = server.submit(origin.url("/a"), "embedding")
    second = server.submit(origin.url("/b"), "embedding", name="mine.pt")
    assert server.wait_for(first["id"], {"completed", "failed"})["path"] == "embedding/模型.safetensors"
    assert server.wait_for(second["id"], {"completed", "failed"})["path"] == "embedding/mine.pt"


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        (lambda o: o.add_file("/f", 1024, status=404), "origin_not_found"),
        (lambda o: o.add_file("/f", 1024, status=403), "origin_forbidden"),
        (lambda o: o.add_file("/f", 1024, status=500), "origin_error"),
        (lambda o: o.add_html("/f"), "not_a_file"),
    ],
)
def test_origin_errors_fail_with_a_reason_and_leave_nothing(server_factory, origin, setup, code):
    setup(origin)
    server = server_factory()
    job = server.submit(origin.url("/f"), "lora")
    failed = server.wait_for(job["id"], {"failed", "completed"})
    assert failed["state"] == "failed"
    assert failed["error"]["code"] == code
    assert len(failed["error"]["message"]) > 20
    assert server.model_files() == []
    assert server.staging_files() == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"url": "", "type": "lora"}, 400, "empty_url"),
        ({"url": "not a link", "type": "lora"}, 400, "invalid_url"),
        ({"url": "file:///etc/passwd", "type": "lora"}, 400, "unsupported_scheme"),
        ({"url": "ftp://example.com/x.bin", "type": "lora"}, 400, "unsupported_scheme"),
        ({"url": "javascript:alert(1)", "type": "lora"}, 400, "unsupported_scheme"),
        ({"url": "data:text/plain,hi", "type": "lora"}, 400, "unsupported_scheme"),
        ({"url": "http://example.com/x", "type": "../../etc"}, 400, "unknown_type"),
        ({"url": "http://example.com/x", "type": "sdxl"}, 400, "unknown_type"),
        ({"url": "https://me:hunter2@example.com/x.bin", "type": "lora"}, 400, "credentials_in_link"),
    ],
)
def test_bad_requests_are_refused_and_create_nothing(server_factory, body, status, code):
    server = server_factory()
    answer = server.api("POST", "/api/downloads", json=body)
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code
    assert server.api("GET", "/api/downloads").json()["jobs"] == []
    assert server.model_files() == []


def test_websocket_survives_garbage_and_answers_each_mistake(server_factory, connect):
    server = server_factory()
    client = connect(server)
    client.next()  # hello
    client.send("{not json")
    assert client.next()["data"]["code"] == "invalid_json"
    client.send({"type": "explode"})
    assert client.next()["data"]["code"] == "unknown_message"
    client.send({"type": "download", "id": 9, "data": {"type": "lora", "url": "ftp://x/y"}})
    answer = client.next()
    assert answer == {
        "type": "download",
        "id": 9,
        "job": None,
        "data": {"status": "error", "code": "unsupported_scheme", "message": answer["data"]["message"]},
    }
    client.send({"type": "cancel", "id": 10, "data": {"job": "nope"}})
    assert client.next()["data"]["code"] == "not_found"
    client.send_binary(json.dumps({"type": "ping"}).encode())
    assert client.next()["type"] == "pong"


def test_pause_resume_cancel_through_rest(server_factory, origin):
    origin.add_file("/slow.bin", 16 * MiB, rate=128 * 1024)
    server = server_factory()
    job = server.submit(origin.url("/slow.bin"), "upscaler")
    server.wait_until(job["id"], lambda j: j["state"] == "downloading" and j["downloaded"] > 0)
    assert server.api("POST", f"/api/downloads/{job['id']}/pause").json()["job"]["state"] == "paused"
    paused_at = server.job(job["id"])["downloaded"]
    time.sleep(1.5)
    assert server.job(job["id"])["state"] == "paused"
    assert server.job(job["id"])["downloaded"] <= paused_at + 2 * MiB  # buffered bytes only
    assert server.api("POST", f"/api/downloads/{job['id']}/resume").json()["job"]["state"] in (
        "downloading",
        "queued",
    )
    server.wait_until(job["id"], lambda j: j["downloaded"] > paused_at)
    assert server.api("POST", f"/api/downloads/{job['id']}/retry").status_code == 409
    cancelled = server.api("DELETE", f"/api/downloads/{job['id']}").json()["job"]
    assert cancelled["state"] == "cancelled"
    assert server.staging_files() == []
    assert server.model_files() == []


def test_existing_identical_file_is_success_without_downloading(server_factory, origin):
    data = origin.add_file("/same.safetensors", 2 * MiB)
    server = server_factory()
    (server.models / "lora").mkdir(parents=True)
    (server.models / "lora" / "same.safetensors").write_bytes(data)
    job = server.submit(origin.url("/same.safetensors"), "lora")
    done = server.wait_for(job["id"], {"completed", "failed"})
    assert done["state"] == "completed"
    assert done["sha256"] == hashlib.sha256(data).hexdigest()
    assert origin.stats("/same.safetensors")["gets"] == 0


def test_existing_different_file_is_kept_unless_overwrite(server_factory, origin):
    data = origin.add_file("/other.safetensors", 2 * MiB)
    server = server_factory()
    target = server.models / "lora" / "other.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"mine, not yours")
    job = server.submit(origin.url("/other.safetensors"), "lora")
    failed = server.wait_for(job["id"], {"completed", "failed"})
    assert failed["error"]["code"] == "file_exists"
    assert target.read_bytes() == b"mine, not yours"
    job = server.submit(origin.url("/other.safetensors"), "lora", overwrite=True)
    assert server.wait_for(job["id"], {"completed", "failed"})["state"] == "completed"
    assert target.read_bytes() == data


def test_same_link_twice_while_active_is_one_job(server_factory, origin, connect):
    origin.add_file("/big.bin", 8 * MiB, rate=512 * 1024)
    server = server_factory()
    first = server.submit(origin.url("/big.bin"), "lora")
    again = server.api("POST", "/api/downloads", json={"url": origin.url("/big.bin"), "type": "lora"})
    assert again.status_code == 200
    assert again.json()["job"]["id"] == first["id"]
    client = connect(server)
    client.next()
    client.send({"type": "download", "id": "twin", "data": {"type": "lora", "url": origin.url("/big.bin")}})
    twin = client.until(lambda m: m.get("id") == "twin")
    assert twin["job"] == first["id"] and twin["data"]["status"] == "started"
    assert len(server.api("GET", "/api/downloads").json()["jobs"]) == 1
    server.api("DELETE", f"/api/downloads/{first['id']}")


def aria2_client(server) -> aria2p.API:
    secret = (server.state / "aria2.secret").read_text().strip()
    return aria2p.API(aria2p.Client(host="http://127.0.0.1", port=server.aria2_port, secret=secret))


def test_other_rpc_clients_share_the_daemon(server_factory, origin):
    """AriaNg or aria2p's CLI pausing/removing our job shows in the app; theirs is left alone."""
    origin.add_file("/ours.bin", 16 * MiB, rate=128 * 1024)
    origin.add_file("/theirs.bin", 4 * MiB, rate=64 * 1024)
    server = server_factory()
    job = server.submit(origin.url("/ours.bin"), "lora")
    job = server.wait_until(job["id"], lambda j: j["state"] == "downloading")
    other = aria2_client(server)
    theirs = other.add_uris([origin.url("/theirs.bin")], options={"dir": str(server.workdir / "other")})

    gid = next(d.gid for d in other.get_downloads() if d.name == "ours.bin")
    other.client.pause(gid)
    server.wait_for(job["id"], {"paused"}, timeout=10)
    other.client.unpause(gid)
    server.wait_for(job["id"], {"downloading", "queued"}, timeout=10)
    other.client.remove(gid)
    removed = server.wait_for(job["id"], {"cancelled"}, timeout=10)
    assert removed["state"] == "cancelled"

    assert other.get_download(theirs.gid).status in ("active", "waiting")
    assert [j["id"] for j in server.api("GET", "/api/downloads").json()["jobs"]] == [job["id"]]
    other.client.force_remove(theirs.gid)


def test_jobs_survive_a_restart_and_continue(server_factory, origin, tmp_path):
    data = origin.add_file("/long.bin", 16 * MiB, rate=192 * 1024)
    origin.add_file("/quick.bin", 1 * MiB)
    server = server_factory()
    quick = server.submit(origin.url("/quick.bin"), "vae")
    server.wait_for(quick["id"], {"completed"})
    job = server.submit(origin.url("/long.bin"), "checkpoint")
    server.wait_until(job["id"], lambda j: j["downloaded"] > 2 * MiB)
    server.stop()
    sent_before = origin.stats("/long.bin")["bytes_sent"]

    restarted = server_factory(workdir=tmp_path)
    jobs = {j["id"]: j for j in restarted.api("GET", "/api/downloads").json()["jobs"]}
    assert jobs[quick["id"]]["state"] == "completed"
    assert jobs[job["id"]]["state"] in ("downloading", "queued", "resolving", "paused")
    done = restarted.wait_for(job["id"], {"completed", "failed"}, timeout=120)
    assert done["state"] == "completed", done
    assert (restarted.models / "checkpoint" / "long.bin").read_bytes() == data
    assert origin.stats("/long.bin")["bytes_sent"] - sent_before < len(data) - 2 * MiB


def test_secret_stays_off_command_lines_and_config_is_private(server_factory):
    server = server_factory()
    secret = (server.state / "aria2.secret").read_text().strip()
    assert stat.S_IMODE(os.stat(server.state / "aria2.secret").st_mode) == 0o600
    config = server.state / "aria2.runtime.conf"
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    assert f"rpc-secret={secret}" in config.read_text()
    assert "rpc-listen-all=false" in config.read_text()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    assert secret.encode() not in handle.read()
            except OSError:
                pass
