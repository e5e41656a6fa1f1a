"""The REST API and the WebSocket, through Starlette's TestClient, with an in-memory engine.

Links point at the fake origin on 127.0.0.1, so the real `direct` source resolves them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from orchestrator.app import create_app
from orchestrator.config import MODEL_TYPES, Settings
from orchestrator.engines import EngineChoice
from orchestrator.security import RedactTokens
from tests.fakes.origin import Origin

from .fake_engine import FakeEngine

BASE_URL = "http://127.0.0.1:8000"  # a loopback Host, as a local browser sends
WS_URL = "ws://127.0.0.1:8000/ws"
TOKEN = "unit-test-access-token-0123456789"


class App:
    def __init__(self, client: TestClient, engine: FakeEngine, settings: Settings) -> None:
        self.client = client
        self.engine = engine
        self.settings = settings

    def submit(self, body: dict[str, Any], expect: int = 201) -> dict:
        answer = self.client.post("/api/downloads", json=body)
        assert answer.status_code == expect, answer.text
        return answer.json()["job"]

    def job(self, job_id: str) -> dict:
        answer = self.client.get(f"/api/downloads/{job_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()["job"]

    def wait_state(self, job_id: str, *states: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in states:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job stayed {job['state']}, wanted {states}: {job}")
            time.sleep(0.02)

    def staging_files(self) -> list[str]:
        root = self.settings.staging_dir
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    settings = Settings(
        models_dir=tmp_path / "models",
        state_dir=tmp_path / "state",
        poll_interval=0.05,
        engine="requests",
        access_token=TOKEN,
    )
    engine = FakeEngine()
    with TestClient(create_app(settings, choice=EngineChoice(engine)), base_url=BASE_URL) as client:
        yield App(client, engine, settings)


def error_of(answer) -> tuple[int, str]:
    body = answer.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return answer.status_code, body["error"]["code"]


def receive_until(ws, check: Callable[[dict], bool], limit: int = 50) -> dict:
    for _ in range(limit):
        message = ws.receive_json()
        if check(message):
            return message
    raise AssertionError("no matching message")


# -- REST --------------------------------------------------------------------------------------


def test_health(app: App) -> None:
    answer = app.client.get("/api/health")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok"
    assert body["engine"]["name"] == "fake"
    assert body["engine"]["fallback"] is True
    assert body["jobs"] == {"active": 0, "total": 0}
    assert body["clients"] == 0
    assert body["version"]


def test_types(app: App) -> None:
    body = app.client.get("/api/types").json()
    assert body["layout"] == "default"
    assert [t["name"] for t in body["types"]] == ["auto", *MODEL_TYPES]
    auto, *real = body["types"]
    assert auto["folder"] == ""  # the source's answer picks one of the others
    assert all(t["folder"] == t["name"] and t["description"] for t in real)


def test_empty_list(app: App) -> None:
    assert app.client.get("/api/downloads").json() == {"jobs": []}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"\xff\xfe\x00", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_message"),
        (b'"a string"', 400, "invalid_message"),
        (json.dumps({"url": "https://h.example/m.bin", "type": "../x"}).encode(), 400, "unknown_type"),
        (json.dumps({"url": "https://h.example/m.bin"}).encode(), 400, "unknown_type"),
        (json.dumps({"url": "", "type": "lora"}).encode(), 400, "empty_url"),
        (json.dumps({"url": "ftp://h.example/m", "type": "lora"}).encode(), 400, "unsupported_scheme"),
        (json.dumps({"url": "javascript:alert(1)", "type": "lora"}).encode(), 400, "unsupported_scheme"),
        (json.dumps({"url": "http://", "type": "lora"}).encode(), 400, "invalid_url"),
        (
            json.dumps({"url": "https://h.example/m", "type": "lora", "name": ".."}).encode(),
            400,
            "invalid_filename",
        ),
        (
            json.dumps({"url": "https://h.example/m", "type": "lora", "pad": "x" * 70_000}).encode(),
            413,
            "message_too_large",
        ),
    ],
)
def test_create_refuses_bad_requests(app: App, body: bytes, status: int, code: str) -> None:
    answer = app.client.post("/api/downloads", content=body, headers={"Content-Type": "application/json"})
    assert error_of(answer) == (status, code)
    assert app.client.get("/api/downloads").json() == {"jobs": []}
    assert app.engine.calls == []
    assert not any(p.is_file() for p in app.settings.models_dir.rglob("*"))


def test_create_get_list_and_duplicate(app: App, origin: Origin) -> None:
    origin.add_file("/m/model.safetensors", 5000)
    url = origin.url("/m/model.safetensors")
    job = app.submit(
        {"url": url, "type": "lora", "id": 42, "civitai_token": "civ-TOKEN-xyz", "hf_token": "hf_TOKEN_abc"}
    )
    assert job["url"] == url
    assert job["type"] == "lora"
    assert job["folder"] == "lora"
    assert job["request_id"] == 42
    job = app.wait_state(job["id"], "downloading")
    assert job["filename"] == "model.safetensors"
    assert job["total"] == 5000
    assert job["source"] == "direct"

    again = app.client.post("/api/downloads", json={"url": url, "type": "lora"})
    assert again.status_code == 200
    assert again.json()["job"]["id"] == job["id"]

    listed = app.client.get("/api/downloads").json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    health = app.client.get("/api/health").json()
    assert health["jobs"] == {"active": 1, "total": 1}
    for path in ("/api/downloads", f"/api/downloads/{job['id']}", "/api/health"):
        assert "TOKEN" not in app.client.get(path).text


def test_unknown_job_is_404(app: App) -> None:
    for method, path in [
        ("GET", "/api/downloads/zzz"),
        ("DELETE", "/api/downloads/zzz"),
        ("POST", "/api/downloads/zzz/pause"),
        ("POST", "/api/downloads/zzz/resume"),
        ("POST", "/api/downloads/zzz/retry"),
    ]:
        assert error_of(app.client.request(method, path)) == (404, "not_found"), path


def test_actions_and_their_states(app: App, origin: Origin) -> None:
    origin.add_file("/a.bin", 1000)
    job_id = app.submit({"url": origin.url("/a.bin"), "type": "vae"})["id"]
    app.wait_state(job_id, "downloading")

    assert error_of(app.client.post(f"/api/downloads/{job_id}/resume")) == (409, "invalid_state")
    assert error_of(app.client.post(f"/api/downloads/{job_id}/retry")) == (409, "invalid_state")
    assert error_of(app.client.post(f"/api/downloads/{job_id}/explode")) == (404, "not_found")

    paused = app.client.post(f"/api/downloads/{job_id}/pause")
    assert paused.status_code == 200
    assert paused.json()["job"]["state"] == "paused"
    resumed = app.client.post(f"/api/downloads/{job_id}/resume")
    assert resumed.json()["job"]["state"] == "downloading"

    handle = app.engine.called("start")[0]
    app.engine.write(handle, b"partial")
    assert app.staging_files()
    cancelled = app.client.delete(f"/api/downloads/{job_id}")
    assert cancelled.status_code == 200
    assert cancelled.json()["job"]["state"] == "cancelled"
    assert app.staging_files() == []
    retried = app.client.post(f"/api/downloads/{job_id}/retry")
    assert retried.json()["job"]["state"] in ("queued", "resolving", "downloading")


def test_finished_download_is_listed_as_completed(app: App, origin: Origin) -> None:
    data = origin.add_file("/done.safetensors", 3000)
    job_id = app.submit({"url": origin.url("/done.safetensors"), "type": "embedding"})["id"]
    app.wait_state(job_id, "downloading")
    app.engine.finish(app.engine.called("start")[0], data)
    job = app.wait_state(job_id, "completed", "failed")
    assert job["state"] == "completed"
    assert job["path"] == "embedding/done.safetensors"
    assert (app.settings.models_dir / "embedding" / "done.safetensors").read_bytes() == data
    assert error_of(app.client.delete(f"/api/downloads/{job_id}")) == (409, "invalid_state")
    models = app.client.get("/api/models").json()["models"]
    assert [m["name"] for m in models["embedding"]] == ["done.safetensors"]


def test_origin_errors_end_in_a_failed_job(app: App, origin: Origin) -> None:
    origin.add_file("/gone.bin", 10, status=404)
    job_id = app.submit({"url": origin.url("/gone.bin"), "type": "lora"})["id"]
    job = app.wait_state(job_id, "failed")
    assert job["error"]["code"] == "origin_not_found"
    assert app.engine.calls == []


def test_web_page_link_ends_in_not_a_file(app: App, origin: Origin) -> None:
    origin.add_html("/model-page")
    job_id = app.submit({"url": origin.url("/model-page"), "type": "lora"})["id"]
    assert app.wait_state(job_id, "failed")["error"]["code"] == "not_a_file"


def strict_json(text: str) -> Any:
    """Parse as a browser's JSON.parse would: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def with_nan_id(message: dict) -> str:
    """The message as JSON text with a bare NaN as its id (what json.dumps would write)."""
    return json.dumps({**message, "id": "__nan__"}).replace('"__nan__"', "NaN")


