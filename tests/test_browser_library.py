"""The library in the page, in headless Chromium against the real server and the fake CivitAI:
cards with preview, badges and trigger words, filters, the detail view, delete with a
confirmation, one-click update."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import Server
from tests.fakes import images
from tests.fakes.civitai import TOKEN as CIVITAI_TOKEN
from tests.fakes.civitai import File
from tests.fakes.model_files import opaque_safetensors
from tests.fakes.world import fake_world
from tests.test_browser import browser, expect, open_page, page  # noqa: F401 - the shared fixtures

pytestmark = pytest.mark.browser

KiB = 1024


def blob(size: int, seed: str) -> bytes:
    return opaque_safetensors(hashlib.sha256(seed.encode()).digest() * (size // 32))


def place(models: Path, relative: str, data: bytes) -> None:
    path = models / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def card(tab, path: str):
    return tab.locator(f'#models .library-card[data-path="{path}"]')


def test_the_library_shows_cards_filters_details_deletes_and_updates(page, tmp_path):  # noqa: F811
    known, newer, twin = blob(64 * KiB, "film v1"), blob(64 * KiB, "film v2"), blob(32 * KiB, "twin")
    models = tmp_path / "models"
    place(models, "lora/film.safetensors", known)
    place(models, "lora/copy-a.safetensors", twin)
    place(models, "lora/copy-a.preview.png", images.png())  # a real image, placed by hand
    place(models, "vae/copy-b.safetensors", twin)
    place(models, "checkpoint/base.safetensors", blob(32 * KiB, "base"))
    with fake_world() as world:
        world.civitai.add_model(500, "Film Look", type="LORA")
        world.civitai.add_version(500, 5001, [File("film_v1.safetensors", known, primary=True)], name="v1")
        world.civitai.add_version(
            500,
            5002,
            [File("film_v2.safetensors", newer, primary=True)],
            name="v2",
            published_at="2030-01-01",
            needs_token=True,  # early access: only the key saved in this browser gets it
        )
        server = Server(tmp_path, "--engine", "auto", env=world.env).start()
        try:
            run_page(page, server, models)
        finally:
            server.stop()


def run_page(page, server: Server, models: Path) -> None:  # noqa: F811
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.base)
    open_page(page, server)
    film = card(page, "lora/film.safetensors")
    expect(film.locator(".library-title")).to_have_text("Film Look", timeout=30_000)
    expect(film.locator(".badge.update")).to_have_text("Update: v2", timeout=30_000)
    expect(film.locator(".library-meta")).to_contain_text("SDXL 1.0")
    expect(film.locator(".library-source")).to_have_text("CivitAI")
    src = film.get_attribute("data-preview")  # the fake's JPEG does not decode: the card shows initials
    assert src.startswith("api/models/preview?")
    assert requests.get(f"{server.base}/{src}", timeout=10).status_code == 200
    shown = card(page, "lora/copy-a.safetensors").locator("img.library-preview")
    expect(shown).to_have_count(1)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=shown.element_handle())
    expect(card(page, "lora/copy-a.safetensors").locator(".badge.duplicate")).to_have_text(
        "Duplicate: 2 copies"
    )
    expect(card(page, "vae/copy-b.safetensors").locator(".badge.duplicate")).to_have_text(
        "Duplicate: 2 copies"
    )
    assert film.locator(".badge.duplicate").count() == 0

    # a trigger word is copied with a click
    film.locator(".trigger", has_text="film grain").click()
    expect(page.locator("#toasts")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "film grain"

    # filters: type, base model, text (a trigger word finds its model)
    cards = page.locator("#models .library-card")
    expect(cards).to_have_count(4)
    page.select_option("#models-type", "vae")
    expect(cards).to_have_count(1)
    expect(card(page, "vae/copy-b.safetensors")).to_have_count(1)
    page.select_option("#models-type", "")
    page.select_option("#models-base", "SDXL 1.0")
    expect(cards).to_have_count(1)
    page.select_option("#models-base", "")
    page.fill("#models-filter", "vintage photo")
    expect(cards).to_have_count(1)
    expect(film).to_have_count(1)
    page.fill("#models-filter", "")
    expect(cards).to_have_count(4)

    # the detail view holds the whole record
    film.locator('[data-library="details"]').click()
    detail = page.locator("#library-detail")
    expect(detail).to_be_visible()
    sha = hashlib.sha256((models / "lora" / "film.safetensors").read_bytes()).hexdigest()
    expect(detail).to_contain_text(sha)
    expect(detail).to_contain_text("vintage photo, film grain")
    detail.get_by_role("button", name="Close").click()
    expect(detail).to_be_hidden()

    # delete asks first; cancel keeps the file
    base = card(page, "checkpoint/base.safetensors")
    base.locator('[data-library="delete"]').click()
    confirm = page.locator("#library-confirm")
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("checkpoint/base.safetensors")
    page.click("#library-confirm-cancel")
    expect(confirm).to_be_hidden()
    assert (models / "checkpoint" / "base.safetensors").exists()
    base.locator('[data-library="delete"]').click()
    page.click("#library-confirm-delete")
    expect(base).to_have_count(0)
    assert not (models / "checkpoint" / "base.safetensors").exists()

    # one click downloads the newer version beside the old one, with the key this browser keeps
    page.fill("#civitai-token", CIVITAI_TOKEN)
    page.click("#save-tokens")
    expect(page.locator("#tokens-status")).to_contain_text("saved")
    film.locator('[data-library="update"]').click()
    expect(page.locator("#toasts")).to_contain_text("Downloading")
    target = models / "lora" / "film_v2.safetensors"
    deadline = time.monotonic() + 60
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    expect(card(page, "lora/film_v2.safetensors")).to_have_count(1, timeout=30_000)
    assert target.read_bytes() == blob(64 * KiB, "film v2")
    # the key did its work and was kept nowhere: not in the job record, the index, a sidecar or a log
    written = [path for path in models.parent.rglob("*") if path.is_file()]
    assert written and not [path for path in written if CIVITAI_TOKEN.encode() in path.read_bytes()]
