"""The outside world for source tests: fake CivitAI, Hugging Face and Drive, each with its storage host.

Addresses (all loopback, ports chosen by the system):
  127.0.0.2 CivitAI's signed storage   127.0.0.3 the CivitAI API
  127.0.0.4 the Hugging Face Hub       127.0.0.5 the Hub's signed storage (cdn-lfs)
  127.0.0.6 drive.google.com           127.0.0.7 drive.usercontent.google.com
The links tests paste keep their real hosts; `env` points the orchestrator at these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from tests.fakes.civitai import FakeCivitai
from tests.fakes.gdrive import FakeDrive
from tests.fakes.huggingface import FakeHub
from tests.fakes.service import SignedStorage


@dataclass
class World:
    storage: SignedStorage
    civitai: FakeCivitai
    hf_storage: SignedStorage
    hub: FakeHub
    drive: FakeDrive

    @property
    def env(self) -> dict[str, str]:
        return {
            "CIVITAI_BASE_URL": self.civitai.base_url,
            "HF_ENDPOINT": self.hub.base_url,
            "GDRIVE_BASE_URL": self.drive.base_url,
        }

    def storage_hosts(self) -> list:
        return [self.storage, self.hf_storage, self.drive.content]


@contextlib.contextmanager
def fake_world(rate: int | None = None) -> Iterator[World]:
    """Start every fake; `rate` throttles each storage connection (bytes/s)."""
    with contextlib.ExitStack() as stack:
        storage = stack.enter_context(SignedStorage("127.0.0.2", rate=rate))
        hf_storage = stack.enter_context(SignedStorage("127.0.0.5", rate=rate))
        yield World(
            storage=storage,
            civitai=stack.enter_context(FakeCivitai(storage, "127.0.0.3")),
            hf_storage=hf_storage,
            hub=stack.enter_context(FakeHub(hf_storage, "127.0.0.4")),
            drive=stack.enter_context(FakeDrive("127.0.0.6", "127.0.0.7", rate=rate)),
        )
