"""`--block-private` where connections are made, not where a link was looked at.

127.0.0.8 plays a public file host (`--private-allow` lets it through); everything else on
loopback is the machine's own network: a local service, the app itself, aria2's RPC port.
Each origin answers the app's look-ahead (HEAD) with a file, and the engine's own GET
with a redirect inside: the engines' connections go through the egress proxy, which
refuses the hop where it is made.
"""

from __future__ import annotations

import hashlib

import pytest

from tests.conftest import needs_aria2
from tests.fakes.origin import Origin

pytestmark = [pytest.mark.integration, needs_aria2]

MiB = 1024 * 1024
PUBLIC = "127.0.0.8"
ENGINES = ["aria2", "requests"]


@pytest.fixture
def public():
    with Origin(PUBLIC) as server:
        yield server


def guarded_server(server_factory, engine: str):
    engine_flag = "auto" if engine == "aria2" else "requests"
    return server_factory("--block-private", "on", "--private-allow", PUBLIC, "--engine", engine_flag)


def failed_blocked(server, job: dict) -> dict:
    done = server.wait_for(job["id"], {"failed", "completed"}, timeout=60)
    assert done["state"] == "failed", done
    assert done["error"]["code"] == "blocked_target", done["error"]
    assert "--block-private off" in done["error"]["message"]
    assert server.model_files() == []
    return done


@pytest.mark.parametrize("engine", ENGINES)
def test_a_public_file_still_downloads_through_the_checks(server_factory, public, engine):
    data = public.add_file("/fine.safetensors", 4 * MiB)
    server = guarded_server(server_factory, engine)
    job = server.submit(public.url("/fine.safetensors"), "lora")
    done = server.wait_settled(job["id"], timeout=60)
    assert done["state"] == "completed", done
    assert done["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_redirect_the_look_ahead_never_saw_is_refused_where_the_engine_meets_it(
    server_factory, public, origin, engine
):
    """HEAD 200, GET 302 to a service on this machine: its answer must not become a model."""
    origin.add_file("/secret.txt", data=b"the local service's answer")
    public.add_redirect("/model.safetensors", origin.url("/secret.txt"), head_size=1024, status=302)
    server = guarded_server(server_factory, engine)
    failed_blocked(server, server.submit(public.url("/model.safetensors"), "lora"))
    assert origin.requests_for("/secret.txt") == []  # never contacted
    assert public.requests_for("/model.safetensors")[0].method == "HEAD"  # the look-ahead came first


@pytest.mark.parametrize("engine", ENGINES)
def test_a_redirect_to_the_app_itself_or_to_aria2s_rpc_port_is_refused(server_factory, public, engine):
    server = guarded_server(server_factory, engine)
    targets = {
        "/jobs.bin": f"http://127.0.0.1:{server.port}/api/downloads",
        "/rpc.bin": f"http://127.0.0.1:{server.aria2_port}/jsonrpc",
    }
    for path, target in targets.items():
        public.add_redirect(path, target, head_size=1024)
        failed_blocked(server, server.submit(public.url(path), "lora"))


@pytest.mark.parametrize("content_type", ["application/metalink4+xml", "application/x-bittorrent"])
def test_a_torrent_or_metalink_answer_is_refused_before_anything_starts(server_factory, public, content_type):
    public.add_file("/model.bin", data=b"<?xml version='1.0'?><metalink/>", content_type=content_type)
    server = guarded_server(server_factory, "aria2")
    job = server.submit(public.url("/model.bin"), "lora")
    done = server.wait_for(job["id"], {"failed", "completed"})
    assert done["error"]["code"] == "unsupported_content", done
    assert server.model_files() == [] and server.staging_files() == []


def test_a_metalink_only_the_engine_sees_is_not_followed_and_not_installed(server_factory, public, origin):
    """The look-ahead saw a file; the GET answered a metalink naming a local URL. aria2 must not
    follow it, and the XML it saved is no model."""
    origin.add_file("/hidden.bin", 4 * MiB)
    metalink = (
        "<?xml version='1.0' encoding='UTF-8'?><metalink xmlns='urn:ietf:params:xml:ns:metalink'>"
        f"<file name='hidden.bin'><url>{origin.url('/hidden.bin')}</url></file></metalink>"
    ).encode()
    public.add_file("/meta.bin", data=metalink, content_type="application/octet-stream")
    server = guarded_server(server_factory, "aria2")
    job = server.submit(public.url("/meta.bin"), "lora")
    done = server.wait_for(job["id"], {"failed", "completed"})
    assert done["state"] == "failed" and done["error"]["code"] == "not_a_file", done
    assert origin.requests_for("/hidden.bin") == []
    assert server.model_files() == []
