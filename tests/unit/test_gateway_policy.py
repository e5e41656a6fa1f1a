"""The aria2 gateway's rules: what may reach the shared daemon, and what answers hide.

`Policy` judges one call; `Dispatcher` applies it to every call of a payload (batches,
system.multicall) with the secret; `redact` cleans answers. The daemon here is a small
stand-in that records what reaches it; tests/integration/test_gateway.py runs the same
rules against a real aria2c.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.gateway import Caller, Dispatcher, Fault, Policy, redact
from orchestrator.gateway.jsonrpc import decode_get, loggable_query

TOKEN = "the-access-token-of-the-app"
LOCAL = Caller(local=True)
REMOTE = Caller(local=False)
HOOKS = [
    "on-download-start",
    "on-download-pause",
    "on-download-stop",
    "on-download-complete",
    "on-download-error",
    "on-bt-download-complete",
]
FILE_OPTIONS = ["input-file", "save-session", "log", "conf-path", "load-cookies", "save-cookies", "index-out"]
RPC_OPTIONS = ["rpc-secret", "rpc-listen-all", "rpc-allow-origin-all", "rpc-listen-port"]
PROXY_OPTIONS = [
    "all-proxy",
    "https-proxy",
    "no-proxy",
    "all-proxy-user",
    "all-proxy-passwd",
    "http-proxy-passwd",
]
# where one download's options arrive: (method, params holding the options)
CARRIERS: dict[str, tuple[str, Callable[[dict[str, Any]], list[Any]]]] = {
    "addUri": ("aria2.addUri", lambda options: [["https://example.com/a.safetensors"], options]),
    "changeOption": ("aria2.changeOption", lambda options: ["2089b05ecca3d829", options]),
    "changeGlobalOption": ("aria2.changeGlobalOption", lambda options: [options]),
}


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    (folder / "loras").mkdir(parents=True)
    (folder / ".staging").mkdir()
    return folder


@pytest.fixture
def policy(models: Path) -> Policy:
    return Policy(models, models / ".staging")


def refused(policy: Policy, method: str, params: list[Any]) -> OrchestratorError:
    with pytest.raises(OrchestratorError) as caught:
        policy.check(method, params)
    return caught.value


# -- methods -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["aria2.shutdown", "aria2.forceShutdown"])
def test_shutting_the_daemon_down_is_refused_because_it_is_shared(policy: Policy, method: str) -> None:
    error = refused(policy, method, [])
    assert error.code == "method_not_allowed"
    assert error.message == f"{method} is not allowed through this server: the daemon is shared."


@pytest.mark.parametrize("method", ["aria2.addTorrent", "aria2.addMetalink"])
def test_torrents_and_metalinks_are_refused_because_the_app_turns_them_off(
    policy: Policy, method: str
) -> None:
    error = refused(policy, method, ["ZDg6YW5ub3VuY2U="])
    assert error.code == "method_not_allowed"
    assert "torrents and metalinks are turned off in this server" in error.message


def test_a_method_aria2_does_not_have_is_refused_as_aria2_refuses_it(policy: Policy) -> None:
    error = refused(policy, "aria2.runCommand", [])
    assert (error.code, error.message) == ("unknown_method", "No such method: aria2.runCommand")


@pytest.mark.parametrize(
    "method, params",
    [
        ("aria2.tellStatus", ["2089b05ecca3d829", ["gid", "status"]]),
        ("aria2.remove", ["2089b05ecca3d829"]),
        ("aria2.pauseAll", []),
        ("aria2.getGlobalStat", []),
        ("aria2.tellWaiting", [0, 1000]),
        ("aria2.saveSession", []),
        ("aria2.changeUri", ["2089b05ecca3d829", 1, [], ["https://mirror.example/a"]]),
    ],
)
def test_other_methods_pass_unchanged(policy: Policy, method: str, params: list[Any]) -> None:
    assert policy.check(method, params) == params


# -- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("key", HOOKS)
def test_options_that_run_programs_are_refused(policy: Policy, carrier: str, key: str) -> None:
    method, params = CARRIERS[carrier]
    error = refused(policy, method, params({key: "/bin/sh"}))
    assert error.code == "option_not_allowed"
    assert (
        error.message == f"Option {key} is not allowed through this server: it runs a program on the server."
    )


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("key", FILE_OPTIONS)
def test_options_that_name_files_are_refused(policy: Policy, carrier: str, key: str) -> None:
    method, params = CARRIERS[carrier]
    error = refused(policy, method, params({key: "/root/.ssh/authorized_keys"}))
    assert error.code == "option_not_allowed"
    assert "reads or writes a file on the server" in error.message


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("key", RPC_OPTIONS)
def test_rpc_options_are_refused(policy: Policy, carrier: str, key: str) -> None:
    method, params = CARRIERS[carrier]
    error = refused(policy, method, params({key: "true"}))
    assert error.code == "option_not_allowed"
    assert "setting of the daemon's own RPC server" in error.message


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("key", PROXY_OPTIONS)
def test_proxy_options_are_refused_because_the_server_sets_them(
    policy: Policy, carrier: str, key: str
) -> None:
    method, params = CARRIERS[carrier]
    error = refused(policy, method, params({key: "http://10.0.0.1:3128"}))
    assert error.code == "option_not_allowed"
    assert "the server sets proxies itself" in error.message


@pytest.mark.parametrize("carrier", ["addUri", "changeOption"])
def test_a_dir_outside_the_models_folder_is_refused(policy: Policy, tmp_path: Path, carrier: str) -> None:
    method, params = CARRIERS[carrier]
    for outside in ("/etc", str(tmp_path), str(tmp_path / "elsewhere")):
        error = refused(policy, method, params({"dir": outside}))
        assert error.code == "dir_outside_models", outside
        assert "leads outside the models folder" in error.message


@pytest.mark.parametrize("carrier", ["addUri", "changeOption"])
def test_a_dir_escaping_with_dotdot_is_refused(policy: Policy, models: Path, carrier: str) -> None:
    method, params = CARRIERS[carrier]
    for escape in ("..", "../state", "loras/../../state", f"{models}/loras/../../state"):
        assert refused(policy, method, params({"dir": escape})).code == "dir_outside_models", escape


@pytest.mark.parametrize("carrier", ["addUri", "changeOption"])
def test_a_dir_through_a_symlink_leading_out_is_refused(
    policy: Policy, models: Path, tmp_path: Path, carrier: str
) -> None:
    (tmp_path / "secret-place").mkdir()
    os.symlink(tmp_path / "secret-place", models / "innocent")
    method, params = CARRIERS[carrier]
    for through in (str(models / "innocent"), "innocent/deeper", str(models / "innocent" / "x")):
        assert refused(policy, method, params({"dir": through})).code == "dir_outside_models", through


def test_a_dir_in_the_servers_staging_folder_is_refused(policy: Policy, models: Path) -> None:
    for staging in (str(models / ".staging"), ".staging/job-1"):
        error = refused(policy, "aria2.addUri", [["https://example.com/a"], {"dir": staging}])
        assert error.code == "dir_in_staging", staging


@pytest.mark.parametrize("bad", ["", "   ", 42, ["/a"], "loras\0/x"])
def test_a_dir_that_is_not_a_path_is_refused(policy: Policy, bad: Any) -> None:
    assert refused(policy, "aria2.addUri", [["https://example.com/a"], {"dir": bad}]).code == "invalid_dir"


def test_a_dir_inside_the_models_folder_is_passed_on_resolved(policy: Policy, models: Path) -> None:
    os.symlink(models / "loras", models / "lora-link")

    def dir_sent(value: str) -> str:
        return str(policy.check("aria2.addUri", [["https://example.com/a"], {"dir": value}])[1]["dir"])

    assert dir_sent("loras") == str(models / "loras")  # relative: inside the models folder
    assert dir_sent(str(models / "vae" / ".." / "loras")) == str(models / "loras")
    assert dir_sent("lora-link") == str(models / "loras")  # a symlink that stays inside
    assert dir_sent(str(models)) == str(models)
    assert dir_sent("new/folder") == str(models / "new" / "folder")  # aria2 creates it


@pytest.mark.parametrize("carrier", ["addUri", "changeOption"])
@pytest.mark.parametrize(
    "name", ["../model.safetensors", "sub/model.safetensors", "/etc/passwd", "a\\b", "..", "."]
)
def test_an_out_with_path_parts_is_refused(policy: Policy, carrier: str, name: str) -> None:
    method, params = CARRIERS[carrier]
    error = refused(policy, method, params({"out": name}))
    assert error.code == "invalid_out"
    assert "a file name without folders" in error.message


def test_a_plain_name_a_checksum_and_headers_pass(policy: Policy, models: Path) -> None:
    options = {
        "out": "model..v2.safetensors",
        "checksum": "sha-256=" + "a" * 64,
        "header": ["Cookie: drive=1", "Referer: https://example.com/"],
        "max-connection-per-server": "4",
    }
    sent = policy.check("aria2.addUri", [["https://example.com/a"], options, 0])
    assert sent == [
        ["https://example.com/a"],
        {**options, "follow-torrent": "false", "follow-metalink": "false"},
        0,
    ]
    assert policy.check("aria2.changeOption", ["2089b05ecca3d829", {"max-download-limit": "1M"}]) == [
        "2089b05ecca3d829",
        {"max-download-limit": "1M"},
    ]


@pytest.mark.parametrize("key", ["follow-torrent", "follow-metalink"])
def test_following_torrents_is_refused_and_turned_off_for_added_links(policy: Policy, key: str) -> None:
    error = refused(policy, "aria2.addUri", [["https://example.com/a.torrent"], {key: "true"}])
    assert error.code == "torrents_disabled"
    assert (
        refused(policy, "aria2.changeOption", ["2089b05ecca3d829", {key: "mem"}]).code == "torrents_disabled"
    )
    # an addUri without options gets both turned off, so a .torrent it fetches stays a file
    assert policy.check("aria2.addUri", [["https://example.com/a.torrent"]])[1] == {
        "follow-torrent": "false",
        "follow-metalink": "false",
    }


def test_magnet_links_and_unknown_schemes_are_refused(policy: Policy) -> None:
    magnet = refused(policy, "aria2.addUri", [["magnet:?xt=urn:btih:0123456789abcdef"]])
    assert magnet.code == "torrents_disabled"
    for link in ("file:///etc/passwd", "gopher://example.com/", "example.com/a", 7):
        assert refused(policy, "aria2.addUri", [[link]]).code == "link_not_allowed", link
    change = refused(policy, "aria2.changeUri", ["2089b05ecca3d829", 1, [], ["magnet:?xt=urn:btih:01"]])
    assert change.code == "torrents_disabled"


def test_options_that_are_not_an_object_are_refused(policy: Policy) -> None:
    assert (
        refused(policy, "aria2.addUri", [["https://example.com/a"], ["dir", "/etc"]]).code
        == "invalid_options"
    )
    assert refused(policy, "aria2.changeGlobalOption", ["dir=/etc"]).code == "invalid_options"


def test_change_global_option_may_change_only_speed_limits_and_the_queue(policy: Policy) -> None:
    allowed = {
        "max-overall-download-limit": "10M",
        "max-overall-upload-limit": "1M",
        "max-download-limit": "5M",
        "max-upload-limit": "0",
        "max-concurrent-downloads": "3",
    }
    assert policy.check("aria2.changeGlobalOption", [allowed]) == [allowed]
    for key in ("dir", "max-connection-per-server", "allow-overwrite", "split"):
        error = refused(policy, "aria2.changeGlobalOption", [{**allowed, key: "1"}])
        assert error.code == "global_option_not_allowed", key
        assert "the daemon is shared, so changeGlobalOption may change only max-overall-download-limit" in (
            error.message
        )


# -- redaction -------------------------------------------------------------------------------


def test_header_values_are_redacted_in_get_option_answers_and_their_names_kept() -> None:
    answer = {"dir": "/m/loras", "header": "Cookie: NID=abc; SID=def\nUser-Agent: me/1.0", "split": "16"}
    assert redact(answer) == {
        "dir": "/m/loras",
        "header": "Cookie: redacted\nUser-Agent: redacted",
        "split": "16",
    }
    assert redact({"header": ["Authorization: Bearer x", "Cookie: y"]}) == {
        "header": ["Authorization: redacted", "Cookie: redacted"]
    }


@pytest.mark.parametrize(
    "key",
    [
        "rpc-secret",
        "http-user",
        "http-passwd",
        "ftp-user",
        "ftp-passwd",
        "all-proxy-user",
        "all-proxy-passwd",
        "https-proxy-user",
        "https-proxy-passwd",
        "ftp-proxy-passwd",
        "load-cookies",
        "save-cookies",
    ],
)
def test_credentials_are_redacted_in_option_answers(key: str) -> None:
    answer = redact({key: "hunter2-value", "max-tries": "10"})
    assert answer == {key: "redacted", "max-tries": "10"}


def test_secret_query_parameters_are_redacted_in_tell_status_files() -> None:
    uri = (
        "https://r2.example.com/model.safetensors?X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA%2F1"
        "&X-Amz-Signature=deadbeef&response-content-disposition=attachment&token=abc&v=2"
    )
    status: dict[str, Any] = {
        "gid": "2089b05ecca3d829",
        "files": [{"index": "1", "path": "/m/loras/a.safetensors", "uris": [{"status": "used", "uri": uri}]}],
    }
    clean = redact(status)["files"][0]["uris"][0]["uri"]
    assert clean == (
        "https://r2.example.com/model.safetensors?X-Amz-Algorithm=redacted&X-Amz-Credential=redacted"
        "&X-Amz-Signature=redacted&response-content-disposition=attachment&token=redacted&v=2"
    )
    assert status["files"][0]["uris"][0]["uri"] == uri  # the answer itself is left alone


@pytest.mark.parametrize(
    "query, expected",
    [
        ("Signature=abc&Key-Pair-Id=K1&Policy=p", "Signature=redacted&Key-Pair-Id=K1&Policy=redacted"),
        ("sv=2020&sig=abc%3D&se=2030", "sv=2020&sig=redacted&se=2030"),
        ("access_token=abc&alt=media", "access_token=redacted&alt=media"),
        ("X-Goog-Signature=abc&X-Goog-Date=1", "X-Goog-Signature=redacted&X-Goog-Date=redacted"),
        ("api_key=abc&id=1", "api_key=redacted&id=1"),
        ("download=true", "download=true"),
    ],
)
def test_get_uris_answers_lose_secret_query_values(query: str, expected: str) -> None:
    answer = redact([{"status": "used", "uri": f"https://cdn.example.com/f.bin?{query}"}])
    assert answer == [{"status": "used", "uri": f"https://cdn.example.com/f.bin?{expected}"}]


def test_user_and_password_inside_uris_are_redacted() -> None:
    assert redact({"all-proxy": "http://user:pw@127.0.0.1:3128"}) == {
        "all-proxy": "http://redacted@127.0.0.1:3128"
    }
    assert redact(["ftp://me:secret@ftp.example.com/x?token=1"]) == [
        "ftp://redacted@ftp.example.com/x?token=redacted"
    ]


def test_tell_active_lists_are_redacted_entry_by_entry() -> None:
    entries = [
        {"gid": str(n), "files": [{"uris": [{"uri": f"https://h.example/{n}?sig=s{n}"}]}]} for n in range(3)
    ]
    assert [e["files"][0]["uris"][0]["uri"] for e in redact(entries)] == [
        f"https://h.example/{n}?sig=redacted" for n in range(3)
    ]


def test_multicall_answers_are_redacted_at_any_depth() -> None:
    answers = [
        [{"header": "Cookie: a=b"}],
        [[{"gid": "1", "files": [{"uris": [{"uri": "https://h.example/a?token=t"}]}]}]],
        {"code": 1, "message": "Cannot open https://h.example/a?token=t"},
    ]
    assert redact(answers) == [
        [{"header": "Cookie: redacted"}],
        [[{"gid": "1", "files": [{"uris": [{"uri": "https://h.example/a?token=redacted"}]}]}]],
        {"code": 1, "message": "Cannot open https://h.example/a?token=redacted"},
    ]


def test_answers_without_secrets_are_unchanged() -> None:
    answer = {"version": "1.37.0", "enabledFeatures": ["BitTorrent"], "dir": "/m", "numActive": "2"}
    assert redact(answer) == answer
    assert redact("https://example.com/plain/file.bin?download=true") == (
        "https://example.com/plain/file.bin?download=true"
    )


# -- the dispatcher: the secret, batches, multicall, the intake ---------------------------------


class RecordingDaemon:
    """Stands in for aria2c: records each call that reaches it and answers it like aria2."""

    def __init__(self, results: dict[str, Any] | None = None, error: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[str, list[Any]]] = []
        self.results = results or {}
        self.error = error

    def result(self, method: str) -> Any:
        return self.results.get(method, "OK")

    async def call(self, method: str, params: list[Any]) -> dict[str, Any]:
        self.calls.append((method, params))
        if self.error is not None:
            return {"id": "gateway", "jsonrpc": "2.0", "error": self.error}
        if method == "system.multicall":
            return {"id": "gateway", "result": [[self.result(spec["methodName"])] for spec in params[0]]}
        return {"id": "gateway", "jsonrpc": "2.0", "result": self.result(method)}


class ListIntake:
    """An intake that takes links to civitai.example, refuses blocked.example, leaves the rest."""

    def __init__(self) -> None:
        self.taken: list[tuple[list[str], dict[str, Any], int | None]] = []

    async def add_uri(
        self, uris: list[str], options: dict[str, Any], position: int | None, remote: bool = False
    ) -> str | None:
        if "blocked.example" in uris[0]:
            raise OrchestratorError("link_refused", "That site is not allowed here.")
        if "civitai.example" not in uris[0]:
            return None
        self.taken.append((uris, options, position))
        return "00000000000000c1"


def dispatch(dispatcher: Dispatcher, payload: Any, caller: Caller = REMOTE) -> tuple[Any, int]:
    reply = asyncio.run(dispatcher.handle(json.loads(json.dumps(payload)), caller))
    return reply.body, reply.status


def call(method: str, *params: Any, secret: str | None = TOKEN, call_id: Any = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": call_id,
        "method": method,
        "params": ([f"token:{secret}"] if secret is not None else []) + list(params),
    }


def spec(method: str, *params: Any, secret: str | None = TOKEN) -> dict[str, Any]:
    return {
        "methodName": method,
        "params": ([f"token:{secret}"] if secret is not None else []) + list(params),
    }


@pytest.fixture
def daemon() -> RecordingDaemon:
    return RecordingDaemon({"aria2.getVersion": {"version": "1.37.0"}})


@pytest.fixture
def dispatcher(policy: Policy, daemon: RecordingDaemon) -> Dispatcher:
    return Dispatcher(TOKEN, policy, ListIntake(), daemon)


def test_the_clients_secret_is_checked_and_never_reaches_the_daemon(
    dispatcher: Dispatcher, daemon: RecordingDaemon
) -> None:
    body, status = dispatch(dispatcher, call("aria2.getVersion"))
    assert (body, status) == ({"id": 1, "jsonrpc": "2.0", "result": {"version": "1.37.0"}}, 200)
    assert daemon.calls == [("aria2.getVersion", [])]  # the daemon client adds the daemon's own


@pytest.mark.parametrize("secret", [None, "wrong", "", TOKEN + "x", TOKEN[:-1]])
def test_a_wrong_or_missing_secret_is_aria2s_unauthorized(
    dispatcher: Dispatcher, daemon: RecordingDaemon, secret: str | None
) -> None:
    body, status = dispatch(dispatcher, call("aria2.tellActive", secret=secret), LOCAL)
    assert body == {"id": 1, "jsonrpc": "2.0", "error": {"code": 1, "message": "Unauthorized"}}
    assert status == 400
    assert daemon.calls == []


def test_a_batch_is_answered_call_by_call_and_unauthorized_ones_fail_alone(
    dispatcher: Dispatcher, daemon: RecordingDaemon
) -> None:
    body, status = dispatch(
        dispatcher,
        [
            call("aria2.getVersion", call_id="a"),
            call("aria2.pauseAll", secret="nope", call_id="b"),
            call("aria2.pauseAll", call_id=0),
        ],
    )
    assert status == 200
    assert body == [
        {"id": "a", "jsonrpc": "2.0", "result": {"version": "1.37.0"}},
        {"id": "b", "jsonrpc": "2.0", "error": {"code": 1, "message": "Unauthorized"}},
        {"id": 0, "jsonrpc": "2.0", "result": "OK"},
    ]
    assert daemon.calls == [("aria2.getVersion", []), ("aria2.pauseAll", [])]


def test_refused_calls_inside_a_multicall_are_faults_at_their_place(
    dispatcher: Dispatcher, daemon: RecordingDaemon, tmp_path: Path
) -> None:
    specs = [
        spec("aria2.getVersion"),
        spec("aria2.shutdown"),
        spec("aria2.changeGlobalOption", {"on-download-complete": "/bin/sh"}),
        spec("aria2.addUri", ["https://example.com/a"], {"dir": str(tmp_path)}),
        spec("aria2.addUri", ["https://example.com/b"], {"out": "../b"}),
        spec("aria2.getVersion", secret="wrong"),
        spec("system.multicall", []),
        "not a struct",
        spec("aria2.tellActive"),
    ]
    body, _ = dispatch(dispatcher, call("system.multicall", specs, secret=None))
    results = body["result"]
    assert results[0] == [{"version": "1.37.0"}]
    assert results[1]["data"]["code"] == "method_not_allowed"
    assert results[2]["data"]["code"] == "option_not_allowed"
    assert results[3]["data"]["code"] == "dir_outside_models"
    assert results[4]["data"]["code"] == "invalid_out"
    assert results[5] == {"code": 1, "message": "Unauthorized"}
    assert results[6] == {"code": 1, "message": "Recursive system.multicall forbidden."}
    assert results[7] == {"code": 1, "message": "system.multicall expected struct."}
    assert results[8] == ["OK"]
    # only what passed reached the daemon, in one multicall, without any client secret
    assert daemon.calls == [
        (
            "system.multicall",
            [
                [
                    {"methodName": "aria2.getVersion", "params": []},
                    {"methodName": "aria2.tellActive", "params": []},
                ]
            ],
        )
    ]


def test_list_methods_needs_no_secret_only_for_a_caller_on_this_machine(
    dispatcher: Dispatcher, daemon: RecordingDaemon
) -> None:
    for method in ("system.listMethods", "system.listNotifications"):
        assert "result" in dispatch(dispatcher, call(method, secret=None), LOCAL)[0]
        assert dispatch(dispatcher, call(method, secret=None), REMOTE)[0]["error"] == {
            "code": 1,
            "message": "Unauthorized",
        }
        assert "result" in dispatch(dispatcher, call(method), REMOTE)[0]


def test_more_than_100_calls_at_once_are_refused(dispatcher: Dispatcher, daemon: RecordingDaemon) -> None:
    body, status = dispatch(dispatcher, [call("aria2.getVersion", call_id=n) for n in range(101)])
    assert (body["error"]["data"]["code"], status) == ("too_many_calls", 400)
    body, _ = dispatch(dispatcher, call("system.multicall", [spec("aria2.getVersion")] * 101, secret=None))
    assert body["error"]["data"]["code"] == "too_many_calls"
    assert daemon.calls == []
    assert len(dispatch(dispatcher, [call("aria2.getVersion", call_id=n) for n in range(100)])[0]) == 100


def test_malformed_calls_get_aria2s_own_errors(dispatcher: Dispatcher, daemon: RecordingDaemon) -> None:
    assert dispatch(dispatcher, {"method": "aria2.getVersion"}) == (
        {"id": None, "jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request."}},
        400,
    )
    assert dispatch(dispatcher, {"id": 3, "method": 7})[0]["error"]["code"] == -32600
    assert dispatch(dispatcher, {"id": 3, "method": "aria2.getVersion", "params": {"a": 1}})[0]["error"] == {
        "code": -32602,
        "message": "Invalid params.",
    }
    assert dispatch(dispatcher, "text")[0]["error"]["code"] == -32600
    assert daemon.calls == []


def test_the_intake_takes_its_links_and_leaves_the_others_to_aria2(
    dispatcher: Dispatcher, daemon: RecordingDaemon, models: Path
) -> None:
    intake = dispatcher.intake
    assert isinstance(intake, ListIntake)
    body, _ = dispatch(dispatcher, call("aria2.addUri", ["https://civitai.example/m/1"], {"dir": "loras"}, 2))
    assert body["result"] == "00000000000000c1"
    assert intake.taken == [
        (
            ["https://civitai.example/m/1"],
            {"dir": str(models / "loras"), "follow-torrent": "false", "follow-metalink": "false"},
            2,
        )
    ]
    assert daemon.calls == []
    body, _ = dispatch(dispatcher, call("aria2.addUri", ["https://plain.example/f.bin"], {"out": "f.bin"}))
    assert body["result"] == "OK"
    assert daemon.calls == [
        (
            "aria2.addUri",
            [
                ["https://plain.example/f.bin"],
                {"out": "f.bin", "follow-torrent": "false", "follow-metalink": "false"},
            ],
        )
    ]
    # inside a multicall too, each at its place
    body, _ = dispatch(
        dispatcher,
        call(
            "system.multicall",
            [
                spec("aria2.addUri", ["https://plain.example/g"], {}),
                spec("aria2.addUri", ["https://civitai.example/2"], {}),
            ],
            secret=None,
        ),
    )
    assert body["result"] == [["OK"], ["00000000000000c1"]]


def test_an_intake_refusal_reaches_the_client_with_its_code(
    dispatcher: Dispatcher, daemon: RecordingDaemon
) -> None:
    body, status = dispatch(dispatcher, call("aria2.addUri", ["https://blocked.example/f"], {}))
    assert body["error"] == {
        "code": 1,
        "message": "That site is not allowed here.",
        "data": {"code": "link_refused"},
    }
    assert status == 400
    assert daemon.calls == []


def test_a_refused_option_never_reaches_the_intake(dispatcher: Dispatcher, daemon: RecordingDaemon) -> None:
    body, _ = dispatch(
        dispatcher, call("aria2.addUri", ["https://civitai.example/m/1"], {"on-download-complete": "x"})
    )
    assert body["error"]["data"]["code"] == "option_not_allowed"
    assert isinstance(dispatcher.intake, ListIntake) and dispatcher.intake.taken == []


def test_the_daemons_errors_come_back_redacted(policy: Policy) -> None:
    failing = RecordingDaemon(error={"code": 1, "message": "No URI available: https://h.example/a?token=abc"})
    body, status = dispatch(
        Dispatcher(TOKEN, policy, None, failing), call("aria2.tellStatus", "2089b05ecca3d829")
    )
    assert body["error"] == {"code": 1, "message": "No URI available: https://h.example/a?token=redacted"}
    assert status == 400


def test_secrets_tells_which_calls_carry_the_right_one(dispatcher: Dispatcher) -> None:
    payload = [
        call("aria2.getVersion"),
        call("aria2.getVersion", secret="wrong"),
        call(
            "system.multicall", [spec("aria2.tellActive"), spec("aria2.tellActive", secret=None)], secret=None
        ),
    ]
    assert dispatcher.secrets(payload) == [True, False, True, False]
    assert dispatcher.secrets({"id": 1, "method": "aria2.getVersion"}) == [False]


# -- the GET form ----------------------------------------------------------------------------


def b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode().replace("=", "%3D").replace("+", "%2B")


def test_the_get_form_is_read_as_aria2_reads_it() -> None:
    params = ["token:abc", "2089b05ecca3d829"]
    assert decode_get(f"method=aria2.tellStatus&id=foo&params={b64(params)}") == (
        {"method": "aria2.tellStatus", "id": "foo", "params": params},
        None,
    )
    batch = [{"id": "a", "method": "aria2.getVersion"}, {"id": "b", "method": "aria2.tellActive"}]
    assert decode_get(f"params={b64(batch)}") == (batch, None)
    assert decode_get("method=aria2.getVersion&id=1&jsoncallback=cb")[1] == "cb"
    with pytest.raises(Fault) as caught:
        decode_get("method=aria2.getVersion&id=1&params=!!notbase64")
    assert caught.value.code == -32700


def test_the_access_log_never_sees_the_get_forms_params() -> None:
    query = f"jsonrpc=2.0&method=aria2.tellStatus&id=7&params={b64(['token:' + TOKEN])}"
    shown = loggable_query(query)
    assert shown == "method=aria2.tellStatus&id=7&params=[redacted]"
    assert TOKEN not in shown and b64(["token:" + TOKEN]) not in shown
