"""The transition table is exactly the moves the pipeline makes.

Every state change goes through Job.move_to, which refuses a move the table lacks,
so a move the code makes outside the table fails the test that makes it. This test
drives the real manager (with the in-memory engine) through every situation the
pipeline knows and records each move: the table must hold nothing more.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from orchestrator.bundles.model import BundleStore
from orchestrator.bundles.service import BundleService
from orchestrator.engines.base import COMPLETE, ERROR, PAUSED, REMOVED, WAITING
from orchestrator.errors import OrchestratorError
from orchestrator.jobs import TRANSITIONS, Job, State
from orchestrator.sources import Resolved
from tests.unit.fake_engine import FakeEngine
from tests.unit.test_manager import DATA, SHA, URL, World, make_world

Scenario = Callable[[World], Awaitable[None]]


async def resolved_then_queued_then_moving(world: World) -> None:
    job, handle = await world.downloading()  # queued -> resolving -> queued -> downloading
    world.engine.report(handle, WAITING)
    await world.manager.poll_once()  # downloading -> queued
    world.engine.report(handle, ERROR, error_code="origin_not_found", error_message="gone")
    await world.manager.poll_once()  # queued -> failed
    await world.state(job, State.FAILED)
    await world.manager.cancel(job.id)  # failed -> cancelled
    await world.manager.retry(job.id)  # cancelled -> queued
    await world.running(job)


async def paused_and_resumed(world: World) -> None:
    job, handle = await world.downloading()
    await world.manager.pause(job.id)  # downloading -> paused
    await world.manager.resume(job.id)  # paused -> downloading
    world.engine.report(handle, WAITING)
    await world.manager.poll_once()
    await world.manager.pause(job.id)  # queued -> paused
    world.engine.report(handle, WAITING)
    await world.manager.poll_once()  # paused -> queued (resumed in another client)
    await world.manager.cancel(job.id)  # queued -> cancelled


async def finished_from_each_state(world: World) -> None:
    for state in (State.DOWNLOADING, State.QUEUED, State.PAUSED):
        job, handle = await world.downloading({"url": f"{URL}?{state}", "name": f"{state}.safetensors"})
        if state == State.QUEUED:
            world.engine.report(handle, WAITING)
            await world.manager.poll_once()
        elif state == State.PAUSED:
            await world.manager.pause(job.id)
        world.engine.finish(handle, DATA)
        await world.manager.poll_once()  # -> verifying -> completed
        await world.state(job, State.COMPLETED)


async def bad_bytes_fail_while_verifying(world: World) -> None:
    job, handle = await world.downloading()
    world.engine.finish(handle, DATA[:100])  # the source said len(DATA)
    await world.manager.poll_once()
    await world.state(job, State.FAILED)  # verifying -> failed


async def errors_from_each_state(world: World) -> None:
    job, handle = await world.downloading()
    await world.manager.pause(job.id)
    world.engine.report(handle, ERROR, error_code="disk_full", error_message="full")
    await world.manager.poll_once()  # paused -> failed
    await world.state(job, State.FAILED)
    job, handle = await world.downloading({"url": f"{URL}?2"})
    world.engine.report(handle, ERROR, error_code="disk_full", error_message="full")
    await world.manager.poll_once()  # downloading -> failed
    await world.state(job, State.FAILED)
    await world.manager.retry(job.id)  # failed -> queued
    await world.state(job, State.QUEUED)


async def cancelled_in_each_state(world: World) -> None:
    job, handle = await world.downloading()
    await world.manager.cancel(job.id)  # downloading -> cancelled
    job, handle = await world.downloading({"url": f"{URL}?p"})
    await world.manager.pause(job.id)
    await world.manager.cancel(job.id)  # paused -> cancelled
    job, handle = await world.downloading({"url": f"{URL}?r"})
    world.engine.report(handle, REMOVED)
    await world.manager.poll_once()  # removed in another aria2 client: downloading -> cancelled
    assert job.state == State.CANCELLED


async def cancelled_while_resolving(world: World) -> None:
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    original = world.resolver.__call__

    def slow(url: str, credentials: object, policy: object) -> Resolved:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(5)
        return original(url, credentials, policy)  # type: ignore[arg-type]

    world.manager.ctx.resolve = slow
    job, _ = await world.manager.submit({"url": URL, "type": "lora"})
    await world.until(lambda: job.state == State.RESOLVING, "resolving")
    await world.manager.cancel(job.id)  # resolving -> cancelled
    release.set()


async def resolving_fails(world: World) -> None:
    world.resolver.answers[URL] = OrchestratorError("origin_not_found", "gone", 502)
    job = await world.submit()
    await world.state(job, State.FAILED)  # resolving -> failed


async def already_in_place(world: World) -> None:
    folder = world.models / "lora"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(DATA)
    job = await world.submit()
    await world.state(job, State.COMPLETED)  # resolving -> completed (same name and size)
    world.resolver.answers[f"{URL}?h"] = Resolved(
        urls=[URL], source="civitai", filename="model.safetensors", size=len(DATA), sha256=SHA
    )
    job = await world.submit({"url": f"{URL}?h"})
    await world.state(job, State.COMPLETED)  # resolving -> verifying -> completed (hash)


async def lost_and_expired_transfers_are_added_again(world: World) -> None:
    job, handle = await world.downloading()
    world.engine.write(handle, DATA[:10])
    world.engine.report(handle, ERROR, error_code="origin_forbidden", http_status=403, completed=10)
    await world.manager.poll_once()  # downloading -> resolving (expired link)
    await world.handed_over(job)
    await world.manager.poll_once()
    await world.manager.pause(job.id)
    world.engine.statuses.clear()  # the daemon restarted without its session
    await world.manager.poll_once()  # paused -> resolving -> paused
    await world.handed_over(job)
    assert job.state == State.PAUSED


async def recovered_after_a_restart(world: World) -> None:
    store = world.store
    for job_id, state in (("0000000000a1", State.RESOLVING), ("0000000000a2", State.PAUSED)):
        store.save(Job(id=job_id, url=f"{URL}?{job_id}", model_type="lora", folder="lora", state=state))
    await world.manager.start()
    resolving, paused = world.manager.get("0000000000a1"), world.manager.get("0000000000a2")
    await world.handed_over(resolving)  # resolving -> queued -> resolving -> queued
    await world.handed_over(paused)  # paused -> resolving -> paused
    assert (resolving.state, paused.state) == (State.QUEUED, State.PAUSED)


async def completed_while_queued_before_any_poll_said_active(world: World) -> None:
    job = await world.submit()
    await world.handed_over(job)
    world.engine.report(job.handle or "", COMPLETE, completed=len(DATA), total=len(DATA))
    world.engine.write(job.handle or "", DATA)
    await world.manager.poll_once()  # queued -> verifying
    await world.state(job, State.COMPLETED)


async def paused_elsewhere(world: World) -> None:
    job, handle = await world.downloading()
    world.engine.report(handle, PAUSED)
    await world.manager.poll_once()  # downloading -> paused, by another aria2 client
    assert job.state == State.PAUSED


async def taken_back_with_its_cancelled_bundle(world: World) -> None:
    bundles = BundleService(world.manager, BundleStore(world.settings.database_path), world.hub)
    await bundles.start()
    try:
        items = [
            {"url": URL, "type": "lora"},
            {"url": f"{URL}?other", "type": "lora", "name": "b.safetensors"},
        ]
        made = await bundles.create({"kind": "list", "items": items})
        job, other = [world.manager.get(job_id) for job_id in made.jobs]
        await world.running(job)
        await world.running(other)
        world.engine.finish(job.handle or "", DATA)
        await world.manager.poll_once()
        await world.state(job, State.COMPLETED)
        await bundles.act(made.id, "cancel")  # completed -> cancelled: the file is taken back
        assert (job.state, other.state) == (State.CANCELLED, State.CANCELLED)
        assert world.model_files() == []
    finally:
        await bundles.stop()
        bundles.store.close()


SCENARIOS: list[Scenario] = [
    resolved_then_queued_then_moving,
    paused_and_resumed,
    finished_from_each_state,
    bad_bytes_fail_while_verifying,
    errors_from_each_state,
    cancelled_in_each_state,
    cancelled_while_resolving,
    resolving_fails,
    already_in_place,
    lost_and_expired_transfers_are_added_again,
    recovered_after_a_restart,
    completed_while_queued_before_any_poll_said_active,
    paused_elsewhere,
    taken_back_with_its_cancelled_bundle,
]


def test_the_table_holds_exactly_the_moves_the_pipeline_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: set[tuple[State, State]] = set()
    move_to = Job.move_to

    def recording(job: Job, new: State) -> None:
        old = job.state
        move_to(job, new)  # refuses a move the table lacks: the scenario fails there
        if new != old:
            made.add((old, new))

    monkeypatch.setattr(Job, "move_to", recording)

    async def run(scenario: Scenario, folder: Path) -> None:
        world = make_world(folder, engine=FakeEngine())
        try:
            if scenario is not recovered_after_a_restart:
                await world.manager.start()
            await scenario(world)
        finally:
            await world.close()

    for index, scenario in enumerate(SCENARIOS):
        asyncio.run(run(scenario, tmp_path / str(index)))

    table = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    assert made <= table
    unused = sorted(f"{old.value} -> {new.value}" for old, new in table - made)
    assert unused == [], f"moves in the table that the pipeline never makes: {unused}"


def test_sha_of_the_test_data_is_what_the_scenarios_publish() -> None:
    assert hashlib.sha256(DATA).hexdigest() == SHA
