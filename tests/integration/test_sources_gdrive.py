"""Google Drive end to end: gdown's parsers find the file on a fake Drive, aria2c fetches it."""

from __future__ import annotations

import hashlib

import pytest

from tests.conftest import needs_aria2
from tests.fakes.model_files import opaque_safetensors
from tests.fakes.world import World, fake_world

pytestmark = [pytest.mark.integration, needs_aria2]

MiB = 1024 * 1024
FILE_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz0123"


@pytest.fixture
def world():
    with fake_world() as made:
        yield made


def test_a_large_shared_file_passes_the_confirmation_and_aria2_gets_its_cookie(world: World, server_factory):
    data = opaque_safetensors(hashlib.sha256(b"drive").digest() * (6 * MiB // 32))
    world.drive.add(FILE_ID, data, "réaliste.safetensors", large=True)
    server = server_factory(env=world.env)
    job = server.submit(f"https://drive.google.com/file/d/{FILE_ID}/view?usp=sharing", "checkpoint")
    done = server.wait_settled(job["id"])

    assert done["state"] == "completed", done
    assert done["path"] == "checkpoint/réaliste.safetensors"  # from Drive's filename*=UTF-8''
    assert (server.models / "checkpoint" / "réaliste.safetensors").read_bytes() == data
    assert done["sha256"] == hashlib.sha256(data).hexdigest()
    fetched = [r for r in world.drive.content.requests if (r.header("User-Agent") or "").startswith("aria2")]
    assert fetched, "aria2 fetched the bytes itself"
    assert all(f"download_warning_{FILE_ID}=" in (r.header("Cookie") or "") for r in fetched)
    assert all(r.query.get("confirm") == "t" for r in fetched)
    assert server.staging_files() == []


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"shared": False}, "gdrive_private"),
        ({"over_quota": True}, "gdrive_quota"),
        (None, "gdrive_not_found"),
    ],
    ids=["private", "quota", "missing"],
)
def test_drive_refusals_fail_with_a_reason_and_leave_nothing(world: World, server_factory, options, code):
    if options is not None:
        world.drive.add(FILE_ID, b"x" * 1000, "x.safetensors", **options)
    server = server_factory(env=world.env)
    job = server.submit(f"https://drive.google.com/open?id={FILE_ID}", "lora")
    failed = server.wait_for(job["id"], {"failed", "completed"})
    assert failed["state"] == "failed"
    assert failed["error"]["code"] == code
    assert len(failed["error"]["message"]) > 30
    assert server.model_files() == []
    assert server.staging_files() == []
