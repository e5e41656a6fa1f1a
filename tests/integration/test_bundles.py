"""Bundles end to end: a list of links, a Hugging Face folder, a ComfyUI workflow, a CivitAI
version's files. The real app with its aria2c, the fakes of the services and a local origin."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from tests.conftest import needs_aria2
from tests.fakes.civitai import File
from tests.fakes.model_files import opaque_safetensors
from tests.fakes.world import fake_world

pytestmark = [pytest.mark.integration, needs_aria2]

MiB = 1024 * 1024


def blob(size: int, seed: str) -> bytes:
    return opaque_safetensors(hashlib.sha256(seed.encode()).digest() * (size // 32))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def create(server, body: dict, status: int = 201) -> dict:
    answer = server.api("POST", "/api/bundles", json=body)
    assert answer.status_code == status, answer.text
    return answer.json()["bundle"] if status == 201 else answer.json()["error"]


def bundle(server, bundle_id: str) -> dict:
    return server.api("GET", f"/api/bundles/{bundle_id}").json()["bundle"]


def wait_bundle(server, bundle_id: str, states: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = bundle(server, bundle_id)
        if found["state"] in states:
            return found
        assert time.monotonic() < deadline, f"bundle stayed {found['state']}: {found}\n{server.log()[-3000:]}"
        time.sleep(0.2)


@pytest.fixture
def world():
    with fake_world() as made:
        yield made


# -- lists --------------------------------------------------------------------------------------


def test_a_pasted_list_is_one_bundle_one_404_fails_alone_and_retry_fetches_only_it(server_factory, origin):
    a = origin.add_file("/list/a.safetensors", 2 * MiB)
    b = origin.add_file("/list/b.safetensors", 3 * MiB)
    server = server_factory()
    text = "\n".join(
        [
            f"{origin.url('/list/a.safetensors')} lora",
            f"{origin.url('/list/b.safetensors')} vae",
            f"{origin.url('/list/gone.safetensors')} lora",
            f"{origin.url('/list/a.safetensors')} lora",  # the same link twice is one download
        ]
    )
    made = create(server, {"kind": "list", "text": text})
    assert made["kind"] == "list" and made["counts"]["total"] == 3

    failed = wait_bundle(server, made["id"], {"failed", "completed"})
    assert failed["state"] == "failed"
    assert [(f["label"], f["code"]) for f in failed["failed"]] == [("gone.safetensors", "origin_not_found")]
    assert (server.models / "lora" / "a.safetensors").read_bytes() == a  # the rest finished
    assert (server.models / "vae" / "b.safetensors").read_bytes() == b
    served_a = origin.stats("/list/a.safetensors")["bytes_sent"]

    gone = origin.add_file("/list/gone.safetensors", MiB)
    server.api("POST", f"/api/bundles/{made['id']}/retry")
    done = wait_bundle(server, made["id"], {"completed", "failed"})
    assert done["state"] == "completed" and done["progress"] == 1.0, done
    assert (server.models / "lora" / "gone.safetensors").read_bytes() == gone
    assert origin.stats("/list/a.safetensors")["bytes_sent"] == served_a  # only the failed one again
    assert done["downloaded"] == done["total"] == len(a) + len(b) + len(gone)


def test_a_list_with_a_bad_line_is_refused_whole_and_starts_nothing(server_factory, origin):
    origin.add_file("/ok.safetensors", MiB)
    server = server_factory()
    text = f"{origin.url('/ok.safetensors')} lora\nftp://example.com/x.bin lora\n"
    error = create(server, {"kind": "list", "text": text}, status=400)
    assert error["code"] == "invalid_list" and "line:2" in error["message"], error
    assert server.api("GET", "/api/downloads").json()["jobs"] == []
    assert server.api("GET", "/api/bundles").json()["bundles"] == []


def test_cancelling_a_list_mid_way_leaves_no_file_of_it_in_any_model_folder(server_factory, origin):
    origin.add_file("/c/small.safetensors", 256 * 1024)
    origin.add_file("/c/big.safetensors", 32 * MiB, rate=64 * 1024)
    server = server_factory()
    made = create(
        server,
        {
            "kind": "list",
            "items": [
                {"url": origin.url("/c/small.safetensors"), "type": "lora"},
                {"url": origin.url("/c/big.safetensors"), "type": "checkpoint"},
            ],
        },
    )
    small, big = made["jobs"]
    server.wait_for(small, {"completed"})
    server.wait_until(big, lambda j: j["downloaded"] > 0)
    assert server.model_files() == ["lora/small.safetensors"]

    cancelled = server.api("POST", f"/api/bundles/{made['id']}/cancel").json()["bundle"]
    assert cancelled["state"] == "cancelled"
    assert server.model_files() == []  # the finished file taken back too
    assert server.staging_emptied() == []  # and the partial data gone
    assert {server.job(small)["state"], server.job(big)["state"]} == {"cancelled"}


# -- Hugging Face folders --------------------------------------------------------------------------


def hub_folder(world, repo: str = "acme/flux-parts") -> dict[str, bytes]:
    world.hub.add_repo(repo)
    parts = {
        "transformer/config.json": b'{"_class_name": "FluxTransformer2DModel"}',
        "transformer/diffusion_pytorch_model-00001-of-00002.safetensors": blob(3 * MiB, "s1"),
        "transformer/diffusion_pytorch_model-00002-of-00002.safetensors": blob(2 * MiB, "s2"),
        "transformer/diffusion_pytorch_model.safetensors.index.json": b'{"weight_map": {}}',
        "transformer/nested/extra.safetensors": blob(MiB, "s3"),
    }
    for path, data in parts.items():
        world.hub.add_file(repo, path, data, lfs=path.endswith(".safetensors"))
    world.hub.add_file(repo, "README.md", b"# not in the folder", lfs=False)
    return parts


def test_a_hub_folder_appears_whole_with_its_layout_only_when_every_file_is_verified(server_factory):
    with fake_world(rate=256 * 1024) as world:
        parts = hub_folder(world)
        server = server_factory("--layout", "comfyui", env=world.env)
        link = "https://huggingface.co/acme/flux-parts/tree/main/transformer"
        answer = server.api(
            "POST", "/api/downloads", json={"url": link, "type": "diffusers"}
        )  # a folder link
        assert answer.status_code == 201, answer.text
        made = answer.json()["bundle"]
        assert made["kind"] == "hf_folder" and made["destination"] == "diffusers/transformer"
        assert made["source"]["commit"] and made["counts"]["total"] == len(parts)

        seen_half = False
        while bundle(server, made["id"])["state"] in ("queued", "downloading", "installing"):
            if not seen_half and any(server.job(j)["state"] == "completed" for j in made["jobs"]):
                seen_half = True
                assert not (server.models / "diffusers" / "transformer").exists()  # never half there
            time.sleep(0.1)
        done = bundle(server, made["id"])
        assert done["state"] == "completed", done
        assert seen_half
        folder = server.models / "diffusers" / "transformer"
        for path, data in parts.items():
            relative = path.removeprefix("transformer/")
            assert (folder / relative).read_bytes() == data, relative
        assert not (folder / "README.md").exists()
        assert server.staging_files() == []
        paths = sorted(job["path"] for job in done["files"])
        assert paths == sorted(f"diffusers/{path}" for path in parts)


def test_cancelling_a_hub_folder_mid_way_leaves_no_folder_and_no_partial_data(server_factory):
    with fake_world(rate=64 * 1024) as world:
        hub_folder(world)
        server = server_factory(env=world.env)
        made = create(
            server, {"kind": "hf_folder", "url": "hf://acme/flux-parts/transformer/", "type": "diffusers"}
        )
        server.wait_until(made["jobs"][1], lambda j: j["downloaded"] > 0)
        assert server.api("DELETE", f"/api/bundles/{made['id']}").json()["bundle"]["state"] == "cancelled"
        assert server.model_files() == []
        assert server.staging_emptied() == []
        assert server.api("GET", "/api/bundles").json()["bundles"] == []


def test_a_gated_or_missing_repo_and_a_type_less_folder_are_refused_with_nothing_started(server_factory):
    with fake_world() as world:
        world.hub.add_repo("acme/gated", gated=True)
        world.hub.add_file("acme/gated", "vae/x.safetensors", blob(MiB, "g"))
        server = server_factory(env=world.env)
        gated = create(server, {"kind": "hf_folder", "url": "hf://acme/gated/vae/", "type": "vae"}, 403)
        assert gated["code"] == "hf_gated", gated
        missing = create(server, {"kind": "hf_folder", "url": "hf://acme/nothing/vae/", "type": "vae"}, 404)
        assert missing["code"] == "hf_not_found", missing
        untyped = create(server, {"kind": "hf_folder", "url": "hf://acme/gated/vae/", "type": "auto"}, 400)
        assert untyped["code"] == "type_required"
        assert server.api("GET", "/api/downloads").json()["jobs"] == []
        assert server.model_files() == [] and server.staging_files() == []


# -- ComfyUI workflows -----------------------------------------------------------------------------


def workflow(models: list[dict], loaders: list[tuple[str, str]]) -> dict:
    """A UI-format workflow: one loader node per (type, file name), and the models list."""
    nodes = [
        {"id": n, "type": node_type, "mode": 0, "properties": {}, "widgets_values": [name]}
        for n, (node_type, name) in enumerate(loaders, start=1)
    ]
    return {"last_node_id": len(nodes), "nodes": nodes, "links": [], "models": models, "version": 0.4}


def test_a_workflow_lists_present_missing_and_linkless_models_and_downloads_the_missing(
    server_factory, origin, world
):
    lora = origin.add_file("/wf/ink.safetensors", 2 * MiB)
    world.hub.add_repo("acme/encoders")
    encoder = world.hub.add_file("acme/encoders", "t5xxl_fp8.safetensors", blob(3 * MiB, "t5"))
    present = blob(MiB, "present-vae")
    document = workflow(
        [
            {"name": "SDXL/ink.safetensors", "url": origin.url("/wf/ink.safetensors"), "directory": "loras"},
            {
                "name": "t5xxl_fp8.safetensors",
                "url": "https://huggingface.co/acme/encoders/blob/main/t5xxl_fp8.safetensors?download=true",
                "directory": "clip",  # the legacy name of text_encoders
                "hash": sha(encoder).upper(),
                "hash_type": "SHA256",
            },
            {
                "name": "ae.safetensors",
                "url": "",
                "directory": "vae",
                "hash": sha(present),
                "hash_type": "SHA256",
            },
        ],
        [
            ("LoraLoader", "SDXL/ink.safetensors"),
            ("CLIPLoader", "t5xxl_fp8.safetensors"),
            ("VAELoader", "ae.safetensors"),
            ("UNETLoader", "flux1-dev.safetensors"),
        ],
    )
    server = server_factory("--layout", "comfyui", env=world.env)
    (server.models / "vae").mkdir(parents=True, exist_ok=True)
    (server.models / "vae" / "ae.safetensors").write_bytes(present)  # placed by hand

    table = server.api("POST", "/api/workflows?filename=flux.json", data=json.dumps(document)).json()
    status = {row["name"]: (row["directory"], row["status"]) for row in table["models"]}
    assert status == {
        "SDXL/ink.safetensors": ("loras", "missing"),
        "t5xxl_fp8.safetensors": ("text_encoders", "missing"),
        "ae.safetensors": ("vae", "present"),
        "flux1-dev.safetensors": ("diffusion_models", "no_link"),
    }

    made = create(server, {"kind": "workflow", "workflow": document, "filename": "flux.json"})
    assert made["name"] == "flux" and made["counts"]["total"] == 2
    assert {(e["name"], e["status"]) for e in made["entries"]} == {
        ("ae.safetensors", "present"),
        ("flux1-dev.safetensors", "no_link"),
    }
    done = wait_bundle(server, made["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    assert (server.models / "loras" / "SDXL" / "ink.safetensors").read_bytes() == lora
    assert (server.models / "text_encoders" / "t5xxl_fp8.safetensors").read_bytes() == encoder
    assert (server.models / "vae" / "ae.safetensors").read_bytes() == present  # left alone


def test_a_workflow_model_with_only_a_hash_is_found_on_civitai_and_downloaded_with_the_rest(
    server_factory, world
):
    """ComfyUI's templates often name a model by file name and SHA-256 alone: CivitAI's by-hash
    answer gives the link, asked once; a hash CivitAI does not know stays without a link."""
    lora = opaque_safetensors(blob(MiB, "hash-only lora"))
    world.civitai.add_model(900, "Hash Only", type="LORA")
    world.civitai.add_version(900, 901, [File("civitai-name.safetensors", lora, primary=True)], name="v1")
    unknown = "cd" * 32
    document = workflow(
        [
            {
                "name": "ink.safetensors",
                "url": "",
                "directory": "loras",
                "hash": sha(lora),
                "hash_type": "SHA256",
            },
            {
                "name": "lost.safetensors",
                "url": "",
                "directory": "vae",
                "hash": unknown,
                "hash_type": "SHA256",
            },
        ],
        [],
    )
    server = server_factory("--layout", "comfyui", env=world.env)

    table = server.api("POST", "/api/workflows", data=json.dumps(document)).json()
    rows = {row["name"]: row for row in table["models"]}
    assert (rows["ink.safetensors"]["status"], rows["ink.safetensors"]["found_by"]) == (
        "missing",
        "civitai_hash",
    )
    assert "/api/download/models/901?fileId=" in rows["ink.safetensors"]["url"]
    assert (rows["lost.safetensors"]["status"], rows["lost.safetensors"]["url"]) == ("no_link", None)
    asked = len(world.civitai.seen("/api/v1/model-versions/by-hash"))
    assert asked == 1  # both hashes in one bulk call

    made = create(server, {"kind": "workflow", "workflow": document, "filename": "templ.json"})
    assert made["counts"]["total"] == 1
    assert [(e["name"], e["status"]) for e in made["entries"]] == [("lost.safetensors", "no_link")]
    done = wait_bundle(server, made["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    # under the workflow's name for it, checked against its hash
    assert (server.models / "loras" / "ink.safetensors").read_bytes() == lora
    assert len(world.civitai.seen("/api/v1/model-versions/by-hash")) == asked  # answers were kept


def test_a_workflow_model_the_library_holds_under_another_name_is_linked_not_fetched(server_factory, origin):
    data = opaque_safetensors(blob(MiB, "held"))
    origin.add_file("/wf/held.safetensors", data=data)
    server = server_factory("--layout", "comfyui")
    (server.models / "loras").mkdir(parents=True, exist_ok=True)
    (server.models / "loras" / "my-name.safetensors").write_bytes(data)  # placed by hand
    assert server.api("POST", "/api/models/scan").status_code == 202
    deadline = time.monotonic() + 30
    while server.api("GET", "/api/models").json()["library"]["last_scan"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    entry = {
        "name": "held.safetensors",
        "url": origin.url("/wf/held.safetensors"),
        "directory": "loras",
        "hash": sha(data),
        "hash_type": "SHA256",
    }
    document = workflow([entry], [])
    [row] = server.api("POST", "/api/workflows", data=json.dumps(document)).json()["models"]
    assert (row["status"], row["held_at"]) == ("missing", "loras/my-name.safetensors")

    made = create(server, {"kind": "workflow", "workflow": document})
    assert wait_bundle(server, made["id"], {"completed", "failed"})["state"] == "completed"
    placed = server.models / "loras" / "held.safetensors"
    assert placed.read_bytes() == data
    assert placed.stat().st_ino == (server.models / "loras" / "my-name.safetensors").stat().st_ino
    assert origin.stats("/wf/held.safetensors")["gets"] == 0


def hash_only_workflow(world, model_id: int, name: str) -> str:
    """A workflow naming one LoRA by file name and SHA-256 alone, a file CivitAI has."""
    lora = opaque_safetensors(blob(MiB, name))
    world.civitai.add_model(model_id, name.title(), type="LORA")
    world.civitai.add_version(model_id, model_id + 1, [File(f"{name}.safetensors", lora, primary=True)])
    entry = {
        "name": f"{name}.safetensors",
        "url": "",
        "directory": "loras",
        "hash": sha(lora),
        "hash_type": "SHA256",
    }
    return json.dumps(workflow([entry], []))


def test_a_civitai_that_fails_leaves_the_model_linkless_and_is_asked_again_next_time(server_factory, world):
    document = hash_only_workflow(world, 920, "later")
    server = server_factory("--layout", "comfyui", env=world.env)
    world.civitai.cloudflare = True  # an HTML challenge page instead of JSON
    [row] = server.api("POST", "/api/workflows", data=document).json()["models"]
    assert row["status"] == "no_link" and row["url"] is None
    world.civitai.cloudflare = False
    [row] = server.api("POST", "/api/workflows", data=document).json()["models"]
    assert row["status"] == "missing" and row["found_by"] == "civitai_hash"


def test_with_library_look_ups_off_a_workflows_hashes_never_leave_the_machine(server_factory, world):
    document = hash_only_workflow(world, 910, "private")
    server = server_factory("--layout", "comfyui", env={**world.env, "ORCHESTRATOR_LIBRARY_LOOKUPS": "off"})
    table = server.api("POST", "/api/workflows", data=document).json()
    [row] = table["models"]
    assert row["status"] == "no_link" and row["hint"]["kind"] == "civitai_hash"
    assert world.civitai.seen("/api/v1/model-versions/by-hash") == []


def test_a_workflow_model_whose_hash_is_not_the_file_in_place_is_shown_as_different(server_factory, origin):
    origin.add_file("/wf/model.safetensors", MiB)
    server = server_factory("--layout", "comfyui")
    (server.models / "checkpoints").mkdir(parents=True, exist_ok=True)
    (server.models / "checkpoints" / "model.safetensors").write_bytes(b"someone else's file")
    entry = {
        "name": "model.safetensors",
        "url": origin.url("/wf/model.safetensors"),
        "directory": "checkpoints",
    }
    entry.update(hash="ab" * 32, hash_type="SHA256")
    table = server.api("POST", "/api/workflows", data=json.dumps(workflow([entry], []))).json()
    [row] = table["models"]
    assert row["status"] == "different" and "SHA-256" in row["note"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"this is not json", "workflow_invalid"),
        (b'{"hello": "world"}', "workflow_invalid"),
        (
            json.dumps(workflow([{"name": "x.safetensors", "url": "", "directory": "../x"}], [])).encode(),
            "workflow_bad_directory",
        ),
        (
            json.dumps(
                workflow([{"name": "../../x.safetensors", "url": "", "directory": "loras"}], [])
            ).encode(),
            "workflow_bad_name",
        ),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "workflow_not_found"),
    ],
)
def test_a_bad_workflow_file_gets_its_named_error(server_factory, body, code):
    server = server_factory()
    answer = server.api("POST", "/api/workflows?filename=w.json", data=body)
    assert answer.status_code >= 400 and answer.json()["error"]["code"] == code, answer.text


def test_a_workflow_over_50_mb_is_refused_before_it_is_read_whole(server_factory):
    server = server_factory()
    answer = server.api("POST", "/api/workflows", data=b" " * (50 * MiB + 1))
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "message_too_large"


# -- CivitAI versions ------------------------------------------------------------------------------


def test_chosen_files_of_a_civitai_version_land_each_in_its_folder(server_factory, world):
    model = blob(2 * MiB, "civ-model")
    vae = blob(MiB, "civ-vae")
    files = [
        File("dream.safetensors", model, primary=True),
        File("dream-vae.safetensors", vae, type="VAE"),
        File("dataset.zip", b"PK\x05\x06" + bytes(18), type="Training Data", format="Other"),
    ]
    world.civitai.add_model(900, "Dream", "Checkpoint")
    world.civitai.add_version(900, 901, files)
    server = server_factory(env=world.env)
    listing = server.api("GET", "/api/civitai/files", params={"url": "https://civitai.com/models/900"}).json()
    assert [(f["name"], f["kind"], f["type"]) for f in listing["files"]] == [
        ("dream.safetensors", "Model", "auto"),
        ("dream-vae.safetensors", "VAE", "vae"),
        ("dataset.zip", "Training Data", None),  # shown, but not a model to tick
    ]
    made = create(server, {"kind": "civitai", "url": "900@901", "files": "all"})
    assert made["counts"]["total"] == 2  # the training data is no model
    done = wait_bundle(server, made["id"], {"completed", "failed"})
    assert done["state"] == "completed", done
    assert (server.models / "checkpoint" / "dream.safetensors").read_bytes() == model
    assert (server.models / "vae" / "dream-vae.safetensors").read_bytes() == vae


# -- everyone sees it, and it outlives a restart ---------------------------------------------------


def test_every_client_sees_bundle_events_and_a_restart_keeps_the_bundle(
    server_factory, origin, connect, tmp_path
):
    origin.add_file("/r/one.safetensors", MiB)
    origin.add_file("/r/two.safetensors", MiB)
    server = server_factory()
    watcher = connect(server)
    hello = watcher.until(lambda m: m.get("type") == "hello")
    assert hello["data"]["bundles"] == []
    made = create(
        server,
        {
            "kind": "list",
            "name": "My set",
            "text": f"{origin.url('/r/one.safetensors')} lora\n{origin.url('/r/two.safetensors')} lora",
        },
    )
    event = watcher.until(lambda m: m.get("type") == "bundle" and m["data"]["state"] == "completed")
    assert event["bundle"] == made["id"] and event["data"]["name"] == "My set"
    assert event["data"]["status"] == "completed"

    server.stop()
    again = server_factory(workdir=tmp_path)
    [kept] = again.api("GET", "/api/bundles").json()["bundles"]
    assert kept["id"] == made["id"] and kept["state"] == "completed" and kept["jobs"] == made["jobs"]
    late = connect(again).until(lambda m: m.get("type") == "hello")
    assert [b["id"] for b in late["data"]["bundles"]] == [made["id"]]
