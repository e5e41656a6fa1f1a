"""Hugging Face folders: a folder link becomes the exact list of its files, pinned to one commit.

Two Hub API calls, the ones huggingface_hub's snapshot_download makes (hf_api.py
`repo_info` and `list_repo_tree`, utils/_pagination.py):

    GET {endpoint}/api/{models|datasets|spaces}/{repo}/revision/{rev}   -> {"sha": <commit>, ...}
    GET {endpoint}/api/{kind}s/{repo}/tree/{commit}/{folder}?recursive=true&expand=false
        -> [{"type": "file"|"directory", "path", "size", "oid", "lfs": {"oid": <sha256>, "size"}}]

Tree paths are relative to the repository root; further pages come through the
`Link` header's rel="next" URL. The revision and the folder are percent-encoded
as one path segment each, as the client does (`quote(..., safe="")`). Listing
at the commit and naming it in every resolve URL keeps the set whole when the
branch moves on. Errors carry the same X-Error-Code as single files and get the
same sentences (sources/huggingface.py). The token goes to the Hub's own host
only: a next page or redirect elsewhere is refused, never followed.

Include / exclude patterns behave as huggingface_hub's allow_patterns /
ignore_patterns (utils/_paths.py `filter_repo_objects`): `fnmatchcase` on the
path relative to the folder, `*` crosses `/`, a pattern ending in `/` means
everything below it, backslashes count as `/`. An empty include means all files.

Accepted links: `https://huggingface.co/<repo>/tree/<rev>[/<folder>]` (also hf.co,
datasets/ and spaces/), the repository page `https://huggingface.co/<owner>/<name>`
(the whole repository at main), `hf://[datasets/|spaces/]<owner>/<name>[@<rev>][/<folder>]`
where a trailing slash or a last part with no extension means a folder. Special
revisions `refs/pr/<n>` and `refs/convert/<name>` may stand unencoded, as the
Hub's pages write them (huggingface_hub utils/_hf_uris.py); other revisions with
a slash are encoded (`feature%2Ffoo`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import requests

from .. import bounds
from ..errors import OrchestratorError
from ..sources import http, huggingface
from ..sources.huggingface import _COMMIT, SERVICE, Link, _error, endpoint

MAX_FILES = 10_000  # files in one listing, after include / exclude
MAX_PAGES = 200  # 1,000 entries a page on the Hub: 200,000 to filter; also ends pages that go in circles
_KIND_PREFIXES = {"datasets": "dataset", "spaces": "space"}
_FILE_MARKERS = {"resolve", "blob", "raw"}
# top-level pages of the Hub that are not owners, so /<first>/<second> is not a repository
_NOT_OWNERS = frozenset(
    {"api", "blog", "collections", "docs", "join", "login", "models", "organizations", "papers", "posts"}
    | {"pricing", "settings", "tasks"}
)
_SPECIAL_REF = re.compile(r"refs/(?:pr/\d+|convert/[\w.-]+)")
_NAME = re.compile(r"[A-Za-z0-9][\w.-]*")
_HAS_EXTENSION = re.compile(r".*\.\w+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_UNSAFE_CHAR = re.compile(r"[\x00-\x1f\x7f\\]")
_SHARD = re.compile(r"(?P<stem>.+)-(?P<number>\d+)-of-(?P<total>\d+)(?P<ext>\.[^/]+)")


@dataclass(frozen=True)
class FolderLink:
    """One folder (or, with folder "", the whole repository) at one revision."""

    kind: str  # model | dataset | space
    repo: str
    revision: str
    folder: str  # path in the repository, no leading or trailing slash

    def file_link(self, path: str, revision: str | None = None) -> Link:
        return Link(self.kind, self.repo, revision or self.revision, path)

    def describe(self) -> str:
        return f"the folder {self.folder} of {self.repo}" if self.folder else self.repo

    def revision_url(self, hub: str) -> str:
        return f"{hub}/api/{self.kind}s/{self.repo}/revision/{quote(self.revision, safe='')}"

    def tree_url(self, hub: str, commit: str) -> str:
        folder = f"/{quote(self.folder, safe='')}" if self.folder else ""
        return f"{hub}/api/{self.kind}s/{self.repo}/tree/{commit}{folder}?recursive=true&expand=false"


@dataclass(frozen=True)
class FolderFile:
    path: str  # relative to the folder: where it goes under the target directory
    repo_path: str  # in the repository
    size: int
    sha256: str | None  # Git LFS files; small files stored in git have only their git oid
    git_oid: str | None
    url: str  # the resolve URL at the listing's commit


@dataclass(frozen=True)
class FolderListing:
    repo: str
    kind: str
    revision: str  # as asked
    commit: str  # what it pointed to when listed; every url names it
    folder: str
    files: tuple[FolderFile, ...]  # sorted by path

    @property
    def total_size(self) -> int:
        return sum(file.size for file in self.files)


@dataclass(frozen=True)
class ShardSet:
    """Files named `<stem>-00001-of-00005<ext>` (transformers / diffusers shards, GGUF splits)."""

    name: str  # <dir>/<stem><ext>: what the shards add up to
    total: int
    numbers: tuple[int, ...]  # the shards listed, in order
    present: tuple[str, ...]  # their paths
    index: str | None  # <stem><ext>.index.json when it is listed
    template: str  # a shard's path with {number} in place of its number

    @property
    def missing(self) -> tuple[int, ...]:
        return tuple(n for n in range(1, self.total + 1) if n not in self.numbers)

    def shard_path(self, number: int) -> str:
        return self.template.format(number=number)


# -- links -----------------------------------------------------------------------------------------


def parse_folder(text: str) -> FolderLink | None:
    """The folder a link names; None for a single file or a link that is not the Hub's.

    Raises `hf_bad_link` for a Hub link that names neither a file nor a folder.
    """
    text = text.strip()
    if text[:5].lower() == "hf://":
        return _from_uri(text[5:])
    if urlsplit(text).scheme.lower() not in ("http", "https") or not huggingface.matches(text):
        return None
    return _from_page(urlsplit(text).path)


def _from_page(path: str) -> FolderLink | None:
    segments = [segment for segment in path.split("/") if segment]
    kind = _KIND_PREFIXES.get(segments[0], "model") if segments else "model"
    if kind != "model":
        segments = segments[1:]
    # owner/name first; a single-name repository (old models like gpt2) only when that does not fit
    for at in (2, 1):
        if len(segments) > at and segments[at] in _FILE_MARKERS:
            return None  # one file: the single-file source reads it
        if len(segments) > at + 1 and segments[at] == "tree":
            revision, folder = _split_revision(segments[at + 1 :])
            names = [unquote(segment) for segment in segments[:at]]
            return _folder_link(kind, names, revision, "/".join(unquote(s) for s in folder))
    if len(segments) == 2 and (kind != "model" or segments[0] not in _NOT_OWNERS):
        return _folder_link(kind, [unquote(segment) for segment in segments], "main", "")
    raise _bad_link()


def _split_revision(segments: list[str]) -> tuple[str, list[str]]:
    special = "/".join(segments[:3])
    if _SPECIAL_REF.fullmatch(special):
        return special, segments[3:]
    return unquote(segments[0]), segments[1:]


def _from_uri(body: str) -> FolderLink | None:
    first, _, rest = body.partition("/")
    kind = _KIND_PREFIXES.get(first, "model")
    if kind != "model":
        body = rest
    found = re.fullmatch(r"(?P<owner>[^/@]+)/(?P<name>[^/@]+)(?P<tail>.*)", body)
    if not found:
        raise _bad_link()
    tail = found["tail"]
    if tail.startswith("@"):
        revision, path = _uri_revision(tail[1:])
    elif not tail or tail.startswith("/"):
        revision, path = "main", tail[1:]
    else:
        raise _bad_link()
    last = path.rsplit("/", 1)[-1]
    if last and _HAS_EXTENSION.fullmatch(last):
        return None  # one file; a trailing slash would have left `last` empty
    return _folder_link(kind, [found["owner"], found["name"]], revision, path)


def _uri_revision(after: str) -> tuple[str, str]:
    """The revision after `@` and the path after it; special refs keep their slashes."""
    special = _SPECIAL_REF.match(after)
    if special and after[special.end() : special.end() + 1] in ("", "/"):
        return special.group(), after[special.end() + 1 :]
    raw, _, path = after.partition("/")
    return unquote(raw), path


def _folder_link(kind: str, names: list[str], revision: str, folder: str) -> FolderLink:
    if not all(_NAME.fullmatch(name) and name.strip(".") for name in names) or not revision:
        raise _bad_link()
    folder = folder.strip("/")
    if folder and not _safe_path(folder):
        raise _bad_link()
    return FolderLink(kind, "/".join(names), revision, folder)


def _bad_link() -> OrchestratorError:
    return OrchestratorError(
        "hf_bad_link",
        "That Hugging Face link names neither a file nor a folder. Open the folder on the Hub and copy "
        "its address (.../tree/main/<folder>), or copy a file's download link (.../resolve/main/<file>).",
    )


# -- listing ---------------------------------------------------------------------------------------


def list_folder(
    link: FolderLink,
    session: requests.Session,
    token: str | None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> FolderListing:
    """Blocking: pin the revision to a commit, then page through the folder's tree at that commit."""
    hub = endpoint()
    commit = _pin(session, hub, link, token)
    chosen = _Patterns(include, exclude)
    files = _list_tree(session, hub, link, commit, token, chosen)
    if not files:
        raise _empty(link, chosen)
    return FolderListing(
        repo=link.repo,
        kind=link.kind,
        revision=link.revision,
        commit=commit,
        folder=link.folder,
        files=tuple(sorted(files.values(), key=lambda file: file.path)),
    )


