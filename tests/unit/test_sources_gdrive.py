"""Google Drive links through gdown's own parsers, against a fake Drive on two loopback hosts."""

from __future__ import annotations

import pytest
import requests

from orchestrator import sources
from orchestrator.errors import OrchestratorError
from orchestrator.policy import OPEN, Policy
from orchestrator.sources import Credentials, gdrive
from tests.fakes.gdrive import FakeDrive
from tests.fakes.service import Reply

FILE_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz0123"
DATA = bytes(range(256)) * 40


@pytest.fixture
def drive(monkeypatch):
    with FakeDrive("127.0.0.6", "127.0.0.7") as server:
        monkeypatch.setenv("GDRIVE_BASE_URL", server.base_url)
        yield server


def code_of(call, *args) -> str:
    with pytest.raises(OrchestratorError) as caught:
        call(*args)
    assert len(caught.value.message) > 20
    return caught.value.code


def resolve(url: str):
    return gdrive.resolve(url, Credentials(), OPEN)


@pytest.mark.parametrize(
    "text",
    [
        f"https://drive.google.com/file/d/{FILE_ID}/view?usp=sharing",
        f"https://drive.google.com/file/d/{FILE_ID}/view",
        f"https://drive.google.com/file/d/{FILE_ID}",
        f"https://drive.google.com/file/u/1/d/{FILE_ID}/edit",
        f"https://drive.google.com/open?id={FILE_ID}",
        f"https://drive.google.com/uc?id={FILE_ID}&export=download",
        f"https://docs.google.com/uc?export=download&id={FILE_ID}",
        f"https://drive.usercontent.google.com/download?id={FILE_ID}&export=download",
    ],
)
def test_share_links(text: str) -> None:
    assert gdrive.parse(text) == FILE_ID
    assert sources.validate_url(text) == text
    assert sources.identify(text) == "gdrive"


@pytest.mark.parametrize(
    "text",
    [
        "https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOpQrStUvWxYz0123",
        "https://docs.google.com/document/d/1AbCdEfGhIjKlMnOpQrStUvWxYz/edit",
        "https://drive.google.com/",
        "https://drive.google.com/drive/my-drive",
    ],
)
def test_links_that_are_not_one_file_are_refused_at_once(text: str) -> None:
    assert code_of(sources.validate_url, text) == "gdrive_bad_link"


def test_a_small_file_is_named_and_sized(drive: FakeDrive) -> None:
    drive.add(FILE_ID, DATA, "modèle.safetensors")
    resolved = resolve(f"https://drive.google.com/file/d/{FILE_ID}/view")
    assert resolved.filename == "modèle.safetensors"  # from filename*=UTF-8''...
    assert resolved.size == len(DATA)
    assert resolved.headers == []
    [url] = resolved.urls
    assert url.startswith(drive.content.base_url + "/download?")
    assert requests.get(url, timeout=10).content == DATA


def test_a_large_file_gets_past_the_virus_scan_page_with_its_cookie(drive: FakeDrive) -> None:
    drive.add(FILE_ID, DATA, "big.ckpt", large=True)
    resolved = resolve(f"https://drive.google.com/open?id={FILE_ID}")
    assert resolved.filename == "big.ckpt"
    [url] = resolved.urls
    assert "confirm=t" in url and "uuid=" in url
    [cookie] = resolved.headers
    assert cookie.startswith(f"Cookie: download_warning_{FILE_ID}=")
    # the URL and cookie are all the engine needs; without the cookie Drive refuses
    name, value = cookie.split(": ", 1)
    assert requests.get(url, headers={name: value}, timeout=10).content == DATA
    assert requests.get(url, timeout=10).headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("options", "code", "words"),
    [
        ({"shared": False}, "gdrive_private", "Anyone with the link"),
        ({"over_quota": True}, "gdrive_quota", "too many people"),
    ],
)
def test_refusals(drive: FakeDrive, options: dict, code: str, words: str) -> None:
    drive.add(FILE_ID, DATA, "x.bin", **options)
    with pytest.raises(OrchestratorError) as caught:
        resolve(f"https://drive.google.com/file/d/{FILE_ID}/view")
    assert caught.value.code == code
    assert words in caught.value.message


def test_an_unknown_file(drive: FakeDrive) -> None:
    assert code_of(resolve, f"https://drive.google.com/file/d/{FILE_ID}/view") == "gdrive_not_found"


def test_a_page_gdown_cannot_read_is_a_private_file(drive: FakeDrive, monkeypatch) -> None:
    drive.add(FILE_ID, DATA, "x.bin")
    page = Reply.html("<html><body>Something else entirely</body></html>")
    monkeypatch.setattr(drive.content, "respond", lambda request: page)
    assert code_of(resolve, f"https://drive.google.com/file/d/{FILE_ID}/view") == "gdrive_private"


def test_every_hop_drive_sends_us_to_is_checked_by_the_policy(drive: FakeDrive) -> None:
    """Drive's first host counts as public here; the content host it redirects to does not."""
    drive.add(FILE_ID, DATA, "model.safetensors")
    only_drive = Policy(block_private=True, allowed=frozenset({"127.0.0.6"}))
    with pytest.raises(OrchestratorError) as caught:
        gdrive.resolve(f"https://drive.google.com/file/d/{FILE_ID}/view", Credentials(), only_drive)
    assert caught.value.code == "blocked_target"
    assert drive.drive.seen("/uc")  # the first hop was asked...
    assert not drive.content.seen("/")  # ...the host it pointed to never was
