"""`python -m bench.egress`: what the egress proxy (orchestrator/egress.py) costs a download.

The same file, fetched by raw aria2c with aria2.conf's transfer settings (-x16 ...),
straight from a local nginx and through the proxy, interleaved round by round: from
the unthrottled origin (the proxy's ceiling on this machine) and from the CDN-like one
capped per connection (what users see). The proxy runs in a process of its own, on
uvloop when it is installed (as under uvicorn), so its CPU time is its own and
measured per run. `measure()` returns the rows for docs/BENCHMARKS.md, for
bench/run.py to call with its own nginx and files.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from . import report
from .clients import ARIA2_CONF, Run, aria2_flags, fetch_aria2c, read_conf
from .data import MiB, Workspace, check_free_space, human_rate, human_size, make_random_file
from .measure import MB, Summary, load_average
from .nginx import Nginx, parse_rate
from .procs import Children, cpu_seconds, memory_kib
from .throughput import Contender, Scenario, aria2c_contender, run_scenario

ROOT = Path(__file__).resolve().parents[1]
HEADER = [
    "origin",
    "raw aria2c, MB/s",
    "through the proxy, MB/s",
    "proxy / direct (end to end)",
    "proxy / direct (wire)",
    "proxy CPU, % of one core",
    "proxy CPU per GB",
    "proxy peak memory",
]


@dataclass
class ProxyProcess:
    """The proxy in a child process, with one download's credentials."""

    pid: int
    url: str
    user: str
    password: str

    def flags(self) -> list[str]:
        return [
            f"--all-proxy={self.url}",
            f"--all-proxy-user={self.user}",
            f"--all-proxy-passwd={self.password}",
        ]


def start_proxy(children: Children) -> ProxyProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    process = children.start(
        [sys.executable, "-m", "bench.egress", "--serve-proxy"], cwd=ROOT, env=env, stdout=-1, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"the proxy exited with {process.wait()} before it listened")
    found = json.loads(line)
    return ProxyProcess(process.pid, found["url"], found["user"], found["password"])


def proxied_contender(
    web: Nginx, origin: str, filename: str, folder: Path, flags: list[str], proxy: ProxyProcess
) -> Contender:
    """Raw aria2c through the proxy; the run's `cpu` is the proxy's CPU seconds meanwhile."""

    def fetch(tag: str) -> Run:
        out = folder / f"{tag}.bin"
        before = cpu_seconds(proxy.pid)
        try:
            run = fetch_aria2c(web.url(origin, filename, tag), folder, out.name, [*flags, *proxy.flags()])
        finally:
            out.unlink(missing_ok=True)
        run.cpu = cpu_seconds(proxy.pid) - before
        return run

    return Contender("proxied", "raw aria2c through the egress proxy", fetch, multi=True)


def measure(
    web: Nginx,
    ws: Workspace,
    children: Children,
    filename: str,
    size: int,
    rounds: int,
    origins: tuple[str, ...] = ("fast", "cdn"),
) -> list[tuple[str, ...]]:
    """Interleaved rounds per origin of `web` (its names), `filename` in its root; one row each."""
    flags = aria2_flags(read_conf(ARIA2_CONF))
    proxy = start_proxy(children)
    rows = []
    for origin in origins:
        cap = web.origins[origin].limit_rate
        scenario = Scenario(
            f"egress-{origin}",
            f"{human_size(size)}, {'unthrottled' if cap is None else human_rate(cap) + ' per connection'}",
            origin,
            filename,
            size,
            16,
            [
                aria2c_contender(web, origin, filename, ws.downloads, flags, key="direct"),
                proxied_contender(web, origin, filename, ws.downloads, flags, proxy),
            ],
        )
        print(f"\n== {scenario.title} ({rounds} rounds, interleaved)", flush=True)
        run_scenario(scenario, web, rounds, on_record=_print_record)
        rows.append(_row(scenario, proxy))
    return rows


def _row(scenario: Scenario, proxy: ProxyProcess) -> tuple[str, ...]:
    runs = [r for r in scenario.of("proxied") if r.ok and r.cpu is not None]
    share = Summary.of(100 * r.cpu / r.wall for r in runs if r.cpu is not None and r.wall > 0)
    per_gb = Summary.of(r.cpu * 1e9 / r.size for r in runs if r.cpu is not None and r.size)
    peak = memory_kib(proxy.pid).get("VmHWM", 0) / 1024
    return (
        scenario.title,
        scenario.rates("direct").text(1),
        scenario.rates("proxied").text(1),
        scenario.ratio("proxied", "direct").text(3),
        scenario.ratio("proxied", "direct", wire=True).text(3),
        share.text(0),
        f"{per_gb.text(2)} s",
        f"{peak:.0f} MiB",
    )


def _print_record(record: object) -> None:
    from .throughput import Record

    assert isinstance(record, Record)
    cpu = f", proxy CPU {record.cpu:5.2f} s" if record.cpu is not None else ""
    status = "" if record.ok else f"  FAILED: {record.note}"
    print(
        f"  [r{record.round + 1}] {record.contender:8} {record.rate:8.1f} MB/s"
        f"  (wall {record.wall:6.2f} s, wire {record.wire:6.2f} s, {record.gets} GETs{cpu}){status}",
        flush=True,
    )


def render(rows: list[tuple[str, ...]]) -> str:
    cells: list[tuple[object, ...] | list[object]] = [*rows]
    return report.table(HEADER, cells)


# -- the proxy's own process --------------------------------------------------------------


def serve_proxy() -> None:
    """Run a proxy that treats 127.0.0.1 (the benchmark's nginx) as public; print its details."""
    from orchestrator.egress import EgressProxy, default_policy
    from orchestrator.policy import IPAddress

    nginx = ipaddress.ip_address("127.0.0.1")

    def policy(host: str, address: IPAddress) -> str | None:
        return None if address == nginx else default_policy(host, address)

    async def main() -> None:
        proxy = EgressProxy(policy)
        await proxy.start()
        user, password = proxy.credentials_for("bench")
        print(json.dumps({"url": proxy.url, "user": user, "password": password}), flush=True)
        await asyncio.Event().wait()  # until the benchmark stops us

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.egress", description=__doc__)
    parser.add_argument("--size", default="256M", help="the file, e.g. 256M or 1G (default 256M)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per origin (default 3)")
    parser.add_argument(
        "--cap", default="8m", help="per-connection cap of the CDN-like origin (nginx syntax)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--serve-proxy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_proxy:
        serve_proxy()
        return 0
    size = int(parse_rate(args.size))
    with Workspace(keep=args.keep) as ws, Children() as children:
        check_free_space(ws.root, 2 * size + 256 * MiB)
        print(f"load average before: {load_average()}; workspace {ws.root}", flush=True)
        make_random_file(ws.served / "big.bin", size)
        web = Nginx(ws.served, ws.folder("nginx"), {"fast": None, "cdn": args.cap}, children).start()
        rows = measure(web, ws, children, "big.bin", size, args.rounds)
    print(f"\nMB/s are {MB:,} bytes per second; median [min-max] of {args.rounds} rounds.\n")
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
