"""Progress as people see it: plain lines for logs and notebooks, tqdm bars on a terminal."""

from __future__ import annotations

import io
import sys

from orchestrator.cli.items import Outcome
from orchestrator.cli.progress import Progress, choose_mode, format_seconds, progress_line, summary_table

MiB = 1024 * 1024


def job(state: str = "downloading", **fields) -> dict:
    return {
        "state": state,
        "label": "model.safetensors",
        "downloaded": 42 * MiB,
        "total": 100 * MiB,
        "rate": 12.34,
        "eta": 14.2,
        "path": None,
        "error": None,
        **fields,
    }


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_progress_line():
    assert progress_line(job()) == "model.safetensors   42%  42.0/100.0 MiB  12.3 MB/s  ETA 14s"
    unknown = progress_line(job(total=None, eta=None, rate=0))
    assert unknown == "model.safetensors  42.0 MiB  0.0 MB/s"


def test_a_file_being_verified_says_so_instead_of_looking_frozen():
    assert progress_line(job(downloaded=100 * MiB, verified=40 * MiB)) == "model.safetensors  verifying 40%"


def test_seconds_read_like_a_clock():
    assert [format_seconds(s) for s in (4.4, 75, 3725)] == ["4s", "1m15s", "1h02m"]


def test_mode_is_bars_only_on_a_terminal_outside_notebooks(monkeypatch):
    for name in ("JPY_PARENT_PID", "COLAB_RELEASE_TAG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert choose_mode("auto", io.StringIO()) == "plain"
    assert choose_mode("auto", Terminal()) == "bar"
    assert choose_mode("bar", io.StringIO()) == "bar"
    monkeypatch.setenv("JPY_PARENT_PID", "4242")  # a `!orchestrator get` cell: a pty, but a notebook
    assert choose_mode("auto", Terminal()) == "plain"
    monkeypatch.delenv("JPY_PARENT_PID")
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # inside the kernel itself
    assert choose_mode("auto", Terminal()) == "plain"


def test_plain_mode_prints_changes_and_then_only_every_few_seconds():
    out = io.StringIO()
    progress = Progress("plain", out, every=3600)
    progress.show(0, job("queued", downloaded=0))
    progress.show(0, job())
    progress.show(0, job(downloaded=50 * MiB))  # too soon for another line
    progress.show(0, job("completed", downloaded=100 * MiB, path="lora/model.safetensors"))
    progress.show(1, job("failed", label="other.bin", error={"code": "x", "message": "The server said no."}))
    assert out.getvalue().splitlines() == [
        "model.safetensors  queued",
        "model.safetensors   42%  42.0/100.0 MiB  12.3 MB/s  ETA 14s",
        "model.safetensors  done -> lora/model.safetensors (100.0 MiB)",
        "other.bin  failed: The server said no.",
    ]


def test_bar_mode_draws_a_bar_with_size_and_speed():
    out = Terminal()
    progress = Progress("bar", out)
    progress.show(0, job())
    progress.show(0, job("completed", downloaded=100 * MiB, path="lora/model.safetensors"))
    progress.close()
    drawn = out.getvalue()
    assert "model.safetensors" in drawn and "100%" in drawn and "100M/100M" in drawn


def test_summary_table_in_input_order():
    table = summary_table(
        [
            Outcome(2, "models.txt:2", "models.txt:2", None, "invalid", error="unknown type 'sdxl'"),
            Outcome(
                1,
                "models.txt:1",
                "a.safetensors",
                "lora",
                "completed",
                size=3 * MiB,
                sha256="0123456789ab" + "f" * 52,
            ),
        ]
    ).splitlines()
    assert table[0].split() == ["name", "type", "status", "size", "sha256", "/", "error"]
    assert table[1].split() == ["a.safetensors", "lora", "completed", "3.0", "MiB", "0123456789ab…"]
    assert table[2].split()[:3] == ["models.txt:2", "-", "invalid"]
    assert table[2].endswith("unknown type 'sdxl'")
