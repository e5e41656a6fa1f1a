"""The benchmark harness works: a tiny run of its helpers. No timing is asserted here."""

from __future__ import annotations

import shutil

import pytest

from bench.clients import App, aria2_flags, fetch_aria2c, fetch_curl, read_conf
from bench.data import MiB, Workspace, make_random_file
from bench.load import latencies
from bench.measure import Summary
from bench.nginx import Nginx, nginx_path
from bench.procs import Children
from bench.report import replace_section, table
from bench.throughput import Scenario, app_contender, aria2c_contender, curl_contender, run_scenario


def _have_nginx() -> bool:
    try:
        nginx_path()
    except RuntimeError:
        return False
    return True


def test_bench_harness_smoke():
    """Statistics, the doc's generated sections, latency matching, then one round against nginx."""
    summary = Summary.of([3.0, 1.0, 2.0])
    assert (summary.median, summary.low, summary.high) == (2.0, 1.0, 3.0)
    assert summary.text(1) == "2.0 [1.0-3.0]"
    doc = replace_section("# Benchmarks\n\nprose\n", "results", "| a |")
    assert "prose" in doc and "<!-- bench:results:start -->\n| a |\n<!-- bench:results:end -->" in doc
    assert replace_section(doc, "results", "| b |").count("bench:results:start") == 1
    assert table(["x", "y"], [(1, 2)]).splitlines()[2] == "| 1 | 2 |"
    # aria2 counted 10, 20, 30 bytes at t=0, 1, 2; clients saw 20 at t=1.5 and 30 at t=2.5
    changes = [(0.0, 10), (0.5, 10), (1.0, 20), (2.0, 30)]
    latency, _ = latencies(changes, [(1.5, 20), (2.5, 30)])
    assert latency == [1.5, 0.5, 0.5]

    if not (_have_nginx() and shutil.which("aria2c") and shutil.which("curl")):
        pytest.skip("the rest needs nginx, aria2c and curl (apt install nginx-light aria2 curl)")
    with Workspace() as ws, Children() as children:
        make_random_file(ws.served / "f.bin", 4 * MiB)
        web = Nginx(ws.served, ws.folder("nginx"), {"fast": None, "cdn": "64m"}, children).start()
        raw = fetch_aria2c(web.url("fast", "f.bin", "raw"), ws.downloads, "a.bin", aria2_flags(read_conf()))
        assert raw.ok and raw.size == 4 * MiB
        one = fetch_curl(web.url("cdn", "f.bin", "one"), str(ws.downloads / "c.bin"))
        assert one.ok and one.size == 4 * MiB
        wire, sent, gets = web.wire("fast", "raw")
        assert gets >= 1 and sent >= 4 * MiB and wire >= 0
        app = App(children, ws.root / "app").start()
        try:
            scenario = Scenario(
                "smoke",
                "smoke",
                "fast",
                "f.bin",
                4 * MiB,
                16,
                [
                    app_contender("app-aria2", "app", app, web, "fast", "f.bin"),
                    aria2c_contender(web, "fast", "f.bin", ws.downloads, aria2_flags(read_conf())),
                    curl_contender(web, "fast", "f.bin", ws.downloads),
                ],
            )
            run_scenario(scenario, web, rounds=1)
        finally:
            app.stop()
        assert all(record.ok for record in scenario.records), [r.note for r in scenario.records]
        assert scenario.ratio("app-aria2", "aria2c").n == 1
        assert "wire" in scenario.of("app-aria2")[0].phases
        root = ws.root
    assert not root.exists()  # the workspace is gone
