"""Hugging Face end to end: the real app and aria2c against a fake Hub and its signed storage."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.conftest import Server, needs_aria2
from tests.fakes.huggingface import TOKEN
from tests.fakes.model_files import opaque_safetensors
from tests.fakes.world import World, fake_world

pytestmark = [pytest.mark.integration, needs_aria2]

MiB = 1024 * 1024


def blob(size: int, seed: int) -> bytes:
    """A real safetensors file of `size` bytes, different per seed."""
    return opaque_safetensors(hashlib.sha256(str(seed).encode()).digest() * (size // 32))


@pytest.fixture
def world():
    with fake_world() as made:
        yield made


def test_a_blob_page_link_lands_verified_from_storage(world: World, server_factory):
    data = blob(4 * MiB, 1)
    world.hub.add_repo("acme/sdxl-vae")
    world.hub.add_file("acme/sdxl-vae", "weights/sdxl_vae.safetensors", data)
    server = server_factory(env=world.env)
    job = server.submit("https://huggingface.co/acme/sdxl-vae/blob/main/weights/sdxl_vae.safetensors", "vae")
    done = server.wait_for(job["id"], {"completed", "failed"})

    assert done["state"] == "completed", done
    assert done["path"] == "vae/sdxl_vae.safetensors"
    assert done["sha256"] == hashlib.sha256(data).hexdigest()
    assert (server.models / "vae" / "sdxl_vae.safetensors").read_bytes() == data
    assert done["metadata"]["commit"] == "a" * 40
    assert done["metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert [r.method for r in world.hub.resolves()] == ["HEAD"]  # the Hub described it; storage served it
    assert world.hf_storage.signed_requests()
    # beside it, the small `<stem>.json` A1111 shows: where the file came from, at which commit
    assert server.model_files() == ["vae/sdxl_vae.json", "vae/sdxl_vae.safetensors"]
    card = json.loads((server.models / "vae" / "sdxl_vae.json").read_text())
    assert card["huggingface"]["repo"] == "acme/sdxl-vae"
    assert card["huggingface"]["commit"] == "a" * 40
    assert card["huggingface"]["path"] == "weights/sdxl_vae.safetensors"
    assert server.staging_files() == []


def test_a_private_repo_with_the_token_from_the_environment(world: World, server_factory):
    data = blob(2 * MiB, 2)
    world.hub.add_repo("acme/private-loras", private=True)
    world.hub.add_file("acme/private-loras", "styles/ink.safetensors", data)
    server = server_factory(env={**world.env, "HF_TOKEN": TOKEN})
    job = server.submit("hf://acme/private-loras/styles/ink.safetensors", "lora")
    done = server.wait_for(job["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    assert (server.models / "lora" / "ink.safetensors").read_bytes() == data
    assert world.hub.resolves()[0].header("Authorization") == f"Bearer {TOKEN}"
    assert not [r for r in world.hf_storage.requests if r.header("Authorization")]


def test_a_dataset_file_typed_as_a_shorthand(world: World, server_factory):
    data = blob(MiB, 3)
    world.hub.add_repo("acme/upscalers", kind="dataset")
    world.hub.add_file("acme/upscalers", "4x/ultra.pth", data, kind="dataset")
    server = server_factory(env=world.env)
    job = server.submit("datasets/acme/upscalers/4x/ultra.pth", "upscaler")
    done = server.wait_for(job["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    assert (server.models / "upscaler" / "ultra.pth").read_bytes() == data


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    with fake_world() as made:
        hub = made.hub
        hub.add_repo("acme/open")
        hub.add_file("acme/open", "model.safetensors", blob(MiB, 4))
        hub.add_repo("acme/secret", private=True, granted=False)
        hub.add_file("acme/secret", "model.safetensors", blob(MiB, 5))
        hub.add_repo("acme/gated", gated=True, granted=False)
        hub.add_file("acme/gated", "model.safetensors", blob(MiB, 6))
        server = Server(tmp_path_factory.mktemp("hub"), env=made.env).start()
        try:
            yield made, server
        finally:
            server.stop()


@pytest.mark.parametrize(
    ("url", "token", "code"),
    [
        ("acme/gated/model.safetensors", None, "hf_gated"),
        ("acme/gated/model.safetensors", TOKEN, "hf_gated"),
        ("acme/secret/model.safetensors", None, "hf_not_found"),
        ("acme/secret/model.safetensors", TOKEN, "hf_not_found"),
        ("https://huggingface.co/acme/missing/resolve/main/model.safetensors", None, "hf_not_found"),
        ("https://huggingface.co/acme/open/resolve/main/other.safetensors", None, "hf_file_not_found"),
        ("https://huggingface.co/acme/open/resolve/v9/model.safetensors", None, "hf_revision_not_found"),
        ("acme/open/model.safetensors", "hf_notAValidToken", "hf_token_rejected"),
    ],
)
def test_hub_refusals_fail_with_a_reason_and_leave_nothing(shared, url, token, code):
    world, server = shared
    fields = {"hf_token": token} if token else {}
    job = server.submit(url, "checkpoint", **fields)
    failed = server.wait_for(job["id"], {"failed", "completed"})
    assert failed["state"] == "failed"
    assert failed["error"]["code"] == code
    assert len(failed["error"]["message"]) > 30
    if code == "hf_gated":
        assert "https://huggingface.co/acme/gated" in failed["error"]["message"]
    assert server.model_files() == []
    assert server.staging_files() == []
    assert world.hf_storage.requests == []


def test_a_download_continued_after_the_branch_moved_keeps_its_commit(world: World, server_factory):
    old = blob(8 * MiB, 11)
    world.hub.add_repo("acme/moving")
    world.hub.add_file("acme/moving", "model.safetensors", old)
    world.hf_storage.rate = 256 * 1024
    server = server_factory(env=world.env)
    job = server.submit("acme/moving/model.safetensors", "checkpoint")
    server.wait_until(job["id"], lambda j: j["downloaded"] >= MiB)
    new_commit = world.hub.push("acme/moving", "model.safetensors", blob(8 * MiB, 12))  # main moves on
    world.hf_storage.expire()  # and the signed URL dies: the link must be resolved again
    world.hf_storage.rate = None
    done = server.wait_for(job["id"], {"completed", "failed"}, timeout=120)

    assert done["state"] == "completed", (done["error"], server.log()[-6000:])
    assert (server.models / "checkpoint" / "model.safetensors").read_bytes() == old
    assert done["sha256"] == hashlib.sha256(old).hexdigest()
    first, again = [r.path for r in world.hub.resolves()]
    assert "/resolve/main/" in first
    assert f"/resolve/{'a' * 40}/" in again and new_commit not in again  # pinned to the first commit
    assert world.hf_storage.expired_requests(), "aria2 met the expired URL"
