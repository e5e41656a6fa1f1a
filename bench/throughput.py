"""Throughput scenarios: each contender fetches the same file, interleaved, several rounds.

A scenario is an origin (unthrottled, or capped per connection like a CDN), a file,
and contenders. Every run is tagged (`?r=<tag>`) so nginx's log gives its wire time:
first GET start to last GET end, the same stopwatch for every client.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .clients import App, Run, fetch_aria2c, fetch_curl, fetch_curl_ranges
from .measure import MB, Summary, interleave, ratios
from .nginx import Nginx

_tags = itertools.count(1)


@dataclass
class Record:
    scenario: str
    contender: str
    round: int
    size: int
    wall: float
    wire: float
    sent: int
    gets: int
    ok: bool
    note: str
    phases: dict[str, float] = field(default_factory=dict)
    cpu: float | None = None

    @property
    def rate(self) -> float:
        """MB/s as the client sees it (end to end)."""
        return self.size / self.wall / MB if self.ok and self.wall > 0 else 0.0

    @property
    def wire_rate(self) -> float:
        return self.size / self.wire / MB if self.ok and self.wire > 0 else 0.0


@dataclass
class Contender:
    key: str
    label: str
    fetch: Callable[[str], Run]  # tag -> Run
    multi: bool = False  # opens many connections


@dataclass
class Scenario:
    key: str
    title: str
    origin: str
    filename: str
    size: int
    connections: int  # what the limit is computed for
    contenders: list[Contender]
    nominal: float | None = None  # bytes/s: connections x per-connection cap
    records: list[Record] = field(default_factory=list)

    def of(self, key: str) -> list[Record]:
        return sorted((r for r in self.records if r.contender == key), key=lambda r: r.round)

    def rates(self, key: str, wire: bool = False) -> Summary:
        return Summary.of(r.wire_rate if wire else r.rate for r in self.of(key) if r.ok)

    def ratio(self, top: str, bottom: str, wire: bool = False) -> Summary:
        """Per-round ratios of top over bottom (pairs measured minutes apart at most)."""
        a = {r.round: (r.wire_rate if wire else r.rate) for r in self.of(top) if r.ok}
        b = {r.round: (r.wire_rate if wire else r.rate) for r in self.of(bottom) if r.ok}
        rounds = sorted(set(a) & set(b))
        return ratios([a[i] for i in rounds], [b[i] for i in rounds])

    def ratio_to_nominal(self, key: str, wire: bool = False) -> Summary:
        if not self.nominal:
            return Summary(())
        return Summary.of((r.wire_rate if wire else r.rate) * MB / self.nominal for r in self.of(key) if r.ok)

    def gets(self, key: str) -> Summary:
        return Summary.of(r.gets for r in self.of(key) if r.ok)

    def phase(self, key: str, name: str) -> Summary:
        return Summary.of(r.phases[name] for r in self.of(key) if r.ok and name in r.phases)

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "title": self.title,
            "origin": self.origin,
            "size": self.size,
            "connections": self.connections,
            "nominal": self.nominal,
            "contenders": {c.key: c.label for c in self.contenders},
            "records": [asdict(r) for r in self.records],
        }


def phases_of(run: Run, first_get: float | None, last_get: float | None) -> dict[str, float]:
    """Where the time went, in seconds, from the client's start to its end."""
    if first_get is None or last_get is None:
        return {}
    found = {"to_first_get": first_get - run.started, "wire": last_get - first_get}
    marks = run.marks
    if "verifying" in marks:
        found["to_verifying"] = marks["verifying"] - last_get  # engine finishing + the app noticing
        found["verify_install"] = marks.get("success", run.ended) - marks["verifying"]
        if "first_progress" in marks:
            found["progress_to_verifying"] = marks["verifying"] - marks["first_progress"]
    else:
        found["after_last_get"] = run.ended - last_get
    return found


def run_scenario(
    scenario: Scenario,
    web: Nginx,
    rounds: int,
    on_record: Callable[[Record], None] | None = None,
) -> Scenario:
    def runner(contender: Contender) -> Callable[[], Record]:
        def go() -> Record:
            tag = re.sub(r"[^A-Za-z0-9.=-]+", "_", f"{scenario.key}-{contender.key}-{next(_tags)}")
            run = contender.fetch(tag)
            time.sleep(0.05)  # nginx writes the log line as the request ends; let the last one land
            gets = [r for r in web.requests(scenario.origin) if r.tag == tag and r.method == "GET"]
            first = min((r.start for r in gets), default=None)
            last = max((r.end for r in gets), default=None)
            wire = (last - first) if gets else 0.0
            return Record(
                scenario.key,
                contender.key,
                0,
                run.size if run.ok else scenario.size,
                run.wall,
                wire,
                sum(r.sent for r in gets),
                len(gets),
                run.ok and run.size == scenario.size,
                run.note,
                phases_of(run, first, last),
                run.cpu,
            )

        return go

    def keep(name: str, round_: int, record: object) -> None:
        assert isinstance(record, Record)
        record.round = round_
        scenario.records.append(record)
        if on_record:
            on_record(record)

    interleave({c.key: runner(c) for c in scenario.contenders}, rounds, keep)
    return scenario


# -- the contenders ------------------------------------------------------------------------


def app_contender(key: str, label: str, app: App, web: Nginx, origin: str, filename: str) -> Contender:
    return Contender(key, label, lambda tag: app.fetch(web.url(origin, filename, tag), key))


def aria2c_contender(
    web: Nginx, origin: str, filename: str, folder: Path, flags: list[str], key: str = "aria2c"
) -> Contender:
    def fetch(tag: str) -> Run:
        out = folder / f"{tag}.bin"
        try:
            return fetch_aria2c(web.url(origin, filename, tag), folder, out.name, flags)
        finally:
            out.unlink(missing_ok=True)

    return Contender(key, "raw aria2c " + " ".join(flags), fetch, multi=True)


def curl_contender(web: Nginx, origin: str, filename: str, folder: Path) -> Contender:
    def fetch(tag: str) -> Run:
        out = folder / f"{tag}.bin"
        try:
            return fetch_curl(web.url(origin, filename, tag), str(out))
        finally:
            out.unlink(missing_ok=True)

    return Contender("curl", "curl, one connection, -o file", fetch)


def null_contender(web: Nginx, origin: str, filename: str) -> Contender:
    return Contender(
        "curl-null",
        "curl, one connection, -o /dev/null (no disk)",
        lambda tag: fetch_curl(web.url(origin, filename, tag), "/dev/null", "curl-null"),
    )


def ranges_contender(web: Nginx, origin: str, filename: str, size: int, connections: int) -> Contender:
    return Contender(
        "ranges-null",
        f"{connections} ranged curls at once, -o /dev/null (no disk)",
        lambda tag: fetch_curl_ranges(web.url(origin, filename, tag), size, connections, "ranges-null"),
        multi=True,
    )
