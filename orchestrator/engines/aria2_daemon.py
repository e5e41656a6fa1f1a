"""The aria2c process: its private config, its secret, and running it.

Two ways to run it, one config: `orchestrator aria2d` execs aria2c in the
foreground (for supervisord), and the app's embedded default starts it as a
child and restarts it if it dies. Either way the secret lives in a 0600 file,
never on a command line where `ps` would show it.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# Options the runtime copy sets itself; any value for them in aria2.conf is ignored.
_RUNTIME_KEYS = {
    "rpc-secret",
    "rpc-listen-port",
    "save-session",
    "input-file",
    "dir",
    "daemon",
    "log",
    "enable-rpc",
    "rpc-listen-all",
    "stop-with-process",
}


def find_base_config() -> Path:
    """aria2.conf from ORCHESTRATOR_ARIA2_CONF, the installed package, or the source tree."""
    override = os.environ.get("ORCHESTRATOR_ARIA2_CONF")
    package = Path(__file__).resolve().parents[1]
    for candidate in (override, package / "aria2.conf", package.parent / "aria2.conf"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError("aria2.conf not found; set ORCHESTRATOR_ARIA2_CONF")


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, without a moment where others could."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def load_or_create_secret(state_dir: Path, given: str | None) -> str:
    """The RPC secret: given (flag/env), else kept in the state folder, made once."""
    if given:
        return given
    path = state_dir / "aria2.secret"
    if path.is_file():
        text = path.read_text().strip()
        if text:
            return text
    secret = secrets.token_urlsafe(24)
    write_private(path, secret + "\n")
    return secret


def rpc_port(rpc_url: str) -> int:
    return urlsplit(rpc_url).port or 6800


def session_path(state_dir: Path) -> Path:
    return state_dir / "aria2.session"


def write_runtime_config(state_dir: Path, secret: str, port: int, download_dir: Path) -> Path:
    """The 0600 config aria2c actually reads: aria2.conf plus the private and local bits."""
    lines = []
    for line in find_base_config().read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if line.strip() and not line.lstrip().startswith("#") and key not in _RUNTIME_KEYS:
            lines.append(line.strip())
    session = session_path(state_dir)
    session.parent.mkdir(parents=True, exist_ok=True)
    session.touch(exist_ok=True)  # aria2c refuses to start if input-file is missing
    download_dir.mkdir(parents=True, exist_ok=True)
    lines += [
        "enable-rpc=true",
        "rpc-listen-all=false",
        f"rpc-listen-port={port}",
        f"rpc-secret={secret}",
        f"save-session={session}",
        f"input-file={session}",
        f"dir={download_dir}",
    ]
    path = state_dir / "aria2.runtime.conf"
    write_private(path, "\n".join(lines) + "\n")
    return path


def pid_path(state_dir: Path) -> Path:
    return state_dir / "aria2.pid"


def orphan_pid(state_dir: Path) -> int | None:
    """The pid of an aria2c an earlier app started for this state folder, if it still runs.

    Such a daemon exits as soon as it notices its app is gone (stop-with-process), so
    it must be replaced, not adopted.
    """
    try:
        pid = int(pid_path(state_dir).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return None
    owned = str(state_dir / "aria2.runtime.conf") in cmdline and "--stop-with-process" in cmdline
    return pid if owned else None


def wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def aria2c_path() -> str | None:
    return shutil.which("aria2c")


def aria2c_command(config: Path, owner_pid: int | None = None, max_active: int | None = None) -> list[str]:
    """The command line: a config path, a pid, a number; never the secret."""
    command = ["aria2c", f"--conf-path={config}"]
    if max_active:
        command.append(f"--max-concurrent-downloads={max_active}")
    if owner_pid:
        # exit (saving the session) when the app dies, even by SIGKILL: no orphan daemon
        command.append(f"--stop-with-process={owner_pid}")
    return command


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EmbeddedDaemon:
    """An aria2c child of the app, restarted if it dies (the single-machine default)."""

    def __init__(
        self, state_dir: Path, secret: str, port: int, download_dir: Path, max_active: int | None = None
    ) -> None:
        self.max_active = max_active
        self.state_dir = state_dir
        self.secret = secret
        self.port = port
        self.download_dir = download_dir
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        config = write_runtime_config(self.state_dir, self.secret, self.port, self.download_dir)
        log_path = self.state_dir / "aria2.log"
        with open(log_path, "ab") as output:
            self.process = subprocess.Popen(
                aria2c_command(config, owner_pid=os.getpid(), max_active=self.max_active),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches the app, which stops us
            )
        pid_path(self.state_dir).write_text(f"{self.process.pid}\n")
        log.info("started aria2c (pid %s) on 127.0.0.1:%s", self.process.pid, self.port)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ensure_running(self) -> bool:
        """Restart aria2c if it exited; True when a restart happened."""
        if self.running:
            return False
        code = self.process.returncode if self.process else None
        log.warning("aria2c exited (code %s); restarting it", code)
        self.start()
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Ask aria2c to save its session and exit; kill it if it will not."""
        if not self.running:
            return
        assert self.process is not None
        self.process.terminate()  # SIGTERM: aria2c saves the session, then exits
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        pid_path(self.state_dir).unlink(missing_ok=True)
