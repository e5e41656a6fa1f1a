"""aria2 clients through the app's own door: `/jsonrpc` on the app's port, the app's token as secret.

The real app with its own aria2c; aria2p as the client, as a user on a remote box would
point it at the tunnel. Links that need resolving, and plain links for a type folder,
become orchestrator jobs; the rest go to aria2 under the policy.
"""

from __future__ import annotations

import hashlib
import json
import re
import time

import aria2p
import pytest
import requests

from tests.conftest import needs_aria2
from tests.fakes.civitai import File
from tests.fakes.model_files import opaque_safetensors
from tests.fakes.world import fake_world

pytestmark = [pytest.mark.integration, needs_aria2]

MiB = 1024 * 1024


def token_of(server) -> str:
    match = re.search(r"\?token=([A-Za-z0-9_\-]+)", server.log())
    assert match, server.log()
    return match.group(1)


def rpc_client(server) -> aria2p.API:
    return aria2p.API(aria2p.Client(host="http://127.0.0.1", port=server.port, secret=token_of(server)))


def call(server, method: str, *params, secret: str | None = None) -> dict:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": method,
        "params": [f"token:{secret or token_of(server)}", *params],
    }
    return requests.post(f"{server.base}/jsonrpc", data=json.dumps(body), timeout=30).json()


def wait_gid(client: aria2p.API, gid: str, timeout: float = 60) -> aria2p.Download:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        download = client.get_download(gid)
        if download.status in ("complete", "error", "removed"):
            return download
        time.sleep(0.1)
    raise AssertionError(f"{gid} never ended")


@pytest.fixture
def world():
    with fake_world() as made:
        yield made


def test_a_plain_link_for_a_type_folder_becomes_a_job_and_the_client_follows_its_gid(server_factory, origin):
    data = origin.add_file("/detail.safetensors", 4 * MiB)
    server = server_factory()
    client = rpc_client(server)
    download = client.add_uris([origin.url("/detail.safetensors")], options={"dir": "lora"})
    assert wait_gid(client, download.gid).status == "complete"
    [job] = server.api("GET", "/api/downloads").json()["jobs"]  # shown in the page
    job = server.wait_settled(job["id"])
    assert job["state"] == "completed" and job["path"] == "lora/detail.safetensors"
    assert (server.models / "lora" / "detail.safetensors").read_bytes() == data
    assert job["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_civitai_link_added_through_the_gateway_lands_in_its_folder_with_its_sidecars(
    world, server_factory
):
    data = opaque_safetensors(b"L" * MiB)
    world.civitai.add_model(100, "Film Look", "LORA")
    world.civitai.add_version(100, 200, [File("film.safetensors", data, primary=True)])
    server = server_factory(env=world.env)
    client = rpc_client(server)
    download = client.add_uris(["https://civitai.com/api/download/models/200"])  # no dir: CivitAI's own type
    assert wait_gid(client, download.gid).status == "complete"
    [job] = server.api("GET", "/api/downloads").json()["jobs"]
    assert server.wait_settled(job["id"])["path"] == "lora/film.safetensors"
    assert server.model_files() == [
        "lora/film.civitai.info",
        "lora/film.json",
        "lora/film.preview.jpeg",
        "lora/film.safetensors",
    ]


def test_a_hub_link_without_a_type_folder_is_refused_with_what_to_set(world, server_factory):
    server = server_factory(env=world.env)
    answer = call(server, "aria2.addUri", ["https://huggingface.co/a/b/resolve/main/x.safetensors"])
    assert answer["error"]["data"]["code"] == "dir_required"
    assert "set the download's dir" in answer["error"]["message"]


def test_other_plain_links_go_to_aria2_under_the_policy(server_factory, origin):
    data = origin.add_file("/theirs.bin", 256 * 1024)
    server = server_factory()
    client = rpc_client(server)
    download = client.add_uris([origin.url("/theirs.bin")])
    assert wait_gid(client, download.gid).status == "complete"
    assert (server.models / "downloads" / "theirs.bin").read_bytes() == data
    assert server.api("GET", "/api/downloads").json()["jobs"] == []
    refused = call(server, "aria2.changeGlobalOption", {"on-download-complete": "/bin/sh"})
    assert "error" in refused and "on-download-complete" in refused["error"]["message"]
    assert call(server, "aria2.shutdown")["error"]["message"].startswith("aria2.shutdown")


def test_a_global_speed_limit_set_by_a_client_is_honoured_and_shown(server_factory):
    server = server_factory()
    assert call(server, "aria2.changeGlobalOption", {"max-overall-download-limit": "2M"})["result"] == "OK"
    assert call(server, "aria2.getGlobalOption")["result"]["max-overall-download-limit"] == str(2 * MiB)
    health = server.wait_until_health(lambda h: h["engine"].get("download_limit") == 2 * MiB, timeout=30)
    assert health["engine"]["download_limit"] == 2 * MiB


def test_a_wrong_secret_gets_aria2s_own_answer_and_the_daemons_secret_never_shows(server_factory):
    server = server_factory()
    assert call(server, "aria2.getVersion", secret="wrong-secret-wrong-secret")["error"] == {
        "code": 1,
        "message": "Unauthorized",
    }
    daemon_secret = (server.state / "aria2.secret").read_text().strip()
    options = call(server, "aria2.getGlobalOption")["result"]
    assert daemon_secret not in json.dumps(options) and daemon_secret not in server.log()
