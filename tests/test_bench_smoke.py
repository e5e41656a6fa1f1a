"""The benchmark harness works: a tiny run of its helpers. No timing is asserted here."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from bench import bundle_report
from bench.bundle import hf_cli, run_bundle, small_sizes
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


def test_bench_bundle_smoke(monkeypatch):
    """The bundle scenario at a tiny size: a fake Hub's folder through the app, aria2c -i and, when
    huggingface_hub is installed, hf download (else reported as skipped, with the reason)."""
    sizes = small_sizes(4, 256 * 1024)
    assert sizes[0] == 1024 and len(sizes) == 4 and all(1024 <= size <= 256 * 1024 for size in sizes)
    assert small_sizes() == small_sizes() and max(small_sizes()) <= 20 * MiB  # a fixed seed
    if not (_have_nginx() and shutil.which("aria2c")):
        pytest.skip("the rest needs nginx and aria2c (apt install nginx-light aria2)")
    with Workspace() as ws, Children() as children:
        web = Nginx(ws.served, ws.folder("nginx"), {"fast": None, "cdn": "64m"}, children).start()
        flags = aria2_flags(read_conf())
        result = run_bundle(ws, web, children, flags, big=2 * MiB, small=sizes, rounds=1, file_runs=1)
    records = result.bundle.records + result.single.records
    assert all(record.ok for record in records), [r.note for r in records]
    ran = {record.contender for record in result.bundle.records}
    command, why = hf_cli()
    if command:
        assert ran == {"app-aria2", "aria2c-i", "hf"} and not result.skipped
    else:
        assert ran == {"app-aria2", "aria2c-i"} and result.skipped == {"hf": why}
    assert result.bundle.ratio("app-aria2", "aria2c-i").n == 1
    assert all(r.gets >= len(sizes) + 1 for r in result.bundle.records)  # every file came from nginx
    assert {r.contender for r in result.single.records} == {"app-link", "app-hub", "aria2c"}
    text = bundle_report.render(result, {**machine_info(), "load_after": "?"}, "bench", 1)
    assert "orchestrator / raw `aria2c -i`" in text
    # without huggingface_hub the hf contender is skipped, and the report says why
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "huggingface_hub" else real_find_spec(name, *a),
    )
    command, why = hf_cli()
    assert command is None and "huggingface_hub is not installed" in why
    result.skipped = {"hf": why}
    text = bundle_report.render(result, {**machine_info(), "load_after": "?"}, "bench", 1)
    assert f"skipped: {why}" in text


def machine_info():
    keys = ("date", "cpu", "cores", "ram", "kernel", "os", "filesystem", "aria2", "nginx", "curl", "python")
    return {key: "?" for key in keys} | {"load_before": "?"}