def _pin(session: requests.Session, hub: str, link: FolderLink, token: str | None) -> str:
    response = _get(session, link.revision_url(hub), hub, token, link)
    commit = http.json_object(response, SERVICE).get("sha")
    if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
        raise _not_json()
    return commit


def _list_tree(
    session: requests.Session, hub: str, link: FolderLink, commit: str, token: str | None, chosen: _Patterns
) -> dict[str, FolderFile]:
    url = link.tree_url(hub, commit)
    files: dict[str, FolderFile] = {}
    for _ in range(MAX_PAGES):
        response = _get(session, url, hub, token, link)
        for entry in _page(response):
            file = _file(entry, link, hub, commit)
            if file is None or not chosen.wanted(file.path):
                continue
            if file.path in files:
                raise _bad_listing(link, f"it lists {file.repo_path!r} twice")
            files[file.path] = file
        if len(files) > MAX_FILES:
            raise _too_many(link, len(files))
        following = response.links.get("next", {}).get("url")
        if not following:
            return files
        url = urljoin(url, following)
        if not http.same_origin(url, hub):
            host = urlsplit(url).hostname or "?"
            raise _bad_listing(
                link, f"its next page is on another host ({host}), where the token must not go"
            )
    raise OrchestratorError(
        "hf_too_many_pages",
        f"The listing of {link.describe()} goes on for more than {MAX_PAGES} pages. "
        "Link a smaller folder of the repository.",
        400,
    )


