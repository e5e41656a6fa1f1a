"""`orchestrator get / ls / pause / resume / cancel / doctor` as a user runs them.

The real command in a subprocess, the local fake origin as the world, a real aria2c;
"a running server" is a real `orchestrator serve` from server_factory.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.library import LibraryIndex
from tests.conftest import ROOT, _kill_stray_aria2, free_port, needs_aria2
from tests.fakes.model_files import opaque_safetensors
from tests.fakes.world import fake_world

pytestmark = [pytest.mark.integration, needs_aria2]

MiB = 1024 * 1024
TOKEN_CIVITAI = "civitai-SECRET-7f3a9c2e4b1d8a60"
TOKEN_HF = "hf_SECRETabcdefghijklmnopqrstuv"


class Cli:
    """`python -m orchestrator ...` from its own folder, with no server at the default address."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.models = workdir / "models"
        self.state = workdir / "state"
        self.aria2_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "ARIA2_"))}
        for name in ("CIVITAI_TOKEN", "HF_TOKEN"):
            self.env.pop(name, None)
        # the default server address points at a free port: nothing answers there; the services
        # (which doctor tries over IPv4 and IPv6) are local addresses too: no test leaves the machine
        self.env.update(
            PYTHONPATH=str(ROOT),
            ORCHESTRATOR_PORT=str(free_port()),
            CIVITAI_BASE_URL="http://127.0.0.250:9",
            HF_ENDPOINT="http://127.0.0.251:9",
        )

    def command(self, *args: str) -> list[str]:
        extra = ["--aria2-rpc-url", f"http://127.0.0.1:{self.aria2_port}/jsonrpc"] if args[0] == "get" else []
        return [sys.executable, "-m", "orchestrator", *args, *extra]

    def run(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(*args),
            cwd=self.workdir,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=90,
        )

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(*args),
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def model_files(self) -> list[str]:
        if not self.models.exists():
            return []
        return sorted(
            str(p.relative_to(self.models))
            for p in self.models.rglob("*")
            if p.is_file() and ".staging" not in p.parts
        )

    def staging_files(self) -> list[str]:
        staging = self.models / ".staging"
        return sorted(p.name for p in staging.rglob("*") if p.is_file()) if staging.exists() else []


@pytest.fixture
def cli(tmp_path):
    runner = Cli(tmp_path / "cli")
    yield runner
    _kill_stray_aria2(runner.state)


