"""`orchestrator get`: download links into the models folder, through a server or in-process.

Output: progress and the summary table on stdout; notes, warnings and one `error:`
line per failure on stderr. Exit 0 only when every file is verified in place,
1 when any failed, 2 for a usage problem, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
from pathlib import Path
from typing import Any

from ..bundles.hf_folder import parse_folder
from ..config import Settings, settings_from_args
from ..errors import OrchestratorError
from ..sources import Credentials
from .items import BadLine, CliError, Item, Outcome, RunResult, check_item, read_batch
from .progress import Progress, choose_mode, summary_table
from .server import ServerClient, ServerError, ServerGone, open_server

TOKEN_FLAGS = (("civitai_token", "--civitai-token", "CIVITAI_TOKEN"), ("hf_token", "--hf-token", "HF_TOKEN"))
BATCH_STRIDE = 1_000_000  # orders of batch lines sort after command-line links, file by file


def run_get(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    credentials = read_credentials(args)
    items, invalid, bundles = collect(args)
    for outcome in invalid:
        say(f"error: {outcome.where}: {outcome.error}")
    progress = Progress(choose_mode(args.progress))
    try:
        wanted = items or bundles
        result = _download(args, settings, items, bundles, credentials, progress) if wanted else RunResult([])
    finally:
        progress.close()
    return report(items, invalid, result)


def read_credentials(args: argparse.Namespace) -> Credentials:
    """Flags win over the environment; a flag earns a warning, since `ps` shows it to everyone."""
    values = {}
    for attribute, flag, env in TOKEN_FLAGS:
        given = (getattr(args, attribute, None) or "").strip()
        if given:
            say(f"warning: {flag} is visible to other users of this machine (ps); prefer `export {env}=...`")
        values[attribute] = given or os.environ.get(env, "").strip() or None
    return Credentials(civitai=values["civitai_token"], huggingface=values["hf_token"])


def collect(args: argparse.Namespace) -> tuple[list[Item], list[Outcome], list[dict[str, Any]]]:
    """Checked items from the command line, and the sets of files that go as one bundle each
    (a Hugging Face folder link, a batch file of several links, a workflow's missing models),
    and what is wrong."""
    workflows = getattr(args, "workflow", None) or []
    if not args.urls and not args.input and not workflows:
        raise CliError(
            "nothing to download: give one or more links, a batch file with -i FILE, "
            "or a ComfyUI workflow with --workflow FILE",
            2,
        )
    if args.name and len(args.urls) != 1:
        raise CliError(
            "--name names one file: give exactly one link with it (in a batch file, "
            "write the name after the type)",
            2,
        )
    if args.urls and not args.type:
        raise CliError(
            "no model type: pass --type (for example --type lora, or --type auto to let "
            "the file's header or CivitAI say); in a batch file, write the type after the link",
            2,
        )
    items: list[Item] = []
    invalid: list[Outcome] = []
    bundles: list[dict[str, Any]] = []
    for order, url in enumerate(args.urls):
        where = url[:80]
        try:
            folder = _folder_bundle(url, args.type)
            if folder:
                bundles.append(folder)
            else:
                items.append(check_item(order, where, url, args.type, args.name))
        except BadLine as problem:
            invalid.append(Outcome.invalid(order, where, str(problem)))
    for number, path in enumerate(args.input or [], start=1):
        try:
            good, bad = read_batch(path, args.type, number * BATCH_STRIDE)
        except BadLine as problem:
            invalid.append(Outcome.invalid(number * BATCH_STRIDE, path, str(problem)))
            continue
        invalid += bad
        if len(good) > 1:
            bundles.append(_list_bundle(Path(path).name if path != "-" else "stdin", good))
        else:
            items += good
    for number, path in enumerate(workflows):
        try:
            bundles.append(_workflow_bundle(path))
        except BadLine as problem:
            invalid.append(Outcome.invalid(2 * BATCH_STRIDE + number, path, str(problem)))
    return items, invalid, bundles


def _folder_bundle(url: str, model_type: str | None) -> dict[str, Any] | None:
    """A Hugging Face folder link as a bundle request; None for any other link."""
    try:
        folder = parse_folder(url)
    except OrchestratorError as error:
        raise BadLine(error.message) from None
    if folder is None:
        return None
    return {"kind": "hf_folder", "url": url, "type": model_type, "label": url[:80]}


def _list_bundle(label: str, items: list[Item]) -> dict[str, Any]:
    """The links of one batch file, as one bundle named after the file."""
    entries = []
    for item in items:
        entry: dict[str, Any] = {"url": item.url, "type": item.model_type}
        if item.name:
            entry["name"] = item.name
        if item.subfolder:
            entry["subfolder"] = item.subfolder
        entries.append(entry)
    # `lines`: the follower's own, never sent; each file keeps its line's place and name
    return {"kind": "list", "items": entries, "name": label, "label": label, "lines": items}


def _workflow_bundle(path: str) -> dict[str, Any]:
    """A ComfyUI workflow file (JSON, or a PNG/WebP it was saved in): its missing models.
    The server reads it, with the same checks as the page's."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BadLine(f"cannot read the workflow {path}: {exc.strerror or type(exc).__name__}") from None
    return {
        "kind": "workflow",
        "workflow_base64": base64.b64encode(data).decode("ascii"),
        "filename": Path(path).name,
        "label": Path(path).name,
    }


def _download(
    args: argparse.Namespace,
    settings: Settings,
    items: list[Item],
    bundles: list[dict[str, Any]],
    credentials: Credentials,
    progress: Progress,
) -> RunResult:
    client = find_server(args)
    if client is not None:
        say(
            f"Sending to the server at {client.base_url}; files land in its models folder "
            "(--local downloads in this process instead)."
        )
        if credentials.civitai or credentials.huggingface:
            client.warn_if_tokens_go_in_clear()
        try:
            return run_remote(client, items, credentials, args.overwrite, progress, bundles)
        finally:
            client.close()
    from .local import run_local

    return run_local(settings, items, credentials, args.overwrite, progress, bundles)


def run_remote(
    client: ServerClient,
    items: list[Item],
    credentials: Credentials,
    overwrite: bool,
    progress: Progress,
    bundles: list[dict[str, Any]] | None = None,
) -> RunResult:
    from .follow import Follower, stop_on_signals
    from .remote import RemoteBackend

    async def follow() -> RunResult:
        stop = stop_on_signals(progress)
        follower = Follower(RemoteBackend(client), progress)
        return await follower.run(items, credentials, overwrite, stop, bundles)

    return asyncio.run(follow())


def find_server(args: argparse.Namespace) -> ServerClient | None:
    """The running server to submit to, or None to run in-process.

    A server asked for with --server must answer; the default address is only tried.
    """
    if args.local:
        return None
    try:
        return open_server(args.server)
    except ServerGone as gone:
        if args.server:
            raise CliError(f"{gone.message}; leave out --server to download in this process", 2) from None
        return None
    except ServerError as error:  # someone is there but refuses us (401): do not go around it
        raise CliError(error.message, 2) from None


def report(items: list[Item], invalid: list[Outcome], result: RunResult) -> int:
    """One error line per failed download, the summary table, and the exit code."""
    finished = {outcome.order for outcome in result.outcomes}
    unstarted = [
        Outcome(
            item.order,
            item.where,
            item.name or item.url[:60],
            item.model_type,
            "interrupted",
            error="Not started.",
        )
        for item in items
        if item.order not in finished
    ]
    outcomes = invalid + result.outcomes + unstarted
    for outcome in sorted(result.outcomes, key=lambda o: o.order):
        if outcome.state in ("failed", "cancelled", "invalid"):
            say(f"error: {outcome.where}: {outcome.error}")
    if outcomes:
        print(summary_table(outcomes), flush=True)
    if result.interrupted:
        say("Interrupted: partial downloads are kept; run the same command again to resume them.")
        return 130
    return 0 if outcomes and all(outcome.ok for outcome in outcomes) else 1


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
