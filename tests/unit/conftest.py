"""Shared fixtures for the unit tests: fake origins on loopback addresses, a library index."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.library import LibraryIndex
from tests.fakes.origin import Origin


@pytest.fixture(autouse=True)
def no_real_civitai(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's library asks CivitAI about files placed by hand: never the real one from a test."""
    monkeypatch.setenv("CIVITAI_BASE_URL", "http://127.0.0.250:9")  # the discard port: nothing listens


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin("127.0.0.1").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def origin2() -> Iterator[Origin]:
    """A second host, so a redirect really crosses to another origin."""
    server = Origin("127.0.0.2").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def index(tmp_path: Path) -> Iterator[LibraryIndex]:
    """A library index in a real SQLite file of its own."""
    with LibraryIndex.in_state_dir(tmp_path / "state") as made:
        yield made


@pytest.fixture
def loras(tmp_path: Path) -> Path:
    """An empty LoRA folder inside a models folder."""
    folder = tmp_path / "models" / "loras"
    folder.mkdir(parents=True)
    return folder
