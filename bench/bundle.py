"""The bundle scenario: one big file and 30 small ones, as one Hugging Face folder.

A folder of a fake Hub (bench/hub.py) whose files all redirect to the nginx origin, fetched
three ways, interleaved and repeated like the throughput scenarios (bench/throughput.py):

- the orchestrator: one `POST /api/bundles` of kind hf_folder; the clock stops when a
  WebSocket client hears the bundle's `completed` event (the folder is in place, every
  file verified against the listing's sha256), and every file is checked on disk;
- raw aria2c: `aria2c -i FILE -j 5` plus the transfer flags of aria2.conf, on the nginx
  URLs directly (no Hub, no hashing): the engine's ceiling for the same set of files;
- huggingface_hub's `hf download <repo> --local-dir DIR` against the same fake Hub.

Then the cost of one more file: a 1 KiB file through the app (`POST /api/downloads`, submit
to `success`), by its plain link and by its Hub link, against raw aria2c fetching it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from orchestrator.config import Settings

from .clients import ARIA2_CONF, App, Run, read_conf
from .data import MiB, Workspace, make_random_file
from .hub import FakeHub, HubFile, sha256_of
from .nginx import Nginx
from .procs import Children, run
from .throughput import Contender, Record, Scenario, app_contender, aria2c_contender, run_scenario

REPO = "bench/bundle"
FOLDER = "model"
SMALL_FILES = 30
SMALL_RANGE = (1024, 20 * MiB)  # the smallest is exactly 1 KiB: the per-file probe
SEED = 20261202
SUBFOLDERS = ("", "text_encoder", "tokenizer", "vae", "scheduler")  # a diffusers-like layout
FILE_RUNS = 20  # the 1 KiB probe, per contender (--quick: 5)
TIMEOUT = 1800.0


@dataclass
class BundleResult:
    bundle: Scenario
    single: Scenario
    files: list[HubFile]
    origin: str
    skipped: dict[str, str] = field(default_factory=dict)  # contender -> why it did not run
    took: float = 0.0

    @property
    def total(self) -> int:
        return sum(file.size for file in self.files)


# -- the files -----------------------------------------------------------------------------------


def small_sizes(count: int = SMALL_FILES, largest: int = SMALL_RANGE[1], seed: int = SEED) -> list[int]:
    """Log-uniform sizes from 1 KiB to `largest`, one in each of `count` equal slices of the log
    range (so a fixed seed can never leave a gap), the first exactly 1 KiB."""
    rng = random.Random(seed)
    low, high = math.log(SMALL_RANGE[0]), math.log(largest)
    sizes = [int(math.exp(low + (i + rng.random()) * (high - low) / count)) for i in range(count)]
    sizes[0] = SMALL_RANGE[0]
    return sizes


def space_needed(big: int, small: list[int] | None = None) -> int:
    """Served once, and one contender's copy at a time (each run's output is removed after it)."""
    return 2 * (big + sum(small_sizes() if small is None else small))


def make_files(served: Path, big: int, small: list[int]) -> list[HubFile]:
    """The bundle's files under nginx's root (bundle/...), with their repository paths and sha256."""
    folder = served / "bundle"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o755)
    plan = [("diffusion_pytorch_model.bin", big)]
    for i, size in enumerate(small):
        subfolder = SUBFOLDERS[i % len(SUBFOLDERS)]
        plan.append((f"{subfolder}/part-{i:02d}.bin".lstrip("/"), size))
    files = []
    for relative, size in plan:
        name = relative.replace("/", "-")
        path = make_random_file(folder / name, size)
        files.append(HubFile(f"{FOLDER}/{relative}", size, sha256_of(path), f"bundle/{name}"))
    return files


def relative(file: HubFile) -> str:
    """Where a file goes below the downloaded folder."""
    return file.path.removeprefix(f"{FOLDER}/")


def landed(root: Path, files: list[HubFile], path_of: Callable[[HubFile], str]) -> tuple[int, str]:
    """Bytes of the files found at their place with their size, and what is wrong if any is not."""
    good, wrong = 0, []
    for file in files:
        path = root / path_of(file)
        size = path.stat().st_size if path.is_file() else None
        if size == file.size:
            good += file.size
        else:
            wrong.append(f"{path_of(file)}: {'missing' if size is None else f'{size} bytes'}")
    note = f"{len(wrong)} of {len(files)} files wrong ({'; '.join(wrong[:3])})" if wrong else ""
    return good, note


# -- the contenders ------------------------------------------------------------------------------


def app_bundle_contender(app: App, hub: FakeHub, files: list[HubFile]) -> Contender:
    def fetch(tag: str) -> Run:
        hub.tag = tag
        try:
            return fetch_bundle(app, hub.page_url(FOLDER), files)
        finally:
            hub.tag = None

    return Contender("app-aria2", "orchestrator, one hf_folder bundle (POST /api/bundles)", fetch, multi=True)


def fetch_bundle(app: App, url: str, files: list[HubFile], timeout: float = TIMEOUT) -> Run:
    """Submit the folder as one bundle; done when the `completed` event reaches a client."""
    assert app.listener is not None
    # as App.fetch: start at a random point of the app's poll cycle, so its rhythm averages out
    time.sleep(random.uniform(0, app.poll_interval or Settings().poll_interval))
    seen = len(app.listener.events)
    started = time.time()
    body = {"kind": "hf_folder", "url": url, "type": "checkpoint"}
    answer = requests.post(app.base + "/api/bundles", json=body, headers=app.headers, timeout=120)
    if answer.status_code != 201:
        note = f"POST /api/bundles: {answer.status_code} {answer.text[:300]}"
        return Run("app-aria2", 0, time.time() - started, started, time.time(), ok=False, note=note)
    bundle_id = answer.json()["bundle"]["id"]
    marks = {"answered": time.time()}
    when, state = wait_bundle(app, bundle_id, seen, timeout)
    detail = requests.get(f"{app.base}/api/bundles/{bundle_id}", headers=app.headers, timeout=30).json()
    detail = detail["bundle"]
    folder = app.models / (detail.get("destination") or "missing")
    size, note = landed(folder, files, relative)
    if state != "completed":
        failed = "; ".join(f"{f['label']}: {f['code']}" for f in detail.get("failed", [])[:3])
        note = f"bundle {state}: {detail.get('error') or failed} {note}".strip()
    ok = state == "completed" and not note
    verified = last_success(app, set(detail.get("jobs") or []), seen)
    if verified:
        # under the names phases_of() reads: last byte -> every file verified -> folder in place
        marks.update(verifying=verified, success=when)
    requests.delete(f"{app.base}/api/bundles/{bundle_id}", headers=app.headers, timeout=30)
    shutil.rmtree(folder, ignore_errors=True)  # the next round downloads it all again
    return Run("app-aria2", size, when - started, started, when, marks=marks, ok=ok, note=note)


def wait_bundle(app: App, bundle_id: str, seen: int, timeout: float) -> tuple[float, str]:
    """(when a client heard it, the state) of the bundle's first event in a final state."""
    assert app.listener is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = app.listener.events[seen:]
        for when, message in events:
            state = (message.get("data") or {}).get("state")
            mine = message.get("type") == "bundle" and message.get("bundle") == bundle_id
            if mine and state in ("completed", "failed", "cancelled"):
                return when, state
        time.sleep(0.01)
    raise TimeoutError(f"bundle {bundle_id} did not finish in {timeout:.0f} s")