def test_nan_id_in_a_rest_request_is_refused(app: App, origin: Origin) -> None:
    origin.add_file("/n.bin", 100)
    body = with_nan_id({"url": origin.url("/n.bin"), "type": "lora"})
    answer = app.client.post(
        "/api/downloads", content=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert error_of(answer) == (400, "invalid_json")
    listed = app.client.get("/api/downloads")
    assert listed.status_code == 200
    strict_json(listed.text)


def test_nan_id_on_the_websocket_never_reaches_the_clients(app: App, origin: Origin) -> None:
    origin.add_file("/n.bin", 100)
    frame = with_nan_id({"type": "download", "data": {"type": "lora", "url": origin.url("/n.bin")}})
    with app.client.websocket_connect(WS_URL) as sender:
        sender.receive_json()
        sender.send_text(frame)
        sender.send_text('{"type": "ping", "id": "after"}')
        for _ in range(10):
            message = strict_json(sender.receive_text())
            if message.get("id") == "after":
                break
    with app.client.websocket_connect(WS_URL) as late:
        strict_json(late.receive_text())  # the hello lists every job


# -- WebSocket ------------------------------------------------------------------------------------


def test_hello_comes_first(app: App, origin: Origin) -> None:
    origin.add_file("/x.bin", 100)
    job_id = app.submit({"url": origin.url("/x.bin"), "type": "lora"})["id"]
    with app.client.websocket_connect(WS_URL) as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello"
        assert hello["data"]["layout"] == "default"
        assert hello["data"]["engine"]["name"] == "fake"
        assert [t["name"] for t in hello["data"]["types"]] == ["auto", *MODEL_TYPES]
        assert [j["id"] for j in hello["data"]["jobs"]] == [job_id]


def test_bad_json_gets_an_error_and_the_socket_stays_open(app: App) -> None:
    with app.client.websocket_connect(WS_URL) as ws:
        assert ws.receive_json()["type"] == "hello"
        ws.send_text("{this is not json")
        error = ws.receive_json()
        assert error["type"] == "error"
        assert error["data"]["code"] == "invalid_json"
        ws.send_text(json.dumps({"type": "ping", "id": 3}))
        assert ws.receive_json() == {"type": "pong", "id": 3}


def test_json_nested_past_pythons_stack_is_invalid_json_everywhere(app: App) -> None:
    deep = "[" * 20_000 + "]" * 20_000  # 40 KB: under the size limit, far past the recursion limit
    answer = app.client.post("/api/downloads", content=deep)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_json"
    with app.client.websocket_connect(WS_URL) as ws:
        assert ws.receive_json()["type"] == "hello"
        ws.send_text(deep)
        assert ws.receive_json()["data"]["code"] == "invalid_json"
        ws.send_text(json.dumps({"type": "ping", "id": 4}))
        assert ws.receive_json() == {"type": "pong", "id": 4}  # the socket stays usable


def test_binary_frames_holding_json_are_accepted(app: App) -> None:
    with app.client.websocket_connect(WS_URL) as ws:
        ws.receive_json()
        ws.send_bytes(json.dumps({"type": "ping", "id": "模"}).encode("utf-8"))
        assert ws.receive_json() == {"type": "pong", "id": "模"}
        ws.send_bytes(b"\xff\xfe{{")
        assert ws.receive_json()["data"]["code"] == "invalid_json"
        ws.send_text('{"type": "ping"}')
        assert ws.receive_json()["type"] == "pong"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ([1, 2, 3], "invalid_message"),
        ("just a string", "invalid_message"),
        ({"type": "explode", "id": 9}, "unknown_message"),
        ({"id": 9}, "unknown_message"),
        ({"type": "cancel", "id": 9, "data": {"job": "zzz"}}, "not_found"),
        ({"type": "pause", "id": 9, "data": "not an object"}, "not_found"),
    ],
)
def test_bad_messages_get_error_answers(app: App, message: Any, code: str) -> None:
    with app.client.websocket_connect(WS_URL) as ws:
        ws.receive_json()
        ws.send_text(json.dumps(message))
        answer = ws.receive_json()
        assert answer["type"] == "error"
        assert answer["data"]["code"] == code
        assert answer["data"]["message"]
        if isinstance(message, dict) and "id" in message:
            assert answer["id"] == message["id"]
        ws.send_text('{"type": "ping"}')
        assert ws.receive_json()["type"] == "pong"


