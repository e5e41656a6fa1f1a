"""CivitAI end to end: the real app and aria2c against a fake CivitAI API and its signed storage."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.conftest import Server, needs_aria2
from tests.fakes.civitai import JPEG, TOKEN, File
from tests.fakes.model_files import opaque_safetensors
from tests.fakes.world import World, fake_world

pytestmark = [pytest.mark.integration, needs_aria2]

MiB = 1024 * 1024


def blob(size: int, seed: int) -> bytes:
    """A real safetensors file of `size` bytes, different per seed."""
    return opaque_safetensors(hashlib.sha256(str(seed).encode()).digest() * (size // 32))


def is_event(job_id: str, *statuses: str):
    def check(message: dict) -> bool:
        return message.get("job") == job_id and message["data"].get("status") in statuses

    return check


@pytest.fixture
def world():
    with fake_world() as made:
        yield made


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One world and one server for the many refusals: each is a job of its own."""
    with fake_world() as made:
        server = Server(tmp_path_factory.mktemp("civitai"), env=made.env).start()
        try:
            yield made, server
        finally:
            server.stop()


def test_model_link_with_auto_type_lands_verified_with_sidecars(world: World, server_factory, connect):
    """Paste a model page, pick auto: the right file, the right folder, verified, described."""
    data = blob(4 * MiB, 1)
    world.civitai.add_model(100, "Film Look ✨", "LORA")
    world.civitai.add_version(
        100,
        200,
        [
            File("film.ckpt", blob(MiB, 2), format="PickleTensor"),
            File("film.safetensors", data, primary=True),
        ],
        name="v2.0",
        needs_token=True,
    )
    server = server_factory(env=world.env)
    client = connect(server)
    assert client.next()["type"] == "hello"
    client.send(
        {
            "type": "download",
            "id": "c1",
            "data": {
                "type": "auto",
                "url": "https://civitai.com/models/100/film-look",
                "civitai_token": TOKEN,
            },
        }
    )
    job_id = client.until(lambda m: m.get("id") == "c1")["job"]
    done = client.until(is_event(job_id, "success", "error"))

    assert done["data"]["status"] == "success", done
    assert done["data"]["path"] == "lora/film.safetensors"
    assert done["data"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert (server.models / "lora" / "film.safetensors").read_bytes() == data
    # the metadata event came before any byte moved, with what a person wants to see
    statuses = [m["data"] for m in client.messages if m.get("job") == job_id]
    first_metadata = next(i for i, d in enumerate(statuses) if d["status"] == "metadata")
    assert all(d["status"] != "progress" or d["state"] != "downloading" for d in statuses[:first_metadata])
    info = statuses[first_metadata]["info"]
    assert info["model_name"] == "Film Look ✨" and info["version_name"] == "v2.0"
    assert info["model_type"] == "LORA" and info["base_model"] == "SDXL 1.0"
    assert info["trained_words"] == ["vintage photo", "film grain"]
    assert (info["file_name"], info["size"], info["nsfw"]) == ("film.safetensors", len(data), False)
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert (info["model_id"], info["version_id"]) == (100, 200)
    assert info["preview_url"].startswith(world.storage.base_url)
    # beside the model, under the names other tools read: A1111's user metadata, the record
    # Civitai Helper and LoRA Manager read, and the preview
    assert server.model_files() == [
        "lora/film.civitai.info",
        "lora/film.json",
        "lora/film.preview.jpeg",
        "lora/film.safetensors",
    ]
    record = json.loads((server.models / "lora" / "film.civitai.info").read_text())
    assert (record["modelId"], record["id"], record["baseModel"]) == (100, 200, "SDXL 1.0")
    assert record["trainedWords"] == ["vintage photo", "film grain"]
    assert record["files"][0]["hashes"]["SHA256"].lower() == hashlib.sha256(data).hexdigest()
    user = json.loads((server.models / "lora" / "film.json").read_text())
    assert user["activation text"] == "vintage photo, film grain" and user["sd version"] == "SDXL"
    assert (user["modelId"], user["modelVersionId"]) == (100, 200)
    assert (server.models / "lora" / "film.preview.jpeg").read_bytes() == JPEG
    assert server.staging_files() == []
    job = server.job(job_id)
    assert (job["type"], job["folder"], job["source"]) == ("auto", "lora", "civitai")
    # the token went to the API as a Bearer header, and the storage host never saw it
    assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in world.civitai.requests)
    assert world.storage.signed_requests(), "aria2 fetched from storage"
    assert not [r for r in world.storage.requests if r.header("Authorization")]
    assert not world.storage.saw_text(TOKEN)


