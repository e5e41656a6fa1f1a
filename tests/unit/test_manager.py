"""The manager's pipeline with an in-memory engine and resolver: no network, real files."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import json
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator import headers
from orchestrator.config import Settings
from orchestrator.engines.base import (
    ACTIVE,
    COMPLETE,
    ERROR,
    PAUSED,
    REMOVED,
    WAITING,
    Transfer,
)
from orchestrator.errors import OrchestratorError
from orchestrator.events import Hub
from orchestrator.headers.remote import RemoteFinding
from orchestrator.jobs import Job, JobStore, State
from orchestrator.manager import Manager
from orchestrator.policy import Policy
from orchestrator.sources import Credentials, Resolved

from .fake_engine import FakeEngine

URL = "https://files.example/models/model.safetensors"
DATA = bytes(range(256)) * 400  # 102400 bytes
SHA = hashlib.sha256(DATA).hexdigest()
PAGE = b"<!DOCTYPE html><html><body>Log in</body></html>"


# -- fakes ---------------------------------------------------------------------------------------


@dataclass
class FakeResolver:
    """url -> Resolved (or an exception to raise); records the credentials it was given."""

    answers: dict[str, Resolved | Exception] = field(default_factory=dict)
    seen: list[tuple[str, Credentials]] = field(default_factory=list)

    def __call__(self, url: str, credentials: Credentials, policy: Policy) -> Resolved:
        self.seen.append((url, credentials))
        answer = self.answers.get(url)
        if answer is None:
            answer = Resolved(
                urls=[url],
                source="direct",
                filename="model.safetensors",
                size=len(DATA),
                metadata={"host": "files.example"},
            )
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass
class World:
    tmp: Path
    settings: Settings
    store: JobStore
    engine: FakeEngine
    hub: Hub
    resolver: FakeResolver
    manager: Manager
    sub: Any
    events: list[dict] = field(default_factory=list)

    @property
    def models(self) -> Path:
        return self.settings.models_dir

    def staging(self, job: Job) -> Path:
        return self.models / ".staging" / job.id

    def model_files(self) -> list[str]:
        """Every file under the models folder, outside staging, relative."""
        if not self.models.exists():
            return []
        return sorted(
            str(p.relative_to(self.models))
            for p in self.models.rglob("*")
            if p.is_file() and ".staging" not in p.relative_to(self.models).parts
        )

    def staging_files(self) -> list[str]:
        root = self.models / ".staging"
        return (
            sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
        )

    def collect(self) -> list[dict]:
        while not self.sub.queue.empty():
            self.events.append(json.loads(self.sub.queue.get_nowait()))
        return self.events

    def statuses(self, job: Job) -> list[str]:
        return [
            e["data"]["status"]
            for e in self.collect()
            if e.get("type") == "download" and e.get("job") == job.id
        ]

    def last(self, job: Job, status: str) -> dict:
        matching = [e for e in self.collect() if e.get("job") == job.id and e["data"]["status"] == status]
        assert matching, f"no {status} event for {job.id}: {self.events}"
        return matching[-1]

    async def until(self, check: Callable[[], bool], what: str = "condition", timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not check():
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; events: {self.collect()}")
            await asyncio.sleep(0.005)

    async def state(self, job: Job, *states: State) -> None:
        await self.until(
            lambda: job.state in states and not self.manager.busy(job.id),
            f"job {job.id} to be {states} (is {job.state})",
        )

    async def submit(self, request: dict | None = None, request_id: Any = 7) -> Job:
        job, created = await self.manager.submit(
            {"url": URL, "type": "lora", **(request or {})}, request_id=request_id
        )
        assert created
        return job

    async def handed_over(self, job: Job) -> None:
        """Wait until the engine has the transfer (the job waits for a poll to say more)."""
        await self.until(
            lambda: (
                (job.handle is not None and not self.manager.busy(job.id))
                or job.state in (State.FAILED, State.COMPLETED)
            ),
            f"job {job.id} to reach the engine (is {job.state})",
        )

    async def running(self, job: Job) -> None:
        """Hand-over, then one poll: the fake engine reports it active."""
        await self.handed_over(job)
        await self.manager.poll_once()
        assert job.state == State.DOWNLOADING, job

    async def downloading(self, request: dict | None = None) -> tuple[Job, str]:
        job = await self.submit(request)
        await self.running(job)
        assert job.handle
        return job, job.handle

    async def close(self) -> None:
        await self.manager.stop()
        self.store.close()


NO_RANGES = RemoteFinding("no_range_support", "files.example does not serve byte ranges.")


@pytest.fixture(autouse=True)
def header_reads_answer_without_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake files.example has no server: its header reads say what a server without Range
    support would (the header tests in tests/integration use real servers)."""
    monkeypatch.setattr(headers, "fetch_finding", lambda *args, **kwargs: NO_RANGES)


def make_world(
    tmp: Path,
    engine: FakeEngine | None = None,
    resolver: FakeResolver | None = None,
    layout: str = "default",
    poll_interval: float = 0.05,
) -> World:
    settings = Settings(
        models_dir=tmp / "models",
        state_dir=tmp / "state",
        layout=layout,
        poll_interval=poll_interval,
        engine="requests",
    )
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(settings.database_path)
    engine = engine or FakeEngine()
    resolver = resolver or FakeResolver()
    hub = Hub()
    sub = hub.subscribe()
    manager = Manager(settings, store, engine, hub, resolver=resolver)
    return World(tmp, settings, store, engine, hub, resolver, manager, sub)


def scenario(tmp_path: Path, body: Callable[[World], Any], **kwargs: Any) -> None:
    """Run body(world) on a fresh event loop and always shut the manager down."""

    async def main() -> None:
        world = make_world(tmp_path, **kwargs)
        try:
            await body(world)
        finally:
            await world.close()

    asyncio.run(main())


