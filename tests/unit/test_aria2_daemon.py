"""The aria2c daemon's private config and secret."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.engines import aria2_daemon
from orchestrator.engines.aria2_daemon import (
    aria2c_command,
    load_or_create_secret,
    port_is_free,
    rpc_port,
    write_runtime_config,
)

BASE = """\
# a comment mentioning rpc-secret=nothing
daemon=true
rpc-secret=leaked-from-the-public-file
  rpc-secret = spaced-leak
rpc-listen-all=true
rpc-listen-port=1234
dir=/somewhere/else
split=16
max-connection-per-server=16

continue=true
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def options(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs.append((key.strip(), value.strip()))
    return pairs


@pytest.fixture
def base_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "aria2.conf"
    path.write_text(BASE)
    monkeypatch.setenv("ORCHESTRATOR_ARIA2_CONF", str(path))
    return path


def test_runtime_config_is_private_and_complete(tmp_path: Path, base_config: Path) -> None:
    state, downloads = tmp_path / "state", tmp_path / "models" / ".staging"
    path = write_runtime_config(state, "the-secret", 6811, downloads)
    assert mode(path) == 0o600
    pairs = options(path)
    settings = dict(pairs)
    keys = [key for key, _ in pairs]
    assert settings["rpc-secret"] == "the-secret"
    assert settings["rpc-listen-all"] == "false"
    assert settings["rpc-listen-port"] == "6811"
    assert settings["enable-rpc"] == "true"
    assert settings["dir"] == str(downloads)
    assert settings["split"] == "16"
    assert settings["continue"] == "true"
    assert "daemon" not in keys
    for key in ("rpc-secret", "rpc-listen-all", "rpc-listen-port", "dir"):
        assert keys.count(key) == 1, key
    text = path.read_text()
    assert "leak" not in text
    assert "/somewhere/else" not in text
    # what aria2c needs to exist before it starts
    assert Path(settings["input-file"]).is_file()
    assert settings["save-session"] == settings["input-file"]
    assert downloads.is_dir()


def test_runtime_config_rewrite_keeps_mode_and_replaces_secret(tmp_path: Path, base_config: Path) -> None:
    first = write_runtime_config(tmp_path, "one", 6800, tmp_path / "dl")
    os.chmod(first, 0o644)
    second = write_runtime_config(tmp_path, "two", 6800, tmp_path / "dl")
    assert second == first
    assert mode(second) == 0o600
    assert dict(options(second))["rpc-secret"] == "two"
    # no temporary file left behind
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_project_aria2_conf_is_found_and_holds_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORCHESTRATOR_ARIA2_CONF", raising=False)
    base = aria2_daemon.find_base_config()
    keys = [key for key, _ in options(base)]
    assert "rpc-secret" not in keys
    assert "daemon" not in keys
    path = write_runtime_config(tmp_path, "s", 6800, tmp_path / "dl")
    assert dict(options(path))["rpc-listen-all"] == "false"


def test_secret_is_created_once_and_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = load_or_create_secret(state, None)
    path = state / "aria2.secret"
    assert path.is_file()
    assert mode(path) == 0o600
    assert len(first) >= 16
    assert path.read_text().strip() == first
    assert load_or_create_secret(state, None) == first
    assert load_or_create_secret(state, "") == first


def test_explicit_secret_wins(tmp_path: Path) -> None:
    kept = load_or_create_secret(tmp_path, None)
    assert load_or_create_secret(tmp_path, "given") == "given"
    assert (tmp_path / "aria2.secret").read_text().strip() == kept


def test_explicit_secret_creates_no_file(tmp_path: Path) -> None:
    assert load_or_create_secret(tmp_path, "given") == "given"
    assert not (tmp_path / "aria2.secret").exists()


def test_empty_secret_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "aria2.secret").write_text("\n")
    secret = load_or_create_secret(tmp_path, None)
    assert secret
    assert (tmp_path / "aria2.secret").read_text().strip() == secret
    assert mode(tmp_path / "aria2.secret") == 0o600


def test_different_state_folders_get_different_secrets(tmp_path: Path) -> None:
    assert load_or_create_secret(tmp_path / "a", None) != load_or_create_secret(tmp_path / "b", None)


def test_command_line_never_holds_the_secret(tmp_path: Path, base_config: Path) -> None:
    config = write_runtime_config(tmp_path, "very-secret-value", 6800, tmp_path / "dl")
    command = aria2c_command(config, owner_pid=4242)
    assert not any("very-secret-value" in part for part in command)
    assert f"--conf-path={config}" in command
    assert "--stop-with-process=4242" in command


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("http://127.0.0.1:6801/jsonrpc", 6801),
        ("http://127.0.0.1/jsonrpc", 6800),
        ("http://localhost:7000", 7000),
    ],
)
def test_rpc_port(url: str, port: int) -> None:
    assert rpc_port(url) == port


def test_port_is_free() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert port_is_free(taken.getsockname()[1]) is False
    assert port_is_free(aria2_daemon.free_port()) is True


# -- the embedded daemon's watchdog -------------------------------------------------------------

needs_aria2c = pytest.mark.skipif(aria2_daemon.aria2c_path() is None, reason="aria2c is not installed")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_exited(daemon: aria2_daemon.EmbeddedDaemon) -> None:
    assert daemon.process is not None
    daemon.process.wait(timeout=20)


@needs_aria2c
def test_a_daemon_that_cannot_start_is_retried_with_a_growing_pause(tmp_path: Path) -> None:
    """Another program holds the port: aria2c dies at once each time. The watchdog (every 2 s)
    must not restart it 20 times in 40 s."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        clock = Clock()
        # without IPv6 (as on this kind of machine), aria2c exits when it cannot bind its RPC port
        daemon = aria2_daemon.EmbeddedDaemon(
            tmp_path, "s3cret", port, tmp_path / "dl", clock=clock, disable_ipv6=True
        )
        daemon.start()
        launches = 1
        for _ in range(20):  # 40 s of watchdog ticks
            wait_exited(daemon)
            clock.now += 2
            if daemon.ensure_running():
                launches += 1
        wait_exited(daemon)
    assert launches <= 6, launches  # the first start, then 2, 4, 8, 16 s apart: not 21 (every tick)
    assert daemon.next_try - clock.now > 8
    assert aria2_daemon.port_holder(port) is None  # the holder is gone now; nothing of ours is left


@needs_aria2c
def test_an_aria2c_an_earlier_app_left_on_the_port_is_stopped_before_a_restart(tmp_path: Path) -> None:
    port = aria2_daemon.free_port()
    config = write_runtime_config(tmp_path, "s3cret", port, tmp_path / "dl")
    orphan = subprocess.Popen(aria2c_command(config, owner_pid=os.getpid()), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while aria2_daemon.port_holder(port) != orphan.pid and time.monotonic() < deadline:
            time.sleep(0.05)
        assert aria2_daemon.port_holder(port) == orphan.pid
        daemon = aria2_daemon.EmbeddedDaemon(tmp_path, "s3cret", port, tmp_path / "dl")
        assert daemon.ensure_running()  # nothing ran yet: it starts, after stopping the orphan
        assert orphan.wait(timeout=25) is not None
        deadline = time.monotonic() + 10
        while aria2_daemon.port_holder(port) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.running and aria2_daemon.port_holder(port) == daemon.process.pid
        daemon.stop()
    finally:
        if orphan.poll() is None:
            orphan.kill()
