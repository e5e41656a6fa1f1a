"""Test files (random bytes, so nothing compresses) in a temp folder removed afterwards."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .nginx import parse_rate

BLOCK = 16 * 1024 * 1024
MiB = 1024 * 1024
GiB = 1024 * MiB


def make_random_file(path: Path, size: int) -> Path:
    """`size` random bytes, written in 16 MiB blocks, readable by nginx's workers."""
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            block = os.urandom(min(BLOCK, left))
            handle.write(block)
            left -= len(block)
    path.chmod(0o644)
    return path


def human_size(size: int) -> str:
    if size >= GiB and size % GiB == 0:
        return f"{size // GiB} GiB"
    return f"{size / MiB:g} MiB"


def human_rate(nginx_rate: str) -> str:
    """nginx's "8m" as "8 MiB/s", "128k" as "128 KiB/s"."""
    value = parse_rate(nginx_rate)
    if value >= MiB:
        return f"{value / MiB:g} MiB/s"
    return f"{value / 1024:g} KiB/s"


def check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise SystemExit(
            f"The benchmark needs about {needed / GiB:.1f} GiB free in {folder}, "
            f"which has {free / GiB:.1f} GiB. Use --quick, or set TMPDIR to a bigger disk."
        )


class Workspace:
    """A temp folder for served files, downloads, logs and state; deleted on exit."""

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.root = Path(tempfile.mkdtemp(prefix="orchestrator-bench-"))
        self.root.chmod(0o755)  # nginx's workers run as another user when we are root
        self.served = self.folder("served")
        self.downloads = self.folder("downloads")

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
        return path

    def fresh(self, name: str) -> Path:
        """An empty folder (removed first if it exists)."""
        path = self.root / name
        shutil.rmtree(path, ignore_errors=True)
        return self.folder(name)

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