def test_air_urn_with_a_format_and_an_explicit_type(world: World, server_factory):
    ckpt = blob(2 * MiB, 3)
    world.civitai.add_model(110, "Base", "Checkpoint")
    world.civitai.add_version(
        110,
        210,
        [
            File("base.safetensors", blob(MiB, 4), primary=True),
            File("base.ckpt", ckpt, format="PickleTensor"),
        ],
    )
    server = server_factory(env=world.env)
    job = server.submit("urn:air:sd1:checkpoint:civitai:110@210.ckpt", "vae")
    done = server.wait_for(job["id"], {"completed", "failed"})
    assert done["state"] == "completed", (done["error"], server.log()[-6000:])
    assert done["path"] == "vae/base.ckpt"  # the type the user picked wins over CivitAI's
    assert (server.models / "vae" / "base.ckpt").read_bytes() == ckpt


REFUSALS = [
    # (what the fake has, the link, the token, the error code)
    ("none", "https://civitai.com/models/999001", None, "civitai_not_found"),
    ("none", "https://civitai.com/models/500?modelVersionId=999002", None, "civitai_not_found"),
    ("nofiles", "500@501", None, "civitai_no_files"),
    ("plain", "https://civitai.com/api/download/models/502?format=GGUF", None, "civitai_file_not_found"),
    ("json401", "500@503", None, "civitai_token_required"),
    ("login", "500@504", None, "civitai_token_required"),
    ("json401", "500@505", "not-the-right-token", "civitai_token_rejected"),
    ("early", "500@506", TOKEN, "civitai_early_access"),
    ("disabled", "500@507", TOKEN, "civitai_downloads_disabled"),
    ("poses", "510@511", None, "type_required"),
]
SETUPS = {
    "none": {},
    "nofiles": {"files": []},
    "plain": {},
    "json401": {"needs_token": True, "unauthenticated": "json"},
    "login": {"needs_token": True, "unauthenticated": "login"},
    "early": {"early_access": True},
    "disabled": {"downloads_disabled": True},
    "poses": {},
}


@pytest.mark.parametrize(
    ("setup", "url", "token", "code"), REFUSALS, ids=[f"{r[3]}-{r[0]}" for r in REFUSALS]
)
def test_refusals_fail_with_a_reason_and_leave_nothing(shared, setup, url, token, code):
    world, server = shared
    if 500 not in world.civitai.models:
        world.civitai.add_model(500, "Locked", "LORA")
        world.civitai.add_model(510, "Hands", "Poses")
    version = int(url.rsplit("@", 1)[-1]) if "@" in url else 502
    if setup != "none" and version not in world.civitai.versions:
        model = 510 if setup == "poses" else 500
        options = dict(SETUPS[setup])
        files = options.pop("files", [File(f"v{version}.safetensors", blob(MiB, version), primary=True)])
        world.civitai.add_version(model, version, files, **options)
    fields = {"civitai_token": token} if token else {}
    job = server.submit(url, "auto", **fields)
    failed = server.wait_for(job["id"], {"failed", "completed"})
    assert failed["state"] == "failed"
    assert failed["error"]["code"] == code
    assert len(failed["error"]["message"]) > 30
    if token:
        assert token not in json.dumps(failed)
    assert server.model_files() == []
    assert server.staging_files() == []


@pytest.mark.parametrize(
    ("status", "code"), [(503, "origin_error"), (200, "origin_error")], ids=["5xx", "garbage-json"]
)
def test_a_broken_api_fails_the_job_clearly(world: World, server_factory, status, code):
    world.civitai.add_model(120, "M", "LORA")
    world.civitai.add_version(120, 220, [File("m.safetensors", blob(MiB, 5), primary=True)])
    if status == 200:
        world.civitai.garbage = True
    else:
        world.civitai.failing = status
    server = server_factory(env=world.env)
    job = server.submit("https://civitai.com/models/120", "lora")
    failed = server.wait_for(job["id"], {"failed", "completed"})
    assert failed["error"]["code"] == code
    assert "CivitAI" in failed["error"]["message"]
    assert server.model_files() == [] and server.staging_files() == []


@pytest.mark.parametrize("engine", ["aria2", "requests"])
def test_a_sha256_mismatch_removes_the_file_and_says_so(world: World, server_factory, engine):
    world.civitai.add_model(130, "Liar", "LORA")
    world.civitai.add_version(
        130, 230, [File("liar.safetensors", blob(2 * MiB, 6), primary=True, published_sha256="ab" * 32)]
    )
    server = server_factory(*(["--engine", "requests"] if engine == "requests" else []), env=world.env)
    job = server.submit("130@230", "lora")
    failed = server.wait_for(job["id"], {"failed", "completed"})
    assert failed["state"] == "failed", failed
    assert failed["error"]["code"] == "checksum_mismatch"
    assert "removed" in failed["error"]["message"]
    assert server.model_files() == []
    assert server.staging_files() == []


