"""`python -m bench.run`: the orchestrator against raw aria2c, curl and the physical limit.

Starts a local nginx (one origin without limits, one capped per connection like a
CDN), the app (aria2 engine and requests fallback) and the baselines, measures
them interleaved and repeated, then the app's own cost under load, prints
everything and writes docs/BENCHMARKS.md. `--quick` is a smoke run; `--full`
uses a 2 GiB file; `--tune` measures the tuning knobs instead (see bench/tune.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from . import bundle_report, report
from .bundle import FILE_RUNS, BundleResult, run_bundle, space_needed
from .clients import ARIA2_CONF, App, aria2_flags, read_conf
from .data import GiB, MiB, Workspace, check_free_space, human_rate, human_size, make_random_file
from .library import measure as measure_library
from .library import render as render_library
from .load import LoadResult, run_load
from .measure import Summary, load_average
from .nginx import Nginx, parse_rate
from .procs import Children, free_port, wait_for_port
from .throughput import (
    Record,
    Scenario,
    app_contender,
    aria2c_contender,
    curl_contender,
    null_contender,
    ranges_contender,
    run_scenario,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SCENARIOS = ("cdn16", "cdn1", "fast", "load", "bundle", "library")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke run: small files, one round")
    size.add_argument("--full", action="store_true", help="a 2 GiB file (needs ~8.5 GiB free, ~12 min)")
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 5; --quick 1)")
    parser.add_argument("--size", help="the big file, e.g. 512M or 1G (default 1G; --quick 256M)")
    parser.add_argument("--single-size", help="file for one connection on the capped origin (default 64M)")
    parser.add_argument(
        "--cap", default="8m", help="per-connection cap of the CDN-like origin (nginx syntax)"
    )
    parser.add_argument("--bundle-size", help="bundle: its big file (default 1G; --quick 64M)")
    parser.add_argument(
        "--bundle-origin",
        choices=("cdn", "fast"),
        default="cdn",
        help="bundle: the origin the fake Hub redirects to (default cdn, the CDN-like one)",
    )
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--downloads", type=int, default=20, help="load test: downloads at once")
    parser.add_argument("--clients", type=int, default=50, help="load test: WebSocket clients")
    parser.add_argument("--load-seconds", type=float, help="load test: how long each download lasts (25)")
    parser.add_argument("--poll-interval", type=float, help="the app's --poll-interval (default: its own)")
    parser.add_argument(
        "--tune",
        action="store_true",
        help="measure the tuning knobs (bench/tune.py); with --only: cdn16/fast = aria2 settings, "
        "cdn1/fast = fallback chunk size, load = poll interval",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (for debugging)")
    args = parser.parse_args(argv)
    args.big = _size(args.size, "256M" if args.quick else "2G" if args.full else "1G")
    args.small = _size(args.single_size, "16M" if args.quick else "128M" if args.full else "64M")
    args.bundle_big = _size(args.bundle_size, "64M" if args.quick else "1G")
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.file_runs = 5 if args.quick else FILE_RUNS
    args.load_seconds = args.load_seconds or (6.0 if args.quick else 25.0)
    args.only = set((args.only or ",".join(SCENARIOS)).split(","))
    unknown = args.only - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; pick from {', '.join(SCENARIOS)}")
    return args


def _size(text: str | None, default: str) -> int:
    return int(parse_rate(text or default))


def check_tools() -> None:
    missing = [tool for tool in ("aria2c", "curl") if not shutil.which(tool)]
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        missing.append("nginx")
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)} (Debian: apt install aria2 nginx-light curl)")


LOAD_CAP = "128k"  # per connection on the load origin: 16 connections = 2 MiB/s per download


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_tools()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks, stop children
    if args.tune:
        from .tune import main as tune_main

        return tune_main(args)
    started = time.monotonic()
    with Workspace(keep=args.keep) as ws, Children() as children:
        throughput = bool(args.only & {"cdn16", "cdn1", "fast"})
        needed = (3 * args.big + 3 * args.small if throughput else 0) + GiB // 2
        needed += 2 * args.downloads * _load_size(args) if "load" in args.only else 0
        if "bundle" in args.only:
            needed += space_needed(args.bundle_big)
        check_free_space(ws.root, needed)
        info = report.machine(ws.root)
        print(f"load average before: {info['load_before']} (a shared machine: read ratios, not absolutes)")
        print(f"workspace {ws.root}; making test files...", flush=True)
        if throughput:
            make_random_file(ws.served / "big.bin", args.big)
            make_random_file(ws.served / "small.bin", args.small)
        web = Nginx(
            ws.served, ws.folder("nginx"), {"fast": None, "cdn": args.cap, "trickle": LOAD_CAP}, children
        ).start()
        flags = aria2_flags(read_conf(ARIA2_CONF))
        apps: dict[str, App] = {}  # one long-running app per engine, as users run it
        scenarios = build_scenarios(args, ws, web, children, flags, apps)
        for scenario in scenarios:
            print(f"\n== {scenario.title} ({args.rounds} rounds, interleaved)", flush=True)
            run_scenario(scenario, web, args.rounds, on_record=print_record)
        for app in apps.values():
            app.stop()
        bundle = run_bundle_scenario(args, ws, web, children, flags) if "bundle" in args.only else None
        load = None
        if "load" in args.only:
            print(f"\n== load: {args.downloads} downloads, {args.clients} WebSocket clients", flush=True)
            load = run_load_scenario(args, ws, web, children)
            print(render_load(load))
        library = None
        if "library" in args.only:
            print(
                "\n== library: a scan of 2,000 files against sha256sum, a rescan, GET /api/models", flush=True
            )
            library = measure_library(ws, children, args.quick)
        info["load_after"] = load_average()
        sections = {}
        if scenarios or load:  # `--only bundle` (or library) leaves the other results as they are
            sections["results"] = render_all(args, info, scenarios, load, flags, time.monotonic() - started)
        if bundle:
            sections["bundle"] = bundle_report.render(bundle, info, _command(), args.rounds)
        if library is not None:
            sections["library"] = render_library(library, _command())
        print("\n" + "\n\n".join(sections.values()))
        save_json(args, info, scenarios + ([bundle.bundle, bundle.single] if bundle else []), load)
        if not args.no_write:
            for name, body in sections.items():
                path = report.write_section(name, body)
            print(f"\nwritten to {path.relative_to(ROOT)} ({', '.join(sections)})")
    return 0


def run_bundle_scenario(
    args: argparse.Namespace, ws: Workspace, web: Nginx, children: Children, flags: list[str]
) -> BundleResult:
    return run_bundle(
        ws,
        web,
        children,
        flags,
        big=args.bundle_big,
        rounds=args.rounds,
        file_runs=args.file_runs,
        origin=args.bundle_origin,
        poll_interval=args.poll_interval,
        on_record=print_record,
        on_title=lambda title: print(f"\n== {title}", flush=True),
    )


def _command() -> str:
    return " ".join(["python -m bench.run", *sys.argv[1:]])


def build_scenarios(
    args: argparse.Namespace,
    ws: Workspace,
    web: Nginx,
    children: Children,
    flags: list[str],
    apps: dict[str, App],
) -> list[Scenario]:
    def app(engine: str) -> App:
        if engine not in apps:
            folder = ws.fresh(f"app-{engine}")
            apps[engine] = App(children, folder, engine=engine, poll_interval=args.poll_interval).start()
        return apps[engine]

    cap = web.origins["cdn"].rate_bytes or 0
    connections = int(read_conf(ARIA2_CONF).get("split", "16"))
    folder = ws.downloads
    scenarios = []
    big, small = human_size(args.big), human_size(args.small)
    if "cdn16" in args.only:
        aria2_app = app("auto")
        scenarios.append(
            Scenario(
                "cdn16",
                f"CDN-like origin ({human_rate(args.cap)} per connection), {connections} connections, {big}",
                "cdn",
                "big.bin",
                args.big,
                connections,
                [
                    app_contender(
                        "app-aria2",
                        "orchestrator, aria2 engine, end to end",
                        aria2_app,
                        web,
                        "cdn",
                        "big.bin",
                    ),
                    aria2c_contender(web, "cdn", "big.bin", folder, flags),
                    ranges_contender(web, "cdn", "big.bin", args.big, connections),
                ],
                nominal=connections * cap,
            )
        )
    if "cdn1" in args.only:
        fallback = app("requests")
        scenarios.append(
            Scenario(
                "cdn1",
                f"CDN-like origin ({human_rate(args.cap)} per connection), one connection, {small}",
                "cdn",
                "small.bin",
                args.small,
                1,
                [
                    app_contender(
                        "app-requests",
                        "orchestrator, requests fallback, end to end",
                        fallback,
                        web,
                        "cdn",
                        "small.bin",
                    ),
                    curl_contender(web, "cdn", "small.bin", folder),
                    null_contender(web, "cdn", "small.bin"),
                ],
                nominal=cap,
            )
        )
    if "fast" in args.only:
        aria2_app = app("auto")
        fallback = app("requests")
        scenarios.append(
            Scenario(
                "fast",
                f"Unthrottled loopback origin, {big}",
                "fast",
                "big.bin",
                args.big,
                connections,
                [
                    app_contender(
                        "app-aria2",
                        "orchestrator, aria2 engine, end to end",
                        aria2_app,
                        web,
                        "fast",
                        "big.bin",
                    ),
                    aria2c_contender(web, "fast", "big.bin", folder, flags),
                    app_contender(
                        "app-requests",
                        "orchestrator, requests fallback, end to end",
                        fallback,
                        web,
                        "fast",
                        "big.bin",
                    ),
                    curl_contender(web, "fast", "big.bin", folder),
                    null_contender(web, "fast", "big.bin"),
                    ranges_contender(web, "fast", "big.bin", args.big, connections),
                ],
            )
        )
    return scenarios


def print_record(record: Record) -> None:
    status = "" if record.ok else f"  FAILED: {record.note}"
    print(
        f"  [{record.scenario} r{record.round + 1}] {record.contender:13} {record.rate:8.1f} MB/s"
        f"  (wall {record.wall:6.2f} s, wire {record.wire:6.2f} s, {record.gets} GETs){status}",
        flush=True,
    )


def _load_size(args: argparse.Namespace) -> int:
    """Each load download lasts ~load_seconds at 16 x LOAD_CAP."""
    rate = 16 * parse_rate(LOAD_CAP)
    return max(MiB, int(rate * args.load_seconds) // MiB * MiB)


def run_load_scenario(args: argparse.Namespace, ws: Workspace, web: Nginx, children: Children) -> LoadResult:
    size = _load_size(args)
    base = make_random_file(ws.served / "load.bin", size)
    names = []
    for index in range(args.downloads):
        name = f"load-{index:02d}.bin"
        os.link(base, ws.served / name)
        names.append(name)
    # the probe download comes from a smoothly paced origin (see bench/smooth.py); the rest from nginx
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
            LOAD_CAP,
        ],
        cwd=ROOT,
    )
    wait_for_port(port, process=smooth)
    app = App(
        children,
        ws.fresh("app-load"),
        poll_interval=args.poll_interval,
        extra=["--max-active", str(args.downloads)],
    ).start(listen=False)
    try:
        active = int(app.rpc("aria2.getGlobalOption")["max-concurrent-downloads"])
        if active < args.downloads:
            app.rpc("aria2.changeGlobalOption", {"max-concurrent-downloads": str(args.downloads)})
        urls = [f"http://127.0.0.1:{port}/{names[0]}"] + [web.url("trickle", n, "load") for n in names[1:]]
        result = run_load(app, urls, args.clients)
        result.file_size = size
        return result
    finally:
        app.stop()
        children.stop(smooth)


# -- rendering -----------------------------------------------------------------------------

TARGETS = [
    # (scenario, top, bottom or "nominal", target, what)
    ("cdn16", "app-aria2", "aria2c", 0.97, "orchestrator (aria2) / raw aria2c, same flags, CDN-like origin"),
    ("fast", "app-aria2", "aria2c", 0.97, "orchestrator (aria2) / raw aria2c, same flags, unthrottled"),
    ("cdn16", "app-aria2", "nominal", 0.90, "orchestrator (aria2) / physical limit (connections x cap)"),
    ("cdn1", "app-requests", "curl", 0.95, "fallback / curl, one connection, CDN-like origin"),
    ("fast", "app-requests", "curl", 0.95, "fallback / curl, one connection, unthrottled"),
]


def render_all(
    args: argparse.Namespace,
    info: dict[str, str],
    scenarios: list[Scenario],
    load: LoadResult | None,
    flags: list[str],
    took: float,
) -> str:
    parts = [
        "## Latest run",
        "",
        f"`{_command()}`" + f", {args.rounds} rounds per scenario, interleaved; took {took / 60:.1f} min. "
        "MB/s are 10^6 bytes per second; each cell is median [min-max]; a ratio is the median of "
        "per-round ratios (each pair measured back to back) [min-max].",
        "",
        report.machine_table(info),
        "",
        f"Raw aria2c baseline: `aria2c --no-conf -q {' '.join(flags)} -d DIR -o NAME URL` "
        "(the transfer settings of aria2.conf, nothing else).",
        "",
        "### Targets",
        "",
        render_targets(scenarios, load),
    ]
    for scenario in scenarios:
        parts += ["", render_scenario(scenario)]
    if load:
        parts += ["", render_load(load)]
    return "\n".join(parts)


def _scenario(scenarios: list[Scenario], key: str) -> Scenario | None:
    return next((s for s in scenarios if s.key == key), None)


def render_targets(scenarios: list[Scenario], load: LoadResult | None) -> str:
    rows = []
    for key, top, bottom, target, what in TARGETS:
        scenario = _scenario(scenarios, key)
        if scenario is None:
            continue
        if bottom == "nominal":
            value, wire = scenario.ratio_to_nominal(top), scenario.ratio_to_nominal(top, wire=True)
        else:
            value, wire = scenario.ratio(top, bottom), scenario.ratio(top, bottom, wire=True)
        rows.append(
            (
                what,
                f">= {target}",
                value.text(3),
                wire.text(3) if wire.n else "-",
                report.verdict(value, target),
            )
        )
    if load:
        rows.append(
            (
                f"app CPU, {load.downloads} downloads moving, {load.clients} clients",
                "< 5% of one core",
                f"{load.app_cpu:.1f}%",
                "-",
                "yes" if load.app_cpu < 5 else "**no**",
            )
        )
        rows.append(
            (
                "app peak memory (VmHWM)",
                "< 150 MB",
                f"{load.peak_rss_mib * 1.048576:.0f} MB",
                "-",
                "yes" if load.peak_rss_mib * 1.048576 < 150 else "**no**",
            )
        )
    return report.table(["target", "wanted", "end to end", "transfer only (wire)", "met"], rows)


def render_scenario(scenario: Scenario) -> str:
    rows = []
    for contender in scenario.contenders:
        runs = scenario.of(contender.key)
        failed = sum(1 for r in runs if not r.ok)
        rows.append(
            (
                contender.label,
                scenario.rates(contender.key).text(1),
                scenario.rates(contender.key, wire=True).text(1),
                f"{len(runs) - failed}" + (f" ({failed} failed)" if failed else ""),
            )
        )
    if scenario.nominal:
        rows.append(
            (
                f"physical limit: {scenario.connections} x the per-connection cap",
                report.mbs(scenario.nominal),
                "",
                "",
            )
        )
    parts = [
        f"### {scenario.title}",
        "",
        report.table(["contender", "MB/s end to end", "MB/s transfer (wire)", "runs"], rows),
        "",
    ]
    ratio_rows = []
    keys = [c.key for c in scenario.contenders]
    pairs = [
        ("app-aria2", "aria2c"),
        ("app-requests", "curl"),
        ("aria2c", "ranges-null"),
        ("app-aria2", "ranges-null"),
        ("curl", "curl-null"),
    ]
    for top, bottom in pairs:
        if top in keys and bottom in keys:
            ratio_rows.append(
                (
                    f"{top} / {bottom}",
                    scenario.ratio(top, bottom).text(3),
                    scenario.ratio(top, bottom, wire=True).text(3),
                )
            )
    if scenario.nominal:
        for key in keys:
            ratio_rows.append(
                (
                    f"{key} / physical limit",
                    scenario.ratio_to_nominal(key).text(3),
                    scenario.ratio_to_nominal(key, wire=True).text(3),
                )
            )
    parts += [report.table(["ratio", "end to end", "transfer (wire)"], ratio_rows), ""]
    phase_rows = []
    for key in keys:
        if key.startswith("app-"):
            names = ["to_first_get", "wire", "to_verifying", "verify_install", "progress_to_verifying"]
        elif key in ("aria2c", "curl"):
            names = ["to_first_get", "wire", "after_last_get"]
        else:
            continue
        cells = {name: report.seconds(scenario.phase(key, name)) for name in names}
        phase_rows.append(
            (
                key,
                cells.get("to_first_get", "-"),
                cells.get("wire", "-"),
                cells.get("to_verifying", cells.get("after_last_get", "-")),
                cells.get("verify_install", "-"),
                cells.get("progress_to_verifying", "-"),
            )
        )
    parts += [
        "Where the time goes (seconds, median [min-max]):",
        "",
        report.table(
            [
                "",
                "start to first GET",
                "transfer (wire)",
                "last byte to 'verifying' (app) / to exit (CLI)",
                "verify + install",
                "first progress event to 'verifying'",
            ],
            phase_rows,
        ),
    ]
    return "\n".join(parts)


def render_load(load: LoadResult) -> str:
    rows = [
        ("downloads moving bytes at once / WebSocket clients", f"{load.downloads} / {load.clients}"),
        ("poll interval", f"{load.poll_interval} s"),
        ("steady window (all downloads moving)", f"{load.window:.1f} s"),
        ("app CPU, steady window", f"{load.app_cpu:.2f}% of one core"),
        ("app CPU, whole run (incl. 20 x sha256 + install)", f"{load.app_cpu_total:.2f}% of one core"),
        ("app CPU, idle with the clients connected", f"{load.app_cpu_idle:.2f}% of one core"),
        ("aria2c CPU, steady window (for scale)", f"{load.aria2_cpu:.1f}% of one core"),
        (
            "app peak memory (VmHWM) / at the end (VmRSS)",
            f"{load.peak_rss_mib:.0f} MiB / {load.rss_mib:.0f} MiB",
        ),
        (
            "messages delivered per second (all clients)",
            f"{load.messages_per_s:.0f} (expected {load.expected_per_s:.0f} = jobs x clients / poll), "
            f"{load.bytes_per_s / 1024:.0f} KiB/s",
        ),
        (
            "byte count changes in aria2 -> event at a client",
            f"median {load.latency.median:.3f} s, p95 {load.latency.percentile(95):.3f} s "
            f"(n={load.latency.n})",
        ),
        (
            "of which relay (app reads aria2 -> event at a client)",
            f"median {load.relay.median * 1000:.0f} ms, p95 {load.relay.percentile(95) * 1000:.0f} ms "
            f"(n={load.relay.n})",
        ),
        ("downloads completed / clients dropped", f"{load.completed} / {load.dropped_clients}"),
        ("aggregate download rate, whole run", f"{load.aggregate_mb_s:.1f} MB/s"),
    ]
    size = load.file_size
    title = (
        f"### The app's own cost: {load.downloads} downloads ({human_size(size)} each, "
        f"16 x {human_rate(LOAD_CAP)}), {load.clients} WebSocket clients"
    )
    return "\n".join([title, "", report.table(["measure", "value"], rows)])


def save_json(
    args: argparse.Namespace, info: dict, scenarios: list[Scenario], load: LoadResult | None
) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    data = {
        "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()},
        "machine": info,
        "scenarios": [s.to_dict() for s in scenarios],
        "load": _load_dict(load) if load else None,
    }
    (RESULTS / f"run-{stamp}.json").write_text(json.dumps(data, indent=1, default=str))


def _load_dict(load: LoadResult) -> dict:
    data = {k: v for k, v in vars(load).items() if not isinstance(v, Summary)}
    for name in ("latency", "relay"):
        summary: Summary = getattr(load, name)
        data[name] = {"median": summary.median, "p95": summary.percentile(95), "n": summary.n}
    return data


if __name__ == "__main__":
    sys.exit(main())