def summary(stdout: str) -> list[str]:
    """The summary table's lines, header first (it comes after the progress lines)."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("name ") and "status" in line)
    return lines[start:]


def all_bytes_under(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def wait_until(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- get, in this process -------------------------------------------------------------


def test_get_one_file_lands_verified_and_tokens_stay_secret(cli, origin):
    data = origin.add_file("/files/detail-tweaker.safetensors", 3 * MiB)
    result = cli.run(
        "get",
        origin.url("/files/detail-tweaker.safetensors"),
        "--type",
        "lora",
        "--civitai-token",
        TOKEN_CIVITAI,
        env={"HF_TOKEN": TOKEN_HF},
    )

    assert result.returncode == 0, result.stderr
    assert (cli.models / "lora" / "detail-tweaker.safetensors").read_bytes() == data
    assert cli.model_files() == ["lora/detail-tweaker.safetensors"]
    assert cli.staging_files() == []
    header, row = summary(result.stdout)
    assert header.split() == ["name", "type", "status", "size", "sha256", "/", "error"]
    assert "lora" in row and "completed" in row and hashlib.sha256(data).hexdigest()[:12] in row
    # running the same notebook cell again finds the file in place and fetches nothing
    gets = origin.stats("/files/detail-tweaker.safetensors")["gets"]
    again = cli.run("get", origin.url("/files/detail-tweaker.safetensors"), "--type", "lora")
    assert again.returncode == 0 and "completed" in summary(again.stdout)[1]
    assert origin.stats("/files/detail-tweaker.safetensors")["gets"] == gets
    # the flag works but earns a warning that names the safer environment variable
    assert "--civitai-token is visible" in result.stderr and "CIVITAI_TOKEN" in result.stderr
    # tokens: not printed, not logged, not on disk
    for token in (TOKEN_CIVITAI, TOKEN_HF):
        assert token not in result.stdout + result.stderr
        assert token.encode() not in all_bytes_under(cli.workdir)


def test_a_file_got_in_this_process_is_in_the_library_with_its_hash_and_a_copy_is_a_link(cli, origin):
    """No server ran: the library still knows what `get` put in place, so the page's list (and a
    later download of the same bytes) need no scan that reads it again."""
    data = opaque_safetensors(os.urandom(2 * MiB))
    digest = hashlib.sha256(data).hexdigest()
    origin.add_file("/m/style.safetensors", data=data)
    first = cli.run("get", origin.url("/m/style.safetensors"), "--type", "lora")
    assert first.returncode == 0, first.stderr

    with LibraryIndex.in_state_dir(cli.state) as index:
        (record,) = index.by_sha256(digest)
    assert record.path == cli.models / "lora" / "style.safetensors"
    assert record.source.kind == "link" and record.source.url == origin.url("/m/style.safetensors")

    # the same bytes from the Hub, whose answer publishes their SHA-256: linked, not fetched
    with fake_world() as world:
        world.hub.add_repo("acme/style")
        world.hub.add_file("acme/style", "style.safetensors", data)
        link = "https://huggingface.co/acme/style/resolve/main/style.safetensors"
        again = cli.run("get", link, "--type", "checkpoint", env=world.env)
        assert again.returncode == 0, again.stderr
        assert world.hf_storage.requests == []
    copy = cli.models / "checkpoint" / "style.safetensors"
    assert copy.read_bytes() == data
    assert copy.stat().st_ino == record.inode


def test_batch_runs_good_lines_and_reports_bad_ones_by_line(cli, origin):
    first = origin.add_file("/m/first.safetensors", 2 * MiB, rate=512 * 1024)
    second = origin.add_file("/m/second.bin", 1 * MiB, rate=512 * 1024)
    origin.add_file("/m/gone.bin", 1024, status=404)
    (cli.workdir / "models.txt").write_text(
        "# my models\n"
        f"{origin.url('/m/first.safetensors')} lora\n"
        f"{origin.url('/m/first.safetensors')} sdxl\n"
        "\n"
        f"{origin.url('/m/second.bin')}  embedding  'my embedding.pt'  # renamed\n"
        "ftp://example.com/model.ckpt checkpoint\n"
        f"{origin.url('/m/gone.bin')} vae\n"
    )
    result = cli.run("get", "-i", "models.txt")

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors[0].startswith("error: models.txt:3: unknown type 'sdxl'")
    assert errors[1].startswith("error: models.txt:6: Only http and https links")
    assert errors[2].startswith("error: models.txt:7: ") and "does not exist" in errors[2]
    assert len(errors) == 3
    # the good lines finished anyway, with the right bytes, in the right folders
    assert (cli.models / "lora" / "first.safetensors").read_bytes() == first
    assert (cli.models / "embedding" / "my embedding.pt").read_bytes() == second
    assert cli.model_files() == ["embedding/my embedding.pt", "lora/first.safetensors"]
    # the summary: one row per line that asked for something, in file order
    table = summary(result.stdout)
    assert [row.split()[0] for row in table] == [
        "name",
        "first.safetensors",
        "models.txt:3",
        "my",
        "models.txt:6",
        "gone.bin",
    ]
    assert "completed" in table[1] and hashlib.sha256(first).hexdigest()[:12] in table[1]
    assert "invalid" in table[2] and "failed" in table[5]


def test_ctrl_c_keeps_partial_data_and_the_same_command_resumes(cli, origin):
    size = 4 * MiB
    data = origin.add_file("/slow/model.safetensors", size, rate=64 * 1024)
    url = origin.url("/slow/model.safetensors")
    process = cli.start("get", url, "--type", "vae")
    wait_until(lambda: origin.stats("/slow/model.safetensors")["bytes_sent"] >= 256 * 1024, "bytes to flow")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 130, err
    assert "interrupted" in out and "run the same command again" in err
    assert cli.model_files() == []  # nothing half-written among the models
    assert "model.safetensors" in cli.staging_files()  # the partial data, kept for the resume

    origin.add_file("/slow/model.safetensors", data=data, rate=1024 * 1024)  # same bytes, faster
    again = cli.run("get", url, "--type", "vae")

    assert again.returncode == 0, again.stderr
    assert (cli.models / "vae" / "model.safetensors").read_bytes() == data
    assert cli.staging_files() == []
    assert origin.stats("/slow/model.safetensors")["bytes_sent"] < 1.5 * size  # resumed, not restarted


def test_bad_command_lines_say_why_and_write_nothing(cli):
    cases = [
        (("get",), 2, "nothing to download"),
        (
            ("get", "http://a.example/x.bin", "http://b.example/y.bin", "-t", "lora", "-n", "x.bin"),
            2,
            "--name names one file",
        ),
        (("get", "http://a.example/x.bin", "--type", "sdxl"), 2, "invalid choice: 'sdxl'"),
        (
            ("get", "ftp://a.example/x.bin", "--type", "lora"),
            1,
            "error: ftp://a.example/x.bin: Only http and https links",
        ),
        (("get", "http://a.example/x.bin"), 2, "no model type"),  # a usage mistake (README)
        (("get", "-i", "missing.txt", "--type", "lora"), 1, "cannot read the batch file missing.txt"),
    ]
    for args, code, message in cases:
        result = cli.run(*args)
        assert result.returncode == code, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert cli.model_files() == []


# -- against a running server ---------------------------------------------------------


def test_one_job_list_has_one_manager_a_second_server_or_local_get_on_it_says_so(cli, server_factory, origin):
    """Two managers on one state folder would each resume and finish the other's downloads."""
    origin.add_file("/lock/x.safetensors", 64 * 1024)
    server = server_factory()
    second = subprocess.run(
        [*server.command()[:6], "--port", str(free_port()), *server.command()[8:]],
        env={**cli.env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2, second.stderr
    assert "state_in_use" in second.stderr and str(server.state) in second.stderr
    local = cli.run(
        "get",
        origin.url("/lock/x.safetensors"),
        "--type",
        "lora",
        "--local",
        "--state-dir",
        str(server.state),
        "--models-dir",
        str(server.models),
    )
    assert local.returncode == 1 and "Another orchestrator" in local.stderr, local.stderr
    assert server.api("GET", "/api/downloads").json()["jobs"] == []
    assert not (server.models / "lora" / "x.safetensors").exists()
    assert server.api("GET", "/api/health").status_code == 200  # the first is unharmed


def test_get_submits_to_the_running_server_so_the_page_sees_it(cli, server_factory, origin):
    data = origin.add_file("/srv/upscaler.pth", 2 * MiB)
    server = server_factory()
    result = cli.run(
        "get",
        origin.url("/srv/upscaler.pth"),
        "--type",
        "upscaler",
        env={"ORCHESTRATOR_PORT": str(server.port)},
    )

    assert result.returncode == 0, result.stderr
    assert f"Sending to the server at {server.base}" in result.stderr
    assert (server.models / "upscaler" / "upscaler.pth").read_bytes() == data
    assert cli.model_files() == []  # the server's folder, not one next to the command
    jobs = server.api("GET", "/api/downloads").json()["jobs"]
    assert [(job["url"], job["state"]) for job in jobs] == [(origin.url("/srv/upscaler.pth"), "completed")]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_pauses_the_server_job_and_the_same_command_resumes_it(cli, server_factory, origin, stop):
    """SIGTERM (a notebook's stop button, a supervisor) is Ctrl-C too: the job waits paused."""
    size = 4 * MiB
    data = origin.add_file("/srv/slow.safetensors", size, rate=64 * 1024)
    url = origin.url("/srv/slow.safetensors")
    server = server_factory()
    cli.env["ORCHESTRATOR_PORT"] = str(server.port)
    process = cli.start("get", url, "--type", "lora")
    wait_until(lambda: origin.stats("/srv/slow.safetensors")["bytes_sent"] >= 256 * 1024, "bytes to flow")
    process.send_signal(stop)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 130, err
    assert "interrupted" in summary(out)[1]
    [job] = server.api("GET", "/api/downloads").json()["jobs"]
    assert job["state"] == "paused"  # stopped, its bytes kept on the server for a resume
    assert server.model_files() == []

    origin.add_file("/srv/slow.safetensors", data=data, rate=1024 * 1024)
    again = cli.run("get", url, "--type", "lora")
    assert again.returncode == 0, again.stderr
    assert (server.models / "lora" / "slow.safetensors").read_bytes() == data
    assert [j["id"] for j in server.api("GET", "/api/downloads").json()["jobs"]] == [job["id"]]
    assert origin.stats("/srv/slow.safetensors")["bytes_sent"] < 1.5 * size


def test_ls_pause_resume_cancel_steer_the_server(cli, server_factory, origin):
    origin.add_file("/srv/big.safetensors", 8 * MiB, rate=64 * 1024)
    server = server_factory()
    job = server.submit(origin.url("/srv/big.safetensors"), "checkpoint")
    server.wait_for(job["id"], {"downloading"})
    where = ("--server", server.base)

    listing = cli.run("ls", *where)
    assert listing.returncode == 0
    assert job["id"] in listing.stdout and "big.safetensors" in listing.stdout

    paused = cli.run("pause", job["id"][:6], *where)  # a unique start of the id is enough
    assert paused.returncode == 0, paused.stderr
    assert server.job(job["id"])["state"] == "paused"
    assert cli.run("resume", job["id"], *where).returncode == 0
    assert server.job(job["id"])["state"] in ("downloading", "queued")

    cancelled = cli.run("cancel", job["id"], *where)
    assert cancelled.returncode == 0 and "partial data removed" in cancelled.stdout
    assert server.job(job["id"])["state"] == "cancelled"
    assert server.staging_files() == []

    again = cli.run("cancel", job["id"], *where)  # cancelled already: fine, says so
    assert again.returncode == 0
    unknown = cli.run("pause", "ffffffffffff", *where)
    assert unknown.returncode == 1 and "no download with id 'ffffffffffff'" in unknown.stderr


def test_commands_that_need_a_server_say_so_when_none_answers(cli, origin):
    origin.add_file("/x.bin", 1024)
    for args in (("ls",), ("pause", "abc123"), ("cancel", "abc123"), ("resume", "abc123")):
        result = cli.run(*args)
        assert result.returncode == 2
        assert "no orchestrator server answers at" in result.stderr and "orchestrator serve" in result.stderr
    # --server asks for that server: no quiet fallback to a download in this process
    dead = f"http://127.0.0.1:{free_port()}"
    result = cli.run("get", origin.url("/x.bin"), "--type", "lora", "--server", dead)
    assert result.returncode == 2 and f"no orchestrator server answers at {dead}" in result.stderr
    assert cli.model_files() == []


# -- doctor ---------------------------------------------------------------------------


def test_doctor_reports_and_masks_tokens(cli):
    result = cli.run(
        "doctor",
        "--aria2-rpc-url",
        f"http://127.0.0.1:{cli.aria2_port}/jsonrpc",
        env={"CIVITAI_TOKEN": TOKEN_CIVITAI},
    )
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert any(line.startswith("ok") and "aria2c: 1." in line for line in lines)
    assert any("models folder" in line and "writable" in line and "GiB free" in line for line in lines)
    assert any("CIVITAI_TOKEN is set (civi…8a60)" in line for line in lines)
    assert any("HF_TOKEN not set" in line for line in lines)
    assert TOKEN_CIVITAI not in result.stdout + result.stderr
    assert not cli.state.exists()  # doctor only looks: no secret, no folders created


def test_doctor_fails_on_an_unusable_models_folder(cli):
    blocker = cli.workdir / "not-a-folder"
    blocker.write_text("a file where the models folder should be")
    result = cli.run(
        "doctor",
        "--models-dir",
        str(blocker),
        "--aria2-rpc-url",
        f"http://127.0.0.1:{cli.aria2_port}/jsonrpc",
    )
    assert result.returncode == 1
    failing = result.stdout.split("FAIL  models folder:")[1].splitlines()
    assert "is not a folder" in failing[0] and failing[1].strip().startswith("fix:")


# -- sets of files: a workflow, a Hugging Face folder, a batch file ---------------------------


def test_get_workflow_downloads_its_missing_models_and_fails_on_the_one_without_a_link(cli, origin, tmp_path):
    lora = origin.add_file("/wf/ink.safetensors", 2 * MiB)
    vae = origin.add_file("/wf/ae.safetensors", MiB)
    document = {
        "nodes": [
            {
                "id": 1,
                "type": "LoraLoader",
                "mode": 0,
                "properties": {},
                "widgets_values": ["ink.safetensors"],
            },
            {
                "id": 2,
                "type": "UNETLoader",
                "mode": 0,
                "properties": {},
                "widgets_values": ["flux1-dev.gguf"],
            },
        ],
        "links": [],
        "models": [
            {"name": "ink.safetensors", "url": origin.url("/wf/ink.safetensors"), "directory": "loras"},
            {"name": "ae.safetensors", "url": origin.url("/wf/ae.safetensors"), "directory": "models/vae"},
        ],
    }
    path = tmp_path / "flux-ink.json"
    path.write_text(json.dumps(document))

    result = cli.run("get", "--layout", "comfyui", "--workflow", str(path))

    assert result.returncode == 1, result.stderr  # the workflow still lacks a model: not a success
    assert (cli.models / "loras" / "ink.safetensors").read_bytes() == lora
    assert (cli.models / "vae" / "ae.safetensors").read_bytes() == vae
    assert "flux-ink.json: flux1-dev.gguf" in result.stderr and "no link" in result.stderr.lower()
    table = "\n".join(summary(result.stdout))
    assert "ink.safetensors" in table and "ae.safetensors" in table
    assert cli.staging_files() == []

    again = cli.run("get", "--layout", "comfyui", "--workflow", str(path))  # nothing is fetched twice
    assert "ink.safetensors: already in place" in again.stdout, again.stdout


def test_get_workflow_that_is_not_one_says_so_and_starts_nothing(cli, tmp_path):
    path = tmp_path / "notes.json"
    path.write_text('{"hello": "world"}')
    result = cli.run("get", "--workflow", str(path))
    assert result.returncode == 1
    assert "notes.json" in result.stderr and "workflow" in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert cli.model_files() == []
    missing = cli.run("get", "--workflow", str(tmp_path / "absent.json"))
    assert missing.returncode == 1 and "cannot read the workflow" in missing.stderr


def test_get_of_a_hub_folder_link_puts_the_whole_folder_in_place_on_the_server(cli, server_factory):
    with fake_world() as world:
        world.hub.add_repo("acme/flux-parts")
        parts = {
            "text_encoder/config.json": b'{"architectures": ["T5EncoderModel"]}',
            "text_encoder/model-00001-of-00002.safetensors": opaque_safetensors(os.urandom(2 * MiB)),
            "text_encoder/model-00002-of-00002.safetensors": opaque_safetensors(os.urandom(MiB)),
        }
        for name, data in parts.items():
            world.hub.add_file("acme/flux-parts", name, data, lfs=name.endswith(".safetensors"))
        server = server_factory(env=world.env)
        link = "https://huggingface.co/acme/flux-parts/tree/main/text_encoder"

        result = cli.run("get", link, "--type", "text_encoder", env={"ORCHESTRATOR_PORT": str(server.port)})

        assert result.returncode == 0, result.stderr
        assert "in place in text_encoder/text_encoder" in result.stdout, result.stdout
        for name, data in parts.items():
            assert (server.models / "text_encoder" / name).read_bytes() == data, name
        (made,) = server.api("GET", "/api/bundles").json()["bundles"]
        assert (made["kind"], made["state"], made["counts"]["total"]) == ("hf_folder", "completed", 3)


def test_get_i_makes_one_bundle_of_a_batch_file_that_the_page_sees(cli, server_factory, origin, tmp_path):
    first = origin.add_file("/batch/one.safetensors", MiB)
    second = origin.add_file("/batch/two.pt", MiB)
    batch = tmp_path / "weekend.txt"
    batch.write_text(
        f"{origin.url('/batch/one.safetensors')} lora\n"
        f"{origin.url('/batch/two.pt')} embedding styles/two.pt\n"
    )
    server = server_factory()

    result = cli.run("get", "-i", str(batch), env={"ORCHESTRATOR_PORT": str(server.port)})

    assert result.returncode == 0, result.stderr
    assert (server.models / "lora" / "one.safetensors").read_bytes() == first
    assert (server.models / "embedding" / "styles" / "two.pt").read_bytes() == second
    (made,) = server.api("GET", "/api/bundles").json()["bundles"]
    assert (made["kind"], made["name"], made["state"]) == ("list", "weekend.txt", "completed")
    assert sorted(made["jobs"]) == sorted(
        job["id"] for job in server.api("GET", "/api/downloads").json()["jobs"]
    )