def test_an_expired_signed_url_is_resolved_again_and_the_download_resumes(world: World, server_factory):
    data = blob(8 * MiB, 7)
    world.civitai.add_model(140, "Slow", "Checkpoint")
    world.civitai.add_version(140, 240, [File("slow.safetensors", data, primary=True)], needs_token=True)
    world.storage.rate = 256 * 1024
    server = server_factory(env=world.env)
    job = server.submit("https://civitai.com/models/140", "auto", civitai_token=TOKEN)
    server.wait_until(job["id"], lambda j: j["downloaded"] >= MiB)
    world.storage.expire()  # the signed URL dies and the open connections drop
    world.storage.rate = None
    done = server.wait_for(job["id"], {"completed", "failed"}, timeout=120)

    assert done["state"] == "completed", (done["error"], server.log()[-6000:])
    assert (server.models / "checkpoint" / "slow.safetensors").read_bytes() == data
    assert len(world.civitai.downloads()) == 2, "the link was resolved again"
    assert world.storage.expired_requests(), "aria2 met the expired URL"
    # resumed from the bytes already there, not fetched again from zero
    assert sum(world.storage.sent.values()) < 1.5 * len(data)


def test_after_a_restart_an_expired_url_is_resolved_again(world: World, server_factory, tmp_path):
    data = blob(8 * MiB, 8)
    world.civitai.add_model(150, "Long", "LORA")
    world.civitai.add_version(150, 250, [File("long.safetensors", data, primary=True)], needs_token=True)
    world.storage.rate = 128 * 1024
    env = {**world.env, "CIVITAI_TOKEN": TOKEN}  # a request's token lives in memory only; env survives
    server = server_factory(env=env)
    job = server.submit("150@250", "lora")
    server.wait_until(job["id"], lambda j: j["downloaded"] >= MiB)
    server.stop()
    world.storage.expire()
    world.storage.rate = None

    restarted = server_factory(workdir=tmp_path, env=env)
    done = restarted.wait_for(job["id"], {"completed", "failed"}, timeout=120)
    assert done["state"] == "completed", (done["error"], restarted.log()[-6000:])
    assert (restarted.models / "lora" / "long.safetensors").read_bytes() == data
    assert len(world.civitai.downloads()) == 2
    assert sum(world.storage.sent.values()) < 1.5 * len(data)


def test_sidecars_can_be_turned_off(world: World, server_factory):
    world.civitai.add_model(160, "Plain", "VAE")
    world.civitai.add_version(160, 260, [File("plain.safetensors", blob(MiB, 9), primary=True)])
    server = server_factory(env={**world.env, "ORCHESTRATOR_SIDECARS": "off"})
    job = server.submit("160@260", "auto")
    assert server.wait_for(job["id"], {"completed", "failed"})["state"] == "completed"
    assert server.model_files() == ["vae/plain.safetensors"]


def test_a_missing_preview_does_not_fail_the_download(world: World, server_factory):
    world.civitai.add_model(170, "No Preview", "LORA")
    world.civitai.add_version(170, 270, [File("np.safetensors", blob(MiB, 10), primary=True)])
    world.storage.public.clear()  # the image host answers 404
    server = server_factory(env=world.env)
    job = server.submit("170@270", "auto")
    assert server.wait_for(job["id"], {"completed", "failed"})["state"] == "completed"
    assert server.model_files() == ["lora/np.civitai.info", "lora/np.json", "lora/np.safetensors"]


def test_auto_is_offered_for_every_link_and_refused_only_when_nothing_says_the_type(
    world: World, server_factory, origin
):
    """CivitAI says the type; other links are filed by the file's own header; a link whose file
    has none (a pickle .ckpt) fails with type_required, saying so."""
    origin.add_file("/old.ckpt", 4096)
    server = server_factory(env=world.env)
    types = server.api("GET", "/api/types").json()["types"]
    auto = next(t for t in types if t["name"] == "auto")
    assert "CivitAI" in auto["description"] and "header" in auto["description"]
    job = server.submit(origin.url("/old.ckpt"), "auto")
    failed = server.wait_for(job["id"], {"failed", "completed"})
    assert failed["error"]["code"] == "type_required", failed
    assert server.model_files() == []