def last_success(app: App, jobs: set[str], seen: int) -> float | None:
    """When a client heard the last of these jobs' `success` (its file verified, in staging)."""
    assert app.listener is not None
    times = [
        when
        for when, message in app.listener.events[seen:]
        if message.get("job") in jobs and (message.get("data") or {}).get("status") == "success"
    ]
    return max(times) if len(times) == len(jobs) else None


def aria2c_input_contender(
    web: Nginx, origin: str, files: list[HubFile], folder: Path, flags: list[str]
) -> Contender:
    """`aria2c -i`: every file's nginx URL with its dir= and out=, `-j` as aria2.conf's daemon."""
    jobs = read_conf(ARIA2_CONF).get("max-concurrent-downloads", "5")

    def fetch(tag: str) -> Run:
        out = folder / tag
        lines = []
        for file in files:
            sub, _, name = relative(file).rpartition("/")
            lines += [web.url(origin, file.served, tag), f"  dir={out / sub}", f"  out={name}"]
        listing = folder / f"{tag}.txt"
        listing.write_text("\n".join(lines) + "\n")
        command = ["aria2c", "--no-conf", "-q", *flags, "-j", jobs, "-i", str(listing)]
        started = time.time()
        t0 = time.perf_counter()
        done = run(command, capture_output=True)
        wall = time.perf_counter() - t0
        try:
            size, note = landed(out, files, relative)
        finally:
            shutil.rmtree(out, ignore_errors=True)
            listing.unlink(missing_ok=True)
        if done.returncode:
            note = f"aria2c exited {done.returncode}: {done.stderr.decode(errors='replace')[-300:]} {note}"
        ok = done.returncode == 0 and not note
        return Run("aria2c-i", size, wall, started, started + wall, ok=ok, note=note)

    return Contender("aria2c-i", f"raw aria2c -i FILE -j {jobs} " + " ".join(flags), fetch, multi=True)


def hf_cli() -> tuple[str | None, str]:
    """The `hf` command of huggingface_hub beside this Python, or why there is none."""
    if importlib.util.find_spec("huggingface_hub") is None:
        return None, "huggingface_hub is not installed (pip install -e '.[bench]', as `make bench` does)"
    beside = Path(sys.executable).parent / "hf"
    found = str(beside) if beside.exists() else shutil.which("hf")
    if not found:
        return None, "huggingface_hub is installed but its `hf` command is not on PATH"
    return found, ""


