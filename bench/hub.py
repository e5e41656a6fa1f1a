"""A fake Hugging Face Hub for the bundle scenario: files on disk, bytes from nginx.

It answers what both clients of the scenario ask, in the Hub's own shapes (the same as the
test suite's fake, tests/fakes/huggingface.py, which keeps every file in memory and so cannot
stand in for a 1 GiB one):

    GET  /api/models/<repo>/revision/<rev>              {"sha": <commit>, "siblings": [...]}
    GET  /api/models/<repo>/tree/<rev>[/<folder>]       directories, then files with `lfs`
    HEAD /<repo>/resolve/<rev>/<path>                   302 to the nginx origin, with
                                                        X-Repo-Commit, X-Linked-Size,
                                                        X-Linked-Etag (the sha256)

Every file is a Git LFS file, so every body comes from nginx, as the real Hub sends LFS
files to its CDN: the three contenders download the same bytes from the same server. The
redirect carries the tag of the run in progress (`?r=<tag>`), so nginx's log tells each
run's requests apart. The Hub itself runs in a thread of the benchmark: it answers a few
dozen small requests per run and never a body, on its own loopback address (HOST).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

_API = re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/(?P<route>revision|tree)/(?P<rest>.+)")
# Not nginx's 127.0.0.1: the app takes every link on the Hub's host for a Hub link (it compares
# host names, not ports), so the plain links of the per-file probe must be on another one.
HOST = "127.0.0.2"
_RESOLVE = re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)")


@dataclass(frozen=True)
class HubFile:
    path: str  # in the repository
    size: int
    sha256: str
    served: str  # its name under nginx's root


def sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class FakeHub:
    """One model repository at one commit; `url_of(served_name, tag)` gives the redirect target."""

    def __init__(
        self, repo: str, files: list[HubFile], url_of: Callable[[str, str | None], str], host: str = HOST
    ) -> None:
        self.repo = repo
        self.host = host
        self.files = {file.path: file for file in files}
        self.url_of = url_of
        self.commit = hashlib.sha1(repo.encode() + json.dumps(sorted(self.files)).encode()).hexdigest()
        self.tag: str | None = None  # the run in progress: redirects carry it
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        assert self._server is not None, "start() the hub first"
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> FakeHub:
        self._server = _Server(self)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True, name="hub").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def page_url(self, folder: str) -> str:
        """The folder's page as people copy it (the app reads it through HF_ENDPOINT)."""
        return f"https://huggingface.co/{self.repo}/tree/main/{folder}"

    def resolve_url(self, path: str) -> str:
        return f"https://huggingface.co/{self.repo}/resolve/main/{quote(path)}"

    # -- answering -------------------------------------------------------------------------------

    def answer(self, method: str, raw_path: str) -> tuple[int, dict[str, str], bytes]:
        self.requests += 1
        api = _API.fullmatch(raw_path)
        if api and api["repo"] == self.repo and method in ("GET", "HEAD"):
            revision, _, folder = api["rest"].partition("/")
            if not self._known(unquote(revision)):
                return _error(404, "RevisionNotFound", f"Invalid rev id: {unquote(revision)}")
            if api["route"] == "revision":
                return _json(self._info())
            return self._tree(unquote(folder).strip("/"))
        resolve = _RESOLVE.fullmatch(raw_path)
        if resolve and resolve["repo"] == self.repo:
            if not self._known(unquote(resolve["rev"])):
                return _error(404, "RevisionNotFound", f"Invalid rev id: {unquote(resolve['rev'])}")
            file = self.files.get(unquote(resolve["path"]))
            if file is None:
                return _error(404, "EntryNotFound", "Entry not found")
            return self._redirect(file)
        return _error(404, "RepoNotFound", f"Repository Not Found for url: {raw_path}.")

    def _known(self, revision: str) -> bool:
        return revision in ("main", self.commit)

    def _info(self) -> dict[str, object]:
        return {
            "_id": self.commit[:24],
            "id": self.repo,
            "modelId": self.repo,
            "author": self.repo.split("/")[0],
            "sha": self.commit,
            "private": False,
            "gated": False,
            "disabled": False,
            "lastModified": "2026-01-01T12:00:00.000Z",
            "createdAt": "2026-01-01T12:00:00.000Z",
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [{"rfilename": path} for path in self.files],
        }

    def _tree(self, folder: str) -> tuple[int, dict[str, str], bytes]:
        """The whole listing below `folder` in one page (recursive is what both clients ask)."""
        below = f"{folder}/" if folder else ""
        paths = [path for path in self.files if path.startswith(below)]
        if folder and not paths:
            return _error(404, "EntryNotFound", f"{folder} does not exist on {self.commit}")
        directories = sorted(
            {"/".join(path.split("/")[:i]) for path in paths for i in range(1, path.count("/") + 1)}
            - {folder}
        )
        entries: list[dict[str, object]] = [
            {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
            for path in directories
            if path.startswith(below)
        ]
        entries += [_tree_file(self.files[path]) for path in paths]
        return _json(entries)

    def _redirect(self, file: HubFile) -> tuple[int, dict[str, str], bytes]:
        headers = {
            "Location": self.url_of(file.served, self.tag),
            "X-Linked-Size": str(file.size),
            "X-Linked-Etag": f'"{file.sha256}"',
            "ETag": f'"{file.sha256}"',
            "X-Repo-Commit": self.commit,
            "Accept-Ranges": "bytes",
            "Content-Type": "text/plain; charset=utf-8",
        }
        return 302, headers, b"Found. Redirecting to the CDN"


def _tree_file(file: HubFile) -> dict[str, object]:
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{file.sha256}\nsize {file.size}\n"
    return {
        "type": "file",
        "oid": hashlib.sha1(b"blob %d\0" % len(pointer) + pointer.encode()).hexdigest(),
        "size": file.size,
        "path": file.path,
        "lfs": {"oid": file.sha256, "size": file.size, "pointerSize": len(pointer)},
    }


def _json(data: object) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(data).encode()


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}
    return status, headers, json.dumps({"error": message}).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub
        super().__init__((hub.host, 0), _Handler)

    def server_bind(self) -> None:
        import socketserver

        socketserver.TCPServer.server_bind(self)  # no reverse DNS lookup of the address

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up is no news here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, headers, body = self.server.hub.answer(self.command, urlsplit(self.path).path)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET
