"""What an outside answer may make the app hold: capped reads, no recursion crash, small metadata."""

from __future__ import annotations

import gzip
import json

import pytest
import requests

from orchestrator import bounds
from orchestrator.errors import OrchestratorError
from orchestrator.policy import OPEN
from orchestrator.sources import Credentials, civitai
from tests.fakes.service import Reply, Request, Service


class Answers(Service):
    """A CivitAI-shaped API whose model-version record is whatever a test puts there."""

    def __init__(self) -> None:
        super().__init__("127.0.0.3")
        self.body = b"{}"
        self.headers: dict[str, str] = {}

    def respond(self, request: Request) -> Reply:
        return Reply(200, {"Content-Type": "application/json", **self.headers}, self.body)


@pytest.fixture
def api(monkeypatch):
    with Answers() as server:
        monkeypatch.setenv("CIVITAI_BASE_URL", server.base_url)
        yield server


def civitai_error(api: Answers) -> OrchestratorError:
    with pytest.raises(OrchestratorError) as caught:
        civitai.resolve("100@200", Credentials(), OPEN)
    return caught.value


def test_a_huge_api_answer_is_refused_before_it_is_read_whole(api: Answers) -> None:
    api.body = json.dumps({"files": ["x" * 1000] * 20_000}).encode()  # 20 MB
    error = civitai_error(api)
    assert error.code == "origin_error" and "far larger" in error.message


def test_a_small_gzip_answer_that_inflates_hugely_is_counted_after_decompression(api: Answers) -> None:
    api.body = gzip.compress(b'{"a": "' + b"x" * (50 * 1024 * 1024) + b'"}')  # ~50 KB on the wire
    api.headers = {"Content-Encoding": "gzip"}
    assert len(api.body) < 200_000
    error = civitai_error(api)
    assert error.code == "origin_error" and "far larger" in error.message


def test_json_nested_past_pythons_stack_is_an_answer_error_not_a_crash(api: Answers) -> None:
    api.body = b"[" * 100_000 + b"]" * 100_000
    assert civitai_error(api).code == "origin_error"


def test_metadata_is_trimmed_to_what_a_person_reads_and_stays_small() -> None:
    huge = {
        "model_name": "x" * 100_000,
        "trained_words": [f"word {n}" for n in range(50_000)],
        "civitai": {"images": [{"url": "u" * 5000} for _ in range(1000)]},
        "deep": json.loads("[" * 50 + "1" + "]" * 50),
    }
    kept = bounds.bounded_metadata(huge)
    assert len(json.dumps(kept)) <= bounds.MAX_METADATA_BYTES
    assert kept["model_name"].endswith("…") and len(kept["model_name"]) == bounds.MAX_TEXT
    assert len(kept["trained_words"]) == bounds.MAX_ITEMS


def test_read_json_keeps_small_answers_whole(api: Answers) -> None:
    api.body = b'{"id": 200, "files": []}'
    response = requests.get(api.base_url + "/api/v1/model-versions/200", stream=True, timeout=5)
    assert bounds.read_json(response, "CivitAI") == {"id": 200, "files": []}
