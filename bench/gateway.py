"""`python -m bench.gateway`: what the aria2 gateway (orchestrator/gateway) adds to one RPC call.

A real aria2c (aria2.conf plus its own secret, as the app runs it) with three downloads
trickling in from a local origin, so `aria2.tellActive` answers with real entries
(files, URIs, a bitfield) for the gateway to redact; and the gateway's routes in a
uvicorn app of their own, in a child process, with the app's uvicorn settings
(uvloop and httptools when installed, the access log on). Each call,
`aria2.getVersion` and `aria2.tellActive`, goes straight to the daemon and through
the gateway, over HTTP (a kept-alive requests.Session) and over WebSocket (the
websockets client, without compression on both sides), interleaved call by call with
the order rotating, so both ways meet the same moment of a busy machine. The latency
is the client's wall clock from sending to the parsed answer. The target: the
gateway adds under 2 ms per call (median). `measure()` returns the rows for
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from orchestrator.engines.aria2_daemon import aria2c_command, aria2c_environment, write_runtime_config

from . import report
from .data import Workspace
from .measure import Summary, load_average
from .procs import Children, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
HEADER = [
    "transport",
    "call",
    "direct: median, ms",
    "direct: p95, ms",
    "gateway: median, ms",
    "gateway: p95, ms",
    "added (median), ms",
    "under 2 ms",
]
METHODS = ("aria2.getVersion", "aria2.tellActive")
TRANSPORTS = ("HTTP", "WebSocket")
TARGET_MS = 2.0
WARMUP = 50
TRICKLING = 3  # active downloads tellActive reports
TRICKLE_BYTES = 4096  # per quarter second: slow enough to stay active for the whole run
Call = Callable[[str], Any]


def measure(calls: int = 1000) -> list[tuple[str, ...]]:
    """Start everything, time `calls` calls per method, transport and way; one row per
    transport and method."""
    with Workspace() as ws, Children() as children:
        secret, token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        daemon_port = start_daemon(children, ws, secret)
        gateway_port = start_gateway(children, ws, daemon_port, secret, token)
        origin_port = start_origin(children)
        start_trickles(daemon_port, secret, origin_port, ws.folder("models"))
        with clients(daemon_port, gateway_port, secret, token) as ways:
            print(f"load average before: {load_average()}", flush=True)
            rows = []
            for transport in TRANSPORTS:
                for method in METHODS:
                    direct, through = time_calls(
                        ways[transport, "direct"], ways[transport, "gateway"], method, calls
                    )
                    rows.append(_row(transport, method, direct, through))
                    print(f"  {transport:9} {method:17} {_line(direct, through)}", flush=True)
    return rows


def time_calls(direct: Call, through: Call, method: str, calls: int) -> tuple[Summary, Summary]:
    """Milliseconds per call each way, interleaved: D G, G D, D G..."""
    for _ in range(WARMUP):
        direct(method)
        through(method)
    times: dict[str, list[float]] = {"direct": [], "gateway": []}
    for n in range(calls):
        order = [("direct", direct), ("gateway", through)]
        for name, way in order if n % 2 == 0 else reversed(order):
            started = time.perf_counter()
            way(method)
            times[name].append((time.perf_counter() - started) * 1000)
    return Summary.of(times["direct"]), Summary.of(times["gateway"])


def _row(transport: str, method: str, direct: Summary, through: Summary) -> tuple[str, ...]:
    added = through.median - direct.median
    return (
        transport,
        f"`{method}`",
        f"{direct.median:.3f}",
        f"{direct.percentile(95):.3f}",
        f"{through.median:.3f}",
        f"{through.percentile(95):.3f}",
        f"{added:.3f}",
        "yes" if added < TARGET_MS else "**no**",
    )


def _line(direct: Summary, through: Summary) -> str:
    return (
        f"direct {direct.median:.3f} ms (p95 {direct.percentile(95):.3f}), gateway {through.median:.3f} ms "
        f"(p95 {through.percentile(95):.3f}): +{through.median - direct.median:.3f} ms"
    )


def render(rows: list[tuple[str, ...]]) -> str:
    cells: list[tuple[object, ...] | list[object]] = [*rows]
    return report.table(HEADER, cells)


# -- the clients --------------------------------------------------------------------------------


@contextlib.contextmanager
def clients(
    daemon_port: int, gateway_port: int, secret: str, token: str
) -> Iterator[dict[tuple[str, str], Call]]:
    """One call function per (transport, way), each on one kept-alive connection."""
    daemon, gateway = f"127.0.0.1:{daemon_port}/jsonrpc", f"127.0.0.1:{gateway_port}/jsonrpc"
    with (
        requests.Session() as to_daemon,
        requests.Session() as to_gateway,
        ws_connect(f"ws://{daemon}", compression=None, proxy=None) as ws_daemon,
        ws_connect(f"ws://{gateway}", compression=None, proxy=None) as ws_gateway,
    ):
        yield {
            ("HTTP", "direct"): http_caller(to_daemon, f"http://{daemon}", secret),
            ("HTTP", "gateway"): http_caller(to_gateway, f"http://{gateway}", token),
            ("WebSocket", "direct"): ws_caller(ws_daemon, secret),
            ("WebSocket", "gateway"): ws_caller(ws_gateway, token),
        }


def _payload(method: str, secret: str, call_id: int) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": call_id, "method": method, "params": [f"token:{secret}"]})


def http_caller(session: requests.Session, url: str, secret: str) -> Call:
    def call(method: str) -> Any:
        answer = session.post(url, data=_payload(method, secret, 1), timeout=30).json()
        if "result" not in answer:
            raise RuntimeError(f"{method} failed: {answer}")
        return answer["result"]

    return call


def ws_caller(socket: ClientConnection, secret: str) -> Call:
    ids = iter(range(1, 1 << 62))

    def call(method: str) -> Any:
        call_id = next(ids)
        socket.send(_payload(method, secret, call_id))
        while True:
            answer = json.loads(socket.recv(timeout=30))
            if answer.get("id") == call_id:  # anything else is a notification
                if "result" not in answer:
                    raise RuntimeError(f"{method} failed: {answer}")
                return answer["result"]

    return call


# -- what the clients talk to -------------------------------------------------------------------


def _environment(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def start_daemon(children: Children, ws: Workspace, secret: str) -> int:
    port = free_port()
    config = write_runtime_config(ws.folder("state"), secret, port, ws.folder("models") / "downloads")
    command = aria2c_command(config)
    process = children.start(
        command, env=aria2c_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    wait_for_port(port, process=process)
    return port


def start_gateway(children: Children, ws: Workspace, daemon_port: int, secret: str, token: str) -> int:
    """The gateway in its own process; the secrets travel in its environment, never in argv."""
    port = free_port()
    env = _environment(
        BENCH_DAEMON_URL=f"http://127.0.0.1:{daemon_port}/jsonrpc",
        BENCH_DAEMON_SECRET=secret,
        BENCH_TOKEN=token,
        BENCH_MODELS=str(ws.folder("models")),
    )
    command = [sys.executable, "-m", "bench.gateway", "--serve-gateway", str(port)]
    process = children.start(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wait_for_port(port, process=process)
    return port


def start_origin(children: Children) -> int:
    port = free_port()
    command = [sys.executable, "-m", "bench.gateway", "--serve-origin", str(port)]
    process = children.start(command, cwd=ROOT, env=_environment(), stdout=subprocess.DEVNULL)
    wait_for_port(port, process=process)
    return port


def start_trickles(daemon_port: int, secret: str, origin_port: int, models: Path) -> None:
    """Downloads that stay active for the whole run, one connection each."""
    url = f"http://127.0.0.1:{daemon_port}/jsonrpc"
    options = {
        "dir": str(models / "trickle"),
        "split": "1",
        "max-connection-per-server": "1",
        "file-allocation": "none",
    }
    for n in range(TRICKLING):
        uri = f"http://127.0.0.1:{origin_port}/file-{n}.bin?X-Amz-Signature=bench{n}"
        body = {
            "jsonrpc": "2.0",
            "id": n,
            "method": "aria2.addUri",
            "params": [f"token:{secret}", [uri], options],
        }
        requests.post(url, data=json.dumps(body), timeout=10).raise_for_status()
    deadline = time.monotonic() + 15
    active: list[Any] = []
    while time.monotonic() < deadline and len(active) < TRICKLING:
        body = {
            "jsonrpc": "2.0",
            "id": "a",
            "method": "aria2.tellActive",
            "params": [f"token:{secret}", ["gid"]],
        }
        active = requests.post(url, data=json.dumps(body), timeout=10).json()["result"]
        time.sleep(0.1)
    if len(active) < TRICKLING:
        raise RuntimeError(f"only {len(active)} of {TRICKLING} downloads became active")


# -- the child processes ------------------------------------------------------------------------


def serve_gateway(port: int) -> None:
    """The gateway's routes alone in a uvicorn app, run as the app runs uvicorn."""
    import uvicorn
    from starlette.applications import Starlette

    from orchestrator.gateway import Gateway, Policy, make_routes

    gateway = Gateway(
        os.environ["BENCH_DAEMON_URL"],
        os.environ["BENCH_DAEMON_SECRET"],
        os.environ["BENCH_TOKEN"],
        Policy(Path(os.environ["BENCH_MODELS"])),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await gateway.start()
        yield
        await gateway.stop()

    app = Starlette(routes=make_routes(gateway), lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="info", ws_max_size=1024 * 1024)


class _Trickle(BaseHTTPRequestHandler):
    """A file of 1 GiB that arrives a few KiB at a time, forever as far as the run goes."""

    def do_GET(self) -> None:
        self._head()
        with contextlib.suppress(OSError):
            while True:
                self.wfile.write(b"\0" * TRICKLE_BYTES)
                self.wfile.flush()
                time.sleep(0.25)

    def do_HEAD(self) -> None:
        self._head()

    def _head(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(1 << 30))
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_origin(port: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Event().wait()  # until the benchmark stops us


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__)
    parser.add_argument("--calls", type=int, default=1000, help="calls per method, transport and way (1000)")
    parser.add_argument("--serve-gateway", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-origin", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_gateway:
        serve_gateway(args.serve_gateway)
        return 0
    if args.serve_origin:
        serve_origin(args.serve_origin)
        return 0
    rows = measure(args.calls)
    print(
        f"\nms per call, {args.calls} calls each way, interleaved; added = gateway median - direct median\n"
    )
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
