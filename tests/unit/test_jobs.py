"""Job states, the legal transitions between them, and the SQLite store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.jobs import ACTIVE_STATES, FINISHED_STATES, Job, JobStore, State, new_job_id


def make_job(state: State = State.QUEUED, **fields) -> Job:
    job = Job(
        id=new_job_id(), url="https://h.example/m.safetensors", model_type="lora", folder="lora", **fields
    )
    job.state = state
    return job


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (State.COMPLETED, State.DOWNLOADING),
        (State.VERIFYING, State.CANCELLED),
        (State.COMPLETED, State.QUEUED),
        (State.CANCELLED, State.DOWNLOADING),
    ],
)
def test_named_illegal_transitions(old: State, new: State) -> None:
    with pytest.raises(OrchestratorError) as caught:
        make_job(old).move_to(new)
    assert caught.value.code == "invalid_state"


@pytest.mark.parametrize("state", list(State))
def test_staying_in_the_same_state_is_allowed(state: State) -> None:
    job = make_job(state)
    job.move_to(state)
    assert job.state == state


def test_active_and_finished_sets() -> None:
    assert set(ACTIVE_STATES) | set(FINISHED_STATES) == set(State)
    assert not set(ACTIVE_STATES) & set(FINISHED_STATES)
    assert make_job(State.VERIFYING).active
    assert not make_job(State.FAILED).active


def test_new_job_ids_are_distinct_hex() -> None:
    ids = {new_job_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)


# -- public view -------------------------------------------------------------------------------


def test_public_has_the_documented_fields_and_no_tokens() -> None:
    job = make_job(State.DOWNLOADING, size=1000, downloaded=250, filename="m.safetensors")
    job.rate = 2_500_000.0
    job.eta = 0.31
    view = job.public()
    assert set(view) == {
        "id",
        "url",
        "type",
        "folder",
        "state",
        "label",
        "filename",
        "source",
        "engine",
        "progress",
        "downloaded",
        "total",
        "rate",
        "eta",
        "verified",
        "sha256",
        "hashing",
        "path",
        "error",
        "metadata",
        "bundle",
        "already_present",
        "compared",
        "actions",
        "request_id",
        "created",
        "updated",
    }
    assert view["actions"] == ["pause", "cancel"] if job.handle else ["cancel"]
    assert not any("token" in key or "secret" in key for key in view)
    assert view["state"] == "downloading"
    assert view["progress"] == 0.25
    assert view["rate"] == 2.5
    assert view["eta"] == 0.3
    assert view["label"] == "m.safetensors"
    assert view["error"] is None
    json.dumps(view)  # serialisable as it is


def test_public_label_falls_back_and_error_is_an_object() -> None:
    job = make_job(State.FAILED, error_code="origin_not_found", error_message="gone")
    assert job.public()["label"] == job.url
    assert job.public()["error"] == {"code": "origin_not_found", "message": "gone"}
    job.name = "asked.bin"
    assert job.public()["label"] == "asked.bin"


def test_progress_bounds() -> None:
    assert make_job(State.COMPLETED).progress == 1.0
    assert make_job(State.DOWNLOADING, downloaded=10).progress == 0.0  # size unknown
    assert make_job(State.DOWNLOADING, size=10, downloaded=50).progress == 1.0


# -- JobStore ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_id", [None, 7, 3.5, "abc", True, [1, "two", None], {"nested": {"k": [1, 2]}}]
)
def test_store_round_trips_every_field(tmp_path: Path, request_id) -> None:
    store = JobStore(tmp_path / "state" / "jobs.sqlite3")
    job = make_job(
        State.PAUSED,
        name="asked.bin",
        overwrite=True,
        filename="asked.bin",
        source="direct",
        size=1234,
        downloaded=99,
        expected_sha256="a" * 64,
        sha256="b" * 64,
        path="lora/asked.bin",
        error_code="network",
        error_message="drop",
        engine="aria2",
        handle="0123456789abcdef",
        request_id=request_id,
        metadata={"host": "h.example", "nested": {"list": [1, 2, 3]}, "unicode": "模型"},
    )
    job.rate, job.eta = 5.0, 3.0
    store.save(job)
    [loaded] = store.load_all()
    assert isinstance(loaded.state, State)
    assert loaded.state is State.PAUSED
    for name in (
        "id",
        "url",
        "model_type",
        "folder",
        "name",
        "overwrite",
        "filename",
        "source",
        "size",
        "downloaded",
        "expected_sha256",
        "sha256",
        "path",
        "error_code",
        "error_message",
        "engine",
        "handle",
        "request_id",
        "metadata",
        "created",
        "updated",
    ):
        assert getattr(loaded, name) == getattr(job, name), name
    # live numbers are not stored
    assert loaded.rate == 0.0
    assert loaded.eta is None
    store.close()


def test_store_survives_reopening_and_keeps_order(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    first, second, third = make_job(), make_job(State.FAILED), make_job(State.COMPLETED)
    first.created, second.created, third.created = 100.0, 200.0, 300.0
    for job in (third, first, second):
        store.save(job)
    second.move_to(State.QUEUED)  # saving again replaces the row
    store.save(second)
    store.close()

    reopened = JobStore(path)
    loaded = reopened.load_all()
    assert [j.id for j in loaded] == [first.id, second.id, third.id]
    assert [j.state for j in loaded] == [State.QUEUED, State.QUEUED, State.COMPLETED]
    reopened.close()


def test_store_delete(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    keep, drop = make_job(), make_job()
    store.save(keep)
    store.save(drop)
    store.delete(drop.id)
    store.delete("not-there")
    assert [j.id for j in store.load_all()] == [keep.id]
    store.close()


def test_store_ignores_unknown_columns_from_a_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    job = make_job()
    store.save(job)
    store.close()
    with sqlite3.connect(path) as db:
        (data,) = db.execute("SELECT data FROM jobs").fetchone()
        record = json.loads(data)
        record["added_later"] = 1
        db.execute("UPDATE jobs SET data = ?", (json.dumps(record),))
    reopened = JobStore(path)
    assert [j.id for j in reopened.load_all()] == [job.id]
    reopened.close()
