"""Every file where its UI loads it: the type from the file's own header, a UI's extra model
paths, subfolders. Real files (tests/fakes/model_files.py builds them from the loaders'
key layouts), the real app with its aria2c, a local origin with and without Range.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.conftest import needs_aria2
from tests.fakes import model_files as built
from tests.fakes.civitai import File
from tests.fakes.world import fake_world

pytestmark = [pytest.mark.integration, needs_aria2]


def is_job_event(job_id: str, status: str):
    return lambda m: m.get("type") == "download" and m.get("job") == job_id and m["data"]["status"] == status


def test_auto_files_a_plain_link_by_the_files_own_header(server_factory, origin, connect):
    lora = built.safetensors_file(built.sdxl_kohya_lora(), {"ss_base_model_version": "sdxl_base_v1-0"})
    origin.add_file("/detail.safetensors", data=lora)
    server = server_factory()
    watcher = connect(server)
    job = server.submit(origin.url("/detail.safetensors"), "auto")
    done = server.wait_settled(job["id"])
    assert done["state"] == "completed" and done["path"] == "lora/detail.safetensors", done
    finding = done["metadata"]["file"]["finding"]
    assert (finding["kind"], finding["family"]) == ("lora", "sdxl")
    described = watcher.until(
        lambda m: is_job_event(job["id"], "metadata")(m) and "file" in m["data"]["info"]
    )
    assert described["data"]["info"]["file"]["finding"]["kind"] == "lora"
    # only the header was read before the transfer: two small ranged reads, then the file
    reads = [r.range for r in origin.requests_for("/detail.safetensors") if r.method == "GET"]
    assert reads[:2] == ["bytes=0-7", f"bytes=8-{7 + int.from_bytes(lora[:8], 'little')}"]


@pytest.mark.parametrize(
    ("layout", "folder"), [("default", "diffusion_model"), ("comfyui", "diffusion_models")]
)
def test_a_civitai_checkpoint_that_is_only_a_diffusion_model_goes_where_ui_loads_those(
    server_factory, layout, folder
):
    with fake_world() as world:
        flux = built.safetensors_file(built.flux_dit())
        world.civitai.add_model(300, "Flux Finetune", "Checkpoint")
        world.civitai.add_version(300, 301, [File("flux-ft.safetensors", flux, primary=True)])
        server = server_factory("--layout", layout, env=world.env)
        job = server.submit("300@301", "auto")
        done = server.wait_settled(job["id"])
        assert done["path"] == f"{folder}/flux-ft.safetensors", done
        assert done["metadata"]["file"]["finding"]["family"] == "flux"


def test_an_explicit_type_the_header_contradicts_gets_a_warning_not_a_silent_misplacement(
    server_factory, origin, connect
):
    origin.add_file("/really-a-lora.safetensors", data=built.safetensors_file(built.sd1_kohya_lora()))
    server = server_factory()
    watcher = connect(server)
    job = server.submit(origin.url("/really-a-lora.safetensors"), "checkpoint")
    warning = watcher.until(is_job_event(job["id"], "warning"))
    assert "looks like a lora" in warning["data"]["message"] and "checkpoint" in warning["data"]["message"]
    done = server.wait_settled(job["id"])
    assert done["path"] == "checkpoint/really-a-lora.safetensors"  # as asked
    assert done["metadata"]["warnings"] == [warning["data"]["message"]]


def test_without_range_support_auto_says_why_and_an_explicit_type_still_works(server_factory, origin):
    origin.add_file(
        "/plain.safetensors", data=built.safetensors_file(built.sdxl_kohya_lora()), accept_ranges=False
    )
    server = server_factory()
    failed = server.wait_for(
        server.submit(origin.url("/plain.safetensors"), "auto")["id"], {"failed", "completed"}
    )
    assert failed["error"]["code"] == "type_required", failed
    assert "range" in failed["error"]["message"].lower()
    done = server.wait_settled(server.submit(origin.url("/plain.safetensors"), "lora")["id"])
    assert done["state"] == "completed" and done["path"] == "lora/plain.safetensors"


def _lying_gguf() -> bytes:
    """A GGUF header that claims 2^40 tensors in a few hundred bytes."""
    real = built.gguf_file({"blk.0.attn_q.weight": (4, 4)}, {"general.architecture": "llama"})
    return real[:8] + (2**40).to_bytes(8, "little") + real[16:]


DAMAGED = {
    "huge-header.safetensors": ((2**40).to_bytes(8, "little") + b"{}" * 64, "header_too_large"),
    "not-json.safetensors": (
        built.safetensors_raw(b'{"__metadata__": not json}' + b" " * 38),
        "header_invalid",
    ),
    "renamed.safetensors": (b"PK\x03\x04" + bytes(4096), "not_safetensors"),  # a zipped .ckpt
    "lying-count.gguf": (_lying_gguf(), "gguf_invalid"),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_a_damaged_or_mislabelled_header_fails_named_before_any_body_byte(server_factory, origin, name):
    data, code = DAMAGED[name]
    origin.add_file(f"/bad/{name}", data=data)
    server = server_factory()
    job = server.submit(origin.url(f"/bad/{name}"), "lora")
    done = server.wait_for(job["id"], {"completed", "failed"})
    assert done["state"] == "failed" and done["error"]["code"] == code, done
    assert server.model_files() == []
    assert not (server.models / ".staging" / job["id"]).exists()  # nothing was written
    # only ranged reads of the header: no transfer ever asked for the body
    assert all(r.range for r in origin.requests_for(f"/bad/{name}") if r.method == "GET")


def test_a_subfolder_is_kept_and_listed_and_a_bad_one_is_refused(server_factory, origin):
    data = origin.add_file("/styles.safetensors", 64 * 1024)
    server = server_factory()
    job = server.submit(origin.url("/styles.safetensors"), "lora", subfolder="SDXL/styles")
    done = server.wait_settled(job["id"])
    assert done["path"] == "lora/SDXL/styles/styles.safetensors"
    assert (server.models / "lora" / "SDXL" / "styles" / "styles.safetensors").read_bytes() == data
    listed = server.api("GET", "/api/models").json()["models"]["lora"]
    assert [entry["name"] for entry in listed] == ["SDXL/styles/styles.safetensors"]
    for bad in ("../outside", "/etc", "a/" * 50 + "b", "x\x00y"):
        answer = server.api(
            "POST",
            "/api/downloads",
            json={"url": origin.url("/styles.safetensors"), "type": "lora", "subfolder": bad},
        )
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_subfolder", bad
    assert server.model_files() == ["lora/SDXL/styles/styles.safetensors"]


def test_a_subfolder_template_files_civitai_models_by_base_model(server_factory):
    with fake_world() as world:
        world.civitai.add_model(100, "Film", "LORA")
        world.civitai.add_version(
            100, 200, [File("film.safetensors", built.opaque_safetensors(b"F" * 4096), primary=True)]
        )
        server = server_factory("--subfolder-template", "{base_model}", env=world.env)
        done = server.wait_settled(server.submit("100@200", "auto")["id"])
        assert done["path"] == "lora/SDXL 1.0/film.safetensors", done


def test_a_comfyui_install_with_extra_model_paths_gets_downloads_in_its_default_folder(
    server_factory, origin, tmp_path
):
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "loras").mkdir(parents=True)
    second = tmp_path / "second-disk"
    (second / "loras").mkdir(parents=True)
    (second / "checkpoints").mkdir(parents=True)
    (comfy / "extra_model_paths.yaml").write_text(
        f"big_disk:\n  base_path: {second}\n  is_default: true\n  loras: loras\n  checkpoints: checkpoints\n"
    )
    kept = origin.add_file("/kept.safetensors", 32 * 1024)
    (comfy / "models" / "loras" / "kept.safetensors").write_bytes(kept)  # already there, elsewhere
    data = origin.add_file("/new.safetensors", 32 * 1024)
    server = server_factory("--comfyui", str(comfy))
    new = server.wait_settled(server.submit(origin.url("/new.safetensors"), "lora")["id"])
    assert (second / "loras" / "new.safetensors").read_bytes() == data  # the is_default section
    assert new["path"] == str(second / "loras" / "new.safetensors")
    present = server.wait_settled(server.submit(origin.url("/kept.safetensors"), "lora")["id"])
    assert present["state"] == "completed", present
    assert not (second / "loras" / "kept.safetensors").exists()  # found where ComfyUI reads it too
    assert hashlib.sha256(kept).hexdigest() == present["sha256"]


def test_an_extra_model_paths_file_that_is_not_yaml_stops_the_server_with_its_reason(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "extra_model_paths.yaml"
    bad.write_text("this: [is: not: yaml")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "serve",
            "--comfyui-extra-paths",
            str(bad),
            "--models-dir",
            str(tmp_path / "models"),
            "--state-dir",
            str(tmp_path / "state"),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "extra_paths_invalid" in result.stderr and "Traceback" not in result.stderr
    assert json.dumps("x")  # nothing else to check: the server never started
