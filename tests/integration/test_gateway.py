"""aria2 RPC clients through the gateway at /jsonrpc, against a real aria2c.

The gateway's routes are served by a real uvicorn on loopback in a small Starlette app
(the way the app mounts them), in front of a real aria2c with its own secret. Real
clients drive it: aria2p's API and CLI, a Python WebSocket client, and the npm `aria2`
package under node. What a user of those clients sees is asserted: downloads land in
the models folder, notifications arrive, refusals name their reason and leave the
daemon as it was, secrets are redacted, and the daemon's secret is seen nowhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aria2p
import pytest
import requests
import uvicorn
from starlette.applications import Starlette
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from orchestrator.engines.aria2_daemon import EmbeddedDaemon
from orchestrator.errors import OrchestratorError
from orchestrator.gateway import Gateway, Policy, make_routes
from tests.conftest import free_port, needs_aria2
from tests.fakes.origin import Origin

pytestmark = [pytest.mark.integration, needs_aria2]

MiB = 1024 * 1024
TOKEN = "access-token-of-the-app-7f3a9c"
DAEMON_SECRET = "daemon-only-secret-5b21e8d04c"
ARIA2P = Path(sys.executable).with_name("aria2p")
CLIENT_PROJECT = Path(__file__).resolve().parents[1] / "gateway_client"
FOREIGN = "https://ariang.example"
CLIENT_LOGGERS = ("urllib3", "websockets.client")  # the test's own clients, which know the token


class JobIntake:
    """Stands in for the app's intake: links under /jobs/ become "jobs" it starts in aria2 itself
    (into models/taken, paused), /jobs/refused is refused with a code, other links are not its
    business."""

    def __init__(self, client: aria2p.Client, folder: Path) -> None:
        self.client = client
        self.folder = folder
        self.taken: list[tuple[list[str], dict[str, Any], int | None]] = []

    async def add_uri(
        self, uris: list[str], options: dict[str, Any], position: int | None, remote: bool = False
    ) -> str | None:
        if "/jobs/" not in uris[0]:
            return None
        if uris[0].endswith("/refused"):
            raise OrchestratorError(
                "source_refused", "This link cannot be downloaded: its source refuses it."
            )
        self.taken.append((uris, options, position))
        job_options = {"dir": str(self.folder), "pause": "true"}
        return str(await asyncio.to_thread(self.client.add_uri, uris, job_options))


class GatewayServer:
    """A real aria2c with its own secret, and the gateway in front of it under uvicorn."""

    def __init__(self, workdir: Path) -> None:
        self.models = workdir / "models"
        self.state = workdir / "state"
        self.daemon_port = free_port()
        self.daemon = EmbeddedDaemon(self.state, DAEMON_SECRET, self.daemon_port, self.models / "downloads")
        self.daemon_client = aria2p.Client(
            host="http://127.0.0.1", port=self.daemon_port, secret=DAEMON_SECRET
        )
        self.intake = JobIntake(self.daemon_client, self.models / "taken")
        self.gateway = Gateway(
            f"http://127.0.0.1:{self.daemon_port}/jsonrpc",
            DAEMON_SECRET,
            TOKEN,
            Policy(self.models, self.models / ".staging"),
            self.intake,
        )
        self.answers: list[str] = []  # every answer body a test received, to search for secrets
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> GatewayServer:
        self.start_daemon()

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            await self.gateway.start()
            try:
                yield
            finally:
                await self.gateway.stop()

        app = Starlette(routes=make_routes(self.gateway), lifespan=lifespan)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=True))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [listener]}, daemon=True)
        self._thread.start()
        wait(lambda: self._server is not None and self._server.started, "uvicorn did not start")
        wait(lambda: self.gateway.listening, "the gateway did not connect to the daemon's notifications")
        return self

    def start_daemon(self) -> None:
        self.daemon.start()
        wait(self._daemon_answers, f"aria2c did not start:\n{self.daemon_log()}")

    def _daemon_answers(self) -> bool:
        try:
            self.daemon_client.get_version()
        except requests.RequestException:
            return False
        return True

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
        self.daemon.stop()

    def daemon_log(self) -> str:
        path = self.state / "aria2.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jsonrpc"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/jsonrpc"

    def api(self, secret: str = TOKEN) -> aria2p.API:
        return aria2p.API(aria2p.Client(host="http://127.0.0.1", port=self.port, secret=secret))

    def post(self, payload: Any, headers: dict[str, str] | None = None) -> requests.Response:
        answer = requests.post(self.url, data=json.dumps(payload), headers=headers, timeout=30)
        self.answers.append(answer.text)
        return answer

    def rpc(self, method: str, *params: Any, secret: str | None = TOKEN, **kwargs: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.post(call(method, *params, secret=secret), **kwargs).json()
        return answer

    def result(self, method: str, *params: Any) -> Any:
        answer = self.rpc(method, *params)
        assert "result" in answer, answer
        return answer["result"]

    def direct(self, method: str, *params: Any) -> Any:
        """The daemon's own answer, asked with its own secret: what it really holds."""
        return self.daemon_client.call(method, list(params))

    def downloads(self) -> list[dict[str, Any]]:
        return [
            *self.direct("aria2.tellActive"),
            *self.direct("aria2.tellWaiting", 0, 1000),
            *self.direct("aria2.tellStopped", 0, 1000),
        ]

    def websocket(self, origin: str | None = None) -> ClientConnection:
        return ws_connect(self.ws_url, origin=origin, proxy=None, open_timeout=10)  # type: ignore[arg-type]


