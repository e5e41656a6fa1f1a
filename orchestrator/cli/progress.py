"""Showing downloads as they move: a tqdm bar per file, or plain lines, and the summary table.

Bars need a terminal that understands carriage returns. Logs, pipes and notebook
cells do not, so there we print one line per file every few seconds instead.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

from ..files import human_bytes
from .items import FINAL_STATES, Outcome

PLAIN_EVERY = 5.0  # seconds between plain progress lines of one file
NAME_WIDTH = 32
MiB = 1024 * 1024
NOTEBOOK_ENV = ("JPY_PARENT_PID", "COLAB_RELEASE_TAG")


def choose_mode(requested: str = "auto", stream: IO[str] | None = None) -> str:
    """ "bar" on a terminal, "plain" for pipes, logs and notebooks."""
    if requested in ("bar", "plain"):
        return requested
    stream = stream or sys.stdout
    interactive = hasattr(stream, "isatty") and stream.isatty()
    return "bar" if interactive and not in_notebook() and os.environ.get("TERM") != "dumb" else "plain"


def in_notebook() -> bool:
    """Inside a Jupyter/Colab kernel, or a `!command` it started.

    `!` runs commands on a pseudo-terminal, so isatty() says yes, but a notebook cell
    cannot redraw several bars. Jupyter exports JPY_PARENT_PID to its kernels and
    Colab COLAB_RELEASE_TAG; their child processes inherit both.
    """
    return "ipykernel" in sys.modules or any(name in os.environ for name in NOTEBOOK_ENV)


class Progress:
    """Fed job objects (the API's shape) as they change; draws them one way or the other."""

    def __init__(self, mode: str = "plain", out: IO[str] | None = None, every: float = PLAIN_EVERY) -> None:
        self.mode = mode
        self.out = out or sys.stdout
        self.every = every
        self._bars: dict[int, Any] = {}
        self._states: dict[int, str] = {}
        self._last_line: dict[int, float] = {}

    def show(self, key: int, job: dict[str, Any]) -> None:
        if self.mode == "bar":
            self._show_bar(key, job)
        else:
            self._show_line(key, job)
        self._states[key] = job["state"]

    def note(self, text: str) -> None:
        """A message between the bars, without breaking them."""
        if self._bars:
            from tqdm import tqdm

            tqdm.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    # -- plain lines ----------------------------------------------------------------

    def _show_line(self, key: int, job: dict[str, Any]) -> None:
        state, now = job["state"], time.monotonic()
        changed = self._states.get(key) != state
        due = now - self._last_line.get(key, 0.0) >= self.every
        if state != "downloading":
            if changed:
                self._print(transition_line(job))
        elif changed or due:
            self._print(progress_line(job))
        else:
            return
        self._last_line[key] = now

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- bars -----------------------------------------------------------------------

    def _show_bar(self, key: int, job: dict[str, Any]) -> None:
        bar = self._bars.get(key)
        if bar is None:
            if self._states.get(key) in FINAL_STATES:
                return
            bar = self._bars[key] = self._new_bar(len(self._states), job)
        bar.set_description_str(_short(job["label"]), refresh=False)
        if job.get("total") and bar.total != job["total"]:
            bar.total = job["total"]
        step = (job.get("downloaded") or 0) - bar.n
        if job["state"] == "completed" and bar.total:
            step = bar.total - bar.n
        if step:
            bar.update(step)
        postfix = "" if job["state"] == "downloading" else _state_word(job)
        bar.set_postfix_str(postfix, refresh=True)
        if job["state"] in FINAL_STATES:
            bar.close()
            del self._bars[key]

    def _new_bar(self, position: int, job: dict[str, Any]) -> Any:
        from tqdm import tqdm

        return tqdm(
            total=job.get("total") or None,
            desc=_short(job["label"]),
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=self.out,
            position=position,  # one line per file, in the order they appeared
            leave=True,
            dynamic_ncols=True,
            miniters=1,
        )


def progress_line(job: dict[str, Any]) -> str:
    """`name  42%  123.4/300.0 MiB  12.3 MB/s  ETA 14s`, or `name  verifying 40%`."""
    done, total = job.get("downloaded") or 0, job.get("total")
    if job.get("verified") is not None:  # the finished file is checked against its published sha256
        share = f" {100 * job['verified'] / total:.0f}%" if total else ""
        return f"{_short(job['label'])}  verifying{share}"
    parts = [_short(job["label"])]
    if total:
        parts += [f"{100 * done / total:3.0f}%", f"{done / MiB:.1f}/{total / MiB:.1f} MiB"]
    else:
        parts.append(f"{done / MiB:.1f} MiB")
    parts.append(f"{job.get('rate') or 0:.1f} MB/s")
    if job.get("eta") is not None:
        parts.append(f"ETA {format_seconds(job['eta'])}")
    return "  ".join(parts)


def transition_line(job: dict[str, Any]) -> str:
    """One line when a file changes state: queued, verifying, done, failed."""
    return f"{_short(job['label'])}  {_state_word(job)}"


def _state_word(job: dict[str, Any]) -> str:
    state = job["state"]
    if state == "completed":
        size = f" ({human_size(job['total'])})" if job.get("total") else ""
        return f"done -> {job.get('path')}{size}"
    if state == "failed":
        return f"failed: {(job.get('error') or {}).get('message', 'unknown error')}"
    return state


def summary_table(outcomes: list[Outcome]) -> str:
    """name, type, status, size, sha256 prefix or error: one row per request, input order."""
    rows = [("name", "type", "status", "size", "sha256 / error")]
    for outcome in sorted(outcomes, key=lambda o: o.order):
        detail = f"{outcome.sha256[:12]}…" if outcome.ok and outcome.sha256 else outcome.error or ""
        rows.append(
            (
                _short(outcome.label),
                outcome.model_type or "-",
                outcome.state,
                human_size(outcome.size) if outcome.size else "-",
                detail,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def human_size(count: float | None) -> str:
    return "-" if count is None else human_bytes(count)


def format_seconds(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _short(text: str, width: int = NAME_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
