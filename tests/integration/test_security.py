"""Nobody in who does not belong; nothing secret written anywhere (docs/RELIABILITY.md)."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import websocket

from tests.conftest import ROOT, Server, free_port, needs_aria2

pytestmark = [pytest.mark.integration, needs_aria2]

MiB = 1024 * 1024


def login_token(server: Server) -> str:
    match = re.search(r"\?token=([A-Za-z0-9_\-]+)", server.log())
    assert match, server.log()
    return match.group(1)


def refused_socket(url: str, **options) -> tuple[int, str]:
    """What a refused WebSocket gets: the handshake, then at once a close with its code and
    reason (docs/PROTOCOL.md), never a hello or any other message."""
    ws = websocket.create_connection(url, timeout=5, **options)
    try:
        frame = ws.recv_data_frame(control_frame=True)[1]
    finally:
        ws.close()
    assert frame.opcode == websocket.ABNF.OPCODE_CLOSE
    return int.from_bytes(frame.data[:2], "big"), frame.data[2:].decode()


def test_exposed_server_requires_the_token_everywhere(server_factory):
    server = server_factory("--host", "0.0.0.0")
    token = login_token(server)
    # page, REST and WebSocket all closed without it
    assert requests.get(server.base + "/", timeout=5).status_code == 401
    refused = requests.get(server.base + "/api/downloads", timeout=5)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert refused_socket(server.ws_url) == (1008, "unauthorized")
    # a script uses the Bearer header
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(server.base + "/api/downloads", headers=headers, timeout=5).ok
    assert (
        requests.get(
            server.base + "/api/downloads",
            timeout=5,
            headers={"Authorization": "Bearer wrong-token-wrong-token"},
        ).status_code
        == 401
    )
    # the page: the printed link trades the token for a cookie and drops it from the address
    session = requests.Session()
    login = session.get(f"{server.base}/?token={token}", allow_redirects=False, timeout=5)
    assert login.status_code == 303 and login.headers["Location"] == "/"
    assert "HttpOnly" in login.headers["Set-Cookie"] and token not in login.headers["Set-Cookie"]
    assert session.get(server.base + "/", timeout=5).ok
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    ws = websocket.create_connection(server.ws_url, timeout=5, cookie=cookie)
    assert json.loads(ws.recv())["type"] == "hello"
    ws.close()
    # the login link never lands in the access log
    server.stop()
    assert server.log().count(token) == 1  # the start-up line only


def test_exposed_start_refuses_a_weak_token(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--token",
            "short",
            "--state-dir",
            str(tmp_path / "s"),
            "--models-dir",
            str(tmp_path / "m"),
        ],
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "at least 16 characters" in result.stderr


def test_other_sites_and_rebound_names_are_refused_on_loopback(server_factory, origin):
    origin.add_file("/x.bin", 1024)
    server = server_factory()
    # a page on another site posting into the local app (CSRF)
    evil = {"Origin": "http://evil.example"}
    answer = requests.post(
        server.base + "/api/downloads",
        headers=evil,
        timeout=5,
        json={"url": origin.url("/x.bin"), "type": "lora"},
    )
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden_origin"
    # ... or opening the WebSocket (cross-site WebSocket hijacking)
    assert refused_socket(server.ws_url, origin="http://evil.example") == (1008, "forbidden_origin")
    # DNS rebinding: a foreign name pointing at 127.0.0.1 needs the token
    rebound = requests.get(server.base + "/api/downloads", headers={"Host": "evil.example"}, timeout=5)
    assert rebound.status_code == 401
    assert server.api("GET", "/api/downloads").json()["jobs"] == []
    # the app's own page still works
    same = requests.post(
        server.base + "/api/downloads",
        timeout=5,
        headers={"Origin": server.base},
        json={"url": origin.url("/x.bin"), "type": "lora"},
    )
    assert same.status_code == 201


def test_private_targets_refused_when_the_policy_is_on(server_factory, origin, origin2):
    origin.add_file("/internal.bin", 1024)
    origin2.add_redirect("/hop", origin.url("/internal.bin"))
    server = server_factory("--block-private", "on")
    for url in (origin.url("/internal.bin"), origin2.url("/hop")):
        job = server.submit(url, "lora")
        failed = server.wait_for(job["id"], {"failed", "completed"})
        assert failed["error"]["code"] == "blocked_target"
        assert "--block-private off" in failed["error"]["message"]  # the way to allow a NAS
    assert origin.requests == [] and origin2.requests == []  # refused before any request
    assert server.model_files() == [] and server.staging_files() == []


def test_symlinks_planted_in_the_models_folder_cannot_lead_outside(server_factory, origin, tmp_path):
    origin.add_file("/model.safetensors", 4096)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret_file = outside / "keep.txt"
    secret_file.write_text("do not touch")
    server = server_factory()
    server.models.mkdir(exist_ok=True)
    (server.models / "vae").symlink_to(outside, target_is_directory=True)
    job = server.submit(origin.url("/model.safetensors"), "vae")
    failed = server.wait_for(job["id"], {"failed", "completed"})
    assert failed["error"]["code"] == "invalid_folder"
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    # a file-level link to something outside is replaced as a link, never written through
    (server.models / "lora").mkdir()
    (server.models / "lora" / "model.safetensors").symlink_to(secret_file)
    job = server.submit(origin.url("/model.safetensors"), "lora", overwrite=True)
    assert server.wait_for(job["id"], {"failed", "completed"})["state"] == "completed"
    assert secret_file.read_text() == "do not touch"
    assert not (server.models / "lora" / "model.safetensors").is_symlink()


def test_limits_on_messages_urls_and_names(server_factory, connect):
    server = server_factory()
    client = connect(server)
    client.next()
    client.send(json.dumps({"type": "ping", "pad": "x" * (70 * 1024)}))
    assert client.next()["data"]["code"] == "message_too_large"
    client.send({"type": "ping"})
    assert client.next()["type"] == "pong"  # still usable
    long_url = "https://example.com/" + "a" * 5000
    answer = server.api("POST", "/api/downloads", json={"url": long_url, "type": "lora"})
    assert answer.json()["error"]["code"] == "invalid_url"
    big = server.api("POST", "/api/downloads", data=b"{" + b" " * (70 * 1024) + b"}")
    assert big.status_code == 413


def test_tokens_never_reach_the_origin_aria2_or_any_file(server_factory, origin, tmp_path):
    origin.add_file("/plain.safetensors", 2 * MiB)
    civitai_token = "civitai-SECRET-0123456789abcdef"
    hf_token = "hf_SECRET0123456789abcdefABCDEF"
    server = server_factory()
    job = server.submit(
        origin.url("/plain.safetensors"), "lora", civitai_token=civitai_token, hf_token=hf_token
    )
    assert server.wait_for(job["id"], {"completed", "failed"})["state"] == "completed"
    server.stop()  # flush the session file and logs
    for request in origin.requests:
        assert civitai_token not in json.dumps(request.headers) and hf_token not in request.query
        assert hf_token not in json.dumps(request.headers)
    for path in Path(tmp_path).rglob("*"):
        if path.is_file() and path.stat().st_size < 50 * MiB:
            content = path.read_bytes()
            assert civitai_token.encode() not in content, path
            assert hf_token.encode() not in content, path


def test_the_state_folder_and_what_holds_signed_urls_are_private(server_factory, origin):
    """The job list, aria2's session and log hold signed URLs and Drive cookies: owner only.
    aria2c sees none of the app's tokens in its environment; installed models stay readable."""
    origin.add_file("/private.bin", 2 * MiB, rate=1024 * 1024)
    server = server_factory(env={"CIVITAI_TOKEN": "civitai-SECRET-env-token-123", "HF_TOKEN": "hf_SECRETenv"})
    job = server.submit(origin.url("/private.bin"), "vae")
    server.wait_settled(job["id"])
    mode = lambda path: stat.S_IMODE(path.stat().st_mode)  # noqa: E731
    assert mode(server.state) == 0o700
    for name in ("jobs.sqlite3", "jobs.sqlite3-wal", "aria2.session", "aria2.log", "aria2.secret"):
        assert mode(server.state / name) == 0o600, name
    assert mode(server.models / "vae" / "private.bin") == 0o644
    [pid] = [
        int(p.name)
        for p in Path("/proc").glob("[0-9]*")
        if str(server.state / "aria2.runtime.conf").encode() in _cmdline(p)
    ]
    environment = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"SECRET" not in environment and b"CIVITAI_TOKEN" not in environment
    assert b"HF_TOKEN" not in environment
    server.stop()  # aria2c writes its session file anew as it exits: still private
    assert mode(server.state / "aria2.session") == 0o600


