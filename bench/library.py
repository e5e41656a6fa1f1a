"""`python -m bench.library`: the library's scan against `sha256sum`, a rescan, and GET /api/models.

A models folder of 2,000 files (20 big ones of 1 GiB, the rest small; `--quick`: 16 MiB) is
hashed by `sha256sum` (one process over every file) and by the library's scan
(orchestrator/library/scan.py, a fresh index each time), alternating which goes first, with
each file's pages dropped from the page cache before each run (posix_fadvise; the files are
synced first), so both read from the disk. Then a second scan with nothing changed, and the
latency of `GET /api/models` from the real app over those 2,000 files. Writes the `library`
section of docs/BENCHMARKS.md; bench/run.py runs it as the scenario `library`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from orchestrator.library import LibraryIndex, scan

from . import report
from .clients import App
from .data import GiB, MiB, Workspace, check_free_space, human_size, make_random_file
from .measure import Summary, load_average
from .procs import Children

FILES = 2000
BIG_FILES = 20
SMALL_SIZE = 256 * 1024
ROUNDS = 2  # sha256sum first, then the scan first
RESCANS = 3
GETS = 30


@dataclass
class LibraryResult:
    big_size: int
    total_bytes: int
    files: int
    sha256sum: list[float] = field(default_factory=list)  # seconds per run
    scans: list[float] = field(default_factory=list)
    rescans: list[float] = field(default_factory=list)
    gets: list[float] = field(default_factory=list)  # seconds per GET /api/models
    listed: int = 0

    def ratio(self) -> Summary:
        """Scan rate / sha256sum rate, round by round (the same bytes, so t_sum / t_scan)."""
        return Summary.of(t_sum / t_scan for t_sum, t_scan in zip(self.sha256sum, self.scans, strict=True))


def make_tree(models: Path, big_size: int) -> list[Path]:
    """2,000 model files: the big ones as checkpoints, the rest LoRAs in 20 subfolders."""
    made = []
    for number in range(BIG_FILES):
        folder = models / "checkpoint"
        folder.mkdir(parents=True, exist_ok=True)
        made.append(make_random_file(folder / f"big-{number:02}.safetensors", big_size))
    for number in range(FILES - BIG_FILES):
        folder = models / "lora" / f"set-{number % 20:02}"
        folder.mkdir(parents=True, exist_ok=True)
        made.append(make_random_file(folder / f"lora-{number:04}.safetensors", SMALL_SIZE))
    os.sync()  # dirty pages cannot be dropped from the cache
    return made


def drop_cache(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def time_sha256sum(models: Path, paths: list[Path]) -> float:
    drop_cache(paths)
    names = [str(path.relative_to(models)) for path in paths]
    started = time.perf_counter()
    subprocess.run(["sha256sum", "--", *names], cwd=models, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def time_scan(models: Path, state: Path, paths: list[Path], fresh: bool) -> float:
    if fresh:
        for name in ("library.sqlite3", "library.sqlite3-wal", "library.sqlite3-shm"):
            (state / name).unlink(missing_ok=True)
        drop_cache(paths)
    roots = [("checkpoint", models / "checkpoint"), ("lora", models / "lora")]
    with LibraryIndex.in_state_dir(state) as index:
        started = time.perf_counter()
        result = scan(index, roots)
        took = time.perf_counter() - started
    expected = len(paths) if fresh else 0
    if result.hashed_files != expected or result.files != len(paths):
        raise RuntimeError(
            f"the scan hashed {result.hashed_files} of {len(paths)} files: {result.problems[:3]}"
        )
    return took


def time_gets(children: Children, workdir: Path, result: LibraryResult) -> None:
    app = App(children, workdir, extra=["--library-lookups", "off"]).start(listen=False)
    try:
        deadline = time.monotonic() + 120
        while True:  # the app's own scan at start: nothing new, but let it finish
            body = requests.get(app.base + "/api/models", headers=app.headers, timeout=30).json()
            if body["library"]["scan"] is None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        result.listed = sum(len(entries) for entries in body["models"].values())
        for attempt in range(GETS + 3):
            started = time.perf_counter()
            answer = requests.get(app.base + "/api/models", headers=app.headers, timeout=30)
            took = time.perf_counter() - started
            answer.raise_for_status()
            if attempt >= 3:  # the first few warm the app's caches and connections
                result.gets.append(took)
    finally:
        app.stop()


def measure(ws: Workspace, children: Children, quick: bool) -> LibraryResult:
    big = 16 * MiB if quick else GiB
    total = BIG_FILES * big + (FILES - BIG_FILES) * SMALL_SIZE
    check_free_space(ws.root, total + GiB // 2)
    workdir = ws.folder("library")
    models, state = workdir / "models", workdir / "state"
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)
    print(f"making {FILES} files ({human_size(total)})...", flush=True)
    paths = make_tree(models, big)
    result = LibraryResult(big, total, len(paths))
    for round_number in range(ROUNDS):
        if round_number % 2 == 0:
            result.sha256sum.append(time_sha256sum(models, paths))
            result.scans.append(time_scan(models, state, paths, fresh=True))
        else:
            result.scans.append(time_scan(models, state, paths, fresh=True))
            result.sha256sum.append(time_sha256sum(models, paths))
        took = f"sha256sum {result.sha256sum[-1]:.1f} s, scan {result.scans[-1]:.1f} s"
        print(f"  round {round_number + 1}: {took}", flush=True)
    for _ in range(RESCANS):
        result.rescans.append(time_scan(models, state, paths, fresh=False))
    print(f"  rescan, nothing changed: {Summary.of(result.rescans).text(3)} s", flush=True)
    time_gets(children, workdir, result)
    print(f"  GET /api/models: {Summary.of(result.gets).text(3, 1000)} ms", flush=True)
    shutil.rmtree(models, ignore_errors=True)
    return result


def render(result: LibraryResult, command: str) -> str:
    def rate(seconds: list[float]) -> str:
        return Summary.of(result.total_bytes / s / 1e6 for s in seconds).text(1)

    ratio, rescan = result.ratio(), Summary.of(result.rescans)
    gets = Summary.of(result.gets)
    rows = [
        ("scan / sha256sum, hashing rate", ratio.text(3), ">= 0.9", report.verdict(ratio, 0.9)),
        ("second scan, nothing changed (s)", rescan.text(3), "< 2", _below(rescan, 2.0)),
        (
            f"GET /api/models with {result.listed} files (ms)",
            gets.text(1, 1000) + f", p95 {gets.percentile(95) * 1000:.1f}",
            "< 200",
            _below(gets, 0.2),
        ),
    ]
    return "\n".join(
        [
            "## Library",
            "",
            f"`{command}`: {result.files} files, {human_size(result.total_bytes)} "
            f"({BIG_FILES} of {human_size(result.big_size)}, the rest {human_size(SMALL_SIZE)}); "
            f"{ROUNDS} rounds alternating which goes first, each file dropped from the page cache before "
            f"each run; load average {load_average()}. Each cell is median [min-max].",
            "",
            report.table(["what", "measured", "target", "met"], rows),
            "",
            report.table(
                ["contender", "MB/s", "seconds"],
                [
                    (
                        "sha256sum (one process, every file)",
                        rate(result.sha256sum),
                        Summary.of(result.sha256sum).text(1),
                    ),
                    ("library scan (fresh index)", rate(result.scans), Summary.of(result.scans).text(1)),
                ],
            ),
        ]
    )


def _below(summary: Summary, limit: float) -> str:
    return "yes" if summary.n and summary.median < limit else "**no**"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.library", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="16 MiB big files instead of 1 GiB")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    if not shutil.which("sha256sum"):
        raise SystemExit("sha256sum is missing (Debian: coreutils)")
    with Workspace() as ws, Children() as children:
        result = measure(ws, children, args.quick)
    body = render(result, " ".join(["python -m bench.library", *sys.argv[1:]]))
    print("\n" + body)
    if not args.no_write:
        print(f"\nwritten to {report.write_section('library', body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
