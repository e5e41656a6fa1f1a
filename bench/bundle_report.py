"""The bundle scenario's part of docs/BENCHMARKS.md (between the `bench:bundle` markers)."""

from __future__ import annotations

from .bundle import FOLDER, REPO, SEED, BundleResult
from .data import MiB, human_size
from .measure import Summary
from .report import machine_table, milliseconds, seconds, table, verdict
from .throughput import Scenario

# (top, bottom, target, what): a rate ratio, i.e. bottom's seconds over top's
TARGETS = [
    ("app-aria2", "aria2c-i", 0.95, "orchestrator / raw `aria2c -i`, same flags (its seconds / ours)"),
    ("app-aria2", "hf", 1.0, "orchestrator / `hf download` (its seconds / ours): ahead"),
]
SHOWN = {"app-aria2": "orchestrator", "aria2c-i": "aria2c -i", "hf": "hf download"}


def render(result: BundleResult, info: dict[str, str], command: str, rounds: int) -> str:
    parts = [
        "### Latest bundle run",
        "",
        f"`{command}`, {_rounds(rounds)} of the bundle, interleaved, then "
        f"{_rounds(len(result.single.of('aria2c')))} of the one-file probe; took "
        f"{result.took / 60:.1f} min. Each cell is median [min-max]; a ratio is the median of "
        "per-round ratios.",
        "",
        machine_table(info),
        "",
        describe(result),
        "",
        "#### Targets",
        "",
        render_targets(result),
        "",
        "#### The bundle, end to end",
        "",
        render_bundle(result),
        "",
        "#### One more file",
        "",
        render_single(result.single),
    ]
    return "\n".join(parts)


def _rounds(count: int) -> str:
    return f"{count} round" + ("" if count == 1 else "s")


def describe(result: BundleResult) -> str:
    big = max(result.files, key=lambda file: file.size)
    small = [file for file in result.files if file is not big]
    low, high = min(f.size for f in small), max(f.size for f in small)
    return (
        f"The bundle: {len(result.files)} files, {result.total / MiB:.0f} MiB in all: one of "
        f"{human_size(big.size)} and {len(small)} of {_bytes(low)} to {_bytes(high)} "
        f"(log-uniform sizes, seed {SEED}), in the folder `{FOLDER}/` of `{REPO}` on a fake Hub "
        f"that redirects every file (302) to the {_origin(result.origin)}."
    )


def _origin(origin: str) -> str:
    return "CDN-like nginx origin (8 MiB/s per connection)" if origin == "cdn" else f"nginx origin `{origin}`"


def _bytes(size: int) -> str:
    return f"{size / 1024:.0f} KiB" if size < 1024 * 1024 else human_size(size)


def render_targets(result: BundleResult) -> str:
    scenario = result.bundle
    rows = []
    for top, bottom, target, what in TARGETS:
        if bottom in result.skipped:
            rows.append((what, f">= {target}", f"skipped: {result.skipped[bottom]}", "-", "n/a"))
            continue
        value, wire = scenario.ratio(top, bottom), scenario.ratio(top, bottom, wire=True)
        rows.append(
            (what, f">= {target}", value.text(3), wire.text(3) if wire.n else "-", verdict(value, target))
        )
    single = result.single
    for key, what in (("app-link", "plain link"), ("app-hub", "Hub link")):
        rows.append(
            (
                f"one more 1 KiB file through the app ({what}), submit to `success`",
                "-",
                f"{milliseconds(_walls(single, key))} ms",
                f"raw aria2c {milliseconds(_walls(single, 'aria2c'))} ms",
                "-",
            )
        )
    return table(["target", "wanted", "end to end", "transfer only (wire) / baseline", "met"], rows)


def _walls(scenario: Scenario, key: str) -> Summary:
    return Summary.of(r.wall for r in scenario.of(key) if r.ok)


def _wires(scenario: Scenario, key: str) -> Summary:
    return Summary.of(r.wire for r in scenario.of(key) if r.ok)


def render_bundle(result: BundleResult) -> str:
    scenario = result.bundle
    rows = []
    for contender in scenario.contenders:
        runs = scenario.of(contender.key)
        failed = [r for r in runs if not r.ok]
        rows.append(
            (
                contender.label,
                seconds(_walls(scenario, contender.key)),
                seconds(_wires(scenario, contender.key)),
                scenario.rates(contender.key).text(1),
                scenario.gets(contender.key).text(0),
                f"{len(runs) - len(failed)}"
                + (f" ({len(failed)} failed: {failed[0].note[:120]})" if failed else ""),
            )
        )
    for key, why in result.skipped.items():
        rows.append((SHOWN.get(key, key), f"skipped: {why}", "-", "-", "-", "0"))
    header = ["contender", "seconds end to end", "seconds transfer (wire)", "MB/s end to end", "GETs", "runs"]
    phases = []
    for contender in scenario.contenders:
        key = contender.key
        phases.append(
            (
                SHOWN.get(key, key),
                seconds(scenario.phase(key, "to_first_get")),
                seconds(scenario.phase(key, "wire")),
                seconds(scenario.phase(key, "after_last_get")),
                seconds(scenario.phase(key, "to_verifying")),
                seconds(scenario.phase(key, "verify_install")),
            )
        )
    return "\n".join(
        [
            table(header, rows),
            "",
            "Where the time goes (seconds):",
            "",
            table(
                [
                    "",
                    "start to first GET",
                    "first GET to last byte (wire)",
                    "last byte to exit (CLI)",
                    "last byte to every file's `success` (app)",
                    "then to the bundle's `completed` (app)",
                ],
                phases,
            ),
        ]
    )


def render_single(scenario: Scenario) -> str:
    base = {r.round: r.wall for r in scenario.of("aria2c") if r.ok}
    rows = []
    for contender in scenario.contenders:
        key = contender.key
        mine = {r.round: r.wall for r in scenario.of(key) if r.ok}
        extra = Summary.of(mine[i] - base[i] for i in sorted(set(mine) & set(base)))
        rows.append(
            (
                contender.label,
                milliseconds(_walls(scenario, key)),
                milliseconds(extra) if key != "aria2c" else "-",
                str(len(mine)),
            )
        )
    return "\n".join(
        [
            f"A {scenario.size} byte file of the bundle on its own, fetched again and again "
            "(milliseconds, median [min-max]; the app's clock runs from submit to the `success` event):",
            "",
            table(["contender", "ms end to end", "ms more than raw aria2c, per round", "runs"], rows),
        ]
    )
