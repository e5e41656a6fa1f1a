"""`orchestrator ls | cancel | pause | resume`: look at and steer the jobs of a running server."""

from __future__ import annotations

import argparse
from typing import Any

from .items import CliError
from .progress import human_size
from .server import ServerClient, ServerError, ServerGone, open_server

DONE_WORDS = {"cancel": "cancelled", "pause": "paused", "resume": "resumed"}


def connect(server: str | None) -> ServerClient:
    """A client of the server that answers, or exit 2 saying how to get one."""
    try:
        return open_server(server)
    except ServerGone as gone:
        raise CliError(
            f"{gone.message}. Start one with `orchestrator serve`, or point --server at yours", 2
        ) from None
    except ServerError as error:
        raise CliError(error.message, 2) from None


def run_ls(args: argparse.Namespace) -> int:
    client = connect(args.server)
    try:
        jobs = client.jobs()
    except ServerError as error:
        raise CliError(error.message) from None
    finally:
        client.close()
    print(jobs_table(jobs) if jobs else "No downloads.")
    return 0


def run_action(args: argparse.Namespace) -> int:
    """cancel, pause or resume one job, named by its id or a unique start of it."""
    client = connect(args.server)
    try:
        job_id = find_job(client, args.job)
        job = client.act(job_id, args.command)
    except ServerError as error:
        raise CliError(error.message) from None
    finally:
        client.close()
    extra = "; partial data removed" if args.command == "cancel" else ""
    print(f"{DONE_WORDS[args.command]} {job['id']}  {job['label']}  (now {job['state']}{extra})")
    return 0


def find_job(client: ServerClient, given: str) -> str:
    ids = [job["id"] for job in client.jobs()]
    if given in ids:
        return given
    matches = [job_id for job_id in ids if job_id.startswith(given)] if given else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CliError(f"no download with id {given[:40]!r} (see `orchestrator ls`)")
    raise CliError(f"{given!r} is the start of {len(matches)} download ids; give more of it")


def jobs_table(jobs: list[dict[str, Any]]) -> str:
    """id, state, progress, size, type, name and (when it failed) why: oldest first."""
    rows = [("id", "state", "done", "size", "type", "name")]
    for job in jobs:
        name = job["label"]
        if job.get("error"):
            name += f"  ({job['error']['message']})"
        elif job.get("path"):
            name = job["path"]
        rows.append(
            (
                job["id"],
                job["state"],
                f"{100 * (job.get('progress') or 0):.0f}%",
                human_size(job.get("total")),
                job["type"],
                name,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)) + "  " + row[5]
        for row in rows
    )
