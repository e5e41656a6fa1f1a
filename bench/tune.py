"""`python -m bench.run --tune`: measure the knobs, one at a time, against the current settings.

- aria2.conf: disk-cache, file-allocation, min-split-size, split and
  max-connection-per-server, stream-piece-selector. Each variant is raw aria2c
  with aria2.conf's transfer settings and one of them changed, interleaved with
  the current settings, on the unthrottled and on the CDN-like origin.
- the app's poll interval: CPU, messages and latency under load, and how long
  the app takes to notice a finished download.
- the fallback's chunk size: the engine alone in its own process, against curl.

Writes the `tuning` section of docs/BENCHMARKS.md. Nothing is changed here:
a default moves only when these numbers say so, by hand, with a note.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import report
from .clients import ARIA2_CONF, App, aria2_flags, fetch_probe, read_conf
from .data import MiB, Workspace, check_free_space, human_rate, human_size, make_random_file
from .load import LoadResult, run_load
from .measure import MB, Summary, load_average
from .nginx import Nginx, parse_rate
from .procs import Children, free_port, wait_for_port
from .throughput import (
    Contender,
    Scenario,
    app_contender,
    aria2c_contender,
    curl_contender,
    run_scenario,
)

ARIA2_VARIANTS: list[tuple[str, dict[str, str]]] = [
    ("disk-cache", {"disk-cache": "0"}),
    ("disk-cache", {"disk-cache": "16M"}),
    ("disk-cache", {"disk-cache": "256M"}),
    ("file-allocation", {"file-allocation": "none"}),
    ("file-allocation", {"file-allocation": "falloc"}),
    ("file-allocation", {"file-allocation": "trunc"}),
    ("min-split-size", {"min-split-size": "4M"}),
    ("min-split-size", {"min-split-size": "20M"}),
    ("split", {"split": "8", "max-connection-per-server": "8"}),
    ("stream-piece-selector", {"stream-piece-selector": "inorder"}),
    ("stream-piece-selector", {"stream-piece-selector": "geom"}),
    ("stream-piece-selector", {"stream-piece-selector": "random"}),
]
CHUNKS = [0, 64 * 1024, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024]  # 0: adaptive, the default
# the product path for a link with a published SHA-256: adaptive reads, hashed in a second thread
HASHING = [(0, "hashing")]
POLLS = [0.25, 0.5, 1.0, 2.0]


def _key(overrides: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in overrides.items())


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    rounds = args.rounds
    cdn_rounds = rounds if args.quick else max(3, rounds - 2)
    with Workspace(keep=args.keep) as ws, Children() as children:
        check_free_space(ws.root, 4 * args.big + 4 * args.small)
        info = report.machine(ws.root)
        print(f"load average before: {info['load_before']}", flush=True)
        make_random_file(ws.served / "big.bin", args.big)
        make_random_file(ws.served / "small.bin", args.small)
        web = Nginx(
            ws.served, ws.folder("nginx"), {"fast": None, "cdn": args.cap, "trickle": "128k"}, children
        )
        web.start()
        conf = read_conf(ARIA2_CONF)
        parts = [
            "## Tuning measurements",
            "",
            f"`python -m bench.run {' '.join(sys.argv[1:])}`; each ratio is the median of per-round "
            "ratios against the current setting, run back to back [min-max].",
            "",
            report.machine_table({**info, "load_after": "(see end)"}),
        ]
        # --only picks the parts: cdn16/fast -> aria2 settings, cdn1/fast -> chunk size, load -> poll
        if "cdn16" in args.only or "fast" in args.only:
            parts += ["", tune_aria2(web, ws, conf, args, rounds, cdn_rounds)]
        if "cdn1" in args.only or "fast" in args.only:
            parts += ["", tune_chunks(web, ws, args, rounds, cdn_rounds)]
        if "load" in args.only:
            parts += ["", tune_poll(web, ws, children, args, rounds)]
        parts += [
            "",
            f"Load average after: {load_average()}; took {(time.monotonic() - started) / 60:.1f} min.",
        ]
        body = "\n".join(parts)
        print("\n" + body)
        if not args.no_write:
            path = report.write_section("tuning", body)
            print(f"\nwritten to {path}")
    return 0


def tune_aria2(
    web: Nginx, ws: Workspace, conf: dict[str, str], args: argparse.Namespace, rounds: int, cdn_rounds: int
) -> str:
    current = aria2_flags(conf)
    results = {}
    for origin, n in (("fast", rounds), ("cdn", cdn_rounds)):
        contenders = [aria2c_contender(web, origin, "big.bin", ws.downloads, current, key="current")]
        for _, overrides in ARIA2_VARIANTS:
            flags = aria2_flags(conf, overrides)
            contenders.append(
                aria2c_contender(web, origin, "big.bin", ws.downloads, flags, key=_key(overrides))
            )
        scenario = Scenario(f"tune-{origin}", origin, origin, "big.bin", args.big, 16, contenders)
        print(f"\n== aria2 knobs, {origin} origin, {n} rounds", flush=True)
        run_scenario(scenario, web, n, on_record=_print)
        results[origin] = scenario
    fast, cdn = results["fast"], results["cdn"]
    rows = [
        (
            "current: " + " ".join(current),
            fast.rates("current").text(1),
            "1",
            cdn.rates("current").text(1),
            "1",
            cdn.gets("current").text(0),
        )
    ]
    for knob, overrides in ARIA2_VARIANTS:
        key = _key(overrides)
        rows.append(
            (
                f"{knob}: {key}",
                fast.rates(key).text(1),
                fast.ratio(key, "current").text(3),
                cdn.rates(key).text(1),
                cdn.ratio(key, "current").text(3),
                cdn.gets(key).text(0),
            )
        )
    return "\n".join(
        [
            f"### aria2 settings (raw aria2c, {human_size(args.big)}; unthrottled {rounds} rounds, "
            f"CDN-like {human_rate(args.cap)} per connection {cdn_rounds} rounds)",
            "",
            report.table(
                [
                    "variant",
                    "unthrottled MB/s",
                    "ratio to current",
                    "CDN-like MB/s",
                    "ratio to current",
                    "CDN-like: GET requests",
                ],
                rows,
            ),
        ]
    )


def tune_chunks(web: Nginx, ws: Workspace, args: argparse.Namespace, rounds: int, cdn_rounds: int) -> str:
    lines = []
    for origin, filename, size, n in (
        ("fast", "big.bin", args.big, rounds),
        ("cdn", "small.bin", args.small, cdn_rounds),
    ):
        contenders = [curl_contender(web, origin, filename, ws.downloads)]
        variants = [(chunk, "engine") for chunk in CHUNKS] + HASHING
        for chunk, variant in variants:
            key = (f"{chunk // 1024}K" if chunk else "adaptive (current)") + (
                "" if variant == "engine" else ", hashing while streaming (published SHA-256)"
            )
            contenders.append(_probe_contender(web, origin, filename, ws.downloads, chunk, variant, key))
        scenario = Scenario(f"chunks-{origin}", origin, origin, filename, size, 1, contenders)
        print(f"\n== fallback chunk size, {origin} origin, {n} rounds", flush=True)
        run_scenario(scenario, web, n, on_record=_print)
        rows = []
        for contender in contenders:
            cpu = Summary.of(
                100 * r.cpu / r.wall for r in scenario.of(contender.key) if r.ok and r.cpu is not None
            )
            rows.append(
                (
                    contender.key if contender.key != "curl" else "curl (baseline)",
                    scenario.rates(contender.key).text(1),
                    scenario.ratio(contender.key, "curl").text(3) if contender.key != "curl" else "1",
                    cpu.text(0) if cpu.n else "-",
                )
            )
        title = "unthrottled" if origin == "fast" else f"CDN-like, {human_rate(args.cap)}"
        lines += [
            f"### Fallback chunk size (the engine alone, {title}, {human_size(size)}, one connection, "
            f"{n} rounds)",
            "",
            report.table(["chunk", "MB/s", "ratio to curl", "CPU % of one core"], rows),
            "",
        ]
    return "\n".join(lines)


def _probe_contender(
    web: Nginx, origin: str, filename: str, folder: Path, chunk: int, variant: str, key: str
) -> Contender:
    def fetch(tag: str):
        dest = folder / f"{tag}.bin"
        try:
            return fetch_probe(web.url(origin, filename, tag), dest, chunk, variant)
        finally:
            dest.unlink(missing_ok=True)

    return Contender(key, f"fallback engine, {key}", fetch)


def tune_poll(web: Nginx, ws: Workspace, children: Children, args: argparse.Namespace, rounds: int) -> str:
    # 1. how long until the app notices a finished download, per poll interval and engine
    apps = {}
    contenders = []
    for poll in POLLS:
        for engine in ("auto", "requests"):
            name = f"{'aria2' if engine == 'auto' else 'requests'} poll {poll}"
            app = App(children, ws.fresh(f"app-{engine}-{poll}"), engine=engine, poll_interval=poll).start()
            apps[name] = app
            contenders.append(app_contender(name, name, app, web, "cdn", "small.bin"))
    scenario = Scenario("poll", "cdn", "cdn", "small.bin", args.small, 1, contenders)
    print(f"\n== poll interval: noticing a finished download, {2 * rounds} rounds", flush=True)
    run_scenario(scenario, web, 2 * rounds, on_record=_print)
    for app in apps.values():
        app.stop()
    rows = []
    for contender in contenders:
        rows.append(
            (
                contender.key,
                report.seconds(scenario.phase(contender.key, "to_verifying")),
                scenario.rates(contender.key).text(2),
            )
        )
    parts = [
        f"### Poll interval: last byte sent to 'verifying' ({human_size(args.small)} from the CDN-like "
        f"origin, {2 * rounds} rounds)",
        "",
        report.table(["engine, poll interval (s)", "last byte to 'verifying' (s)", "MB/s end to end"], rows),
        "",
    ]
    # 2. the cost under load, per poll interval
    seconds = 6.0 if args.quick else 12.0
    size = max(MiB, int(16 * parse_rate("128k") * seconds) // MiB * MiB)
    base = make_random_file(ws.served / "tune-load.bin", size)
    names = []
    for index in range(args.downloads):
        name = f"tune-load-{index:02d}.bin"
        if not (ws.served / name).exists():
            os.link(base, ws.served / name)
        names.append(name)
    port = free_port()
    smooth = children.start(
        [
            sys.executable,
            "-m",
            "bench.smooth",
            "--port",
            str(port),
            "--root",
            str(ws.served),
            "--rate",
            "128k",
        ],
        cwd=Path(__file__).resolve().parents[1],
    )
    wait_for_port(port, process=smooth)
    rows = []
    for poll in POLLS:
        app = App(
            children,
            ws.fresh(f"app-load-{poll}"),
            poll_interval=poll,
            extra=["--max-active", str(args.downloads)],
        ).start(listen=False)
        try:
            app.rpc("aria2.changeGlobalOption", {"max-concurrent-downloads": str(args.downloads)})
            urls = [f"http://127.0.0.1:{port}/{names[0]}?p={poll}"]
            urls += [web.url("trickle", n, f"p{poll}") for n in names[1:]]
            print(
                f"\n== poll interval {poll}: {args.downloads} downloads, {args.clients} clients", flush=True
            )
            result: LoadResult = run_load(app, urls, args.clients)
        finally:
            app.stop()
        rows.append(
            (
                f"{poll}",
                f"{result.app_cpu:.2f}%",
                f"{result.messages_per_s:.0f}",
                f"{result.latency.median:.3f} / {result.latency.percentile(95):.3f}",
                f"{result.relay.median * 1000:.0f} / {result.relay.percentile(95) * 1000:.0f}",
                f"{result.peak_rss_mib:.0f}",
            )
        )
        print(rows[-1], flush=True)
    children.stop(smooth)
    parts += [
        f"### Poll interval: the app's cost with {args.downloads} downloads and {args.clients} clients "
        f"({human_size(size)} each at 16 x 128 KiB/s)",
        "",
        report.table(
            [
                "poll interval (s)",
                "app CPU (% of one core)",
                "messages/s",
                "change -> client, median / p95 (s)",
                "relay median / p95 (ms)",
                "peak RSS (MiB)",
            ],
            rows,
        ),
    ]
    return "\n".join(parts)


def _print(record) -> None:
    rate = record.size / record.wall / MB if record.ok and record.wall else 0.0
    cpu = f", cpu {100 * record.cpu / record.wall:.0f}%" if record.cpu and record.wall else ""
    status = "" if record.ok else f"  FAILED: {record.note}"
    print(
        f"  [{record.scenario} r{record.round + 1}] {record.contender:40} {rate:8.1f} MB/s"
        f" (wall {record.wall:5.2f} s, wire {record.wire:5.2f} s{cpu}){status}",
        flush=True,
    )