def _get(
    session: requests.Session, url: str, hub: str, token: str | None, link: FolderLink
) -> requests.Response:
    """A GET on the Hub with the token, following the Hub's own redirects (a renamed repository)."""
    error_link = link.file_link(link.folder or "/")
    for _ in range(http.MAX_HOPS):
        headers = {"Accept": "application/json", **http.bearer(token)}
        response = http.send(session, "GET", url, SERVICE, headers=headers)
        if response.is_redirect:
            response.close()
            url = urljoin(url, response.headers.get("Location", ""))
            if not http.same_origin(url, hub):
                raise _bad_listing(link, "the Hub sent it to another host, where the token must not go")
            continue
        if response.status_code >= 400:
            raise _error(response, error_link, token)
        return response
    raise OrchestratorError("too_many_redirects", "Hugging Face redirects this listing too many times.", 502)


def _page(response: requests.Response) -> list[Any]:
    try:
        entries = bounds.read_json(response, SERVICE)
    except OrchestratorError:
        entries = None
    if not isinstance(entries, list):
        raise _not_json()
    return entries


def _file(entry: Any, link: FolderLink, hub: str, commit: str) -> FolderFile | None:
    """One tree entry as a file of the folder; None for a directory."""
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise _not_json()
    repo_path: str = entry["path"]
    if not _safe_path(repo_path):
        raise _bad_listing(
            link, f"it names the path {repo_path[:120]!r}, which would land outside the folder"
        )
    if repo_path == link.folder:
        if entry.get("type") == "file":  # a file's own path asked as a folder
            raise _not_a_folder(link)
        return None
    relative = _relative(repo_path, link)
    if entry.get("type") != "file":
        return None
    size = _count(entry.get("size"))
    lfs = entry.get("lfs")
    sha256 = None
    if lfs is not None:
        sha256, size = _lfs(lfs)
    oid = entry.get("oid")
    return FolderFile(
        path=relative,
        repo_path=repo_path,
        size=size,
        sha256=sha256,
        git_oid=oid if isinstance(oid, str) else None,
        url=hub + link.file_link(repo_path, commit).resolve_path(),
    )


def _relative(repo_path: str, link: FolderLink) -> str:
    if not link.folder:
        return repo_path
    if not repo_path.startswith(link.folder + "/"):
        raise _bad_listing(link, f"it names {repo_path[:120]!r}, which is not in that folder")
    return repo_path[len(link.folder) + 1 :]


def _lfs(lfs: Any) -> tuple[str, int]:
    """The sha256 and size of a Git LFS object: what the downloaded bytes must match."""
    if not isinstance(lfs, dict) or not isinstance(lfs.get("oid"), str):
        raise _not_json()
    sha256 = lfs["oid"].lower()
    if not _SHA256.fullmatch(sha256):
        raise _not_json()
    return sha256, _count(lfs.get("size"))


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _not_json()
    return value


