"""A fake Hugging Face Hub: the resolve endpoint, its headers and its error codes.

Like huggingface.co: LFS files answer 302 to a signed URL on the storage host
with X-Linked-Size, X-Linked-Etag (the sha256), X-Repo-Commit; small files are
served by the Hub itself with a git-sha1 ETag; renamed repositories answer a
relative 307; errors carry X-Error-Code (RepoNotFound, GatedRepo,
EntryNotFound, RevisionNotFound) and X-Error-Message, with 401 for anonymous
requests to private, gated or missing repositories.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from tests.fakes.service import Reply, Request, Service, SignedStorage, content_disposition, serve_bytes

TOKEN = "hf_testTokenAbcdefghijklmnopqrstuvwx"
_PREFIX = {"dataset": "datasets/", "space": "spaces/", "model": ""}


@dataclass
class Entry:
    data: bytes
    lfs: bool
    key: str | None = None  # storage key for LFS files


@dataclass
class Repo:
    kind: str
    name: str
    private: bool = False
    gated: bool = False
    granted: bool = True  # the test token may read it (private) / accepted its terms (gated)
    revisions: dict[str, str] = field(default_factory=lambda: {"main": "a" * 40})
    files: dict[str, Entry] = field(default_factory=dict)  # at the newest commit
    snapshots: dict[str, dict[str, Entry]] = field(default_factory=dict)  # older commits' files


class FakeHub(Service):
    def __init__(self, storage: SignedStorage, host: str = "127.0.0.4") -> None:
        super().__init__(host)
        self.storage = storage
        self.tokens = {TOKEN}
        self.repos: dict[tuple[str, str], Repo] = {}
        self.renamed: dict[tuple[str, str], str] = {}
        self.failing: int | None = None  # every answer is this status (5xx)

    def add_repo(self, name: str, kind: str = "model", **options) -> Repo:
        self.repos[(kind, name)] = Repo(kind, name, **options)
        return self.repos[(kind, name)]

    def add_file(self, name: str, path: str, data: bytes, lfs: bool = True, kind: str = "model") -> bytes:
        entry = Entry(data, lfs)
        if lfs:
            entry.key = self.storage.put(data, path.rsplit("/", 1)[-1])
        self.repos[(kind, name)].files[path] = entry
        return data

    def push(self, name: str, path: str, data: bytes, kind: str = "model") -> str:
        """A new commit on main that changes one file; the old commit stays readable, as on the Hub."""
        repo = self.repos[(kind, name)]
        old = repo.revisions["main"]
        repo.snapshots[old] = dict(repo.files)
        new = hashlib.sha1(old.encode() + path.encode() + data).hexdigest()
        self.add_file(name, path, data, kind=kind)
        repo.revisions["main"] = new
        return new

    def resolves(self) -> list[Request]:
        return [r for r in self.requests if "/resolve/" in r.path]

    # -- answering -------------------------------------------------------------------------------

    def respond(self, request: Request) -> Reply:
        parsed = _parse(request.path)
        if self.failing:
            return Reply.html("<html><body>Internal Error - We're working hard to fix this</body></html>",
                              self.failing)
        if parsed is None:
            return Reply.html("<html><body>Hugging Face page</body></html>")
        kind, name, revision, path = parsed
        token = (request.header("Authorization") or "").removeprefix("Bearer ").strip() or None
        if token and token not in self.tokens:
            return _error(401, None, "Invalid credentials in Authorization header")
        if (kind, name) in self.renamed:
            new = self.renamed[(kind, name)]
            return Reply.redirect(f"/{_PREFIX[kind]}{new}/resolve/{quote(revision, safe='')}/{quote(path)}")
        repo = self.repos.get((kind, name))
        visible = repo is not None and (not repo.private or (token is not None and repo.granted))
        if not visible:
            message = f"Repository Not Found for url: {request.path}."
            return _error(404 if token else 401, "RepoNotFound", message)
        assert repo is not None
        if repo.gated and not (token and repo.granted):
            return _gated(repo, token)
        known = {*repo.revisions.values(), *repo.snapshots}
        commit = repo.revisions.get(revision) or (revision if revision in known else None)
        if commit is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        entry = repo.snapshots.get(commit, repo.files).get(path)
        if entry is None:
            return _error(404, "EntryNotFound", "Entry not found")
        return self._file(request, entry, commit, path)

    def _file(self, request: Request, entry: Entry, commit: str, path: str) -> Reply:
        if entry.lfs:
            sha = hashlib.sha256(entry.data).hexdigest()
            return Reply(302, {
                "Location": self.storage.sign(entry.key),
                "X-Linked-Size": str(len(entry.data)),
                "X-Linked-Etag": f'"{sha}"',
                "ETag": f'"{sha}"',
                "X-Repo-Commit": commit,
                "Content-Type": "text/plain; charset=utf-8",
            }, b"Found. Redirecting to storage")
        git_sha1 = hashlib.sha1(b"blob %d\0" % len(entry.data) + entry.data).hexdigest()
        headers = {
            "ETag": f'"{git_sha1}"',
            "X-Repo-Commit": commit,
            "Content-Disposition": content_disposition(path.rsplit("/", 1)[-1], "inline"),
        }
        return serve_bytes(request, entry.data, headers)


def _parse(raw_path: str) -> tuple[str, str, str, str] | None:
    segments = raw_path.strip("/").split("/")
    kind = {"datasets": "dataset", "spaces": "space"}.get(segments[0], "model")
    if kind != "model":
        segments = segments[1:]
    for at in (2, 1):
        if len(segments) > at + 2 and segments[at] == "resolve":
            name = "/".join(segments[:at])
            return kind, name, unquote(segments[at + 1]), "/".join(unquote(s) for s in segments[at + 2 :])
    return None


def _error(status: int, code: str | None, message: str) -> Reply:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return Reply.json(status, {"error": message}, headers)


def _gated(repo: Repo, token: str | None) -> Reply:
    page = f"https://huggingface.co/{_PREFIX[repo.kind]}{repo.name}"
    if token:
        message = (f"Access to model {repo.name} is restricted and you are not in the authorized list. "
                   f"Visit {page} to ask for access.")
        return _error(403, "GatedRepo", message)
    message = (f"Access to model {repo.name} is restricted. You must have access to it and be "
               "authenticated to access it. Please log in.")
    return _error(401, "GatedRepo", message)
