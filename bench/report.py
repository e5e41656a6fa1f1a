"""The machine, the tables, and docs/BENCHMARKS.md.

The benchmark owns the sections between `<!-- bench:NAME:start -->` and
`<!-- bench:NAME:end -->` markers; everything else in the file is prose written
by people and kept as it is.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from pathlib import Path

from .measure import MB, Summary, load_average

DOC = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "?"


def _proc_value(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.lower().startswith(key.lower()):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _filesystem(path: Path) -> str:
    best, kind = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount = parts[1]
            if str(path).startswith(mount) and len(mount) > len(best):
                best, kind = mount, f"{parts[2]} ({parts[0]} on {mount})"
    except OSError:
        pass
    return kind


def machine(workdir: Path) -> dict[str, str]:
    memory_kib = int(_proc_value("/proc/meminfo", "MemTotal").split()[0] or 0)
    os_name = "?"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _proc_value("/proc/cpuinfo", "model name"),
        "cores": str(os.cpu_count()),
        "ram": f"{memory_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "os": os_name,
        "filesystem": _filesystem(workdir),
        "aria2": _first_line(["aria2c", "--version"]),
        "nginx": _first_line(["nginx", "-v"]),
        "curl": " ".join(_first_line(["curl", "--version"]).split()[:2]),
        "python": platform.python_version(),
        "load_before": load_average(),
    }


def machine_table(info: dict[str, str]) -> str:
    rows = [
        ("date", info["date"]),
        ("CPU", f"{info['cpu']}, {info['cores']} cores"),
        ("RAM", info["ram"]),
        ("OS, kernel", f"{info['os']}, {info['kernel']}"),
        ("disk (temp folder)", info["filesystem"]),
        ("aria2", info["aria2"]),
        ("nginx, curl, Python", f"{info['nginx']}, {info['curl']}, Python {info['python']}"),
        ("load average (1, 5, 15 min)", f"before {info['load_before']}; after {info.get('load_after', '?')}"),
    ]
    return table(["machine", ""], rows)


def table(header: list[str], rows: list[tuple | list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(value: Summary, target: float) -> str:
    if not value.n:
        return "n/a"
    return "yes" if value.median >= target else "**no**"


def seconds(summary: Summary) -> str:
    return summary.text(2) if summary.n else "-"


def milliseconds(summary: Summary) -> str:
    return summary.text(0, scale=1000) if summary.n else "-"


def mbs(rate_bytes: float | None) -> str:
    return f"{rate_bytes / MB:.1f}" if rate_bytes else "-"


def replace_section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


def write_section(name: str, body: str, path: Path = DOC) -> Path:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_section(text, name, body))
    return path
