"""The server shape: `orchestrator aria2d` + `serve --engine aria2`, and under supervisord."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, Server, free_port, needs_aria2

pytestmark = [pytest.mark.integration, needs_aria2]

MiB = 1024 * 1024


def start_aria2d(state: Path, models: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ARIA2_SECRET", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "aria2d",
            "--state-dir",
            str(state),
            "--models-dir",
            str(models),
            "--aria2-rpc-url",
            f"http://127.0.0.1:{port}/jsonrpc",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_listening(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.post(f"http://127.0.0.1:{port}/jsonrpc", data="{}", timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def test_aria2d_execs_aria2c_and_the_app_shares_it(tmp_path, origin):
    data = origin.add_file("/model.ckpt", 20 * MiB, rate=1 * MiB)
    state, models = tmp_path / "state", tmp_path / "models"
    port = free_port()
    daemon = start_aria2d(state, models, port)
    try:
        wait_listening(port)
        # exec, not fork: the pid we started *is* aria2c, in the foreground
        cmdline = Path(f"/proc/{daemon.pid}/cmdline").read_bytes().split(b"\0")
        assert Path(cmdline[0].decode()).name == "aria2c"
        assert not any(arg.startswith(b"-D") or arg == b"--daemon=true" for arg in cmdline)
        secret = (state / "aria2.secret").read_text().strip()
        assert secret.encode() not in b" ".join(cmdline)
        assert stat.S_IMODE((state / "aria2.runtime.conf").stat().st_mode) == 0o600

        server = Server(tmp_path, "--engine", "aria2")
        server.aria2_port = port
        server.start()
        try:
            assert server.api("GET", "/api/health").json()["engine"]["connected"] is True
            job = server.submit(origin.url("/model.ckpt"), "checkpoint")
            server.wait_until(job["id"], lambda j: j["downloaded"] > 2 * MiB)
            # the daemon dies (as under supervisord before it restarts it): the job resumes
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=20)
            daemon = start_aria2d(state, models, port)
            done = server.wait_for(job["id"], {"completed", "failed"}, timeout=90)
            assert done["state"] == "completed", done
            assert (models / "checkpoint" / "model.ckpt").read_bytes() == data
        finally:
            server.stop()
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)


SUPERVISORD = shutil.which("supervisord")
VENV_SCRIPT = Path(sys.prefix) / "bin" / "orchestrator"


@pytest.mark.skipif(SUPERVISORD is None, reason="supervisord is not installed (apt install supervisor)")
@pytest.mark.skipif(
    not VENV_SCRIPT.exists(),
    reason="the project is not installed in this Python's environment (make test does that)",
)
def test_supervisord_conf_runs_both_and_restarts_them(tmp_path, origin):
    """The shipped supervisord.conf, unchanged, in a copy of the project folder."""
    data = origin.add_file("/sv.safetensors", 12 * MiB, rate=512 * 1024)
    shutil.copy(ROOT / "supervisord.conf", tmp_path / "supervisord.conf")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "state" / "logs").mkdir(parents=True)
    base = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "ORCHESTRATOR_PORT": base.rsplit(":", 1)[1],  # children inherit it
        "ARIA2_RPC_URL": f"http://127.0.0.1:{free_port()}/jsonrpc",
    }
    env.pop("ARIA2_SECRET", None)
    supervisor = subprocess.Popen(
        [SUPERVISORD, "-n", "-c", str(tmp_path / "supervisord.conf")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ctl = ["supervisorctl", "-c", str(tmp_path / "supervisord.conf")]
    try:
        wait_ok(f"{base}/api/health", 40)
        submit = requests.post(
            f"{base}/api/downloads", timeout=10, json={"url": origin.url("/sv.safetensors"), "type": "lora"}
        )
        job_id = submit.json()["job"]["id"]
        time.sleep(2)
        for program in ("aria2d", "app"):
            pid = int(subprocess.run([*ctl, "pid", program], capture_output=True, text=True).stdout)
            os.kill(pid, signal.SIGKILL)
            wait_new_pid(ctl, program, pid)
        wait_ok(f"{base}/api/health", 40)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = requests.get(f"{base}/api/downloads/{job_id}", timeout=10).json()["job"]
            if job["state"] in ("completed", "failed"):
                break
            time.sleep(0.5)
        assert job["state"] == "completed", job
        target = tmp_path / "models" / "lora" / "sv.safetensors"
        assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=30)


def wait_ok(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


def wait_new_pid(ctl: list[str], program: str, old: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run([*ctl, "pid", program], capture_output=True, text=True).stdout.strip()
        if out.isdigit() and int(out) not in (0, old):
            return
        time.sleep(0.2)
    raise AssertionError(f"supervisord did not restart {program}")
