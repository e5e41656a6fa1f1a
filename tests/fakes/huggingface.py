"""A fake Hugging Face Hub: the resolve endpoint, its headers and its error codes.

Like huggingface.co: LFS files answer 302 to a signed URL on the storage host
with X-Linked-Size, X-Linked-Etag (the sha256), X-Repo-Commit; small files are
served by the Hub itself with a git-sha1 ETag; renamed repositories answer a
relative 307; errors carry X-Error-Code (RepoNotFound, GatedRepo,
EntryNotFound, RevisionNotFound) and X-Error-Message, with 401 for anonymous
requests to private, gated or missing repositories.

The API part answers what huggingface_hub's snapshot_download asks (hf_api.py
`repo_info`, `list_repo_tree`): `/api/{models|datasets|spaces}/{repo}/revision/{rev}`
with the repository's info and `sha`, and `/api/.../tree/{rev}[/{path}]` with
`recursive` and `expand`, a JSON list of files (with `lfs` for LFS files only)
and directories, paths from the repository root, `tree_page_size` entries a page
and a `Link: <...>; rel="next"` header with a cursor for the rest. The same access
rules and X-Error-Code as the resolve endpoint; a path that is no folder answers
404 EntryNotFound. The revision and the path may come percent-encoded (the Python
client encodes both as one segment) or plain (special refs like refs/pr/1).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import quote, unquote, urlencode

from tests.fakes.service import Reply, Request, Service, SignedStorage, content_disposition, serve_bytes

TOKEN = "hf_testTokenAbcdefghijklmnopqrstuvwx"
_PREFIX = {"dataset": "datasets/", "space": "spaces/", "model": ""}
_API = re.compile(r"/api/(?P<kinds>models|datasets|spaces)/(?P<rest>.+)")
_SPECIAL_REF = re.compile(r"refs/(?:pr/\d+|convert/[\w.-]+)")


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
        self.tree_page_size = 1000  # the Hub's page without expand
        self.next_page_base: str | None = None  # tree pages point their next page at this host instead
        self.tree_body: bytes | None = None  # tree pages answer 200 with this body instead

    def add_repo(self, name: str, kind: str = "model", **options: Any) -> Repo:
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

    def api_calls(self) -> list[Request]:
        return [r for r in self.requests if r.path.startswith("/api/")]

    # -- answering -------------------------------------------------------------------------------

    def respond(self, request: Request) -> Reply:
        if self.failing:
            return Reply.html(
                "<html><body>Internal Error - We're working hard to fix this</body></html>", self.failing
            )
        api = _parse_api(request.path)
        if api is not None:
            return self._api(request, api)
        parsed = _parse(request.path)
        if parsed is None:
            return Reply.html("<html><body>Hugging Face page</body></html>")
        kind, name, revision, path = parsed
        tail = f"/resolve/{quote(revision, safe='')}/{quote(path)}"
        found = self._open(request, kind, name, revision, (f"/{_PREFIX[kind]}", tail))
        if isinstance(found, Reply):
            return found
        repo, commit = found
        entry = repo.snapshots.get(commit, repo.files).get(path)
        if entry is None:
            return _error(404, "EntryNotFound", "Entry not found")
        return self._file(request, entry, commit, path)

    def _open(
        self, request: Request, kind: str, name: str, revision: str, moved: tuple[str, str]
    ) -> tuple[Repo, str] | Reply:
        """The repository and the commit a request may read, or the Hub's refusal.

        `moved` is what goes before and after the new name when the repository was renamed.
        """
        token = (request.header("Authorization") or "").removeprefix("Bearer ").strip() or None
        if token and token not in self.tokens:
            return _error(401, None, "Invalid credentials in Authorization header")
        if (kind, name) in self.renamed:
            before, after = moved
            return Reply.redirect(f"{before}{self.renamed[(kind, name)]}{after}")
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
        return repo, commit

    # -- the API ---------------------------------------------------------------------------------

    def _api(self, request: Request, call: _ApiCall) -> Reply:
        query = f"?{urlencode(request.query)}" if request.query else ""
        moved = (f"/api/{call.kind}s/", call.tail + query)
        found = self._open(request, call.kind, call.name, call.revision, moved)
        if isinstance(found, Reply):
            return found
        repo, commit = found
        if call.route == "tree":
            return self._tree(request, repo, commit, call.path)
        return Reply.json(200, _info(repo, commit))

    def _tree(self, request: Request, repo: Repo, commit: str, folder: str) -> Reply:
        recursive = request.query.get("recursive", "").lower() in ("true", "1")
        entries = _tree_paths(repo.snapshots.get(commit, repo.files), folder.strip("/"), recursive)
        if entries is None:
            return _error(404, "EntryNotFound", f"{folder} does not exist on {commit}")
        if self.tree_body is not None:
            return Reply(200, {"Content-Type": "application/json; charset=utf-8"}, self.tree_body)
        start = _offset(request.query.get("cursor"))
        end = start + max(self.tree_page_size, 1)
        headers = {}
        if end < len(entries):
            query = urlencode({**request.query, "cursor": _cursor(end)})
            base = self.next_page_base or self.base_url
            headers["Link"] = f'<{base}{request.path}?{query}>; rel="next"'
        return Reply.json(200, [_tree_entry(*item) for item in entries[start:end]], headers)

    def _file(self, request: Request, entry: Entry, commit: str, path: str) -> Reply:
        if entry.lfs:
            sha = hashlib.sha256(entry.data).hexdigest()
            return Reply(
                302,
                {
                    "Location": self.storage.sign(entry.key or ""),
                    "X-Linked-Size": str(len(entry.data)),
                    "X-Linked-Etag": f'"{sha}"',
                    "ETag": f'"{sha}"',
                    "X-Repo-Commit": commit,
                    "Content-Type": "text/plain; charset=utf-8",
                },
                b"Found. Redirecting to storage",
            )
        headers = {
            "ETag": f'"{_git_sha1(entry.data)}"',
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


class _ApiCall(NamedTuple):
    kind: str
    name: str
    route: str  # "revision", "tree", or "" for the repository's info at main
    revision: str
    path: str
    tail: str  # the raw path after the repository's name


def _parse_api(raw_path: str) -> _ApiCall | None:
    found = _API.fullmatch(raw_path.rstrip("/"))
    if not found:
        return None
    kind = found["kinds"][:-1]
    segments = found["rest"].split("/")
    for at in (2, 1):
        if len(segments) > at + 1 and segments[at] in ("revision", "tree"):
            revision, rest = _split_revision(segments[at + 1 :])
            if segments[at] == "revision" and rest:
                return None
            path = "/".join(unquote(segment) for segment in rest)
            tail = "/" + "/".join(segments[at:])
            return _ApiCall(kind, "/".join(segments[:at]), segments[at], revision, path, tail)
    if len(segments) in (1, 2):
        return _ApiCall(kind, "/".join(segments), "", "main", "", "")
    return None


def _split_revision(segments: list[str]) -> tuple[str, list[str]]:
    special = "/".join(segments[:3])
    if _SPECIAL_REF.fullmatch(special):
        return special, segments[3:]
    return unquote(segments[0]), segments[1:]


def _info(repo: Repo, commit: str) -> dict[str, object]:
    """The fields of ModelInfo / DatasetInfo / SpaceInfo a client reads; siblings for older clients."""
    files = repo.snapshots.get(commit, repo.files)
    return {
        "_id": hashlib.sha1(repo.name.encode()).hexdigest()[:24],
        "id": repo.name,
        "author": repo.name.split("/")[0] if "/" in repo.name else None,
        "sha": commit,
        "private": repo.private,
        "gated": "auto" if repo.gated else False,
        "disabled": False,
        "lastModified": "2024-05-01T12:00:00.000Z",
        "createdAt": "2024-01-01T12:00:00.000Z",
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": [{"rfilename": path} for path in files],
    }


def _tree_paths(
    files: dict[str, Entry], folder: str, recursive: bool
) -> list[tuple[str, Entry | None]] | None:
    """Directories (sorted, entry None) then files in the order they were added: the Hub promises no order."""
    directories = {"/".join(path.split("/")[:i]) for path in files for i in range(1, path.count("/") + 1)}
    if folder and folder not in directories:
        return None
    below = f"{folder}/" if folder else ""

    def listed(path: str) -> bool:
        return bool(path) and path.startswith(below) and (recursive or "/" not in path[len(below) :])

    paths: list[tuple[str, Entry | None]] = [(path, None) for path in sorted(directories) if listed(path)]
    return paths + [(path, entry) for path, entry in files.items() if listed(path)]


def _tree_entry(path: str, entry: Entry | None) -> dict[str, object]:
    if entry is None:
        return {
            "type": "directory",
            "oid": hashlib.sha1(b"tree " + path.encode()).hexdigest(),
            "size": 0,
            "path": path,
        }
    return _tree_file(path, entry)


def _tree_file(path: str, entry: Entry) -> dict[str, object]:
    size = len(entry.data)
    if not entry.lfs:
        return {"type": "file", "oid": _git_sha1(entry.data), "size": size, "path": path}
    sha = hashlib.sha256(entry.data).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {size}\n".encode()
    lfs = {"oid": sha, "size": size, "pointerSize": len(pointer)}
    return {"type": "file", "oid": _git_sha1(pointer), "size": size, "path": path, "lfs": lfs}


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f'{{"offset":{offset}}}'.encode()).decode()


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    text = base64.urlsafe_b64decode(cursor.encode()).decode()
    return int(text.removeprefix('{"offset":').removesuffix("}"))


def _error(status: int, code: str | None, message: str) -> Reply:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return Reply.json(status, {"error": message}, headers)


def _gated(repo: Repo, token: str | None) -> Reply:
    page = f"https://huggingface.co/{_PREFIX[repo.kind]}{repo.name}"
    if token:
        message = (
            f"Access to model {repo.name} is restricted and you are not in the authorized list. "
            f"Visit {page} to ask for access."
        )
        return _error(403, "GatedRepo", message)
    message = (
        f"Access to model {repo.name} is restricted. You must have access to it and be "
        "authenticated to access it. Please log in."
    )
    return _error(401, "GatedRepo", message)
