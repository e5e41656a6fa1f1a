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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from tests.fakes.service import Reply, Request, Service

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


class FakeHub(Service):
    """One model repository at one commit; `url_of(served_name, tag)` gives the redirect target.
    The server itself is the test suite's (tests/fakes/service.py)."""

    def __init__(
        self, repo: str, files: list[HubFile], url_of: Callable[[str, str | None], str], host: str = HOST
    ) -> None:
        super().__init__(host)
        self.repo = repo
        self.files = {file.path: file for file in files}
        self.url_of = url_of
        self.commit = hashlib.sha1(repo.encode() + json.dumps(sorted(self.files)).encode()).hexdigest()
        self.tag: str | None = None  # the run in progress: redirects carry it

    def page_url(self, folder: str) -> str:
        """The folder's page as people copy it (the app reads it through HF_ENDPOINT)."""
        return f"https://huggingface.co/{self.repo}/tree/main/{folder}"

    def resolve_url(self, path: str) -> str:
        return f"https://huggingface.co/{self.repo}/resolve/main/{quote(path)}"

    # -- answering -------------------------------------------------------------------------------

    def respond(self, request: Request) -> Reply:
        raw_path = request.path
        api = _API.fullmatch(raw_path)
        if api and api["repo"] == self.repo and request.method in ("GET", "HEAD"):
            revision, _, folder = api["rest"].partition("/")
            if not self._known(unquote(revision)):
                return _error(404, "RevisionNotFound", f"Invalid rev id: {unquote(revision)}")
            if api["route"] == "revision":
                return Reply.json(200, self._info())
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

    def _tree(self, folder: str) -> Reply:
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
        return Reply.json(200, entries)

    def _redirect(self, file: HubFile) -> Reply:
        headers = {
            "Location": self.url_of(file.served, self.tag),
            "X-Linked-Size": str(file.size),
            "X-Linked-Etag": f'"{file.sha256}"',
            "ETag": f'"{file.sha256}"',
            "X-Repo-Commit": self.commit,
            "Accept-Ranges": "bytes",
            "Content-Type": "text/plain; charset=utf-8",
        }
        return Reply(302, headers, b"Found. Redirecting to the CDN")


def _tree_file(file: HubFile) -> dict[str, object]:
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{file.sha256}\nsize {file.size}\n"
    return {
        "type": "file",
        "oid": hashlib.sha1(b"blob %d\0" % len(pointer) + pointer.encode()).hexdigest(),
        "size": file.size,
        "path": file.path,
        "lfs": {"oid": file.sha256, "size": file.size, "pointerSize": len(pointer)},
    }


def _error(status: int, code: str, message: str) -> Reply:
    headers = {"X-Error-Code": code, "X-Error-Message": message}
    return Reply.json(status, {"error": message}, headers)
