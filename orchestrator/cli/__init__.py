"""The user commands beside `serve`: get, ls, cancel, pause, resume, models, doctor.

| module     | its job |
|------------|---------|
| items.py   | what `get` was asked for: links, batch lines (checked), outcomes |
| get.py     | the `get` command: collect, pick server or in-process, report, exit code |
| server.py  | the REST client of a running server |
| remote.py  | `get` through a running server |
| local.py   | `get` in this process: engine, manager, SQLite, Ctrl-C |
| progress.py| tqdm bars or plain lines, the summary table |
| control.py | ls / cancel / pause / resume |
| models.py  | models ls / scan / rm / update: the library of a running server |
| doctor.py  | checks of this machine, each with its fix |

Exit codes: 0 all done, 1 something failed, 2 usage (or no server to talk to), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

COMMANDS = ("get", "ls", "cancel", "pause", "resume", "models", "doctor")
GET_FLAGS = (
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
    "comfyui",
    "comfyui-extra-paths",
    "a1111",
    "subfolder-template",
    "log-level",
)
DOCTOR_FLAGS = ("models-dir", "state-dir", "engine", "aria2-rpc-url", "aria2-secret", "ipv6", "log-level")
SERVER_HELP = "the running server (default: http://ORCHESTRATOR_HOST:ORCHESTRATOR_PORT, i.e. 127.0.0.1:8000)"


def register(commands: Any) -> None:
    """Add the subcommands to `orchestrator`'s subparsers."""
    from ..config import add_settings_arguments
    from .items import TYPE_NAMES

    get = commands.add_parser(
        "get",
        help="download links into the models folder (through a running server, else in this process)",
        description="Download model files. Tokens: prefer the CIVITAI_TOKEN / HF_TOKEN environment "
        "variables; flags show in `ps`. Exit 0 only when every file is verified in place.",
    )
    get.add_argument(
        "urls",
        nargs="*",
        metavar="URL",
        help="links to download; a Hugging Face folder link (.../tree/REV/FOLDER, hf://REPO/FOLDER/) "
        "fetches the whole folder and puts it in place once every file is verified",
    )
    get.add_argument(
        "-i",
        "--input",
        action="append",
        metavar="FILE",
        help="batch file: one `URL [type] [name]` per line, # comments; - reads stdin",
    )
    get.add_argument(
        "-t",
        "--type",
        type=str.lower,
        choices=list(TYPE_NAMES),
        metavar="TYPE",
        help=f"model type, deciding the folder: {', '.join(TYPE_NAMES)} (auto: the type "
        "CivitAI gives); "
        "batch lines may give their own",
    )
    get.add_argument(
        "-w",
        "--workflow",
        action="append",
        metavar="FILE",
        help="a ComfyUI workflow (JSON, or a PNG/WebP saved with one): download the models it "
        "names that are not in place yet, as one set",
    )
    get.add_argument("-n", "--name", help="file name to save as (one link only)")
    get.add_argument("--overwrite", action="store_true", help="replace a different file of the same name")
    get.add_argument("--civitai-token", help="CivitAI API token (better: env CIVITAI_TOKEN)")
    get.add_argument("--hf-token", help="Hugging Face token (better: env HF_TOKEN)")
    get.add_argument("--server", help=SERVER_HELP + "; if given, it must answer")
    get.add_argument("--local", action="store_true", help="download in this process even if a server runs")
    get.add_argument(
        "--progress",
        choices=("auto", "bar", "plain"),
        default="auto",
        help="bars on a terminal, plain lines in logs and notebooks (default auto)",
    )
    add_settings_arguments(get, GET_FLAGS)
    _quiet_logs(get)

    commands.add_parser("ls", help="list the downloads of a running server").add_argument(
        "--server", help=SERVER_HELP
    )
    for action, text in (
        ("cancel", "cancel a download and delete its partial data"),
        ("pause", "pause a download"),
        ("resume", "resume a paused download"),
    ):
        parser = commands.add_parser(action, help=text + " (on a running server)")
        parser.add_argument("job", help="the job id from `orchestrator ls` (or a unique start of it)")
        parser.add_argument("--server", help=SERVER_HELP)

    _register_models(commands)

    doctor = commands.add_parser("doctor", help="check aria2c, the RPC daemon, folders and tokens")
    doctor.add_argument("--server", help=SERVER_HELP)
    add_settings_arguments(doctor, DOCTOR_FLAGS)
    _quiet_logs(doctor)


def _register_models(commands: Any) -> None:
    models = commands.add_parser("models", help="the model library of a running server: ls, scan, rm, update")
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = actions.add_parser("ls", help="every model file: type, size, base model, AutoV2, badges, path")
    listing.add_argument("--json", action="store_true", help="the whole listing as JSON (GET /api/models)")
    scan = actions.add_parser("scan", help="scan the models folders and wait for the result")
    scan.add_argument("--no-wait", action="store_true", help="start the scan and return")
    remove = actions.add_parser("rm", help="delete a model and its sidecars")
    remove.add_argument("path", help="its path as `models ls` shows it (e.g. lora/x.safetensors)")
    update = actions.add_parser("update", help="download the newer CivitAI version beside a model")
    update.add_argument("path", help="its path as `models ls` shows it")
    for action in (listing, scan, remove, update):
        action.add_argument("--server", help=SERVER_HELP)


def _quiet_logs(parser: argparse.ArgumentParser) -> None:
    # a command's output is its progress; the app's info logs would only bury it
    parser.set_defaults(log_level=os.environ.get("ORCHESTRATOR_LOG_LEVEL", "warning"))


def run(args: argparse.Namespace) -> int:
    """Run one of COMMANDS; returns the exit code."""
    from .items import CliError

    level = str(getattr(args, "log_level", "warning")).upper()
    logging.basicConfig(
        level=level if level in logging.getLevelNamesMapping() else "WARNING",
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return _dispatch(args)
    except CliError as error:
        print(f"error: {error.message}", file=sys.stderr, flush=True)
        return error.code
    except KeyboardInterrupt:  # before the runner's own Ctrl-C handling is in place
        print("Interrupted.", file=sys.stderr, flush=True)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "get":
        from .get import run_get

        return run_get(args)
    if args.command == "doctor":
        from .doctor import run_doctor

        return run_doctor(args)
    if args.command == "models":
        from .models import run_models

        return run_models(args)
    from .control import run_action, run_ls

    return run_ls(args) if args.command == "ls" else run_action(args)
