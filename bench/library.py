"""`python -m bench.library`: the library's scan against `sha256sum`, a rescan, and GET /api/models.

A models folder of 2,000 files (20 big ones of 1 GiB, the rest small; `--quick`: 16 MiB) is
hashed by `sha256sum` (one process over every file) and by the library's scan
(orchestrator/library/scan.py, a fresh index each time), alternating which goes first, with
each file's pages dropped from the page cache before each run (posix_fadvise; the files are
synced first), so both read from the disk. Then a second scan with nothing changed, and the
latency of `GET /api/models` from the real app over those 2,000 files, and what a scan does
to a running download: the app fetches a file from a local nginx capped per connection like a
CDN (16 x 8 MiB/s), alone and while a scan of the folder runs paced as it is while downloads
run, alternating. Writes the `library` section of docs/BENCHMARKS.md; bench/run.py runs it as
the scenario `library`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from orchestrator.library import LibraryIndex, scan, start_scan

from . import report
from .clients import App
from .data import GiB, MiB, Workspace, check_free_space, human_size, make_random_file
from .measure import Summary, load_average
from .nginx import Nginx
from .procs import Children

FILES = 2000
BIG_FILES = 20
SMALL_SIZE = 256 * 1024
ROUNDS = 2  # sha256sum first, then the scan first
RESCANS = 3
GETS = 30
DOWNLOAD_ROUNDS = 3  # pairs of downloads: alone, then with a scan running (the order alternates)
CDN_CAP = "8m"


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
    download_size: int = 0
    alone: list[float] = field(default_factory=list)  # download rates, bytes/s
    with_scan: list[float] = field(default_factory=list)
    scan_read: list[int] = field(default_factory=list)  # bytes the scan hashed meanwhile

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


def with_app(
    children: Children, ws: Workspace, workdir: Path, paths: list[Path], result: LibraryResult
) -> None:
    app = App(children, workdir, extra=["--library-lookups", "off"]).start()
    try:
        time_gets(app, result)
        time_downloads(app, ws, children, workdir, paths, result)
    finally:
        app.stop()


def time_downloads(
    app: App, ws: Workspace, children: Children, workdir: Path, paths: list[Path], result: LibraryResult
) -> None:
    """The app's download alone and with a scan of the folder running beside it."""
    make_random_file(ws.served / "download.bin", result.download_size)
    web = Nginx(ws.served, ws.folder("nginx-library"), {"cdn": CDN_CAP}, children).start()
    state = workdir / "bench-state"
    state.mkdir(exist_ok=True)
    models = workdir / "models"
    roots = [("checkpoint", models / "checkpoint"), ("lora", models / "lora")]
    for number in range(2 * DOWNLOAD_ROUNDS):
        scanning = number % 4 in (1, 2)  # alone, with, with, alone, alone, with
        handle = None
        if scanning:
            for name in ("library.sqlite3", "library.sqlite3-wal", "library.sqlite3-shm"):
                (state / name).unlink(missing_ok=True)
            drop_cache(paths)
            index = LibraryIndex.in_state_dir(state)
            handle = start_scan(index, roots, downloads_active=lambda: True)  # paced, as beside downloads
        run = app.fetch(web.url("cdn", "download.bin", f"r{number}"), "app")
        if not run.ok:
            raise RuntimeError(f"the download failed: {run.note}")
        rate = run.size / run.wall
        if handle is not None:
            handle.cancel()
            done = handle.wait()
            index.close()
            result.with_scan.append(rate)
            result.scan_read.append(done.hashed_bytes if done else 0)
        else:
            result.alone.append(rate)
        print(f"  download {'with a scan' if scanning else 'alone'}: {rate / 1e6:.1f} MB/s", flush=True)


def time_gets(app: App, result: LibraryResult) -> None:
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


def measure(ws: Workspace, children: Children, quick: bool) -> LibraryResult:
    big = 16 * MiB if quick else GiB
    total = BIG_FILES * big + (FILES - BIG_FILES) * SMALL_SIZE
    check_free_space(ws.root, total + 2 * GiB)
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
    result.download_size = 128 * MiB if quick else 512 * MiB
    with_app(children, ws, workdir, paths, result)
    print(f"  GET /api/models: {Summary.of(result.gets).text(3, 1000)} ms", flush=True)
    shutil.rmtree(models, ignore_errors=True)
    return result


def render(result: LibraryResult, command: str) -> str:
    def rate(seconds: list[float]) -> str:
        return Summary.of(result.total_bytes / s / 1e6 for s in seconds).text(1)

    ratio, rescan = result.ratio(), Summary.of(result.rescans)
    gets = Summary.of(result.gets)
    slowdown = Summary.of(w / a for w, a in zip(result.with_scan, result.alone, strict=False))
    rows = [
        ("scan / sha256sum, hashing rate", ratio.text(3), ">= 0.9", report.verdict(ratio, 0.9)),
        ("second scan, nothing changed (s)", rescan.text(3), "< 2", _below(rescan, 2.0)),
        (
            f"GET /api/models with {result.listed} files (ms)",
            gets.text(1, 1000) + f", p95 {gets.percentile(95) * 1000:.1f}",
            "< 200",
            _below(gets, 0.2),
        ),
        (
            f"a download ({human_size(result.download_size)}, 16 x 8 MiB/s), a scan beside it / alone",
            slowdown.text(3),
            ">= 0.9",
            report.verdict(slowdown, 0.9),
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
            "",
            report.table(
                ["download", "MB/s"],
                [
                    ("alone", Summary.of(r / 1e6 for r in result.alone).text(1)),
                    (
                        "with a scan running (paced as beside downloads)",
                        Summary.of(r / 1e6 for r in result.with_scan).text(1),
                    ),
                ],
            ),
            "",
            "Meanwhile the scan hashed "
            + ", ".join(human_size(n) for n in result.scan_read)
            + " (it rests while downloads run, reading at most a quarter of the time).",
        ]
    )


def _below(summary: Summary, limit: float) -> str:
    return "yes" if summary.n and summary.median < limit else "**no**"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.library", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="16 MiB big files instead of 1 GiB")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: no 20 GiB left behind
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