def test_too_large_message_is_refused(app: App) -> None:
    with app.client.websocket_connect(WS_URL) as ws:
        ws.receive_json()
        ws.send_text(json.dumps({"type": "ping", "pad": "x" * 70_000}))
        assert ws.receive_json()["data"]["code"] == "message_too_large"
        ws.send_text('{"type": "ping"}')
        assert ws.receive_json()["type"] == "pong"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"type": "lora", "url": "ftp://h.example/m.bin"}, "unsupported_scheme"),
        ({"type": "lora", "url": "not a url"}, "invalid_url"),
        ({"type": "lora", "url": ""}, "empty_url"),
        ({"type": "nope", "url": "https://h.example/m.bin"}, "unknown_type"),
        (None, "invalid_message"),
    ],
)
def test_download_with_bad_input_answers_with_a_download_error(app: App, data: Any, code: str) -> None:
    with app.client.websocket_connect(WS_URL) as ws:
        ws.receive_json()
        ws.send_text(json.dumps({"type": "download", "id": 11, "data": data}))
        answer = ws.receive_json()
        assert answer["type"] == "download"
        assert answer["id"] == 11
        assert answer["job"] is None
        assert answer["data"]["status"] == "error"
        assert answer["data"]["code"] == code
        assert answer["data"]["message"]
    assert app.client.get("/api/downloads").json() == {"jobs": []}