def error_code(call) -> Callable[[], Any]:
    async def check() -> str:
        with pytest.raises(OrchestratorError) as caught:
            await call()
        return caught.value.code

    return check


# -- submit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_body", "code"),
    [
        ({"url": "", "type": "lora"}, "empty_url"),
        ({"type": "lora"}, "empty_url"),
        ({"url": "ftp://h.example/m.bin", "type": "lora"}, "unsupported_scheme"),
        ({"url": "file:///etc/passwd", "type": "lora"}, "unsupported_scheme"),
        ({"url": "http://h.example/a b", "type": "lora"}, "invalid_url"),
        ({"url": URL, "type": "../x"}, "unknown_type"),
        ({"url": URL, "type": None}, "unknown_type"),
        ({"url": URL}, "unknown_type"),
        ({"url": URL, "type": "lora", "name": "../.."}, "invalid_filename"),
        ({"url": URL, "type": "lora", "name": "..."}, "invalid_filename"),
        ("not an object", "invalid_message"),
        (["list"], "invalid_message"),
        (None, "invalid_message"),
    ],
)
def test_submit_refuses_bad_input_and_stores_nothing(tmp_path: Path, request_body: Any, code: str) -> None:
    async def body(world: World) -> None:
        with pytest.raises(OrchestratorError) as caught:
            await world.manager.submit(request_body, request_id=1)
        assert caught.value.code == code
        assert world.manager.jobs == {}
        assert world.store.load_all() == []
        assert world.collect() == []
        assert world.engine.calls == []
        assert world.resolver.seen == []
        assert world.model_files() == []
        assert world.staging_files() == []

    scenario(tmp_path, body)


