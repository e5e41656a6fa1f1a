"""`orchestrator models ls | scan | rm | update`: the model library of a running server.

The library's index belongs to the server that keeps it current, so these commands talk to it
(REST, docs/PROTOCOL.md "Library"); without a server they say how to start one (exit 2).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..sources.http import token_from
from .control import connect
from .items import CliError
from .progress import human_size
from .server import ServerClient, ServerError

SCAN_POLL = 0.3  # seconds between two looks at a running scan
SCAN_WAIT = 24 * 3600.0  # a scan of many large new files takes long; Ctrl-C stops waiting, not it


def run_models(args: argparse.Namespace) -> int:
    client = connect(args.server)
    try:
        action = args.models_command
        if action == "ls":
            return _ls(client, args.json)
        if action == "scan":
            return _scan(client, wait=not args.no_wait)
        if action == "rm":
            return _rm(client, args.path)
        return _update(client, args.path)
    except ServerError as error:
        raise CliError(error.message) from None
    finally:
        client.close()


def _ls(client: ServerClient, as_json: bool) -> int:
    answer = client.models()
    if as_json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
        return 0
    files = [entry for entries in answer["models"].values() for entry in entries]
    if not files:
        print("No models.")
        return 0
    print(models_table(answer["models"]))
    return 0


def models_table(models: dict[str, list[dict[str, Any]]]) -> str:
    """type, size, base model, AutoV2, badges and path, one file a line, by type."""
    rows = [("type", "size", "base model", "autov2", "notes", "path")]
    for model_type, entries in models.items():
        for entry in sorted(entries, key=lambda e: str(e.get("path"))):
            rows.append(
                (
                    model_type,
                    human_size(entry.get("size")),
                    str(entry.get("base_model") or "-"),
                    str(entry.get("autov2") or "-"),
                    badges(entry) or "-",
                    str(entry.get("path") or entry.get("name")),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)) + "  " + row[5]
        for row in rows
    )


def badges(entry: dict[str, Any]) -> str:
    notes = []
    update = entry.get("update")
    if isinstance(update, dict):
        notes.append(f"update: {update.get('latest_version_name') or update.get('latest_version_id')}")
    if entry.get("duplicates"):
        notes.append(f"{len(entry['duplicates']) + 1} copies")
    if entry.get("sha256") is None:
        notes.append("not hashed yet")
    return ", ".join(notes)


def _scan(client: ServerClient, wait: bool) -> int:
    try:
        client.scan()
    except ServerError as error:
        if error.code != "scan_running":
            raise
        print("A scan is already running; waiting for it.")
    if not wait:
        print("Scan started.")
        return 0
    deadline = time.monotonic() + SCAN_WAIT
    while time.monotonic() < deadline:
        library = client.models().get("library") or {}
        if not library.get("scan"):
            print(scan_summary(library.get("last_scan") or {}))
            return 0
        time.sleep(SCAN_POLL)
    raise CliError("the scan is still running; see `orchestrator models ls` later")


def scan_summary(result: dict[str, Any]) -> str:
    counts = result.get("counts") or {}
    parts = [f"{result.get('files', 0)} files"]
    parts += [f"{counts[key]} {key}" for key in ("added", "changed", "moved", "removed") if counts.get(key)]
    hashed = result.get("hashed_files") or 0
    if hashed:
        parts.append(f"{hashed} hashed ({human_size(result.get('hashed_bytes') or 0)})")
    lines = ["Scan done: " + ", ".join(parts) + "."]
    lines += [f"  problem: {problem}" for problem in result.get("problems") or []]
    return "\n".join(lines)


def _rm(client: ServerClient, path: str) -> int:
    removed = client.remove_model(path)
    extras = removed.get("sidecars") or []
    also = f" and {len(extras)} sidecar{'s' if len(extras) != 1 else ''}" if extras else ""
    print(f"Deleted {removed.get('path', path)}{also}; {human_size(removed.get('freed_bytes') or 0)} freed.")
    return 0


def _update(client: ServerClient, path: str) -> int:
    # the caller's CivitAI key, as `get` sends it: a server started without one can still fetch
    # an early-access or login-only version
    token = token_from(None, "CIVITAI_TOKEN")
    if token:
        client.warn_if_tokens_go_in_clear()
    job = client.update_model(path, token)
    print(f"Downloading the newer version as job {job['id']} ({job['label']}); see `orchestrator ls`.")
    return 0