def _cmdline(process: Path) -> bytes:
    try:
        return (process / "cmdline").read_bytes()
    except OSError:
        return b""


def test_a_page_on_another_port_cannot_ride_on_the_session_cookie(server_factory, origin):
    """Exposed, logged in: the SD web UI on :7860 of the same host sends the app's cookie along
    (SameSite ignores ports), but its Origin is another site's: refused, REST and WebSocket."""
    origin.add_file("/x.bin", 1024)
    server = server_factory("--host", "0.0.0.0")
    token = login_token(server)
    session = requests.Session()
    session.get(f"{server.base}/?token={token}", timeout=5)
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    other_port = f"http://127.0.0.1:{server.port + 1}"
    answer = session.post(
        server.base + "/api/downloads",
        headers={"Origin": other_port},
        json={"url": origin.url("/x.bin"), "type": "lora"},
        timeout=5,
    )
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden_origin"
    assert refused_socket(server.ws_url, cookie=cookie, origin=other_port) == (1008, "forbidden_origin")
    # the app's own page, with its own Origin, still works on the cookie alone
    same = session.post(
        server.base + "/api/downloads",
        headers={"Origin": server.base},
        json={"url": origin.url("/x.bin"), "type": "lora"},
        timeout=5,
    )
    assert same.status_code == 201
    ws = websocket.create_connection(server.ws_url, timeout=5, cookie=cookie, origin=server.base)
    assert json.loads(ws.recv())["type"] == "hello"
    ws.close()


def test_through_a_tunnel_private_targets_are_refused_even_on_a_loopback_bound_server(server_factory, origin):
    """Bound to 127.0.0.1, reached as tunnel.example (a Colab tunnel, a reverse proxy): that request
    is exposed, so `--block-private auto` refuses a private target for it; a local one is not."""
    origin.add_file("/lan.bin", 1024)
    server = server_factory()  # --block-private auto, on loopback
    token = login_token(server)
    headers = {"Host": "tunnel.example", "Authorization": f"Bearer {token}"}
    tunnelled = requests.post(
        server.base + "/api/downloads",
        headers=headers,
        json={"url": origin.url("/lan.bin"), "type": "lora"},
        timeout=5,
    ).json()["job"]
    failed = server.wait_for(tunnelled["id"], {"failed", "completed"})
    assert failed["error"]["code"] == "blocked_target", failed
    local = server.submit(origin.url("/lan.bin"), "vae")  # from this machine: allowed
    assert server.wait_settled(local["id"])["state"] == "completed"
