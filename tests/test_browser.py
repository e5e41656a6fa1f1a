"""Browser tests: headless Chromium drives the real page against the real server.

Nothing is mocked: `python -m orchestrator serve` runs as a subprocess with its own
aria2c, and files come from the fake HTTP origin in tests/fakes/origin.py.

Set UPDATE_SCREENSHOT=1 to (re)write docs/screenshot.png from test_screenshot.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import requests

from orchestrator.engines.aria2_daemon import aria2c_path
from tests.conftest import Server
from tests.fakes import model_files as built
from tests.fakes.origin import Origin

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "Chromium is not installed at /usr/bin/chromium (apt install chromium)", allow_module_level=True
    )
if aria2c_path() is None:
    pytest.skip("aria2c is not installed (apt install aria2)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = playwright_api.expect

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MiB = 1024 * 1024
KiB = 1024


class LiveServer(Server):
    """`orchestrator serve` in a subprocess (tests/conftest.py), with page-test helpers."""

    def __init__(self, workdir: Path, engine: str = "auto") -> None:
        super().__init__(workdir, "--engine", engine)

    def jobs(self) -> list[dict]:
        answer = requests.get(self.base + "/api/downloads", timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["jobs"]

    def job(self, job_id: str) -> dict:
        return requests.get(f"{self.base}/api/downloads/{job_id}", timeout=10).json()["job"]

    def job_for(self, url: str, timeout: float = 10) -> dict:
        """The job created for url (waits for the page's request to land)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [job for job in self.jobs() if job["url"] == url]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no job for {url}; jobs: {self.jobs()}\n{self.log()[-2000:]}")
            time.sleep(0.05)

    def staging_names(self) -> list[str]:
        return [Path(name).name for name in self.staging_files()]


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def origin():
    server = Origin(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.stop()


def _run_server(workdir: Path):
    live = LiveServer(workdir)
    try:
        live.start()
    except Exception:
        live.stop()
        raise
    return live


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One server for the tests that only look at their own jobs (saves a start per test)."""
    live = _run_server(tmp_path_factory.mktemp("shared"))
    yield live
    live.stop()


@pytest.fixture
def server(tmp_path):
    """A fresh server, for tests that need an empty job list or stop the server."""
    live = _run_server(tmp_path)
    yield live
    live.stop()


class PageWatch:
    """What the page did that a test may want to assert on."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.sent: list[dict] = []

    def sent_of_type(self, kind: str) -> list[dict]:
        return [m for m in self.sent if m.get("type") == kind]


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    watch = PageWatch()

    def on_dialog(dialog) -> None:
        watch.dialogs.append(dialog.message)
        dialog.dismiss()

    def on_socket(ws) -> None:
        def record(payload) -> None:
            with contextlib.suppress(TypeError, ValueError):
                watch.sent.append(json.loads(payload))

        ws.on("framesent", record)

    tab.on("pageerror", lambda error: watch.errors.append(str(error)))
    tab.on("dialog", on_dialog)
    tab.on("websocket", on_socket)
    tab.watch = watch
    yield tab
    context.close()
    assert watch.errors == [], f"JavaScript errors on the page: {watch.errors}"
    assert watch.dialogs == [], f"unexpected dialogs: {watch.dialogs}"


def open_page(page, server: LiveServer) -> None:
    page.goto(server.base + "/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(page.locator("#connection")).to_contain_text("Connected")
    expect(page.locator("#type")).to_be_enabled()


def submit(page, server: LiveServer, url: str, model_type: str = "lora") -> tuple[dict, object]:
    """Type a link and press Enter, as a keyboard user would; return (job, card)."""
    page.select_option("#type", model_type)
    page.fill("#url", url)
    page.press("#url", "Enter")
    expect(page.locator("#url")).to_have_value("")  # cleared once the server took it
    job = server.job_for(url)
    card = page.locator(f'#jobs [data-job="{job["id"]}"]')
    expect(card).to_have_count(1)
    return job, card


def test_download_reaches_100_percent_and_lands_on_disk(page, shared_server, origin):
    server = shared_server
    data = origin.add_file("/t1/tiny-lora.safetensors", 8 * MiB, rate=512 * KiB)
    open_page(page, server)
    expect(page.locator("#engine")).to_contain_text("aria2")
    expect(page.locator("#engine-hint")).to_be_hidden()
    # Record every progress value the bar shows, to see live updates, not just the end.
    page.evaluate("""() => {
        window.__seen = [];
        new MutationObserver((records) => {
            for (const r of records) {
                const job = r.target.closest('[data-job]').dataset.job;
                window.__seen.push([job, Number(r.target.dataset.progress)]);
            }
        }).observe(document.getElementById('jobs'),
                   {subtree: true, attributes: true, attributeFilter: ['data-progress']});
    }""")

    job, card = submit(page, server, origin.url("/t1/tiny-lora.safetensors"))

    expect(card).to_have_attribute("data-state", "completed", timeout=30_000)
    bar = card.locator(".progress")
    expect(bar).to_have_attribute("data-progress", "100")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(card.locator(".job-percent")).to_have_text("100%")
    expect(card.locator(".job-label")).to_have_text("tiny-lora.safetensors")
    expect(card.locator(".job-path-value")).to_have_text("lora/tiny-lora.safetensors")
    expect(card.locator(".job-amount")).to_have_text("8.00 MiB")
    expect(card.locator(".job-state")).to_have_text("Completed")
    expect(card.locator("[data-action]:visible")).to_have_count(0)
    seen = [value for job_id, value in page.evaluate("window.__seen") if job_id == job["id"]]
    assert any(0 < value < 100 for value in seen), f"no intermediate progress shown: {seen}"
    assert seen == sorted(seen), f"progress went backwards: {seen}"

    saved = server.models / "lora" / "tiny-lora.safetensors"
    assert saved.read_bytes() == data
    assert server.job(job["id"])["state"] == "completed"
    # The installed-models list refreshes when a job succeeds.
    expect(page.locator("#models-section")).to_be_visible()
    expect(page.locator("#models .model-name", has_text="tiny-lora.safetensors")).to_have_count(1)


def test_invalid_links_are_refused_in_the_page(page, server, origin):
    origin.add_file("/t2/never.safetensors", 4096)
    open_page(page, server)
    error = page.locator("#url-error")
    url = page.locator("#url")
    expect(error).to_have_attribute("role", "alert")

    # the page refuses only an empty link; the server decides the rest and its answer shows
    cases = [("", "Paste a link"), ("not a link", "cannot contain spaces"), ("ftp://x", "not ftp: links")]
    for index, (value, message) in enumerate(cases):
        url.fill(value)
        if index % 2:
            page.click("#download")
        else:
            url.press("Enter")
        expect(error).to_be_visible()
        expect(error).to_contain_text(message)
        expect(url).to_have_attribute("aria-invalid", "true")
        expect(url).to_be_focused()
    url.fill("https://example.com/model.safetensors")  # typing clears the message
    expect(error).to_be_hidden()
    assert [m["data"]["url"] for m in page.watch.sent_of_type("download")] == ["not a link", "ftp://x"]

    # A link the page accepts but the server refuses: its answer shows beside the field.
    page.locator(".advanced summary").click()
    page.fill("#name", "..")
    url.fill(origin.url("/t2/never.safetensors"))
    url.press("Enter")
    expect(error).to_contain_text("not a usable file name")
    expect(url).to_have_value(origin.url("/t2/never.safetensors"))  # kept, to fix and resend
    assert len(page.watch.sent_of_type("download")) == 3

    assert server.jobs() == []
    expect(page.locator("#jobs .job")).to_have_count(0)
    expect(page.locator("#jobs-empty")).to_be_visible()


def test_every_link_form_the_readme_lists_is_accepted(page, tmp_path, origin):
    """The page sends what people paste; the server knows the link forms (README, "Links")."""
    from tests.fakes.civitai import File
    from tests.fakes.world import fake_world

    with fake_world() as world:
        world.civitai.add_model(4201, "Detail Tweaker")
        world.civitai.add_version(
            4201, 130072, [File("tweaker.safetensors", built.opaque_safetensors(b"L" * 4096), primary=True)]
        )
        world.hub.add_repo("stabilityai/sdxl-vae")
        world.hub.add_file(
            "stabilityai/sdxl-vae", "sdxl_vae.safetensors", built.opaque_safetensors(b"V" * 4096)
        )
        world.hub.add_repo("someone/data", kind="dataset")
        world.hub.add_file(
            "someone/data", "x.safetensors", built.opaque_safetensors(b"D" * 4096), kind="dataset"
        )
        world.drive.add(
            "1AbCdEfGhIjKlMnOpQrStUvWxYz012345", built.opaque_safetensors(b"G" * 4096), "drive.safetensors"
        )
        origin.add_file("/t10/plain.safetensors", 4096)
        server = LiveServer(tmp_path)
        server.env = world.env
        server.start()
        try:
            open_page(page, server)
            forms = [
                "https://civitai.com/models/4201",
                "https://civitai.com/models/4201?modelVersionId=130072",
                "https://civitai.com/api/download/models/130072",
                "https://civitai.com/api/download/models/130072?format=SafeTensor",
                "civitai.com/models/4201/detail-tweaker",
                "urn:air:sd1:lora:civitai:4201@130072",
                "4201@130072",
                "https://huggingface.co/stabilityai/sdxl-vae/resolve/main/sdxl_vae.safetensors",
                "https://huggingface.co/stabilityai/sdxl-vae/blob/main/sdxl_vae.safetensors",
                "hf://stabilityai/sdxl-vae@main/sdxl_vae.safetensors",
                "stabilityai/sdxl-vae/sdxl_vae.safetensors",
                "https://huggingface.co/datasets/someone/data/resolve/main/x.safetensors",
                "https://drive.google.com/file/d/1AbCdEfGhIjKlMnOpQrStUvWxYz012345/view",
                "https://drive.google.com/open?id=1AbCdEfGhIjKlMnOpQrStUvWxYz012345",
                "https://drive.google.com/uc?id=1AbCdEfGhIjKlMnOpQrStUvWxYz012345",
                origin.url("/t10/plain.safetensors"),
            ]
            for url in forms:
                job, _ = submit(page, server, url)
                expect(page.locator("#url-error")).to_be_hidden()
                assert job["url"] == url
            # each was resolved through the fakes and ended in its folder (or was already there)
            for url in forms:
                job = server.wait_settled(server.job_for(url)["id"])
                assert job["state"] == "completed", (url, job["error"])
        finally:
            server.stop()


def test_tokens_persist_masked_and_stay_off_the_page(page, shared_server, origin):
    server = shared_server
    data = origin.add_file("/t3/plain.safetensors", 256 * KiB)
    civitai, hf = "civitai-SECRET-7f3a9e", "hf_SECRETtoken9b1c44"
    open_page(page, server)
    page.fill("#civitai-token", civitai)
    page.fill("#hf-token", hf)
    page.click("#save-tokens")
    expect(page.locator("#tokens-status")).to_contain_text("saved")

    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    for selector, value in (("#civitai-token", civitai), ("#hf-token", hf)):
        field = page.locator(selector)
        expect(field).to_have_value(value)
        expect(field).to_have_attribute("type", "password")
    stored = page.evaluate("""() => [localStorage.getItem('sd-civitai-token'),
                                      localStorage.getItem('sd-huggingface-token')]""")
    assert stored == [civitai, hf]

    reveal = page.locator('[data-reveal="hf"]')
    reveal.click()
    expect(page.locator("#hf-token")).to_have_attribute("type", "text")
    expect(reveal).to_have_attribute("aria-pressed", "true")
    reveal.click()
    expect(page.locator("#hf-token")).to_have_attribute("type", "password")

    _, card = submit(page, server, origin.url("/t3/plain.safetensors"))
    expect(card).to_have_attribute("data-state", "completed", timeout=20_000)
    assert (server.models / "lora" / "plain.safetensors").read_bytes() == data

    sent = page.watch.sent_of_type("download")
    assert len(sent) == 1
    assert sent[0]["data"]["civitai_token"] == civitai
    assert sent[0]["data"]["hf_token"] == hf
    # Nowhere on the page but in the two (masked) inputs.
    html_outside_inputs = page.evaluate("""() => {
        const copy = document.body.cloneNode(true);
        copy.querySelectorAll('#civitai-token, #hf-token').forEach((n) => n.remove());
        return copy.outerHTML + document.body.innerText;
    }""")
    for secret in (civitai, hf):
        assert secret not in html_outside_inputs
        assert secret not in json.dumps(server.jobs())
        # A plain link is not CivitAI or Hugging Face: the origin never sees the keys.
        for request in origin.requests_for("/t3/plain.safetensors"):
            assert secret not in json.dumps(request.headers)

    page.click('[data-clear="hf"]')
    expect(page.locator("#hf-token")).to_have_value("")
    assert page.evaluate("localStorage.getItem('sd-huggingface-token')") is None
    assert page.evaluate("localStorage.getItem('sd-civitai-token')") == civitai


def test_pause_resume_and_cancel_a_throttled_download(page, shared_server, origin):
    server = shared_server
    # aria2 opens one connection per MiB (split=16, min-split-size=1M), so at 192 KiB/s
    # per connection any file takes about 5 s.
    data = origin.add_file("/t4/slow-a.safetensors", 8 * MiB, rate=192 * KiB)
    origin.add_file("/t4/slow-b.safetensors", 8 * MiB, rate=64 * KiB)
    open_page(page, server)
    job_a, card_a = submit(page, server, origin.url("/t4/slow-a.safetensors"))
    job_b, card_b = submit(page, server, origin.url("/t4/slow-b.safetensors"))

    expect(card_a).to_have_attribute("data-state", "downloading", timeout=15_000)
    expect(card_a.locator('[data-action="resume"]')).to_be_hidden()
    card_a.locator('[data-action="pause"]').click()
    expect(card_a).to_have_attribute("data-state", "paused")
    expect(card_a.locator(".job-state")).to_have_text("Paused")
    expect(card_a.locator('[data-action="pause"]')).to_be_hidden()
    expect(card_a.locator('[data-action="resume"]')).to_be_visible()
    expect(card_a.locator('[data-action="cancel"]')).to_be_visible()
    assert server.job(job_a["id"])["state"] == "paused"
    paused_at = int(card_a.locator(".progress").get_attribute("data-progress"))
    assert paused_at < 100

    expect(card_b).to_have_attribute("data-state", "downloading", timeout=15_000)
    card_b.locator('[data-action="cancel"]').click()
    expect(card_b).to_have_attribute("data-state", "cancelled")
    expect(card_b.locator('[data-action="retry"]')).to_be_visible()
    expect(card_b.locator('[data-action="cancel"]')).to_be_hidden()
    assert server.job(job_b["id"])["state"] == "cancelled"
    assert not (server.models / "lora" / "slow-b.safetensors").exists()
    deadline = time.monotonic() + 10
    while any("slow-b" in name for name in server.staging_names()):
        assert time.monotonic() < deadline, f"partial data kept: {server.staging_names()}"
        time.sleep(0.1)

    # Still paused: no bytes moved while the other job was being cancelled.
    assert server.job(job_a["id"])["state"] == "paused"
    expect(card_a.locator(".progress")).to_have_attribute("data-progress", str(paused_at))
    card_a.locator('[data-action="resume"]').click()
    expect(card_a).not_to_have_attribute("data-state", "paused")
    expect(card_a).to_have_attribute("data-state", "completed", timeout=30_000)
    expect(card_a.locator(".progress")).to_have_attribute("data-progress", "100")
    assert (server.models / "lora" / "slow-a.safetensors").read_bytes() == data

    # "Clear finished" hides completed and cancelled cards, here only.
    page.click("#clear-finished")
    expect(card_a).to_be_hidden()
    expect(card_b).to_be_hidden()
    assert {job_a["id"], job_b["id"]} <= {job["id"] for job in server.jobs()}


def test_html_in_a_filename_is_shown_as_text(page, shared_server, origin):
    server = shared_server
    origin.add_file(
        "/t5/download",
        64 * KiB,
        content_disposition='attachment; filename="<img src=x onerror=alert(1)>.safetensors"',
    )
    open_page(page, server)
    job, card = submit(page, server, origin.url("/t5/download"))
    expect(card).to_have_attribute("data-state", "completed", timeout=20_000)
    label = server.job(job["id"])["label"]
    assert "onerror=alert(1)" in label
    expect(card.locator(".job-label")).to_have_text(label)
    expect(card.locator(".job-path-value")).to_have_text(server.job(job["id"])["path"])
    assert page.locator("#jobs img").count() == 0
    assert page.locator("#models img").count() == 0
    saved_name = Path(server.job(job["id"])["path"]).name
    expect(page.locator("#models .model-name").filter(has_text=saved_name)).to_have_count(1)
    assert page.watch.dialogs == []


def test_failed_download_says_why_and_can_be_retried(page, shared_server, origin):
    server = shared_server
    open_page(page, server)
    job, card = submit(page, server, origin.url("/t9/not-there.safetensors"))
    expect(card).to_have_attribute("data-state", "failed", timeout=20_000)
    reason = server.job(job["id"])["error"]["message"]
    expect(card.locator(".job-message")).to_have_text(reason)
    expect(card.locator(".job-state")).to_have_text("Failed")
    # what the server allows for a failed job: retry, or discard its partial data
    expect(card.locator("[data-action]:visible")).to_have_count(2)
    expect(card.locator('[data-action="cancel"]')).to_have_text("Discard")
    retry = card.locator('[data-action="retry"]')
    expect(retry).to_be_visible()
    origin.add_file("/t9/not-there.safetensors", 64 * KiB)  # the file appears upstream
    retry.click()
    expect(card).to_have_attribute("data-state", "completed", timeout=20_000)
    expect(card.locator(".job-message")).to_be_hidden()
    assert (server.models / "lora" / "not-there.safetensors").stat().st_size == 64 * KiB


def test_fallback_engine_is_named_with_a_hint(page, tmp_path):
    live = LiveServer(tmp_path, engine="requests")
    try:
        live.start()
        open_page(page, live)
        expect(page.locator("#engine")).to_contain_text("requests")
        hint = page.locator("#engine-hint")
        expect(hint).to_be_visible()
        health = requests.get(live.base + "/api/health", timeout=5).json()["engine"]
        assert health["fallback"] is True
        expect(hint).to_have_text(
            health.get("hint") or "aria2c not found: using the slower single-connection fallback"
        )
    finally:
        live.stop()


def test_reconnects_after_a_server_restart_without_duplicates(page, server, origin):
    origin.add_file("/t6/again.safetensors", 128 * KiB)
    open_page(page, server)
    job, card = submit(page, server, origin.url("/t6/again.safetensors"))
    expect(card).to_have_attribute("data-state", "completed", timeout=20_000)

    server.stop()
    expect(page.locator("#connection")).not_to_have_attribute("data-state", "connected")
    expect(page.locator("#connection")).to_contain_text("onnect")  # "Reconnecting in 1 s…"
    server.start()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=20_000)
    expect(page.locator("#jobs .job")).to_have_count(len(server.jobs()))
    expect(page.locator(f'#jobs [data-job="{job["id"]}"]')).to_have_count(1)
    expect(page.locator(f'#jobs [data-job="{job["id"]}"]')).to_have_attribute("data-state", "completed")


def test_a_server_restarted_with_a_new_token_tells_the_page_why_it_is_refused(page, tmp_path):
    """Exposed (bound beyond loopback), the page's session is the token's; after a restart
    with another token the live connection is refused (1008) and the page says what to do."""
    import secrets

    first, second = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    live = LiveServer(tmp_path)
    live.extra += ["--host", "0.0.0.0"]
    live.env = {"ORCHESTRATOR_TOKEN": first}
    live.start()
    try:
        page.goto(f"{live.base}/?token={first}")  # the login link the server printed
        expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
        assert first not in page.url  # the link's token is traded for a cookie and dropped
        expect(page.locator("#access-hint")).to_be_hidden()

        live.stop()
        live.env = {"ORCHESTRATOR_TOKEN": second}
        live.start()
        hint = page.locator("#access-hint")
        expect(hint).to_be_visible(timeout=20_000)
        expect(hint).to_have_text(
            "The server needs its access token: open the link it printed when it started."
        )
        expect(page.locator("#connection")).not_to_have_attribute("data-state", "connected")

        page.goto(f"{live.base}/?token={second}")
        expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
        expect(page.locator("#access-hint")).to_be_hidden()
    finally:
        live.stop()


def test_a_running_job_survives_a_server_restart_and_finishes(page, server, origin):
    data = origin.add_file("/t8/long.safetensors", 8 * MiB, rate=96 * KiB)
    open_page(page, server)
    job, card = submit(page, server, origin.url("/t8/long.safetensors"), "checkpoint")
    expect(card).to_have_attribute("data-state", "downloading", timeout=20_000)

    server.stop()  # SIGTERM: the app stops its aria2c, which saves its session
    expect(page.locator("#connection")).not_to_have_attribute("data-state", "connected")
    server.start()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected", timeout=20_000)
    expect(card).to_have_attribute("data-state", "completed", timeout=60_000)
    expect(page.locator(f'#jobs [data-job="{job["id"]}"]')).to_have_count(1)
    expect(card.locator(".progress")).to_have_attribute("data-progress", "100")
    assert (server.models / "checkpoint" / "long.safetensors").read_bytes() == data


def test_odd_input_is_refused_or_shown_as_text(page, shared_server, origin):
    server = shared_server
    data = origin.add_file('/t9/"cheese".safetensors', 64 * KiB)
    open_page(page, server)
    error = page.locator("#url-error")
    before = len(server.jobs())
    for value in (
        "https://example.com/a model.safetensors",
        "x" * 10_000,
        "https://example.com/" + "a" * 10_000,
    ):
        page.fill("#url", value)
        page.press("#url", "Enter")
        expect(error).to_be_visible()
        assert error.inner_text().strip()
    assert len(server.jobs()) == before  # nothing was created

    # quotes in a link are fine; the saved name is made safe and shown as plain text
    _, card = submit(page, server, origin.url('/t9/"cheese".safetensors'))
    expect(card).to_have_attribute("data-state", "completed", timeout=20_000)
    expect(card.locator(".job-label")).to_have_text("_cheese_.safetensors")
    assert (server.models / "lora" / "_cheese_.safetensors").read_bytes() == data

    # a token with odd characters is kept and sent exactly, never rendered
    odd = "t0k\"<b>&'\\ ünï;%20"
    page.fill("#civitai-token", odd)
    page.click("#save-tokens")
    page.reload()
    expect(page.locator("#civitai-token")).to_have_value(odd)
    origin.add_file("/t9/after.safetensors", 4 * KiB)
    submit(page, server, origin.url("/t9/after.safetensors"))
    sent = page.watch.sent_of_type("download")[-1]["data"]
    assert sent["civitai_token"] == odd
    assert "ünï" not in page.locator("body").inner_text()


def test_the_type_menu_shows_its_folder_and_remembers_the_last_type_picked(page, shared_server):
    open_page(page, shared_server)
    expect(page.locator("#type")).to_have_value("lora")  # nothing picked yet in this browser
    expect(page.locator("#type-folder code")).to_have_text("lora/")
    page.select_option("#type", "vae")
    expect(page.locator("#type-folder code")).to_have_text("vae/")
    page.select_option("#type", "auto")
    expect(page.locator("#type-folder")).to_contain_text(
        "the folder the file's own header or CivitAI's model type names"
    )
    page.select_option("#type", "embedding")
    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(page.locator("#type")).to_have_value("embedding")
    expect(page.locator("#type-folder code")).to_have_text("embedding/")


def test_phone_width_and_keyboard_only(page, shared_server, origin):
    server = shared_server
    origin.add_file("/t7/phone.safetensors", 64 * KiB)
    page.set_viewport_size({"width": 360, "height": 740})
    open_page(page, server)
    page.focus("#type")
    page.keyboard.press("Tab")
    expect(page.locator("#url")).to_be_focused()
    page.keyboard.type(origin.url("/t7/phone.safetensors"))
    page.keyboard.press("Enter")
    job = server.job_for(origin.url("/t7/phone.safetensors"))
    card = page.locator(f'#jobs [data-job="{job["id"]}"]')
    expect(card).to_have_attribute("data-state", "completed", timeout=20_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    box = card.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360
    for selector in ("#type", "#url", "#download", "#civitai-token", "#hf-token", "#save-tokens"):
        assert page.locator(selector).bounding_box()["width"] > 0


def test_screenshot(page, server, origin, tmp_path):
    origin.add_file("/t8/realistic-vision-v6.safetensors", 8 * MiB)
    origin.add_file("/t8/detail-tweaker-xl.safetensors", 24 * MiB, rate=64 * KiB)
    page.emulate_media(color_scheme="light", reduced_motion="reduce")
    open_page(page, server)
    _, done = submit(page, server, origin.url("/t8/realistic-vision-v6.safetensors"), "checkpoint")
    expect(done).to_have_attribute("data-state", "completed", timeout=20_000)
    _, moving = submit(page, server, origin.url("/t8/detail-tweaker-xl.safetensors"), "lora")
    expect(moving).to_have_attribute("data-state", "downloading", timeout=15_000)
    expect(moving.locator(".job-eta")).to_be_visible()
    page.wait_for_function(
        """(id) => Number(document.querySelector(`[data-job="${id}"] .progress`).dataset.progress) >= 8""",
        arg=moving.get_attribute("data-job"),
        timeout=20_000,
    )
    for card in (done, moving):  # both cards fit the 1280x800 view
        box = card.bounding_box()
        assert box is not None and box["y"] + box["height"] <= 800
    update = os.environ.get("UPDATE_SCREENSHOT")
    target = ROOT / "docs" / "screenshot.png" if update else tmp_path / "shot.png"
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000


def test_a_file_already_in_place_says_so_after_a_reload_and_compare_bytes_checks_it(
    page, shared_server, origin
):
    server = shared_server
    data = origin.add_file("/t16/in-place.safetensors", 256 * KiB)
    url = origin.url("/t16/in-place.safetensors")
    open_page(page, server)
    _, first = submit(page, server, url)
    expect(first).to_have_attribute("data-state", "completed", timeout=20_000)
    gets = origin.stats("/t16/in-place.safetensors")["gets"]

    again, card = submit(page, server, url)
    expect(card).to_have_attribute("data-state", "completed", timeout=20_000)
    says_only_name_and_size_were_compared(card)
    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    card = page.locator(f'#jobs [data-job="{again["id"]}"]')
    says_only_name_and_size_were_compared(card)  # the job record keeps how it was compared
    assert origin.stats("/t16/in-place.safetensors")["gets"] == gets  # nothing fetched for it

    card.get_by_role("button", name="Compare bytes").click()
    deadline = time.monotonic() + 10
    while len(mine := [job for job in server.jobs() if job["url"] == url]) < 3:
        assert time.monotonic() < deadline, "the comparison never started"
        time.sleep(0.1)
    compared = page.locator(f'#jobs [data-job="{mine[-1]["id"]}"]')
    expect(compared).to_have_attribute("data-state", "completed", timeout=20_000)
    expect(compared.locator(".job-state")).to_have_text("Already present")
    expect(compared.get_by_role("button", name="Compare bytes")).to_be_hidden()
    expect(compared.locator(".job-message")).to_be_hidden()
    assert origin.stats("/t16/in-place.safetensors")["gets"] > gets  # fetched to be compared
    assert (server.models / "lora" / "in-place.safetensors").read_bytes() == data


def says_only_name_and_size_were_compared(card) -> None:
    expect(card.locator(".job-state")).to_have_text("Already present")
    expect(card.locator(".job-message")).to_contain_text("its bytes were not compared")
    expect(card.locator(".job-path")).to_contain_text("Already in lora/in-place.safetensors")
    expect(card.get_by_role("button", name="Compare bytes")).to_be_visible()


def test_the_files_own_header_is_shown_and_a_contradicted_type_warns(page, shared_server, origin):
    """A plain link with type auto is filed by its header; a type the header contradicts warns."""
    server = shared_server
    flux = built.safetensors_file(built.flux_dit())
    origin.add_file("/t15/flux-dev.safetensors", data=flux)
    origin.add_file("/t15/really-a-vae.safetensors", data=built.safetensors_file(built.sd_vae()))
    open_page(page, server)
    _, card = submit(page, server, origin.url("/t15/flux-dev.safetensors"), "auto")
    expect(card).to_have_attribute("data-state", "completed", timeout=20_000)
    expect(card.locator(".job-facts")).to_contain_text("diffusion model · flux · safetensors")
    assert (server.models / "diffusion_model" / "flux-dev.safetensors").read_bytes() == flux

    _, card = submit(page, server, origin.url("/t15/really-a-vae.safetensors"), "lora")
    expect(card).to_have_attribute("data-state", "completed", timeout=20_000)
    warning = card.locator(".job-warning dd")
    expect(warning).to_contain_text("looks like a vae")
    expect(warning).to_contain_text("goes to the lora folder as asked")
    assert (server.models / "lora" / "really-a-vae.safetensors").exists()


# -- sets of files: a workflow dropped, links pasted, CivitAI files ticked ------------------------


def drop_file(page, selector: str, name: str, text: str, mime: str) -> None:
    """A real drop event with a file in its DataTransfer, as dragging a file from the desktop."""
    transfer = page.evaluate_handle(
        """([text, name, mime]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([text], name, {type: mime}));
            return transfer;
        }""",
        [text, name, mime],
    )
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def paste_text(page, selector: str, text: str) -> None:
    page.eval_on_selector(
        selector,
        """(input, text) => {
            const transfer = new DataTransfer();
            transfer.setData("text/plain", text);
            input.focus();
            const options = {clipboardData: transfer, bubbles: true, cancelable: true};
            input.dispatchEvent(new ClipboardEvent("paste", options));
        }""",
        text,
    )


@pytest.fixture
def comfy_server(tmp_path):
    live = LiveServer(tmp_path)
    live.extra += ["--layout", "comfyui"]
    live.start()
    yield live
    live.stop()


@pytest.fixture
def world_server(tmp_path):
    """A fresh server whose CivitAI and Hugging Face are the local fakes: (world, server)."""
    from tests.fakes.world import fake_world

    with fake_world() as world:
        live = LiveServer(tmp_path)
        live.env = world.env
        live.start()
        try:
            yield world, live
        finally:
            live.stop()


def test_a_dropped_workflow_shows_its_models_and_download_missing_lands_them_in_one_card(
    page, comfy_server, origin
):
    server = comfy_server
    lora = origin.add_file("/wf1/ink.safetensors", 2 * MiB, rate=512 * KiB)
    vae = origin.add_file("/wf1/ae.safetensors", MiB, rate=512 * KiB)
    (server.models / "checkpoints").mkdir(parents=True, exist_ok=True)
    (server.models / "checkpoints" / "base.safetensors").write_bytes(b"placed by hand")
    document = {
        "nodes": [
            {"id": 1, "type": "CheckpointLoaderSimple", "mode": 0, "widgets_values": ["base.safetensors"]},
            {"id": 2, "type": "LoraLoader", "mode": 0, "widgets_values": ["ink.safetensors", 1, 1]},
            {"id": 3, "type": "VAELoader", "mode": 0, "widgets_values": ["ae.safetensors"]},
            {"id": 4, "type": "UpscaleModelLoader", "mode": 0, "widgets_values": ["4x-foolhardy.pth"]},
        ],
        "links": [],
        "models": [
            {"name": "ink.safetensors", "url": origin.url("/wf1/ink.safetensors"), "directory": "loras"},
            {"name": "ae.safetensors", "url": origin.url("/wf1/ae.safetensors"), "directory": "vae"},
        ],
    }
    open_page(page, server)

    drop_file(page, "#download-section", "portrait.json", json.dumps(document), "application/json")

    panel = page.locator("#set-panel")
    expect(panel).to_be_visible()
    expect(page.locator("#set-title")).to_have_text("Workflow: portrait.json")
    rows = page.locator("#set-rows tr")
    expect(rows).to_have_count(4)
    statuses = {
        rows.nth(i).locator("td").nth(0).inner_text(): rows.nth(i).locator("td").nth(2).inner_text()
        for i in range(4)
    }
    assert statuses == {
        "base.safetensors": "In place",
        "ink.safetensors": "Missing",
        "ae.safetensors": "Missing",
        "4x-foolhardy.pth": "No link",
    }
    download = page.locator("#set-download")
    expect(download).to_have_text("Download missing (2)")
    download.click()

    expect(panel).to_be_hidden()
    card = page.locator("#bundles li.bundle")
    expect(card).to_have_count(1)
    expect(card.locator(".job-label")).to_have_text("portrait")
    expect(card).to_have_attribute("data-state", "completed", timeout=30_000)
    expect(card.locator(".job-type")).to_have_text("2 of 2 files in place")
    expect(card.locator(".bundle-notes")).to_contain_text("4x-foolhardy.pth no link")
    card.locator(".bundle-details summary").click()
    expect(card.locator(".bundle-file")).to_have_count(2)
    expect(card.locator('.bundle-file[data-state="completed"]')).to_have_count(2)
    expect(page.locator("#jobs li.job:visible")).to_have_count(0)  # the files are inside the card
    assert (server.models / "loras" / "ink.safetensors").read_bytes() == lora
    assert (server.models / "vae" / "ae.safetensors").read_bytes() == vae
    assert (server.models / "checkpoints" / "base.safetensors").read_bytes() == b"placed by hand"
    assert server.staging_names() == []


def test_a_dropped_file_that_is_no_workflow_gets_the_servers_reason_and_starts_nothing(page, shared_server):
    open_page(page, shared_server)
    before = len(shared_server.jobs())
    drop_file(page, "#download-section", "notes.json", '{"shopping": ["milk"]}', "application/json")
    error = page.locator("#set-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("notes.json")
    expect(page.locator("#set-download")).to_be_disabled()
    assert len(shared_server.jobs()) == before


def test_pasted_links_become_one_set_whose_cancel_takes_everything_back(page, server, origin):
    origin.add_file("/set2/a.safetensors", 4 * MiB, rate=64 * KiB)
    origin.add_file("/set2/b.safetensors", 4 * MiB, rate=64 * KiB)
    open_page(page, server)
    page.select_option("#type", "lora")
    text = f"{origin.url('/set2/a.safetensors')}\n{origin.url('/set2/b.safetensors')} embedding\n"

    paste_text(page, "#url", text)

    expect(page.locator("#set-title")).to_have_text("2 links")
    expect(page.locator("#set-rows tr")).to_have_count(2)
    page.locator("#set-download").click()
    card = page.locator("#bundles li.bundle")
    expect(card).to_have_attribute("data-state", "downloading", timeout=15_000)
    expect(card.locator(".job-rate")).to_be_visible()
    card.locator("button.action-cancel").click()
    expect(card).to_have_attribute("data-state", "cancelled", timeout=15_000)
    assert server.model_files() == [] and server.staging_emptied() == []
    (bundle,) = requests.get(server.base + "/api/bundles", timeout=10).json()["bundles"]
    assert (bundle["kind"], bundle["state"]) == ("list", "cancelled")


def test_chosen_civitai_files_and_another_version_land_each_in_its_folder(page, world_server):
    from tests.fakes.civitai import File

    world, live = world_server
    model_v1 = built.opaque_safetensors(os.urandom(MiB))
    model_v2 = built.opaque_safetensors(os.urandom(MiB))
    vae = built.opaque_safetensors(os.urandom(MiB // 2))
    world.civitai.add_model(700, "Dreamy", "Checkpoint")
    world.civitai.add_version(700, 701, [File("dreamy-v1.safetensors", model_v1, primary=True)], name="v1")
    world.civitai.add_version(
        700,
        702,
        [
            File("dreamy-v2.safetensors", model_v2, primary=True),
            File("dreamy-vae.safetensors", vae, type="VAE"),
        ],
        name="v2",
    )
    open_page(page, live)
    page.fill("#url", "https://civitai.com/models/700?modelVersionId=702")
    page.locator("#choose-civitai").click()
    expect(page.locator("#set-title")).to_contain_text("Dreamy: v2")
    boxes = page.locator("#set-rows input[type=checkbox]")
    expect(boxes).to_have_count(2)
    expect(boxes.nth(0)).to_be_checked()  # the primary file
    boxes.nth(0).uncheck()
    boxes.nth(1).check()  # only the VAE of v2
    page.locator("#set-versions input[type=checkbox]").first.check()  # and all of v1
    expect(page.locator("#set-download")).to_have_text("Download 1 file + 1 more version")
    page.locator("#set-download").click()
    card = page.locator("#bundles li.bundle")
    expect(card).to_have_attribute("data-state", "completed", timeout=30_000)
    assert (live.models / "vae" / "dreamy-vae.safetensors").read_bytes() == vae
    assert (live.models / "checkpoint" / "dreamy-v1.safetensors").read_bytes() == model_v1
    assert not (live.models / "checkpoint" / "dreamy-v2.safetensors").exists()


def test_a_civitai_card_shows_the_model_and_its_page_and_copies_its_trigger_words(page, world_server):
    from tests.fakes.civitai import File

    world, live = world_server
    data = built.opaque_safetensors(os.urandom(MiB))
    world.civitai.add_model(810, "Ink Wash", "LORA")
    world.civitai.add_version(
        810,
        811,
        [File("ink-wash.safetensors", data, primary=True)],
        name="v3",
        trained_words=["ink wash", "sumi-e"],
    )
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.base)
    open_page(page, live)
    link = "https://civitai.com/models/810?modelVersionId=811"
    _, card = submit(page, live, link, "lora")
    expect(card).to_have_attribute("data-state", "completed", timeout=30_000)
    assert (live.models / "lora" / "ink-wash.safetensors").read_bytes() == data

    facts = card.locator(".job-facts")
    for text in ("Ink Wash", "v3", "SDXL 1.0"):
        expect(facts).to_contain_text(text)
    page_link = facts.get_by_role("link", name="Open on CivitAI")
    assert page_link.get_attribute("href") == f"{world.civitai.base_url}/models/810?modelVersionId=811"
    assert page_link.get_attribute("rel") == "noopener noreferrer"
    # (its preview is not checked here: the page's CSP loads outside images over https only,
    # and the fake's storage speaks http; the library test checks the preview the app serves)
    expect(card.locator(".job-words li")).to_have_text(["ink wash", "sumi-e"])
    card.get_by_role("button", name="Copy trigger words").click()
    expect(card.locator(".copy-status")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "ink wash, sumi-e"


def test_a_workflow_model_known_only_by_its_hash_is_found_on_civitai_and_downloaded(page, world_server):
    from tests.fakes.civitai import File

    world, live = world_server
    lora = built.opaque_safetensors(os.urandom(MiB))
    world.civitai.add_model(830, "Hash Only", "LORA")
    world.civitai.add_version(830, 831, [File("whatever.safetensors", lora, primary=True)])
    digest = hashlib.sha256(lora).hexdigest()
    document = {
        "nodes": [{"id": 1, "type": "LoraLoader", "mode": 0, "widgets_values": ["ink.safetensors", 1, 1]}],
        "links": [],
        "models": [
            {
                "name": "ink.safetensors",
                "url": "",
                "directory": "loras",
                "hash": digest,
                "hash_type": "SHA256",
            }
        ],
    }
    open_page(page, live)
    drop_file(page, "#download-section", "template.json", json.dumps(document), "application/json")
    row = page.locator("#set-rows tr")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(2)).to_have_text("Missing")
    expect(row.locator("td").nth(3)).to_contain_text("(found by its SHA-256)")
    page.locator("#set-download").click()
    card = page.locator("#bundles li.bundle")
    expect(card).to_have_attribute("data-state", "completed", timeout=30_000)
    assert (live.models / "lora" / "ink.safetensors").read_bytes() == lora


def test_a_hub_folder_link_in_the_form_becomes_one_card_and_lands_whole(page, world_server):
    world, live = world_server
    parts = {
        "vae/config.json": b'{"_class_name": "AutoencoderKL"}',
        "vae/diffusion_pytorch_model.safetensors": built.opaque_safetensors(os.urandom(MiB)),
    }
    world.hub.add_repo("acme/sdxl-vae")
    for name, data in parts.items():
        world.hub.add_file("acme/sdxl-vae", name, data, lfs=name.endswith(".safetensors"))
    open_page(page, live)
    page.select_option("#type", "vae")
    page.fill("#url", "https://huggingface.co/acme/sdxl-vae/tree/main/vae")
    page.press("#url", "Enter")
    expect(page.locator("#url")).to_have_value("")
    expect(page.locator("#form-status")).to_contain_text("Added a set of 2 files")
    card = page.locator("#bundles li.bundle")
    expect(card.locator(".job-source")).to_have_text("Hugging Face folder")
    expect(card).to_have_attribute("data-state", "completed", timeout=30_000)
    expect(card.locator(".job-path")).to_have_text("In place in vae/vae")
    for name, data in parts.items():
        assert (live.models / "vae" / name).read_bytes() == data


def test_a_workflow_pasted_as_json_into_the_link_field_is_read_not_sent_as_a_link(page, shared_server):
    open_page(page, shared_server)
    document = {"nodes": [{"id": 1, "type": "VAELoader", "mode": 0, "widgets_values": ["ae.safetensors"]}]}
    paste_text(page, "#url", json.dumps(document))
    expect(page.locator("#set-title")).to_have_text("Workflow: pasted.json")
    expect(page.locator("#set-rows tr")).to_have_count(1)
    expect(page.locator("#set-rows td").nth(2)).to_have_text("No link")
    expect(page.locator("#set-download")).to_be_disabled()
    expect(page.locator("#url")).to_have_value("")  # nothing went into the field or to the server
    assert page.watch.sent_of_type("download") == []