def hf_contender(command: str, hub: FakeHub, files: list[HubFile], folder: Path, home: Path) -> Contender:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(
        HF_ENDPOINT=hub.base_url,
        HF_HOME=str(home),  # never the user's cache or token
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_UPDATE_CHECK="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",  # as aria2c -q: no console readout
    )

    def fetch(tag: str) -> Run:
        out = folder / tag
        hub.tag = tag
        started = time.time()
        t0 = time.perf_counter()
        try:
            done = run([command, "download", REPO, "--local-dir", str(out)], capture_output=True, env=env)
        finally:
            hub.tag = None
        wall = time.perf_counter() - t0
        try:
            size, note = landed(out, files, lambda file: file.path)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        if done.returncode:
            note = f"hf exited {done.returncode}: {done.stderr.decode(errors='replace')[-300:]} {note}"
        ok = done.returncode == 0 and not note
        return Run("hf", size, wall, started, started + wall, ok=ok, note=note)

    return Contender("hf", f"hf download {REPO} --local-dir DIR (huggingface_hub)", fetch, multi=True)


def app_hub_link_contender(app: App, hub: FakeHub, file: HubFile) -> Contender:
    def fetch(tag: str) -> Run:
        hub.tag = tag
        try:
            return app.fetch(hub.resolve_url(file.path), "app-hub")
        finally:
            hub.tag = None
            clear_files(app.models)

    return Contender("app-hub", "orchestrator, POST /api/downloads, its Hub link", fetch)


def clearing(contender: Contender, models: Path) -> Contender:
    def fetch(tag: str) -> Run:
        try:
            return contender.fetch(tag)
        finally:
            clear_files(models)

    return Contender(contender.key, contender.label, fetch, contender.multi)


def clear_files(models: Path) -> None:
    """What a single download left in the models folder (the file is gone already, its sidecar not)."""
    for path in models.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)


# -- the run -------------------------------------------------------------------------------------


@contextlib.contextmanager
def hub_endpoint(url: str) -> Iterator[None]:
    """The app's environment while it starts: the Hub at `url`, no token from the user's."""
    saved = {name: os.environ.get(name) for name in ("HF_ENDPOINT", "HF_TOKEN")}
    os.environ["HF_ENDPOINT"] = url
    os.environ.pop("HF_TOKEN", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_bundle(
    ws: Workspace,
    web: Nginx,
    children: Children,
    flags: list[str],
    *,
    big: int,
    small: list[int] | None = None,
    rounds: int,
    file_runs: int = FILE_RUNS,
    origin: str = "cdn",
    poll_interval: float | None = None,
    on_record: Callable[[Record], None] | None = None,
    on_title: Callable[[str], None] | None = None,
) -> BundleResult:
    """Make the files, start the Hub and an app pointed at it, run both scenarios."""
    started = time.monotonic()
    files = make_files(ws.served, big, small_sizes() if small is None else small)
    probe = min(files, key=lambda file: file.size)
    with FakeHub(REPO, files, lambda name, tag: web.url(origin, name, tag)) as hub:
        with hub_endpoint(hub.base_url):
            app = App(children, ws.fresh("app-bundle"), poll_interval=poll_interval).start()
        try:
            downloads = ws.fresh("bundle-downloads")
            contenders = [
                app_bundle_contender(app, hub, files),
                aria2c_input_contender(web, origin, files, downloads, flags),
            ]
            skipped = {}
            command, why = hf_cli()
            if command:
                contenders.append(hf_contender(command, hub, files, downloads, ws.folder("hf-home")))
            else:
                skipped["hf"] = why
            total = sum(file.size for file in files)
            bundle = Scenario(
                "bundle",
                f"{len(files)} files as one Hugging Face folder",
                origin,
                FOLDER,
                total,
                0,
                contenders,
            )
            if on_title:
                on_title(f"{bundle.title} ({rounds} rounds, interleaved)")
            run_scenario(bundle, web, rounds, on_record=on_record)
            single = Scenario(
                "bundle-file",
                f"one more file: {probe.size} bytes",
                origin,
                probe.served,
                probe.size,
                1,
                [
                    clearing(
                        app_contender(
                            "app-link",
                            "orchestrator, POST /api/downloads, plain link",
                            app,
                            web,
                            origin,
                            probe.served,
                        ),
                        app.models,
                    ),
                    app_hub_link_contender(app, hub, probe),
                    aria2c_contender(web, origin, probe.served, downloads, flags),
                ],
            )
            if on_title:
                on_title(f"{single.title} ({file_runs} rounds, interleaved)")
            run_scenario(single, web, file_runs, on_record=on_record)
        finally:
            app.stop()
    return BundleResult(bundle, single, files, origin, skipped, time.monotonic() - started)