def test_download_events_reach_every_client_with_the_senders_id(app: App, origin: Origin) -> None:
    origin.add_file("/w.safetensors", 2000)
    url = origin.url("/w.safetensors")
    with app.client.websocket_connect(WS_URL) as sender, app.client.websocket_connect(WS_URL) as other:
        sender.receive_json()
        other.receive_json()
        sender.send_text(
            json.dumps(
                {
                    "type": "download",
                    "id": {"tab": 1},
                    "data": {"type": "lora", "url": url, "civitai_token": "civ-TOKEN"},
                }
            )
        )
        for ws in (sender, other):
            started = receive_until(
                ws, lambda m: m["type"] == "download" and m["data"]["status"] == "started"
            )
            assert started["id"] == {"tab": 1}
            assert started["data"]["url"] == url
            assert started["data"]["type"] == "lora"
            assert started["data"]["state"]
            assert "TOKEN" not in json.dumps(started)
        job_id = started["job"]

        # the same link again: the sender gets the existing job's started event, with its id
        sender.send_text(json.dumps({"type": "download", "id": 99, "data": {"type": "lora", "url": url}}))
        repeat = receive_until(sender, lambda m: m.get("id") == 99)
        assert repeat["job"] == job_id
        assert repeat["data"]["status"] == "started"

        sender.send_text(json.dumps({"type": "cancel", "id": 5, "data": {"job": job_id}}))
        for ws in (sender, other):
            cancelled = receive_until(
                ws, lambda m: m["type"] == "download" and m["data"]["status"] == "cancelled"
            )
            assert cancelled["job"] == job_id
            assert cancelled["data"]["state"] == "cancelled"
    assert app.job(job_id)["state"] == "cancelled"


