"""The model library end to end: real files in a temp models folder (placed by hand, copied,
renamed, with odd names and broken sidecars), the real app with its aria2c, the fake CivitAI
answering by-hash and the models API with its version history; the CLI against that server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, needs_aria2
from tests.fakes.civitai import JPEG, TOKEN, File
from tests.fakes.model_files import opaque_safetensors
from tests.fakes.world import fake_world

pytestmark = [pytest.mark.integration, needs_aria2]

KiB = 1024
ODD = "odd name ✓ [1] #50%.safetensors"


def blob(size: int, seed: str) -> bytes:
    return opaque_safetensors(hashlib.sha256(seed.encode()).digest() * (size // 32))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def place(models: Path, relative: str, data: bytes) -> Path:
    path = models / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def listing(server) -> dict:
    answer = server.api("GET", "/api/models")
    assert answer.status_code == 200, answer.text
    return answer.json()


def files(server) -> dict[str, dict]:
    """Every listed file by its path."""
    return {entry["path"]: entry for entries in listing(server)["models"].values() for entry in entries}


def wait_files(server, check, timeout: float = 60) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = files(server)
        if check(found):
            return found
        assert time.monotonic() < deadline, f"the library never got there: {found}\n{server.log()[-3000:]}"
        time.sleep(0.2)


def scan_and_wait(server, timeout: float = 60) -> dict:
    answer = server.api("POST", "/api/models/scan")
    assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + timeout
    while True:
        library = listing(server)["library"]
        if library["scan"] is None and library["last_scan"] is not None:
            return library["last_scan"]
        assert time.monotonic() < deadline, f"the scan never ended: {library}"
        time.sleep(0.1)


def error_of(answer) -> tuple[int, str]:
    return answer.status_code, answer.json()["error"]["code"]


@pytest.fixture
def world():
    with fake_world() as made:
        yield made


# -- identify, describe, duplicates, updates -----------------------------------------------------


def test_hand_placed_files_are_hashed_identified_described_and_an_update_is_offered(
    server_factory, tmp_path, world
):
    known = blob(64 * KiB, "known lora")
    newer = blob(64 * KiB, "newer lora")
    world.civitai.add_model(100, "Film Look", type="LORA")
    world.civitai.add_version(
        100, 1001, [File("film_v1.safetensors", known, primary=True)], name="v1", published_at="2024-01-01"
    )
    world.civitai.add_version(
        100, 1002, [File("film_v2.safetensors", newer, primary=True)], name="v2", published_at="2024-06-01"
    )
    models = tmp_path / "models"
    place(models, "lora/film.safetensors", known)  # renamed by hand: found by its bytes, not its name
    twin = blob(32 * KiB, "twin")
    place(models, "lora/a.safetensors", twin)
    place(models, "lora/SDXL/b.safetensors", twin)  # the same bytes in a subfolder
    place(models, f"lora/{ODD}", blob(16 * KiB, "odd"))
    place(models, "lora/broken.safetensors", blob(16 * KiB, "broken"))
    (models / "lora" / "broken.json").write_text("{this is not JSON")
    place(models, "lora/notes.txt", b"not a model")

    server = server_factory(env=world.env)
    # the look-up's answer and the sidecars written from it land a moment apart: wait for both
    found = wait_files(
        server,
        lambda f: (
            f.get("lora/film.safetensors", {}).get("title") == "Film Look"
            and bool(f["lora/film.safetensors"].get("trigger_words"))
        ),
    )

    film = found["lora/film.safetensors"]
    assert film["sha256"] == sha(known) and film["autov2"] == sha(known)[:10].upper()
    assert film["source"]["kind"] == "civitai" and film["source"]["found_by"] == "lookup"
    assert (film["source"]["model_id"], film["source"]["version_id"]) == (100, 1001)
    assert film["source_url"].endswith("/models/100?modelVersionId=1001")
    assert film["trigger_words"] == ["vintage photo", "film grain"]
    assert film["base_model"] == "SDXL 1.0"
    assert film["civitai"] == "hit"
    # a hit writes what a download writes beside the model, and the app serves the preview itself
    assert (models / "lora" / "film.civitai.info").is_file() and (models / "lora" / "film.json").is_file()
    preview = server.api("GET", "/" + film["preview"])
    assert preview.status_code == 200 and preview.content == JPEG
    assert preview.headers["content-type"] == "image/jpeg"

    found = wait_files(server, lambda f: f["lora/film.safetensors"]["update"] is not None)
    update = found["lora/film.safetensors"]["update"]
    assert (update["latest_version_id"], update["latest_version_name"]) == (1002, "v2")
    assert update["installed_version_id"] == 1001 and update["latest_published_at"] == "2024-06-01"

    assert found["lora/a.safetensors"]["duplicates"] == ["lora/SDXL/b.safetensors"]
    assert found["lora/SDXL/b.safetensors"]["duplicates"] == ["lora/a.safetensors"]
    assert found["lora/SDXL/b.safetensors"]["name"] == "SDXL/b.safetensors"
    assert found[f"lora/{ODD}"]["sha256"] == sha((models / "lora" / ODD).read_bytes())
    assert any("not JSON" in problem for problem in found["lora/broken.safetensors"]["problems"])
    assert "lora/notes.txt" not in found and "lora/broken.json" not in found
    library = listing(server)["library"]
    assert library["files"] == 5 and library["duplicates"] == 1 and library["updates"] == 1

    asked = world.civitai.seen("/api/v1/model-versions/by-hash")
    assert asked and all(request.header("Authorization") is None for request in asked)  # no token set
    assert world.civitai.seen("/api/v1/models/100")  # the version history, for the update

    # one click: the newer version downloads beside the old one, as a normal job
    answer = server.api("POST", "/api/models/update", json={"path": "lora/film.safetensors"})
    assert answer.status_code == 201, answer.text
    job = server.wait_settled(answer.json()["job"]["id"])
    assert job["state"] == "completed" and job["path"] == "lora/film_v2.safetensors", job
    assert (models / "lora" / "film_v2.safetensors").read_bytes() == newer
    assert (models / "lora" / "film.safetensors").read_bytes() == known  # the old one stays

    nothing = server.api("POST", "/api/models/update", json={"path": "lora/a.safetensors"})
    assert error_of(nothing) == (404, "no_update")


def test_a_token_goes_to_civitai_only_when_one_is_set_and_misses_are_not_asked_again(
    server_factory, tmp_path, world
):
    models = tmp_path / "models"
    place(models, "lora/unknown.safetensors", blob(16 * KiB, "nobody knows me"))
    server = server_factory(env={**world.env, "CIVITAI_TOKEN": TOKEN})
    found = wait_files(server, lambda f: f["lora/unknown.safetensors"]["civitai"] == "miss")
    assert found["lora/unknown.safetensors"]["source"]["kind"] == "unknown"
    asked = world.civitai.seen("/api/v1/model-versions/by-hash")
    assert [request.header("Authorization") for request in asked] == [f"Bearer {TOKEN}"]
    assert TOKEN not in server.log()

    scan_and_wait(server)  # a miss is remembered: the rescan does not ask again
    time.sleep(0.5)
    assert len(world.civitai.seen("/api/v1/model-versions/by-hash")) == 1


def test_civitai_failing_leaves_the_library_whole_and_says_why(server_factory, tmp_path, world):
    models = tmp_path / "models"
    place(models, "lora/x.safetensors", blob(16 * KiB, "x"))
    world.civitai.cloudflare = True
    server = server_factory(env=world.env)
    found = wait_files(server, lambda f: f["lora/x.safetensors"]["civitai"] == "error")
    assert found["lora/x.safetensors"]["sha256"] == sha((models / "lora" / "x.safetensors").read_bytes())


# -- downloads, scans ----------------------------------------------------------------------------


def test_a_hub_folders_files_are_recorded_where_the_folder_went_and_no_scan_hashes_them(
    server_factory, world
):
    parts = {
        "vae/config.json": b'{"_class_name": "AutoencoderKL"}',
        "vae/diffusion_pytorch_model.safetensors": blob(256 * KiB, "folder vae"),
        "vae/extra/second.safetensors": blob(128 * KiB, "folder extra"),
    }
    world.hub.add_repo("acme/kit")
    for path, data in parts.items():
        world.hub.add_file("acme/kit", path, data, lfs=path.endswith(".safetensors"))
    server = server_factory(env=world.env)
    answer = server.api(
        "POST", "/api/bundles", json={"kind": "hf_folder", "url": "hf://acme/kit/vae/", "type": "vae"}
    )
    assert answer.status_code == 201, answer.text
    made = answer.json()["bundle"]
    deadline = time.monotonic() + 60
    while server.api("GET", f"/api/bundles/{made['id']}").json()["bundle"]["state"] != "completed":
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.1)

    weights = {"vae/vae/diffusion_pytorch_model.safetensors", "vae/vae/extra/second.safetensors"}
    found = wait_files(server, lambda f: weights <= {p for p, e in f.items() if e["sha256"]})
    for path in weights:
        assert found[path]["sha256"] == sha(parts[path.removeprefix("vae/")])
        assert found[path]["source"]["kind"] == "huggingface"
    result = scan_and_wait(server)
    assert result["hashed_files"] == 0  # the verified hashes were kept; nothing read again


def test_a_download_is_recorded_with_its_verified_hash_and_no_scan_hashes_it_again(
    server_factory, tmp_path, world
):
    data = blob(96 * KiB, "downloaded")
    world.civitai.add_model(200, "Dl Model", type="LORA")
    world.civitai.add_version(200, 2001, [File("dl.safetensors", data, primary=True)], name="v1")
    server = server_factory(env=world.env)
    job = server.submit("https://civitai.com/models/200?modelVersionId=2001", "lora")
    job = server.wait_settled(job["id"])
    assert job["state"] == "completed", job

    found = wait_files(server, lambda f: f.get("lora/dl.safetensors", {}).get("sha256") is not None)
    entry = found["lora/dl.safetensors"]
    assert entry["sha256"] == sha(data)
    assert entry["source"] == {"kind": "civitai", "model_id": 200, "version_id": 2001, "found_by": "download"}
    assert entry["trigger_words"] == ["vintage photo", "film grain"]  # from the sidecars it wrote
    assert entry["preview"] is not None

    result = scan_and_wait(server)
    assert result["hashed_files"] == 0 and result["counts"]["added"] == 0  # known, unchanged
    assert world.civitai.seen("/api/v1/model-versions/by-hash") == []  # its source is known


def test_bytes_the_library_has_are_hard_linked_instead_of_downloaded_again(
    server_factory, tmp_path, world, connect
):
    data = blob(128 * KiB, "shared bytes")
    world.civitai.add_model(300, "Shared", type="LORA")
    world.civitai.add_version(300, 3001, [File("shared.safetensors", data, primary=True)], name="v1")
    models = tmp_path / "models"
    place(models, "lora/SD15/mine.safetensors", data)  # placed by hand under another name
    server = server_factory(env=world.env)
    wait_files(server, lambda f: f["lora/SD15/mine.safetensors"]["sha256"] == sha(data))

    def fetched() -> list:  # the model's bytes, not its preview image
        return [r for r in world.storage.seen() if not r.path.startswith("/images/")]

    assert fetched() == []

    socket = connect(server)
    socket.next()
    job = server.submit("https://civitai.com/models/300?modelVersionId=3001", "lora")
    success = socket.until(
        lambda m: m.get("job") == job["id"] and m["data"]["status"] in ("success", "error")
    )
    assert success["data"]["status"] == "success", success
    assert success["data"]["already_present"] is True and success["data"]["compared"] == "sha256"
    assert success["data"]["found_at"] == "lora/SD15/mine.safetensors"
    installed = models / "lora" / "shared.safetensors"
    assert installed.read_bytes() == data
    assert os.stat(installed).st_ino == os.stat(models / "lora" / "SD15" / "mine.safetensors").st_ino
    assert fetched() == []  # not one byte fetched again
    found = wait_files(
        server, lambda f: "lora/shared.safetensors" in f and f["lora/shared.safetensors"]["id"]
    )
    assert found["lora/shared.safetensors"]["duplicates"] == ["lora/SD15/mine.safetensors"]
    assert listing(server)["library"]["duplicates"] == 1


def test_a_scan_notices_files_added_changed_moved_and_removed_by_hand(server_factory, tmp_path, connect):
    models = tmp_path / "models"
    place(models, "checkpoint/stays.safetensors", blob(16 * KiB, "stays"))
    place(models, "checkpoint/changes.safetensors", blob(16 * KiB, "changes"))
    moving = place(models, "checkpoint/moves.safetensors", blob(16 * KiB, "moves"))
    gone = place(models, "checkpoint/goes.safetensors", blob(16 * KiB, "goes"))
    server = server_factory()
    before = wait_files(server, lambda f: len(f) == 4 and all(e["sha256"] for e in f.values()))
    moved_sha = before["checkpoint/moves.safetensors"]["sha256"]

    place(models, "checkpoint/new.safetensors", blob(16 * KiB, "new"))
    with open(models / "checkpoint" / "changes.safetensors", "ab") as handle:
        handle.write(b"\0" * 1024)
    (models / "checkpoint" / "SD15").mkdir()
    os.rename(moving, models / "checkpoint" / "SD15" / "moved.safetensors")
    gone.unlink()

    socket = connect(server)
    assert socket.next()["type"] == "hello"
    assert server.api("POST", "/api/models/scan").status_code == 202
    done = socket.until(lambda m: m["type"] == "library" and m["data"]["status"] == "scan_done")
    statuses = [m["data"]["status"] for m in socket.messages if m["type"] == "library"]
    assert statuses[0] == "scan_started" and "scan_progress" in statuses
    result = done["data"]
    shown = {key: [Path(p).name for p in result[key]] for key in ("added", "changed", "removed")}
    assert shown == {
        "added": ["new.safetensors"],
        "changed": ["changes.safetensors"],
        "removed": ["goes.safetensors"],
    }
    assert [[Path(p).name for p in pair] for pair in result["moved"]] == [
        ["moves.safetensors", "moved.safetensors"]
    ]
    after = files(server)
    assert sorted(after) == [
        "checkpoint/SD15/moved.safetensors",
        "checkpoint/changes.safetensors",
        "checkpoint/new.safetensors",
        "checkpoint/stays.safetensors",
    ]
    assert after["checkpoint/SD15/moved.safetensors"]["sha256"] == moved_sha
    assert after["checkpoint/changes.safetensors"]["sha256"] == sha(
        (models / "checkpoint" / "changes.safetensors").read_bytes()
    )


# -- delete --------------------------------------------------------------------------------------


def test_delete_takes_the_model_and_its_sidecars_and_refuses_what_is_not_a_model_inside(
    server_factory, tmp_path, connect
):
    models = tmp_path / "models"
    place(models, "lora/x.safetensors", blob(16 * KiB, "x"))
    (models / "lora" / "x.json").write_text("{}")
    (models / "lora" / "x.preview.png").write_bytes(b"\x89PNG")
    place(models, "lora/SDXL/y.safetensors", blob(16 * KiB, "y"))
    outside = tmp_path / "elsewhere"
    place(outside, "victim.safetensors", b"keep me")
    (models / "lora" / "linked").symlink_to(outside, target_is_directory=True)
    server = server_factory()
    wait_files(server, lambda f: "lora/x.safetensors" in f)

    refusals = {
        "../elsewhere/victim.safetensors": (400, "invalid_path"),
        "lora/../../elsewhere/victim.safetensors": (400, "invalid_path"),
        str(outside / "victim.safetensors"): (400, "outside_roots"),
        "lora/SDXL": (400, "not_a_model"),
        "lora/linked/victim.safetensors": (400, "symlink_refused"),
        "lora/x.json": (400, "not_a_model"),
        "lora/nothing.safetensors": (404, "not_found"),
    }
    for path, expected in refusals.items():
        assert error_of(server.api("DELETE", "/api/models", params={"path": path})) == expected, path
    assert error_of(server.api("DELETE", "/api/models")) == (400, "invalid_path")
    assert (outside / "victim.safetensors").read_bytes() == b"keep me"

    socket = connect(server)
    socket.next()
    answer = server.api("DELETE", "/api/models", params={"path": "lora/x.safetensors"})
    assert answer.status_code == 200, answer.text
    removed = answer.json()["removed"]
    assert removed["path"] == "lora/x.safetensors"
    assert sorted(removed["sidecars"]) == ["lora/x.json", "lora/x.preview.png"]
    event = socket.until(lambda m: m["type"] == "library" and m["data"]["status"] == "removed")
    assert event["data"]["path"] == "lora/x.safetensors"
    assert sorted(p.name for p in (models / "lora").iterdir()) == ["SDXL", "linked"]
    assert "lora/x.safetensors" not in files(server)
    assert error_of(server.api("GET", "/api/models/preview", params={"path": "lora/x.safetensors"})) == (
        404,
        "not_found",
    )


def test_a_preview_is_served_only_from_inside_the_models_folders(server_factory, tmp_path):
    models = tmp_path / "models"
    place(models, "lora/p.safetensors", blob(16 * KiB, "p"))
    (models / "lora" / "p.preview.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    place(models, "lora/q.safetensors", blob(16 * KiB, "q"))
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"secret")
    (models / "lora" / "q.preview.png").symlink_to(secret)
    server = server_factory()
    shown = server.api("GET", "/api/models/preview", params={"path": "lora/p.safetensors"})
    assert shown.status_code == 200 and shown.content.startswith(b"\x89PNG")
    assert shown.headers["content-type"] == "image/png"
    assert error_of(server.api("GET", "/api/models/preview", params={"path": "lora/q.safetensors"})) == (
        404,
        "no_preview",
    )
    assert error_of(server.api("GET", "/api/models/preview", params={"path": "../secret.png"})) == (
        400,
        "invalid_path",
    )


# -- the CLI -------------------------------------------------------------------------------------


def run_cli(server, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    given = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_") and k != "CIVITAI_TOKEN"}
    env.update(PYTHONPATH=str(ROOT), **given)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "models", *args, "--server", server.base],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_the_cli_lists_scans_and_deletes_models(server_factory, tmp_path):
    models = tmp_path / "models"
    data = blob(16 * KiB, "cli")
    place(models, "lora/cli.safetensors", data)
    place(models, "lora/copy.safetensors", data)
    server = server_factory()
    wait_files(server, lambda f: all(e["sha256"] for e in f.values()) and len(f) == 2)

    listed = run_cli(server, "ls")
    assert listed.returncode == 0, listed.stderr
    assert "lora/cli.safetensors" in listed.stdout and sha(data)[:10].upper() in listed.stdout
    assert "2 copies" in listed.stdout
    as_json = json.loads(run_cli(server, "ls", "--json").stdout)
    assert {e["path"] for e in as_json["models"]["lora"]} == {"lora/cli.safetensors", "lora/copy.safetensors"}

    place(models, "vae/new.safetensors", blob(16 * KiB, "new vae"))
    scanned = run_cli(server, "scan")
    assert scanned.returncode == 0, scanned.stderr
    assert "Scan done: 3 files, 1 added, 1 hashed" in scanned.stdout

    removed = run_cli(server, "rm", "lora/copy.safetensors")
    assert removed.returncode == 0 and "Deleted lora/copy.safetensors" in removed.stdout
    assert not (models / "lora" / "copy.safetensors").exists()
    refused = run_cli(server, "rm", "../x.safetensors")
    assert refused.returncode == 1 and "'..'" in refused.stderr

    server.stop()
    gone = run_cli(server, "ls")
    assert gone.returncode == 2 and "orchestrator serve" in gone.stderr


def test_the_cli_gets_an_early_access_update_with_the_callers_key_and_keeps_it_nowhere(
    server_factory, tmp_path, world
):
    known, newer = blob(64 * KiB, "known"), blob(64 * KiB, "early access")
    world.civitai.add_model(300, "Ink", type="LORA")
    world.civitai.add_version(300, 3001, [File("ink_v1.safetensors", known, primary=True)], name="v1")
    world.civitai.add_version(
        300, 3002, [File("ink_v2.safetensors", newer, primary=True)], name="v2", needs_token=True
    )
    models = tmp_path / "models"
    place(models, "lora/ink.safetensors", known)
    server = server_factory(env=world.env)  # the server itself has no CivitAI key
    wait_files(server, lambda f: f.get("lora/ink.safetensors", {}).get("update") is not None)

    without = run_cli(server, "update", "lora/ink.safetensors")
    assert without.returncode == 0, without.stderr
    refused = server.wait_settled(without.stdout.split("job ")[1].split()[0])
    assert refused["state"] == "failed" and refused["error"]["code"] == "civitai_token_required", refused

    with_key = run_cli(server, "update", "lora/ink.safetensors", env={"CIVITAI_TOKEN": TOKEN})
    assert with_key.returncode == 0, with_key.stderr
    job = server.wait_settled(with_key.stdout.split("job ")[1].split()[0])
    assert job["state"] == "completed", job
    assert (models / "lora" / "ink_v2.safetensors").read_bytes() == newer
    kept = [p for p in tmp_path.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert kept == []