def test_duplicate_active_submission_returns_the_same_job(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        first = await world.submit()
        again, created = await world.manager.submit({"url": f"  {URL} ", "type": "lora"}, request_id="other")
        assert created is False
        assert again is first
        other_type, created = await world.manager.submit({"url": URL, "type": "vae"})
        assert created is True
        assert other_type.id != first.id
        await world.running(first)
        await world.running(other_type)
        assert len(world.manager.jobs) == 2
        assert len(world.engine.called("start")) == 2

    scenario(tmp_path, body)


def test_a_finished_job_does_not_block_a_new_submission(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        world.resolver.answers[URL] = OrchestratorError("origin_error", "boom", 502)
        first = await world.submit()
        await world.state(first, State.FAILED)
        second, created = await world.manager.submit({"url": URL, "type": "lora"})
        assert created
        assert second.id != first.id
        await world.state(second, State.FAILED)

    scenario(tmp_path, body)


# -- the happy path ---------------------------------------------------------------------------------


def test_completed_transfer_is_verified_and_filed(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading()
        transfer = world.engine.transfers[handle]
        assert transfer.directory == world.staging(job)
        assert transfer.filename == "model.safetensors"
        assert transfer.size == len(DATA)
        assert transfer.urls == [URL]

        world.engine.finish(handle, DATA)
        await world.manager.poll_once()
        await world.state(job, State.COMPLETED)

        assert (world.models / "lora" / "model.safetensors").read_bytes() == DATA
        assert world.model_files() == ["lora/model.safetensors"]
        assert not world.staging(job).exists()
        assert job.path == "lora/model.safetensors"
        assert job.public()["progress"] == 1.0
        assert handle in world.engine.called("forget")

        # no published hash and an engine that did not hash: the file is installed first,
        # its SHA-256 follows in a `hashed` event
        await world.until(lambda: not job.hashing, "the hash of the installed file")
        assert job.sha256 == SHA
        statuses = world.statuses(job)
        assert statuses[0] == "started"
        assert "metadata" in statuses
        assert statuses[-2:] == ["success", "hashed"]
        success = world.last(job, "success")
        assert success["id"] == 7  # the submitter's id
        assert success["data"] == {
            "status": "success",
            "state": "completed",
            "label": "model.safetensors",
            "actions": [],
            "path": "lora/model.safetensors",
            "size": len(DATA),
            "sha256": None,
            "already_present": False,
        }
        assert world.last(job, "hashed")["data"] == {
            "status": "hashed",
            "state": "completed",
            "label": "model.safetensors",
            "actions": [],
            "sha256": SHA,
        }
        metadata = world.last(job, "metadata")
        assert metadata["data"]["info"] == {"host": "files.example", "file": NO_RANGES.public()}
        # the stored row agrees
        [stored] = world.store.load_all()
        assert stored.state == State.COMPLETED
        assert stored.sha256 == SHA

    scenario(tmp_path, body)


def test_layout_decides_the_folder(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading({"type": "checkpoint"})
        world.engine.finish(handle, DATA)
        await world.manager.poll_once()
        await world.state(job, State.COMPLETED)
        assert world.model_files() == ["checkpoints/model.safetensors"]
        assert world.last(job, "success")["data"]["path"] == "checkpoints/model.safetensors"

    scenario(tmp_path, body, layout="comfyui")


def test_explicit_name_is_used(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading({"name": "../my lora.safetensors"})
        assert job.filename == "my lora.safetensors"
        world.engine.finish(handle, DATA)
        await world.manager.poll_once()
        await world.state(job, State.COMPLETED)
        assert world.model_files() == ["lora/my lora.safetensors"]

    scenario(tmp_path, body)


def test_progress_and_waiting_are_relayed(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading()
        world.engine.report(handle, ACTIVE, completed=len(DATA) // 4, total=len(DATA), speed=2_000_000.0)
        await asyncio.sleep(world.settings.poll_interval)  # progress events are rate-limited
        await world.manager.poll_once()
        assert job.public()["progress"] == 0.25
        progress = world.last(job, "progress")["data"]
        assert progress["progress"] == 0.25
        assert progress["downloaded"] == len(DATA) // 4
        assert progress["total"] == len(DATA)
        assert progress["rate"] == 2.0
        assert progress["eta"] is not None and progress["eta"] >= 0
        world.engine.report(handle, WAITING, speed=0.0)
        await world.manager.poll_once()
        assert job.state == State.QUEUED
        assert world.statuses(job)[-1] == "queued"

    scenario(tmp_path, body)


# -- verification failures and existing files -------------------------------------------------------


def test_size_mismatch_fails_and_removes_the_staging_folder(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading()
        world.engine.finish(handle, DATA[:-10])
        await world.manager.poll_once()
        await world.state(job, State.FAILED)
        assert job.error_code == "size_mismatch"
        assert world.last(job, "error")["data"]["code"] == "size_mismatch"
        assert not world.staging(job).exists()
        assert world.model_files() == []

    scenario(tmp_path, body)


def test_checksum_mismatch_fails_and_removes_the_file(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        world.resolver.answers[URL] = Resolved(
            urls=[URL], source="direct", filename="model.safetensors", size=len(DATA), sha256="AB" * 32
        )
        job, handle = await world.downloading()
        assert world.engine.transfers[handle].sha256 == "ab" * 32
        world.engine.finish(handle, DATA)
        await world.manager.poll_once()
        await world.state(job, State.FAILED)
        assert job.error_code == "checksum_mismatch"
        assert not world.staging(job).exists()
        assert world.model_files() == []

    scenario(tmp_path, body)


def test_published_checksum_that_matches(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        world.resolver.answers[URL] = Resolved(
            urls=[URL], source="direct", filename="model.safetensors", size=len(DATA), sha256=SHA.upper()
        )
        job, handle = await world.downloading()
        world.engine.finish(handle, DATA)
        await world.manager.poll_once()
        await world.state(job, State.COMPLETED)
        assert job.sha256 == SHA

    scenario(tmp_path, body)


def test_web_page_of_unknown_size_is_not_filed(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        world.resolver.answers[URL] = Resolved(
            urls=[URL], source="direct", filename="model.safetensors", size=None
        )
        job, handle = await world.downloading()
        world.engine.finish(handle, PAGE)
        world.engine.report(handle, COMPLETE, total=None)  # the engine does not know either
        await world.manager.poll_once()
        await world.state(job, State.FAILED)
        assert job.error_code == "not_a_file"
        assert world.model_files() == []
        assert not world.staging(job).exists()

    scenario(tmp_path, body)


def test_web_page_of_unknown_size_is_not_filed_when_the_engine_knows_its_length(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        world.resolver.answers[URL] = Resolved(
            urls=[URL], source="direct", filename="model.safetensors", size=None
        )
        job, handle = await world.downloading()
        world.engine.finish(handle, PAGE)  # reports total=len(PAGE), as aria2 does
        await world.manager.poll_once()
        await world.state(job, State.FAILED, State.COMPLETED)
        assert job.error_code == "not_a_file"
        assert world.model_files() == []

    scenario(tmp_path, body)


def test_existing_identical_file_is_success_already_present(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        target = world.models / "lora" / "model.safetensors"
        target.parent.mkdir(parents=True)
        target.write_bytes(DATA)
        job = await world.submit()
        await world.state(job, State.COMPLETED)
        success = world.last(job, "success")["data"]
        assert success["already_present"] is True
        assert success["sha256"] == SHA
        assert success["path"] == "lora/model.safetensors"
        assert world.engine.called("start") == []
        assert target.read_bytes() == DATA
        assert world.staging_files() == []

    scenario(tmp_path, body)


def test_identical_file_appearing_during_the_download(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading()
        target = world.models / "lora" / "model.safetensors"
        target.parent.mkdir(parents=True)
        target.write_bytes(DATA)
        world.engine.finish(handle, DATA)
        await world.manager.poll_once()
        await world.state(job, State.COMPLETED)
        assert world.last(job, "success")["data"]["already_present"] is True
        assert not world.staging(job).exists()

    scenario(tmp_path, body)


def test_existing_different_file_is_file_exists(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        target = world.models / "lora" / "model.safetensors"
        target.parent.mkdir(parents=True)
        target.write_bytes(b"someone else's model")
        job = await world.submit()
        await world.state(job, State.FAILED)
        assert job.error_code == "file_exists"
        assert world.last(job, "error")["data"]["code"] == "file_exists"
        assert target.read_bytes() == b"someone else's model"
        assert world.engine.called("start") == []
        assert world.staging_files() == []

    scenario(tmp_path, body)


def test_overwrite_replaces_a_different_file(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        target = world.models / "lora" / "model.safetensors"
        target.parent.mkdir(parents=True)
        target.write_bytes(b"old")
        job, handle = await world.downloading({"overwrite": True})
        world.engine.finish(handle, DATA)
        await world.manager.poll_once()
        await world.state(job, State.COMPLETED)
        assert target.read_bytes() == DATA
        assert world.last(job, "success")["data"]["already_present"] is False

    scenario(tmp_path, body)


@pytest.mark.parametrize("value", ["false", "no", "0"])
def test_overwrite_given_as_a_string_never_replaces_a_file(tmp_path: Path, value: str) -> None:
    async def body(world: World) -> None:
        target = world.models / "lora" / "model.safetensors"
        target.parent.mkdir(parents=True)
        target.write_bytes(b"someone else's model")
        try:
            job, _ = await world.manager.submit({"url": URL, "type": "lora", "overwrite": value})
        except OrchestratorError:
            job = None
        if job is not None:
            await world.handed_over(job)
            if job.handle:
                world.engine.finish(job.handle, DATA)
                await world.manager.poll_once()
                await world.state(job, State.COMPLETED, State.FAILED)
        assert target.read_bytes() == b"someone else's model"

    scenario(tmp_path, body)


def test_not_enough_disk_space(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        world.resolver.answers[URL] = Resolved(
            urls=[URL], source="direct", filename="huge.safetensors", size=10**18
        )
        job = await world.submit()
        await world.state(job, State.FAILED)
        assert job.error_code == "disk_full"
        assert world.engine.called("start") == []

    scenario(tmp_path, body)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (OrchestratorError("origin_not_found", "gone", 502), "origin_not_found"),
        (OrchestratorError("not_a_file", "a page", 422), "not_a_file"),
        (RuntimeError("a bug"), "internal"),
    ],
)
def test_resolver_failure_fails_the_job(tmp_path: Path, error: Exception, code: str) -> None:
    async def body(world: World) -> None:
        world.resolver.answers[URL] = error
        job = await world.submit()
        await world.state(job, State.FAILED)
        assert job.error_code == code
        event = world.last(job, "error")
        assert event["data"]["code"] == code
        assert event["data"]["state"] == "failed"
        assert event["id"] == 7
        assert world.engine.called("start") == []
        assert world.model_files() == []
        [stored] = world.store.load_all()
        assert stored.state == State.FAILED
        assert stored.error_code == code

    scenario(tmp_path, body)


@pytest.mark.parametrize("name", ["v2#final.safetensors", "what?.safetensors", "100%25.safetensors"])
def test_server_filename_is_kept_as_it_is(tmp_path: Path, name: str) -> None:
    async def body(world: World) -> None:
        world.resolver.answers[URL] = Resolved(urls=[URL], source="direct", filename=name, size=len(DATA))
        job = await world.submit()
        await world.handed_over(job)
        assert job.filename == name.replace("?", "_")

    scenario(tmp_path, body)


# -- commands -------------------------------------------------------------------------------------------


def test_cancel_removes_staging_data(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading()
        world.engine.write(handle, DATA[:1000])
        (world.staging(job) / "model.safetensors.aria2").write_bytes(b"control")
        assert world.staging_files()
        result = await world.manager.cancel(job.id)
        assert result is job
        assert job.state == State.CANCELLED
        assert handle in world.engine.called("remove")
        assert not world.staging(job).exists()
        assert world.staging_files() == []
        assert world.model_files() == []
        assert world.last(job, "cancelled")["data"]["state"] == "cancelled"
        # cancelling again is harmless
        assert (await world.manager.cancel(job.id)).state == State.CANCELLED

    scenario(tmp_path, body)


def test_cancel_a_failed_job_cleans_up(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading()
        world.engine.write(handle, DATA[:1000])
        world.engine.report(handle, ERROR, error_code="network", error_message="drop")
        await world.manager.poll_once()
        await world.state(job, State.FAILED)
        assert world.staging(job).exists()  # kept for a retry
        await world.manager.cancel(job.id)
        assert job.state == State.CANCELLED
        assert not world.staging(job).exists()

    scenario(tmp_path, body)


def test_commands_on_unknown_jobs_and_wrong_states(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        m = world.manager
        for action in (m.cancel, m.pause, m.resume, m.retry):
            assert await error_code(lambda a=action: a("zzz"))() == "not_found"
        assert await error_code(lambda: m.pause(None))() == "not_found"
        job, handle = await world.downloading()
        assert await error_code(lambda: m.resume(job.id))() == "invalid_state"
        assert await error_code(lambda: m.retry(job.id))() == "invalid_state"
        world.engine.finish(handle, DATA)
        await m.poll_once()
        await world.state(job, State.COMPLETED)
        for action in (m.cancel, m.pause, m.resume, m.retry):
            with pytest.raises(OrchestratorError) as caught:
                await action(job.id)
            assert caught.value.code == "invalid_state"
            assert caught.value.status == 409
        assert job.state == State.COMPLETED

    scenario(tmp_path, body)


def test_pause_and_resume(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading()
        await world.manager.pause(job.id)
        assert job.state == State.PAUSED
        assert world.engine.called("pause") == [handle]
        assert world.statuses(job)[-1] == "paused"
        assert (await world.manager.pause(job.id)).state == State.PAUSED  # again: no error
        await world.manager.resume(job.id)
        assert job.state == State.DOWNLOADING
        assert world.engine.called("resume") == [handle]
        world.engine.finish(handle, DATA)
        await world.manager.poll_once()
        await world.state(job, State.COMPLETED)

    scenario(tmp_path, body)


def test_retry_after_a_failure(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        world.resolver.answers[URL] = OrchestratorError("origin_error", "HTTP 503", 502)
        job = await world.submit()
        await world.state(job, State.FAILED)
        del world.resolver.answers[URL]
        await world.manager.retry(job.id)
        await world.running(job)
        assert job.error_code is None
        assert job.public()["error"] is None
        world.engine.finish(job.handle, DATA)
        await world.manager.poll_once()
        await world.state(job, State.COMPLETED)

    scenario(tmp_path, body)


# -- what the engine reports (maybe caused by another aria2 client) ------------------------------------


def test_engine_paused_elsewhere(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading()
        world.engine.report(handle, PAUSED, completed=500)
        await world.manager.poll_once()
        assert job.state == State.PAUSED
        paused = world.last(job, "paused")["data"]
        assert paused["downloaded"] == 500
        assert paused["state"] == "paused"
        world.engine.report(handle, ACTIVE, completed=600)
        await world.manager.poll_once()
        assert job.state == State.DOWNLOADING
        assert world.statuses(job)[-1] == "progress"

    scenario(tmp_path, body)


def test_engine_removed_elsewhere(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading()
        world.engine.write(handle, DATA[:1000])
        world.engine.report(handle, REMOVED)
        await world.manager.poll_once()
        assert job.state == State.CANCELLED
        assert job.handle is None
        assert world.last(job, "cancelled")["data"]["state"] == "cancelled"
        # a retry continues from the bytes that were kept
        await world.manager.retry(job.id)
        await world.running(job)
        assert job.handle != handle

    scenario(tmp_path, body)


def test_engine_error_fails_the_job(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading()
        world.engine.report(
            handle,
            ERROR,
            error_code="origin_not_found",
            error_message="The server says the file does not exist.",
        )
        await world.manager.poll_once()
        await world.state(job, State.FAILED)
        assert job.error_code == "origin_not_found"
        assert world.last(job, "error")["data"]["message"] == "The server says the file does not exist."

    scenario(tmp_path, body)


def test_expired_link_is_resolved_and_added_again(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading()
        world.engine.report(handle, ERROR, completed=5000, error_code="origin_forbidden", http_status=403)
        await world.manager.poll_once()
        await world.until(lambda: len(world.engine.called("start")) == 2, "a second start")
        await world.running(job)
        assert job.handle != handle
        assert handle in world.engine.called("forget")
        assert len(world.resolver.seen) == 2

    scenario(tmp_path, body)


def test_missing_transfer_is_added_again(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading()
        world.engine.statuses.clear()  # e.g. the daemon restarted without its session
        await world.manager.poll_once()
        await world.until(lambda: len(world.engine.called("start")) == 2, "a second start")
        await world.running(job)
        assert job.handle is not None and job.handle != handle
        assert world.engine.transfers[job.handle].directory == world.staging(job)
        world.engine.finish(job.handle, DATA)
        await world.manager.poll_once()
        await world.state(job, State.COMPLETED)

    scenario(tmp_path, body)


def test_missing_paused_transfer_comes_back_paused(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, _ = await world.downloading()
        await world.manager.pause(job.id)
        world.engine.statuses.clear()
        await world.manager.poll_once()
        await world.until(lambda: len(world.engine.called("start")) == 2, "a second start")
        await world.state(job, State.PAUSED)
        assert world.engine.statuses[job.handle].state == PAUSED

    scenario(tmp_path, body)


def test_a_transfer_lost_again_and_again_fails(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, _ = await world.downloading()
        for _ in range(10):
            if job.state == State.FAILED:
                break
            world.engine.statuses.clear()
            await world.manager.poll_once()
            await world.handed_over(job)
        assert job.state == State.FAILED
        assert job.error_code == "engine_lost"

    scenario(tmp_path, body)


def test_engine_connection_trouble_is_engine_unavailable(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        await world.downloading()

        def broken(handles):
            raise ConnectionRefusedError("down")

        world.engine.poll = broken
        with pytest.raises(OrchestratorError) as caught:
            await world.manager.poll_once()
        assert caught.value.code == "engine_unavailable"

    scenario(tmp_path, body)


# -- tokens and restarts ---------------------------------------------------------------------------------


def test_tokens_reach_the_resolver_but_are_never_stored_or_sent(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading(
            {"civitai_token": "  civ-TOKEN-123 ", "hf_token": "hf_TOKEN_456"}
        )
        [(_, credentials)] = world.resolver.seen
        assert credentials.civitai == "civ-TOKEN-123"
        assert credentials.huggingface == "hf_TOKEN_456"
        world.engine.finish(handle, DATA)
        await world.manager.poll_once()
        await world.state(job, State.COMPLETED)
        await world.manager.stop()
        for path in world.settings.state_dir.iterdir():
            assert b"TOKEN" not in path.read_bytes(), path
        assert "TOKEN" not in json.dumps(world.collect())
        assert "TOKEN" not in json.dumps(world.manager.snapshot())
        assert "TOKEN" not in repr(world.engine.transfers[handle])

    scenario(tmp_path, body)


def test_restart_lists_the_jobs_with_their_states(tmp_path: Path) -> None:
    async def first_run(world: World) -> list[tuple[str, str]]:
        world.resolver.answers["https://files.example/bad.bin"] = OrchestratorError(
            "origin_not_found", "gone", 502
        )
        done, handle = await world.downloading()
        world.engine.finish(handle, DATA)
        await world.manager.poll_once()
        await world.state(done, State.COMPLETED)
        failed, _ = await world.manager.submit({"url": "https://files.example/bad.bin", "type": "vae"})
        await world.state(failed, State.FAILED)
        running, _ = await world.manager.submit(
            {"url": "https://files.example/b.bin", "type": "vae"}, request_id={"tab": 2}
        )
        await world.running(running)
        paused, _ = await world.manager.submit({"url": "https://files.example/c.bin", "type": "vae"})
        await world.running(paused)
        await world.manager.pause(paused.id)
        return [(j["id"], j["state"]) for j in world.manager.snapshot()]

    async def main() -> None:
        engine = FakeEngine()
        world = make_world(tmp_path, engine=engine)
        try:
            before = await first_run(world)
        finally:
            await world.close()
        assert [state for _, state in before] == ["completed", "failed", "downloading", "paused"]

        # a new process: new store, new manager, same file and the same engine daemon
        again = make_world(tmp_path, engine=engine)
        try:
            await again.manager.start()
            after = [(j["id"], j["state"]) for j in again.manager.snapshot()]
            assert after == before
            running = again.manager.get(before[2][0])
            assert running.request_id == {"tab": 2}
            assert running.handle
            # still tracked: the engine's report reaches the job
            engine.finish(running.handle, DATA)
            await again.manager.poll_once()
            await again.state(running, State.COMPLETED)
        finally:
            await again.close()

    asyncio.run(main())


def test_restart_with_an_engine_that_forgot_everything(tmp_path: Path) -> None:
    async def main() -> None:
        world = make_world(tmp_path)
        try:
            job, old = await world.downloading()
        finally:
            await world.close()
        fresh = FakeEngine()
        again = make_world(tmp_path, engine=fresh)
        try:
            await again.manager.start()
            recovered = again.manager.get(job.id)
            assert recovered.handle == old
            await again.manager.poll_once()
            await again.until(lambda: fresh.called("start"), "the transfer to be added again")
            await again.running(recovered)
            fresh.finish(recovered.handle, DATA)
            await again.manager.poll_once()
            await again.state(recovered, State.COMPLETED)
            assert again.model_files() == ["lora/model.safetensors"]
        finally:
            await again.close()

    asyncio.run(main())


def test_restart_finishes_a_job_that_was_verifying(tmp_path: Path) -> None:
    async def main() -> None:
        world = make_world(tmp_path)
        job = Job(
            id="00112233aabb",
            url=URL,
            model_type="lora",
            folder="lora",
            state=State.VERIFYING,
            filename="model.safetensors",
            size=len(DATA),
        )
        world.store.save(job)
        staged = world.staging(job) / "model.safetensors"
        staged.parent.mkdir(parents=True)
        staged.write_bytes(DATA)
        try:
            await world.manager.start()
            recovered = world.manager.get(job.id)
            await world.state(recovered, State.COMPLETED)
            assert world.model_files() == ["lora/model.safetensors"]
            await world.until(lambda: not recovered.hashing, "the hash of the installed file")
            assert recovered.sha256 == SHA
            assert world.staging_files() == []
        finally:
            await world.close()

    asyncio.run(main())


def _completed_while_hashing(world: World) -> Job:
    """A job stored by an app that stopped after installing the file, before its hash was known."""
    job = Job(
        id="00112233aacc",
        url=URL,
        model_type="lora",
        folder="lora",
        state=State.COMPLETED,
        filename="model.safetensors",
        size=len(DATA),
        downloaded=len(DATA),
        path="lora/model.safetensors",
        hashing=True,
    )
    world.store.save(job)
    return job


def test_restart_finishes_the_hash_of_an_installed_file(tmp_path: Path) -> None:
    async def main() -> None:
        world = make_world(tmp_path)
        job = _completed_while_hashing(world)
        (world.models / "lora").mkdir()
        (world.models / "lora" / "model.safetensors").write_bytes(DATA)
        try:
            await world.manager.start()
            recovered = world.manager.get(job.id)
            await world.until(lambda: not recovered.hashing, "the hash of the installed file")
            assert recovered.sha256 == SHA
            assert recovered.state == State.COMPLETED
            assert world.last(recovered, "hashed")["data"]["sha256"] == SHA
            [stored] = world.store.load_all()
            assert (stored.sha256, stored.hashing) == (SHA, False)
        finally:
            await world.close()

    asyncio.run(main())


def test_a_file_deleted_before_its_hash_leaves_the_job_completed_without_one(tmp_path: Path) -> None:
    async def main() -> None:
        world = make_world(tmp_path)
        job = _completed_while_hashing(world)  # and the user deleted the file meanwhile
        try:
            await world.manager.start()
            recovered = world.manager.get(job.id)
            await world.until(lambda: not recovered.hashing, "the hash attempt")
            assert recovered.state == State.COMPLETED
            assert recovered.sha256 is None
            assert world.last(recovered, "hashed")["data"]["sha256"] is None
            [stored] = world.store.load_all()
            assert stored.hashing is False
        finally:
            await world.close()

    asyncio.run(main())


def test_restart_prepares_a_queued_job_again(tmp_path: Path) -> None:
    async def main() -> None:
        world = make_world(tmp_path)
        job = Job(id="00112233aabc", url=URL, model_type="lora", folder="lora", state=State.RESOLVING)
        world.store.save(job)
        try:
            await world.manager.start()
            recovered = world.manager.get(job.id)
            await world.running(recovered)
            assert world.engine.called("start")
        finally:
            await world.close()

    asyncio.run(main())


# -- when the poll runs -----------------------------------------------------------------------------


def test_the_next_poll_comes_at_the_soonest_eta_but_never_later_than_the_interval(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        assert world.manager.poller.next_poll_in() == 10.0  # nothing downloading
        job, handle = await world.downloading()
        world.engine.report(handle, ACTIVE, completed=len(DATA) // 2, speed=len(DATA) / 0.6)
        await world.manager.poll_once()
        assert job.eta == pytest.approx(0.3, abs=0.01)
        assert world.manager.poller.next_poll_in() == pytest.approx(0.35, abs=0.01)
        world.engine.report(handle, ACTIVE, completed=len(DATA) // 2, speed=1.0)  # hours left
        await world.manager.poll_once()
        assert world.manager.poller.next_poll_in() == 10.0

    scenario(tmp_path, body, poll_interval=10.0)


def test_an_engine_that_says_a_transfer_ended_wakes_the_poll_at_once(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        await world.manager.start()  # the poll loop, with an interval no test would wait for
        job = await world.submit()
        await world.handed_over(job)
        polls = len(world.engine.called("poll"))
        world.engine.finish(job.handle, DATA)
        notifier = threading.Thread(target=world.engine.on_finish)  # engines call from their threads
        notifier.start()
        notifier.join()
        await world.state(job, State.COMPLETED)
        assert len(world.engine.called("poll")) == polls + 1
        assert world.model_files() == ["lora/model.safetensors"]

    scenario(tmp_path, body, poll_interval=3600.0)


def test_a_transfer_that_ends_before_its_hand_over_is_done_is_noticed_without_the_interval(
    tmp_path: Path,
) -> None:
    """aria2 may say a small file is complete before its answer to addUri is back: the wake-up
    finds the job still busy, so the poll looks again a moment later, not an interval later."""

    async def body(world: World) -> None:
        await world.manager.start()
        engine = world.engine
        plain_start = engine.start

        def start_and_finish_at_once(transfer: Transfer) -> str:
            handle = plain_start(transfer)
            engine.finish(handle, DATA)
            engine.on_finish()  # told while the job's hand-over is still running
            time.sleep(0.05)
            return handle

        engine.start = start_and_finish_at_once  # type: ignore[method-assign]
        job = await world.submit()
        await world.state(job, State.COMPLETED)
        assert world.model_files() == ["lora/model.safetensors"]

    scenario(tmp_path, body, poll_interval=3600.0)


def test_a_control_file_aria2_writes_just_after_a_cancel_is_swept_too(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("orchestrator.pipeline.work.SWEEP_AFTER", 0.05)

    async def body(world: World) -> None:
        job, _ = await world.downloading()
        await world.manager.cancel(job.id)
        late = world.staging(job) / "model.safetensors.aria2"  # written as the transfer let go
        late.parent.mkdir(parents=True, exist_ok=True)
        late.write_bytes(b"aria2 control file")
        await world.until(lambda: not world.staging(job).exists(), "the staging folder swept")

    scenario(tmp_path, body)


def test_a_poll_answered_while_a_cancel_removes_the_transfer_adds_nothing_again(tmp_path: Path) -> None:
    """The poll may ask about the transfer just as the cancel removes it: the engine then says it
    does not know it, which must not read as "lost, add it again" (an orphan transfer writing
    into the staging folder after the cancel)."""

    async def body(world: World) -> None:
        job, handle = await world.downloading()
        engine = world.engine
        plain_remove = engine.remove
        removing = threading.Event()

        def slow_remove(gone: str) -> None:
            plain_remove(gone)  # the engine no longer knows it...
            removing.set()
            time.sleep(0.3)  # ...while the remove call has not returned yet

        engine.remove = slow_remove  # type: ignore[method-assign]
        cancel = asyncio.create_task(world.manager.cancel(job.id))
        await asyncio.to_thread(removing.wait, 5)
        await world.manager.poll_once()
        await cancel
        await world.state(job, State.CANCELLED)
        assert [call for call in engine.calls if call[0] == "start"] == [("start", handle)]
        assert not world.staging(job).exists()

    scenario(tmp_path, body)


def test_stopping_before_a_job_ran_leaves_no_unawaited_work(tmp_path: Path) -> None:
    async def main() -> None:
        world = make_world(tmp_path)
        await world.manager.submit({"url": URL, "type": "lora"})  # its task has not run a step yet
        await world.close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]


# -- stalls and verifying -------------------------------------------------------------------------


def stalling_world(tmp_path: Path) -> World:
    world = make_world(tmp_path)
    world.settings = dataclasses.replace(world.settings, stall_seconds=0.05)
    world.manager.ctx.settings = world.settings
    return world


def test_a_stalled_transfer_is_asked_for_again_and_continues(tmp_path: Path) -> None:
    async def main() -> None:
        world = stalling_world(tmp_path)
        try:
            job, handle = await world.downloading()
            world.engine.write(handle, DATA[:1000])
            world.engine.report(handle, ACTIVE, completed=1000, speed=3.0)
            await world.manager.poll_once()  # the watchdog starts counting
            await asyncio.sleep(0.1)  # 3 bytes a second: a trickle
            await world.manager.poll_once()
            await world.until(
                lambda: len(world.engine.called("start")) == 2, "the transfer to be added again"
            )
            assert world.engine.called("remove") == [handle]  # stopped, its control file kept
            assert [url for url, _ in world.resolver.seen] == [URL, URL]  # the link resolved again
            stalled = world.last(job, "stalled")
            assert "asking the server again" in stalled["data"]["message"]
            await world.running(job)
            new = job.handle
            assert new and new != handle
            world.engine.finish(new, DATA)
            await world.manager.poll_once()
            await world.state(job, State.COMPLETED)
        finally:
            await world.close()

    asyncio.run(main())


def test_a_transfer_that_keeps_stalling_fails_as_stalled(tmp_path: Path) -> None:
    async def main() -> None:
        world = stalling_world(tmp_path)
        try:
            job, _ = await world.downloading()
            for _ in range(4):
                await world.running(job)
                world.engine.report(job.handle or "", ACTIVE, completed=10, speed=1.0)
                await world.manager.poll_once()
                await asyncio.sleep(0.1)
                await world.manager.poll_once()
                await world.until(lambda: world.manager.busy(job.id) is False, "the step to end")
                if job.state == State.FAILED:
                    break
            assert job.state == State.FAILED
            assert job.error_code == "stalled"
            assert "retry later" in (job.error_message or "")
        finally:
            await world.close()

    asyncio.run(main())


def test_while_the_engine_verifies_the_job_says_so_and_is_not_stalled(tmp_path: Path) -> None:
    async def main() -> None:
        world = stalling_world(tmp_path)
        try:
            job, handle = await world.downloading()
            world.engine.report(handle, ACTIVE, completed=len(DATA), total=len(DATA), verified=0)
            await world.manager.poll_once()
            await asyncio.sleep(0.1)
            world.engine.report(handle, ACTIVE, completed=len(DATA), total=len(DATA), verified=40960)
            await world.manager.poll_once()
            assert world.last(job, "progress")["data"]["verified"] == 40960
            assert job.public()["verified"] == 40960
            assert world.engine.called("start") == [handle]  # not taken for a stall
            assert "stalled" not in world.statuses(job)
        finally:
            await world.close()

    asyncio.run(main())


# -- what is planted in the models folder -------------------------------------------------------


def test_a_fifo_planted_where_the_download_should_be_fails_at_once_instead_of_hanging(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading()
        staged = world.staging(job) / "model.safetensors"
        staged.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(staged)  # reading it would block forever
        world.engine.report(handle, COMPLETE, completed=len(DATA), total=len(DATA))
        await world.manager.poll_once()
        await world.state(job, State.FAILED)
        assert job.error_code == "not_a_regular_file"

    scenario(tmp_path, body)


def test_a_fifo_planted_at_the_target_name_is_refused_not_read(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        (world.models / "lora").mkdir(parents=True)
        os.mkfifo(world.models / "lora" / "model.safetensors")
        job = await world.submit()
        await world.state(job, State.FAILED)
        assert job.error_code == "not_a_regular_file"

    scenario(tmp_path, body)


def test_an_empty_answer_is_never_installed_as_a_model(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        world.resolver.answers[URL] = Resolved(urls=[URL], source="direct", filename="model.safetensors")
        job, handle = await world.downloading()
        world.engine.finish(handle, b"")
        await world.manager.poll_once()
        await world.state(job, State.FAILED)
        assert job.error_code == "empty_file"
        assert world.model_files() == [] and world.staging_files() == []

    scenario(tmp_path, body)


def test_jobs_dropped_past_the_record_limit_take_their_partial_data_with_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.pipeline import registry

    monkeypatch.setattr(registry, "MAX_JOBS", 3)

    async def body(world: World) -> None:
        world.resolver.answers[URL] = OrchestratorError("origin_error", "gone", 502)
        failed = []
        for n in range(3):
            job, _ = await world.manager.submit({"url": URL, "type": "lora", "name": f"m{n}.bin"})
            await world.state(job, State.FAILED)
            (world.staging(job)).mkdir(parents=True, exist_ok=True)
            (world.staging(job) / f"m{n}.bin").write_bytes(b"partial")  # kept for a retry
            failed.append(job)
        await world.manager.submit({"url": f"{URL}?new", "type": "lora"})
        assert failed[0].id not in world.manager.jobs  # the oldest finished job is dropped...
        assert not world.staging(failed[0]).exists()  # ...and its partial data with it
        assert world.staging(failed[1]).exists()

    scenario(tmp_path, body)


def test_same_name_and_size_says_what_was_compared_and_verify_compares_the_bytes(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        target = world.models / "lora" / "model.safetensors"
        target.parent.mkdir(parents=True)
        target.write_bytes(bytes(len(DATA)))  # the same name and size, other bytes
        job = await world.submit()
        await world.state(job, State.COMPLETED)
        success = world.last(job, "success")["data"]
        assert success["already_present"] is True and success["compared"] == "name and size"
        # asked to verify: the file is fetched and compared byte for byte
        checked, _ = await world.manager.submit({"url": URL, "type": "lora", "verify_existing": True})
        await world.handed_over(checked)
        world.engine.finish(checked.handle or "", DATA)
        await world.manager.poll_once()
        await world.state(checked, State.FAILED)
        assert checked.error_code == "file_exists"  # a different file: never taken for the same
        assert target.read_bytes() == bytes(len(DATA))  # and never overwritten

    scenario(tmp_path, body)


class AwayEngine(FakeEngine):
    """An engine that does not answer until told it is back."""

    def __init__(self) -> None:
        super().__init__()
        self.away = True

    def start(self, transfer):
        if self.away:
            raise ConnectionError("connection refused")
        return super().start(transfer)

    def pause(self, handle: str) -> None:
        if self.away:
            raise ConnectionError("connection refused")
        super().pause(handle)

    def reachable(self) -> bool:
        return not self.away


def test_a_job_submitted_while_the_engine_is_away_waits_for_it_instead_of_failing(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job = await world.submit()
        await world.until(lambda: job.state == State.QUEUED and not world.manager.busy(job.id), "waiting")
        assert job.error_code is None and job.handle is None
        assert "Waiting for the download engine" in world.last(job, "queued")["data"]["message"]
        world.engine.away = False
        await world.manager.poller.carry_out_what_waited()
        await world.running(job)  # handed over once the engine answers
        assert job.state == State.DOWNLOADING

    scenario(tmp_path, body, engine=AwayEngine())


def test_a_pause_the_engine_did_not_answer_is_said_and_done_when_it_is_back(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        world.engine.away = False
        job, _ = await world.downloading()
        world.engine.away = True
        with pytest.raises(OrchestratorError) as caught:
            await world.manager.pause(job.id)
        assert caught.value.code == "engine_unavailable" and caught.value.status == 503
        assert "paused as soon as the engine is back" in caught.value.message
        assert job.state == State.DOWNLOADING  # not yet
        world.engine.away = False
        await world.manager.poller.carry_out_what_waited()
        assert job.state == State.PAUSED

    scenario(tmp_path, body, engine=AwayEngine())


def test_a_job_removed_elsewhere_keeps_its_bytes_until_it_is_cancelled_here(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        job, handle = await world.downloading()
        world.engine.write(handle, DATA[:1000])
        world.engine.report(handle, REMOVED)
        await world.manager.poll_once()
        assert job.state == State.CANCELLED and world.staging_files()  # kept for a retry
        await world.manager.cancel(job.id)  # cancelled here too: now the bytes go
        assert world.staging_files() == []

    scenario(tmp_path, body)