def _safe_path(path: str) -> bool:
    """A relative path of plain names: nothing absolute, no `..`, no backslash or control character."""
    if not path or path.startswith("/") or _UNSAFE_CHAR.search(path):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


class _Patterns:
    """allow_patterns / ignore_patterns, as huggingface_hub's filter_repo_objects reads them."""

    def __init__(self, include: Sequence[str], exclude: Sequence[str]) -> None:
        self.include = [_pattern(p) for p in include]
        self.exclude = [_pattern(p) for p in exclude]
        self.given = bool(include or exclude)

    def wanted(self, path: str) -> bool:
        if self.include and not any(fnmatchcase(path, p) for p in self.include):
            return False
        return not any(fnmatchcase(path, p) for p in self.exclude)

    def describe(self) -> str:
        parts = [f"include {', '.join(self.include)}" if self.include else ""]
        parts.append(f"exclude {', '.join(self.exclude)}" if self.exclude else "")
        return " and ".join(part for part in parts if part)


def _pattern(raw: str) -> str:
    pattern = raw.replace("\\", "/")
    return pattern + "*" if pattern.endswith("/") else pattern


def _empty(link: FolderLink, chosen: _Patterns) -> OrchestratorError:
    where = link.describe()
    if chosen.given:
        message = (
            f"No file in {where} matches {chosen.describe()}. Check the patterns against the file names."
        )
    else:
        message = f"There are no files in {where} at revision {link.revision!r}."
    return OrchestratorError("hf_folder_empty", message, 404)


def _too_many(link: FolderLink, count: int) -> OrchestratorError:
    return OrchestratorError(
        "hf_too_many_files",
        f"There are more than {MAX_FILES:,} files in {link.describe()} ({count:,} listed before stopping). "
        "Narrow it with include patterns such as *.safetensors or unet/, or link a subfolder.",
        400,
    )


def _not_a_folder(link: FolderLink) -> OrchestratorError:
    return OrchestratorError(
        "hf_not_a_folder",
        f"{link.folder} in {link.repo} is a file, not a folder. Use the file's download link "
        "(.../resolve/main/<file>), or end a folder's hf:// link with a slash.",
        400,
    )


def _bad_listing(link: FolderLink, why: str) -> OrchestratorError:
    return OrchestratorError(
        "hf_bad_listing",
        f"Hugging Face's listing of {link.describe()} was refused as a whole: {why}.",
        502,
    )


def _not_json() -> OrchestratorError:
    return OrchestratorError(
        "origin_error",
        f"{SERVICE} answered the folder listing with something that is not the JSON it should send; "
        "try again later.",
        502,
    )


# -- shards ----------------------------------------------------------------------------------------


def shard_sets(files: Iterable[FolderFile]) -> list[ShardSet]:
    """The sets of shards among the files, each able to say which of its shards are missing."""
    paths = set()
    groups: dict[tuple[str, int], list[tuple[int, str]]] = {}
    templates: dict[tuple[str, int], str] = {}
    for file in files:
        paths.add(file.path)
        folder, slash, name = file.path.rpartition("/")
        found = _SHARD.fullmatch(name)
        if not found:
            continue
        key = (f"{folder}{slash}{found['stem']}{found['ext']}", int(found["total"]))
        groups.setdefault(key, []).append((int(found["number"]), file.path))
        width = len(found["number"])
        before, after = (
            _literal(f"{folder}{slash}{found['stem']}"),
            _literal(f"-of-{found['total']}{found['ext']}"),
        )
        templates[key] = f"{before}-{{number:0{width}d}}{after}"
    sets = []
    for (whole, total), members in sorted(groups.items()):
        members.sort()
        index = f"{whole}.index.json"
        sets.append(
            ShardSet(
                name=whole,
                total=total,
                numbers=tuple(number for number, _ in members),
                present=tuple(path for _, path in members),
                index=index if index in paths else None,
                template=templates[(whole, total)],
            )
        )
    return sets


def require_complete_shards(files: Iterable[FolderFile]) -> None:
    """Raise `hf_shards_missing` for the first set of shards that lacks one: it would not load."""
    for shards in shard_sets(files):
        if shards.missing:
            gaps = ", ".join(shards.shard_path(n) for n in shards.missing[:3])
            more = f" and {len(shards.missing) - 3} more" if len(shards.missing) > 3 else ""
            raise OrchestratorError(
                "hf_shards_missing",
                f"{shards.name} is split into {shards.total} shards, but {gaps}{more} is not in the list, "
                "and a model loads only with all of its shards. Include the whole set or leave it out.",
                400,
            )


def _literal(text: str) -> str:
    """Text for a str.format template: braces in a file name stay braces."""
    return text.replace("{", "{{").replace("}", "}}")
