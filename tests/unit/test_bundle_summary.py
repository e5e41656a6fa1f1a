"""A bundle's one state, bytes, rate, ETA and actions, summed up from its jobs (a pure function),
and the list plans' limits. The integration tests (tests/integration/test_bundles.py) drive
the same through a real aria2c."""

from __future__ import annotations

import pytest

from orchestrator.bundles import plans
from orchestrator.bundles.model import Bundle, Entry
from orchestrator.bundles.summary import summarize
from orchestrator.errors import OrchestratorError
from orchestrator.jobs import Job, State

MB = 1_000_000


def job(job_id: str, state: State, size: int | None = 10 * MB, downloaded: int = 0, rate: float = 0.0) -> Job:
    made = Job(id=job_id, url=f"https://example.com/{job_id}.safetensors", model_type="lora", folder="lora")
    made.state, made.size, made.downloaded, made.rate = state, size, downloaded, rate
    made.filename = f"{job_id}.safetensors"
    if state in (State.DOWNLOADING, State.PAUSED):
        made.handle = f"gid-{job_id}"  # the engine has it: it may be paused
    if state == State.FAILED:
        made.error_code, made.error_message = "origin_not_found", "The file does not exist (HTTP 404)."
    return made


def summed(*jobs: Job, **bundle: object) -> dict:
    made = Bundle(id="b1", kind="list", name="set", jobs=[j.id for j in jobs], **bundle)  # type: ignore[arg-type]
    return summarize(made, {j.id: j for j in jobs})


def test_downloading_while_any_file_moves_with_bytes_rate_and_eta_over_all():
    done = job("a", State.COMPLETED)
    moving = job("b", State.DOWNLOADING, downloaded=4 * MB, rate=2 * MB)
    waiting = job("c", State.QUEUED)
    summary = summed(done, moving, waiting)
    assert summary["state"] == "downloading"
    assert (summary["downloaded"], summary["total"]) == (14 * MB, 30 * MB)
    assert summary["progress"] == pytest.approx(14 / 30, abs=1e-4)
    assert summary["rate"] == 2.0 and summary["eta"] == 8.0  # 16 MB left at 2 MB/s
    assert summary["counts"] == {"total": 3, "completed": 1, "downloading": 1, "queued": 1}
    assert summary["actions"] == ["pause", "cancel"]


def test_an_unknown_size_leaves_total_and_eta_unknown():
    summary = summed(job("a", State.DOWNLOADING, size=None, downloaded=MB, rate=MB), job("b", State.QUEUED))
    assert summary["total"] is None and summary["eta"] is None


def test_paused_only_when_every_unfinished_file_is_paused():
    assert summed(job("a", State.PAUSED), job("b", State.COMPLETED))["state"] == "paused"
    assert summed(job("a", State.PAUSED), job("b", State.QUEUED))["state"] == "queued"
    assert "resume" in summed(job("a", State.PAUSED))["actions"]


def test_failed_once_the_rest_finished_naming_what_failed_and_offering_retry():
    still_running = summed(job("a", State.FAILED), job("b", State.DOWNLOADING, rate=MB))
    assert still_running["state"] == "downloading" and still_running["failed"] == []
    summary = summed(job("a", State.FAILED), job("b", State.COMPLETED))
    assert summary["state"] == "failed"
    assert summary["failed"] == [
        {
            "job": "a",
            "label": "a.safetensors",
            "code": "origin_not_found",
            "message": "The file does not exist (HTTP 404).",
        }
    ]
    assert summary["actions"] == ["cancel", "retry"]


def test_completed_only_when_every_file_is_in_place_and_a_folder_only_once_it_is_moved():
    assert summed(job("a", State.COMPLETED), job("b", State.COMPLETED))["state"] == "completed"
    folder = summed(job("a", State.COMPLETED), destination="diffusers/transformer")
    assert folder["state"] == "installing" and folder["actions"] == ["cancel"]
    placed = summed(job("a", State.COMPLETED), destination="diffusers/transformer", installed=True)
    assert placed["state"] == "completed" and placed["progress"] == 1.0 and placed["actions"] == []


def test_a_cancelled_bundle_is_cancelled_whatever_its_files_say_and_may_be_retried():
    summary = summed(job("a", State.COMPLETED), job("b", State.CANCELLED), cancelled=True)
    assert summary["state"] == "cancelled" and summary["actions"] == ["retry"]


def test_entries_that_are_no_jobs_are_listed_with_their_reason():
    entry = Entry("4x.pth", "upscale_models", "no_link", note="The workflow has no link for it.")
    summary = summed(job("a", State.COMPLETED), entries=[entry])
    assert summary["entries"][0]["status"] == "no_link" and summary["counts"]["total"] == 1


# -- list plans: what a pasted list may be --------------------------------------------------------


def test_the_same_link_twice_is_one_download():
    line = "https://example.com/a.safetensors lora"
    plan = plans.list_plan({"text": f"{line}\n{line}\nhttps://example.com/b.pt embedding"}, "default")
    assert [request["url"] for request in plan.requests] == [
        "https://example.com/a.safetensors",
        "https://example.com/b.pt",
    ]


def test_a_bad_line_refuses_the_whole_list_naming_it():
    with pytest.raises(OrchestratorError) as refused:
        plans.list_plan(
            {"text": "https://example.com/a.safetensors lora\nftp://x/y.ckpt checkpoint"}, "default"
        )
    assert refused.value.code == "invalid_list" and "line:2" in refused.value.message


def test_an_empty_list_and_one_over_the_limit_are_refused():
    with pytest.raises(OrchestratorError) as empty:
        plans.list_plan({"text": "# only a comment\n\n"}, "default")
    assert empty.value.code == "empty_bundle"
    many = [
        {"url": f"https://example.com/{n}.safetensors", "type": "lora"} for n in range(plans.MAX_FILES + 1)
    ]
    with pytest.raises(OrchestratorError) as large:
        plans.list_plan({"items": many}, "default")
    assert large.value.code == "bundle_too_large" and str(plans.MAX_FILES) in large.value.message
