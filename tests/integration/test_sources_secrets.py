"""Tokens go to the service's API host and nowhere else: not storage, not aria2, not a file, not a log."""

from __future__ import annotations

import json

import aria2p
import pytest

from tests.conftest import needs_aria2
from tests.fakes import civitai, huggingface
from tests.fakes.civitai import File
from tests.fakes.model_files import opaque_safetensors
from tests.fakes.world import World, fake_world

pytestmark = [pytest.mark.integration, needs_aria2]

MiB = 1024 * 1024
TOKENS = (civitai.TOKEN, huggingface.TOKEN)


@pytest.fixture
def world():
    with fake_world() as made:
        yield made


def what_aria2_holds(server) -> str:
    """Every download aria2 knows (URIs included) and every option, global and per download, as text."""
    secret = (server.state / "aria2.secret").read_text().strip()
    client = aria2p.Client(host="http://127.0.0.1", port=server.aria2_port, secret=secret)
    downloads = client.tell_active() + client.tell_waiting(0, 100) + client.tell_stopped(0, 100)
    assert downloads, "aria2 knows the downloads"
    options = [client.get_option(d["gid"]) for d in downloads]
    return json.dumps([client.get_global_option(), *downloads, *options])


def test_tokens_never_leave_the_api_hosts(world: World, server_factory, connect):
    world.civitai.add_model(700, "Secret Style", "LORA")
    world.civitai.add_version(
        700,
        701,
        [File("secret.safetensors", opaque_safetensors(b"c" * 8 * MiB), primary=True)],
        needs_token=True,
    )
    world.hub.add_repo("acme/private", private=True)
    world.hub.add_file("acme/private", "unet.safetensors", opaque_safetensors(b"h" * 2 * MiB))
    world.storage.rate = 256 * 1024  # CivitAI's file is still moving when aria2 is inspected
    server = server_factory("--log-level", "debug", env=world.env)
    client = connect(server)
    client.next()

    client.send(
        {
            "type": "download",
            "id": "hf",
            "data": {
                "type": "lora",
                "url": "hf://acme/private/unet.safetensors",
                "hf_token": huggingface.TOKEN,
            },
        }
    )
    hf_job = client.until(lambda m: m.get("id") == "hf")["job"]
    assert server.wait_for(hf_job, {"completed", "failed"})["state"] == "completed"
    client.send(
        {
            "type": "download",
            "id": "civ",
            "data": {"type": "auto", "url": "https://civitai.com/models/700", "civitai_token": civitai.TOKEN},
        }
    )
    civ_job = client.until(lambda m: m.get("id") == "civ")["job"]
    server.wait_until(civ_job, lambda j: j["downloaded"] > 0)

    options = what_aria2_holds(server)
    assert world.storage.host in options  # aria2 holds the signed URL...
    assert not any(token in options for token in TOKENS)  # ...and no token, in any header or URL
    listing = server.api("GET", "/api/downloads").text
    server.stop()  # mid-download: aria2 writes this job into its session file

    files = [path for path in server.workdir.rglob("*") if path.is_file()]
    names = {path.name for path in files}
    assert {"jobs.sqlite3", "aria2.session", "aria2.runtime.conf", "serve.log"} <= names, names
    for path in files:
        content = path.read_bytes()
        for token in TOKENS:
            assert token.encode() not in content, f"{token[:8]}... found in {path}"
    session = (server.state / "aria2.session").read_text()
    assert world.storage.host in session  # the scan looked at a session that holds the download
    assert " DEBUG " in server.log()  # the scan covered the most talkative log there is
    for token in TOKENS:
        assert token not in json.dumps(client.messages)
        assert token not in listing
    # each token reached its API host, as a Bearer header, and no storage host saw either
    assert world.civitai.downloads()
    assert {r.header("Authorization") for r in world.civitai.requests} == {f"Bearer {civitai.TOKEN}"}
    assert world.hub.resolves()[0].header("Authorization") == f"Bearer {huggingface.TOKEN}"
    for storage in (world.storage, world.hf_storage):
        assert storage.signed_requests()
        assert not [r for r in storage.requests if r.header("Authorization")]
        assert not any(storage.saw_text(token) for token in TOKENS)
    assert not any("token" in r.query for r in world.civitai.requests)