# -- who may talk to the app ---------------------------------------------------------------------


def test_foreign_host_needs_the_token(app: App) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1."""
    answer = app.client.get("/api/downloads", headers={"Host": "evil.example:8000"})
    assert error_of(answer) == (401, "unauthorized")
    with_token = app.client.get(
        "/api/downloads", headers={"Host": "evil.example:8000", "Authorization": f"Bearer {TOKEN}"}
    )
    assert with_token.status_code == 200
    wrong = app.client.get(
        "/api/downloads", headers={"Host": "evil.example:8000", "Authorization": "Bearer not-the-token"}
    )
    assert wrong.status_code == 401


def test_cross_site_post_is_refused(app: App) -> None:
    answer = app.client.post(
        "/api/downloads",
        json={"url": "https://h.example/m", "type": "lora"},
        headers={"Origin": "http://evil.example"},
    )
    assert error_of(answer) == (403, "forbidden_origin")
    assert app.client.get("/api/downloads").json() == {"jobs": []}
    same_site = app.client.post(
        "/api/downloads", json={"url": "https://h.example/m", "type": "x"}, headers={"Origin": BASE_URL}
    )
    assert error_of(same_site) == (400, "unknown_type")  # reached the app


def test_cross_site_websocket_is_refused(app: App) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        app.client.websocket_connect(WS_URL, headers={"Origin": "http://evil.example"}) as ws,
    ):
        ws.receive_json()  # the first thing that comes is the close, never a hello
    assert closed.value.code == 1008
    assert closed.value.reason == "forbidden_origin"  # the page can tell its user why
    with app.client.websocket_connect(WS_URL, headers={"Origin": BASE_URL}) as ws:
        assert ws.receive_json()["type"] == "hello"


def test_login_link_trades_the_token_for_a_cookie(app: App) -> None:
    answer = app.client.get(f"/?token={TOKEN}", headers={"Host": "tunnel.example"}, follow_redirects=False)
    assert answer.status_code == 303
    assert "token" not in answer.headers["location"]
    cookie = answer.headers["set-cookie"]
    assert TOKEN not in cookie
    assert "HttpOnly" in cookie
    name, _, rest = cookie.partition("=")
    value = rest.split(";")[0]
    health = app.client.get("/api/health", headers={"Host": "tunnel.example", "Cookie": f"{name}={value}"})
    assert health.status_code == 200


@pytest.mark.parametrize(
    "line",
    [
        "GET /?token=SECRET-abc HTTP/1.1",
        "GET /?TOKEN=SECRET-abc HTTP/1.1",
        "GET /?%74oken=SECRET-abc HTTP/1.1",
        "GET /?x=1&token%3DSECRET-abc HTTP/1.1",
        '"WebSocket /ws?token=SECRET-abc" [accepted]',
    ],
)
def test_log_lines_never_show_a_token_however_it_is_spelt(line: str) -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "%s", (line,), None)
    RedactTokens().filter(record)
    assert "SECRET" not in record.getMessage()
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, line, None, None)
    RedactTokens().filter(record)
    assert "SECRET" not in record.getMessage()
