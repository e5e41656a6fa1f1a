"""Command line: `orchestrator serve` (the app) and `orchestrator aria2d` (the daemon)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

from .config import Settings, add_settings_arguments, settings_from_args

SERVE_FLAGS = (
    "host",
    "port",
    "models-dir",
    "state-dir",
    "engine",
    "aria2-rpc-url",
    "aria2-secret",
    "layout",
    "poll-interval",
    "max-active",
    "log-level",
)
DAEMON_FLAGS = ("models-dir", "state-dir", "aria2-rpc-url", "aria2-secret", "log-level")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the web app (and aria2c, if none is running)")
    add_settings_arguments(serve, SERVE_FLAGS)
    daemon = commands.add_parser("aria2d", help="run aria2c in the foreground with the generated config")
    add_settings_arguments(daemon, DAEMON_FLAGS)
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    {"serve": run_server, "aria2d": run_daemon}[args.command](settings)


def run_server(settings: Settings) -> None:
    import uvicorn

    from .app import create_app

    if not _is_loopback(settings.host):
        logging.getLogger("orchestrator").warning(
            "listening on %s: anyone who can reach this address can start downloads", settings.host
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws_max_size=64 * 1024,
        timeout_graceful_shutdown=5,
    )


def run_daemon(settings: Settings) -> None:
    """Replace this process with aria2c (for supervisord: no fork, no -D)."""
    from .engines.aria2_daemon import (
        aria2c_command,
        aria2c_path,
        load_or_create_secret,
        rpc_port,
        write_runtime_config,
    )

    if not aria2c_path():
        sys.exit("aria2c is not installed (Debian/Ubuntu: apt install aria2)")
    secret = load_or_create_secret(settings.state_dir, settings.aria2_secret)
    config = write_runtime_config(
        settings.state_dir, secret, rpc_port(settings.aria2_rpc_url), settings.staging_dir
    )
    command = aria2c_command(config)
    os.execvp(command[0], command)  # noqa: S606 - exec aria2c in place, as supervisord expects


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    main()
