"""What `get` was asked for: links from the command line and lines of a batch file.

Everything is checked here, before any download starts, so a typo in line 3 of a
model list is reported with its line number while the good lines still run.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import files, intake, sources
from ..config import AUTO_TYPE, MODEL_TYPES
from ..errors import OrchestratorError
from ..sources import Credentials

FINAL_STATES = ("completed", "failed", "cancelled")
TYPE_NAMES = (AUTO_TYPE, *MODEL_TYPES)  # what --type and a batch line's type may say


def settled(job: dict[str, Any]) -> bool:
    """Finished with nothing more to come: a completed file's SHA-256 may follow `success`
    (no source published one), and the summary should show it."""
    return job["state"] in FINAL_STATES and not job.get("hashing")


class BadLine(Exception):
    """One request that cannot run; the message is for a person and names no secret."""


class CliError(Exception):
    """The whole command cannot go on: printed as one `error:` line, exit with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Item:
    """One download to run, checked."""

    order: int  # position in the input, so the summary follows the user's list
    where: str  # "models.txt:3", or the link itself for a command-line argument
    url: str
    model_type: str
    name: str | None = None
    subfolder: str = ""  # inside the type's folder, from a name like `SDXL/styles/file.safetensors`

    def request(self, credentials: Credentials, overwrite: bool) -> dict[str, Any]:
        """The body the manager (or POST /api/downloads) takes; tokens only when set."""
        body: dict[str, Any] = {"url": self.url, "type": self.model_type, "overwrite": overwrite}
        if self.name:
            body["name"] = self.name
        if self.subfolder:
            body["subfolder"] = self.subfolder
        return {**body, **self.tokens(credentials)}

    @staticmethod
    def tokens(credentials: Credentials) -> dict[str, str]:
        tokens = {}
        if credentials.civitai:
            tokens["civitai_token"] = credentials.civitai
        if credentials.huggingface:
            tokens["hf_token"] = credentials.huggingface
        return tokens


@dataclass
class Outcome:
    """How one request ended, for the summary table and the exit code."""

    order: int
    where: str
    label: str
    model_type: str | None
    state: str  # a job state, "invalid" (never started) or "interrupted"
    size: int | None = None
    sha256: str | None = None
    path: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "completed"

    @classmethod
    def invalid(cls, order: int, where: str, message: str) -> Outcome:
        return cls(order, where, where, None, "invalid", error=message)

    @classmethod
    def refused(cls, item: Item, message: str) -> Outcome:
        """The manager or the server turned the request down before a job existed."""
        return cls(
            item.order, item.where, item.name or _tail(item.url), item.model_type, "failed", error=message
        )

    @classmethod
    def from_job(cls, item: Item, job: dict[str, Any], interrupted: bool = False) -> Outcome:
        state = job["state"]
        error = (job.get("error") or {}).get("message")
        if state == "cancelled":
            error = "Cancelled elsewhere (in the page, the API or another aria2 client)."
        if interrupted and state not in FINAL_STATES:
            state, error = "interrupted", "Stopped; partial data kept. Run the same command again to resume."
        return cls(
            order=item.order,
            where=item.where,
            label=job.get("filename") or item.name or _tail(item.url),
            model_type=item.model_type,
            state=state,
            size=job.get("total"),
            sha256=job.get("sha256"),
            path=job.get("path"),
            error=error,
        )


@dataclass
class RunResult:
    outcomes: list[Outcome]
    interrupted: bool = False


def check_item(order: int, where: str, url: str | None, model_type: str | None, name: str | None) -> Item:
    """An Item, or BadLine saying what is wrong with the link, the type or the name: checked by the
    same parser the server uses (intake), with the CLI's own words where it can say more."""
    if not model_type:
        try:
            sources.validate_url(url)
        except OrchestratorError as error:
            raise BadLine(error.message) from None
        raise BadLine("no model type: write one after the link, or pass --type")
    wanted = model_type.strip().lower()
    subfolder, _, name = (name or "").replace("\\", "/").rpartition("/")
    try:
        request = intake.parse_download(
            {"url": url, "type": wanted, "name": name or None, "subfolder": subfolder}, "default"
        )
    except OrchestratorError as error:
        if error.code == "unknown_type":
            known = ", ".join(MODEL_TYPES)
            raise BadLine(
                f"unknown type {model_type[:40]!r} (known: {known}; or auto: the file or the service says)"
            ) from None
        raise BadLine(error.message) from None
    return Item(order, where, request.url, wanted, request.name, request.subfolder)


def parse_batch(
    text: str, label: str, default_type: str | None, first_order: int = 0
) -> tuple[list[Item], list[Outcome]]:
    """`URL [type] [name]` per line; `#` starts a comment; blank lines are skipped.

    Returns the good lines and one `invalid` outcome per bad line.
    """
    items: list[Item] = []
    bad: list[Outcome] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        where = f"{label}:{number}"
        order = first_order + number
        try:
            words = _split_line(raw)
            if not words:
                continue
            if len(words) > 3:
                raise BadLine(f"too many words ({len(words)}); a line is: URL [type] [name]")
            url, model_type, name = (*words, None, None)[:3]
            items.append(check_item(order, where, url, model_type or default_type, name))
        except BadLine as problem:
            bad.append(Outcome.invalid(order, where, str(problem)))
    return items, bad


def read_batch(path: str, default_type: str | None, first_order: int = 0) -> tuple[list[Item], list[Outcome]]:
    """Parse a batch file (`-` is standard input). An unreadable file is a BadLine."""
    if path == "-":
        return parse_batch(sys.stdin.read(), "<stdin>", default_type, first_order)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # -sig: lists saved by Windows editors
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise BadLine(f"cannot read the batch file {path}: {reason}") from None
    return parse_batch(text, Path(path).name, default_type, first_order)


def _split_line(raw: str) -> list[str]:
    """Words of one line, with quotes for names holding spaces.

    A `#` starts a comment only at the start of the line or after a space, because
    links may carry a #fragment.
    """
    line = raw.strip()
    if line.startswith("#"):
        return []
    cut = min((i for i in (line.find(" #"), line.find("\t#")) if i >= 0), default=-1)
    if cut >= 0:
        line = line[:cut]
    try:
        return shlex.split(line, comments=False, posix=True)
    except ValueError as exc:  # an unbalanced quote
        raise BadLine(f"cannot read the line: {exc}") from None


def _tail(url: str) -> str:
    return files.filename_from_url(url) or url[:60]