def call(method: str, *params: Any, secret: str | None = TOKEN, call_id: Any = "t") -> dict[str, Any]:
    token = [f"token:{secret}"] if secret is not None else []
    return {"jsonrpc": "2.0", "id": call_id, "method": method, "params": [*token, *params]}


def wait(check: Callable[[], bool], message: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)


def wait_status(api: aria2p.API, gid: str, states: set[str], timeout: float = 20) -> aria2p.Download:
    deadline = time.monotonic() + timeout
    while True:
        download = api.get_download(gid)
        if download.status in states:
            return download
        if time.monotonic() > deadline:
            raise AssertionError(f"{gid} stayed {download.status}, wanted {states}")
        time.sleep(0.05)


def messages_until(
    ws: ClientConnection, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not done(received):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"gave up waiting; received {received}")
        with contextlib.suppress(TimeoutError):
            received.append(json.loads(ws.recv(timeout=left)))
    return received


def notified(received: list[dict[str, Any]], method: str, gid: str) -> bool:
    return any(m.get("method") == method and m.get("params") == [{"gid": gid}] for m in received)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[GatewayServer]:
    server = GatewayServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def verbose_stack(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[GatewayServer]:
    """The stack with every logger at DEBUG from its start (websockets logs each frame then)."""
    caplog.set_level(logging.DEBUG)
    server = GatewayServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


# -- aria2p ------------------------------------------------------------------------------------


def test_aria2ps_api_adds_lists_pauses_and_removes_a_download_in_the_models_folder(
    stack: GatewayServer, origin: Origin
) -> None:
    origin.add_file("/slow.safetensors", 16 * MiB, rate=512 * 1024)
    api = stack.api()
    added = api.add_uris(
        [origin.url("/slow.safetensors")], {"dir": "loras", "max-connection-per-server": "1"}
    )
    assert Path(added.dir) == stack.models / "loras"

    assert added.gid in {d.gid for d in api.get_downloads()}
    wait_status(api, added.gid, {"active"})
    wait(lambda: (stack.models / "loras" / "slow.safetensors").exists(), "nothing written to models/loras")

    assert api.pause([added]) == [True]
    assert wait_status(api, added.gid, {"paused"}).status == "paused"
    assert stack.direct("aria2.tellStatus", added.gid, ["status"])["status"] == "paused"
    assert api.resume([added]) == [True]
    wait_status(api, added.gid, {"active", "waiting"})

    assert api.remove([added], force=True) == [True]
    wait(lambda: added.gid not in {d["gid"] for d in stack.downloads()}, "the download was not removed")
    assert added.gid not in {d.gid for d in api.get_downloads()}


def test_aria2ps_cli_shows_the_downloads_through_the_gateway(stack: GatewayServer, origin: Origin) -> None:
    origin.add_file("/shown.safetensors", MiB)
    gid = stack.result("aria2.addUri", [origin.url("/shown.safetensors")], {"pause": "true"})
    base = [str(ARIA2P), "-H", "http://127.0.0.1", "-p", str(stack.port)]

    shown = subprocess.run([*base, "-s", TOKEN, "show"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert gid in shown.stdout and "shown.safetensors" in shown.stdout

    stranger = subprocess.run(
        [*base, "-s", "wrong-secret", "show"], capture_output=True, text=True, timeout=60
    )
    assert stranger.returncode != 0
    assert "Unauthorized" in stranger.stdout + stranger.stderr
    assert DAEMON_SECRET not in shown.stdout + shown.stderr + stranger.stdout + stranger.stderr


def test_a_wrong_or_missing_secret_gets_aria2s_unauthorized(stack: GatewayServer) -> None:
    unauthorized = {"code": 1, "message": "Unauthorized"}
    for secret in (None, "wrong", TOKEN.upper(), DAEMON_SECRET):  # the daemon's own opens nothing
        answer = stack.post(call("aria2.tellActive", secret=secret))
        assert (answer.status_code, answer.json()["error"]) == (400, unauthorized), secret
    batch = stack.post([call("aria2.getVersion", call_id=1), call("aria2.getVersion", secret="x", call_id=2)])
    assert batch.status_code == 200
    assert "result" in batch.json()[0] and batch.json()[1]["error"] == unauthorized
    with pytest.raises(aria2p.ClientException) as caught:
        stack.api("not-the-token").get_downloads()
    assert (caught.value.code, caught.value.message) == (1, "Unauthorized")


# -- WebSocket clients and notifications -------------------------------------------------------


def test_a_websocket_client_hears_a_download_start_and_complete(stack: GatewayServer, origin: Origin) -> None:
    data = origin.add_file("/vae.safetensors", 2 * MiB)
    with stack.websocket() as ws:
        ws.send(
            json.dumps(call("aria2.addUri", [origin.url("/vae.safetensors")], {"dir": "vae"}, call_id="add"))
        )
        answer = messages_until(ws, lambda got: any(m.get("id") == "add" for m in got))
        gid = next(m for m in answer if m.get("id") == "add")["result"]
        received = messages_until(ws, lambda got: notified(answer + got, "aria2.onDownloadComplete", gid))
    everything = answer + received
    assert notified(everything, "aria2.onDownloadStart", gid)
    assert notified(everything, "aria2.onDownloadComplete", gid)
    assert (stack.models / "vae" / "vae.safetensors").read_bytes() == data


def test_the_app_hears_the_daemons_notifications_too(stack: GatewayServer, origin: Origin) -> None:
    """What wakes the poller when a transfer ends (app.py), instead of its next tick."""
    heard: list[dict] = []
    stack.gateway.listen(heard.append)
    origin.add_file("/heard.safetensors", MiB)
    gid = stack.api().add_uris([origin.url("/heard.safetensors")], {"dir": "vae"}).gid
    wait(
        lambda: notified(heard, "aria2.onDownloadComplete", gid), "no onDownloadComplete reached the listener"
    )
    assert notified(heard, "aria2.onDownloadStart", gid)


def test_the_npm_aria2_client_calls_adds_and_hears_notifications(
    stack: GatewayServer, origin: Origin, npm_client: Path
) -> None:
    data = origin.add_file("/embedding.pt", MiB)
    run = subprocess.run(
        ["node", "client.js", "127.0.0.1", str(stack.port), TOKEN, origin.url("/embedding.pt"), "embeddings"],
        cwd=npm_client,
        capture_output=True,
        text=True,
        timeout=90,
    )
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert run.returncode == 0, run.stdout + run.stderr
    assert {"version": stack.direct("aria2.getVersion")["version"]} in lines
    shutdown = next(line["shutdown"] for line in lines if "shutdown" in line)
    assert shutdown == {
        "refused": True,
        "code": 1,
        "message": "aria2.shutdown is not allowed through this server: the daemon is shared.",
    }
    gid = next(line["gid"] for line in lines if "gid" in line and "notification" not in line)
    assert {"notification": "onDownloadStart", "gid": gid} in lines
    assert {"notification": "onDownloadComplete", "gid": gid} in lines
    assert next(line["stranger"] for line in lines if "stranger" in line) == {
        "refused": True,
        "code": 1,
        "message": "Unauthorized",
    }
    assert (stack.models / "embeddings" / "embedding.pt").read_bytes() == data
    assert stack.direct("aria2.getVersion")  # the refused shutdown left the daemon running


def test_a_cross_origin_websocket_works_with_the_secret_and_is_closed_without_it(
    stack: GatewayServer, origin: Origin
) -> None:
    origin.add_file("/x.bin", MiB)
    with stack.websocket(origin=FOREIGN) as ws:
        ws.send(json.dumps(call("aria2.getVersion", call_id="v")))
        assert "version" in json.loads(ws.recv(timeout=10))["result"]
        # shown the secret once, it hears notifications like any client
        ws.send(json.dumps(call("aria2.addUri", [origin.url("/x.bin")], call_id="add")))
        got = messages_until(ws, lambda got: any(m.get("id") == "add" for m in got))
        gid = next(m for m in got if m.get("id") == "add")["result"]
        messages_until(ws, lambda more: notified(got + more, "aria2.onDownloadComplete", gid))

    for first in (
        call("aria2.getVersion", secret=None),
        call("aria2.getVersion", secret="guess"),
        "not json",
    ):
        with stack.websocket(origin=FOREIGN) as ws:
            ws.send(first if isinstance(first, str) else json.dumps(first))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "forbidden_origin")


def test_notifications_come_back_after_the_daemon_restarts(stack: GatewayServer, origin: Origin) -> None:
    stack.daemon.stop()
    wait(lambda: not stack.gateway.listening, "the gateway did not notice the daemon stopped")
    stack.start_daemon()
    wait(lambda: stack.gateway.listening, "the gateway did not reconnect to the daemon")
    origin.add_file("/after.bin", MiB)
    with stack.websocket() as ws:
        ws.send(json.dumps(call("aria2.addUri", [origin.url("/after.bin")], call_id="add")))
        got = messages_until(ws, lambda got: any(m.get("id") == "add" for m in got))
        gid = next(m for m in got if m.get("id") == "add")["result"]
        messages_until(ws, lambda more: notified(got + more, "aria2.onDownloadComplete", gid))


# -- the policy, against the real daemon ---------------------------------------------------------

SHARED = "is not allowed through this server: the daemon is shared."
OFF = "torrents and metalinks are turned off in this server."
PROGRAM = "is not allowed through this server: it runs a program on the server."
FILE = "is not allowed through this server: it reads or writes a file on the server"
OUT_OF_MODELS = "leads outside the models folder"
# case: (method, params, the error's data.code, what its message says)
REFUSALS = {
    "shutdown": ("aria2.shutdown", [], "method_not_allowed", f"aria2.shutdown {SHARED}"),
    "forceShutdown": ("aria2.forceShutdown", [], "method_not_allowed", f"aria2.forceShutdown {SHARED}"),
    "addTorrent": ("aria2.addTorrent", ["ZDg6YW5ub3VuY2UxOmFl"], "method_not_allowed", OFF),
    "addMetalink": ("aria2.addMetalink", ["PG1ldGFsaW5rLz4="], "method_not_allowed", OFF),
    "addUri hook": (
        "aria2.addUri",
        ["{url}", {"on-download-complete": "/bin/touch"}],
        "option_not_allowed",
        PROGRAM,
    ),
    "addUri dir outside": (
        "aria2.addUri",
        ["{url}", {"dir": "{outside}"}],
        "dir_outside_models",
        OUT_OF_MODELS,
    ),
    "addUri dir ..": ("aria2.addUri", ["{url}", {"dir": "../state"}], "dir_outside_models", OUT_OF_MODELS),
    "addUri dir symlink": (
        "aria2.addUri",
        ["{url}", {"dir": "innocent"}],
        "dir_outside_models",
        OUT_OF_MODELS,
    ),
    "addUri out ..": ("aria2.addUri", ["{url}", {"out": "../../evil.sh"}], "invalid_out", "without folders"),
    "addUri proxy": (
        "aria2.addUri",
        ["{url}", {"all-proxy": "http://127.0.0.1:9"}],
        "option_not_allowed",
        "the server sets proxies itself",
    ),
    "addUri magnet": ("aria2.addUri", [["magnet:?xt=urn:btih:" + "ab" * 20]], "torrents_disabled", OFF),
    "changeOption dir": (
        "aria2.changeOption",
        ["{gid}", {"dir": "{outside}"}],
        "dir_outside_models",
        OUT_OF_MODELS,
    ),
    "changeOption hook": (
        "aria2.changeOption",
        ["{gid}", {"on-download-error": "/bin/touch"}],
        "option_not_allowed",
        PROGRAM,
    ),
    "changeGlobalOption hook": (
        "aria2.changeGlobalOption",
        [{"on-download-complete": "/bin/touch"}],
        "option_not_allowed",
        f"Option on-download-complete {PROGRAM}",
    ),
    "changeGlobalOption log": (
        "aria2.changeGlobalOption",
        [{"log": "{outside}/aria2.log"}],
        "option_not_allowed",
        FILE,
    ),
    "changeGlobalOption save-session": (
        "aria2.changeGlobalOption",
        [{"save-session": "{outside}/s"}],
        "option_not_allowed",
        FILE,
    ),
    "changeGlobalOption dir": (
        "aria2.changeGlobalOption",
        [{"dir": "{outside}"}],
        "global_option_not_allowed",
        "the daemon is shared, so changeGlobalOption may change only max-overall-download-limit",
    ),
}


def _fill(value: Any, names: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in names:
        return names[value[1:-1]]
    if isinstance(value, str):
        return value.format(**names) if "{" in value else value
    if isinstance(value, list):
        return [_fill(item, names) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, names) for key, item in value.items()}
    return value


@pytest.mark.parametrize("case", REFUSALS)
@pytest.mark.parametrize("inside_multicall", [False, True], ids=["alone", "in multicall"])
def test_each_refusal_names_its_reason_and_leaves_the_daemon_unchanged(
    stack: GatewayServer, origin: Origin, tmp_path: Path, case: str, inside_multicall: bool
) -> None:
    origin.add_file("/f.bin", MiB)
    outside = tmp_path / "outside"
    outside.mkdir()
    stack.models.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, stack.models / "innocent")
    gid = stack.direct("aria2.addUri", [origin.url("/f.bin")], {"pause": "true"})
    method, params, code, says = REFUSALS[case]
    params = _fill(params, {"url": [origin.url("/f.bin")], "outside": str(outside), "gid": gid})
    before = (stack.direct("aria2.getGlobalOption"), stack.direct("aria2.getOption", gid), stack.downloads())

    if inside_multicall:
        multicall = call(
            "system.multicall", [{"methodName": method, "params": [f"token:{TOKEN}", *params]}], secret=None
        )
        answer = stack.post(multicall).json()
        error = answer["result"][0]
    else:
        answer = stack.rpc(method, *params)
        error = answer["error"]
    assert error["code"] == 1 and error["data"] == {"code": code}, answer
    assert says in error["message"]

    after = (stack.direct("aria2.getGlobalOption"), stack.direct("aria2.getOption", gid), stack.downloads())
    assert after == before
    assert "on-download-complete" not in after[0]
    assert list(outside.iterdir()) == []


def test_change_global_option_changes_the_speed_limits(stack: GatewayServer) -> None:
    assert stack.result("aria2.changeGlobalOption", {"max-overall-download-limit": "1M"}) == "OK"
    assert stack.direct("aria2.getGlobalOption")["max-overall-download-limit"] == "1048576"


def test_a_cookie_header_and_a_signed_url_are_redacted_in_every_answer(
    stack: GatewayServer, origin: Origin
) -> None:
    origin.add_file("/drive.bin", MiB)
    link = origin.url("/drive.bin") + "?X-Amz-Signature=SIGNATURE0123&id=42"
    headers = ["Cookie: download_warning=COOKIE-VALUE-99", "User-Agent: AriaNg"]
    gid = stack.result("aria2.addUri", [link], {"header": headers, "pause": "true", "dir": "checkpoints"})

    option = stack.result("aria2.getOption", gid)
    assert option["header"] == "Cookie: redacted\nUser-Agent: redacted\n"  # aria2 ends each with a newline
    assert option["dir"] == str(stack.models / "checkpoints")
    assert "COOKIE-VALUE-99" in stack.direct("aria2.getOption", gid)["header"]  # the daemon holds it

    uris = stack.result("aria2.getUris", gid)
    assert {u["uri"] for u in uris} == {origin.url("/drive.bin") + "?X-Amz-Signature=redacted&id=42"}
    multicall = call(
        "system.multicall",
        [
            {"methodName": "aria2.getOption", "params": [f"token:{TOKEN}", gid]},
            {"methodName": "aria2.tellStatus", "params": [f"token:{TOKEN}", gid]},
        ],
        secret=None,
    )
    answers = [
        stack.result("aria2.tellStatus", gid),
        stack.result("aria2.tellWaiting", 0, 100),
        stack.result("aria2.getFiles", gid),
        stack.post(multicall).json()["result"],
        stack.result("aria2.getGlobalOption"),
    ]
    for answer in answers:
        text = json.dumps(answer)
        assert "COOKIE-VALUE-99" not in text and "SIGNATURE0123" not in text, text
    assert answers[3][0][0]["header"] == option["header"]


def test_a_symlink_in_the_models_folder_leading_out_is_not_followed(
    stack: GatewayServer, origin: Origin, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    stack.models.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, stack.models / "loras")
    origin.add_file("/m.safetensors", MiB)
    api = stack.api()
    with pytest.raises(aria2p.ClientException) as caught:
        api.add_uris([origin.url("/m.safetensors")], {"dir": str(stack.models / "loras")})
    assert "leads outside the models folder" in caught.value.message
    assert list(outside.iterdir()) == [] and stack.downloads() == []


# -- the intake ---------------------------------------------------------------------------------


def test_links_the_orchestrator_takes_become_its_jobs_and_the_rest_go_to_aria2(
    stack: GatewayServer, origin: Origin
) -> None:
    origin.add_file("/jobs/model.safetensors", MiB)
    origin.add_file("/plain.bin", MiB)
    api = stack.api()
    job = api.add_uris([origin.url("/jobs/model.safetensors")], {"dir": "loras"})
    assert stack.intake.taken == [
        (
            [origin.url("/jobs/model.safetensors")],
            {"dir": str(stack.models / "loras"), "follow-torrent": "false", "follow-metalink": "false"},
            None,
        )
    ]
    assert Path(job.dir) == stack.models / "taken"  # the gid answered is the job's, in aria2

    with pytest.raises(aria2p.ClientException) as caught:
        api.add_uris([origin.url("/jobs/refused")])
    assert caught.value.message == "This link cannot be downloaded: its source refuses it."
    refused = stack.rpc("aria2.addUri", [origin.url("/jobs/refused")], {})
    assert refused["error"]["data"] == {"code": "source_refused"}

    plain = api.add_uris([origin.url("/plain.bin")], {"dir": "vae"})
    assert Path(plain.dir) == stack.models / "vae"
    assert len(stack.intake.taken) == 1


# -- HTTP: GET form, CORS, limits, secrets in logs ------------------------------------------------


def b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def test_the_get_form_answers_and_jsonp_is_refused(stack: GatewayServer) -> None:
    params = {"method": "aria2.getVersion", "id": "g", "params": b64([f"token:{TOKEN}"])}
    answer = requests.get(stack.url, params=params, timeout=10)
    assert answer.status_code == 200 and "version" in answer.json()["result"]
    batch = requests.get(stack.url, params={"params": b64([call("aria2.getVersion", call_id=1)])}, timeout=10)
    assert "version" in batch.json()[0]["result"]
    jsonp = requests.get(stack.url, params={**params, "jsoncallback": "steal"}, timeout=10)
    assert jsonp.status_code == 400 and jsonp.json()["error"]["data"] == {"code": "jsonp_refused"}
    assert not jsonp.text.startswith("steal")
    assert requests.head(stack.url, timeout=10).status_code == 405


def test_a_page_on_another_site_may_call_with_the_secret_but_never_with_credentials(
    stack: GatewayServer,
) -> None:
    preflight = requests.options(
        stack.url,
        headers={
            "Origin": FOREIGN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
            "Access-Control-Request-Private-Network": "true",
        },
        timeout=10,
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Headers"] == "content-type"
    assert preflight.headers["Access-Control-Allow-Private-Network"] == "true"
    headers = {"Origin": FOREIGN, "Content-Type": "application/json"}
    answer = stack.post(call("aria2.getVersion"), headers=headers)
    assert answer.status_code == 200 and "version" in answer.json()["result"]
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    stranger = stack.post(call("system.listMethods", secret=None), headers=headers)
    assert stranger.json()["error"] == {"code": 1, "message": "Unauthorized"}
    for response in (preflight, answer, stranger):
        assert "Access-Control-Allow-Credentials" not in response.headers


def test_bodies_over_64_kib_and_batches_over_100_calls_are_refused(stack: GatewayServer) -> None:
    big = stack.post(call("aria2.getVersion", "x" * (64 * 1024)))
    assert big.status_code == 413 and big.json()["error"]["data"] == {"code": "message_too_large"}
    many = stack.post([call("aria2.getVersion", call_id=n) for n in range(101)])
    assert many.json()["error"]["data"] == {"code": "too_many_calls"}
    with stack.websocket() as ws:
        ws.send(json.dumps(call("aria2.getVersion", "x" * (64 * 1024))))
        assert json.loads(ws.recv(timeout=10))["error"]["data"] == {"code": "message_too_large"}
        ws.send(json.dumps(call("aria2.getVersion", call_id="still")))
        assert json.loads(ws.recv(timeout=10))["id"] == "still"


def test_the_daemons_secret_is_in_no_answer_and_no_secret_is_in_the_log(
    verbose_stack: GatewayServer, origin: Origin, caplog: pytest.LogCaptureFixture
) -> None:
    stack = verbose_stack
    origin.add_file("/a.bin", MiB)
    gid = stack.result("aria2.addUri", [origin.url("/a.bin")], {"pause": "true"})
    for method, params in [
        ("aria2.getGlobalOption", []),
        ("aria2.getOption", [gid]),
        ("aria2.tellStatus", [gid]),
        ("aria2.tellActive", []),
        ("aria2.getSessionInfo", []),
        ("aria2.shutdown", []),
        ("aria2.changeGlobalOption", [{"rpc-secret": "new"}]),
        ("aria2.noSuchThing", []),
    ]:
        stack.rpc(method, *params)
    stack.rpc("aria2.getVersion", secret="wrong")
    broken = requests.post(stack.url, data="{broken", timeout=10)
    assert broken.json()["error"] == {"code": -32700, "message": "Parse error."}
    stack.answers.append(broken.text)
    get = requests.get(
        stack.url,
        params={"method": "aria2.getVersion", "id": "1", "params": b64([f"token:{TOKEN}"])},
        timeout=10,
    )
    stack.answers.append(get.text)
    with stack.websocket() as ws:
        ws.send(json.dumps(call("aria2.getGlobalOption", call_id="w")))
        stack.answers.append(str(ws.recv(timeout=10)))

    assert all(DAEMON_SECRET not in text for text in stack.answers)
    logged = [f"{r.name}: {r.getMessage()}" for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)]
    assert any("GET /jsonrpc?method=aria2.getVersion&id=1&params=[redacted]" in line for line in logged), (
        logged
    )
    for secret in (TOKEN, DAEMON_SECRET):
        pieces = {secret[i : i + 10] for i in range(len(secret) - 9)}  # a log may cut a line short
        assert not [line for line in logged if any(piece in line for piece in pieces)], secret


# -- the npm client's project ---------------------------------------------------------------------

UNREACHABLE = (
    "ENOTFOUND",
    "EAI_AGAIN",
    "ECONNREFUSED",
    "ECONNRESET",
    "ETIMEDOUT",
    "ENETUNREACH",
    "EHOSTUNREACH",
)


@pytest.fixture(scope="session")
def npm_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/gateway_client installed (npm ci, from the cache when it can) in a temp folder."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.skip("node and npm are needed to run the npm aria2 client (apt install nodejs npm)")
    folder = tmp_path_factory.mktemp("gateway_client")
    for name in ("package.json", "package-lock.json", "client.js"):
        shutil.copy(CLIENT_PROJECT / name, folder / name)
    done = subprocess.run(
        [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=240,
    )
    if done.returncode != 0:
        if any(code in done.stderr for code in UNREACHABLE):
            pytest.skip(
                f"the npm registry cannot be reached to install the aria2 client: {done.stderr[-300:]}"
            )
        raise AssertionError(f"npm ci failed:\n{done.stderr}")
    return folder
