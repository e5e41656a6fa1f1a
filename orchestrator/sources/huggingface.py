"""Hugging Face files: one HEAD on the resolve URL tells size, sha256, commit and where the bytes are.

The token (request, else HF_TOKEN) goes to the Hub (HF_ENDPOINT, default
huggingface.co) only. Large files answer with a redirect to a signed storage
URL on another host; that URL is handed on and the token stays here.

Accepted links: `https://huggingface.co/<repo>/resolve|blob|raw/<rev>/<path>`
(also hf.co, datasets/ and spaces/), `hf://[datasets/|spaces/]<owner>/<repo>[@<rev>]/<path>`,
and the same without `hf://` when the owner has no dot and the file has an
extension, e.g. `stabilityai/sdxl-vae/sdxl_vae.safetensors` (revision main).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import requests

from ..errors import OrchestratorError, http_error
from ..policy import Policy
from . import http
from .base import Credentials, Description, Resolved

NAME = "huggingface"
LABEL = "Hugging Face"
KNOWS_MODEL_TYPE = False
SERVICE = "Hugging Face"
DEFAULT_ENDPOINT = "https://huggingface.co"
PUBLIC_SITE = "https://huggingface.co"  # where people log in and accept terms, whatever the endpoint
HOSTS = {"huggingface.co", "www.huggingface.co", "hf.co"}
_KINDS = {"datasets": "dataset", "spaces": "space"}
_MARKERS = ("resolve", "blob", "raw")
_SHORTHAND = re.compile(
    r"(?:(?P<kind>datasets|spaces)/)?(?P<repo>[A-Za-z0-9][\w-]*/[\w.-]+)(?:@(?P<rev>[^/]+))?/(?P<path>.*\.\w+)"
)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Link:
    """One file in one repository at one revision."""

    kind: str  # model | dataset | space
    repo: str  # owner/name (old models may have no owner)
    revision: str
    path: str

    @property
    def prefix(self) -> str:
        return {"dataset": "datasets/", "space": "spaces/"}.get(self.kind, "")

    def resolve_path(self) -> str:
        # a revision like refs/pr/1 is one path segment, so its slashes are encoded
        return f"/{self.prefix}{self.repo}/resolve/{quote(self.revision, safe='')}/{quote(self.path)}"

    def page(self) -> str:
        return f"{PUBLIC_SITE}/{self.prefix}{self.repo}"


def endpoint() -> str:
    return http.setting("HF_ENDPOINT", DEFAULT_ENDPOINT)


def matches(text: str) -> bool:
    if text.lower().startswith("hf://"):
        return True
    parts = urlsplit(text)
    if parts.scheme.lower() in ("http", "https"):
        return (parts.hostname or "").lower() in HOSTS or http.same_service(text, endpoint())
    return not parts.scheme and _SHORTHAND.fullmatch(text) is not None


def parse(text: str) -> Link:
    """The repository, revision and file a link names; an error for a Hub link that names no file."""
    if text.lower().startswith("hf://"):
        return _short(text[5:])
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        return _short(text)
    segments = [segment for segment in parts.path.split("/") if segment]
    kind = _KINDS.get(segments[0], "model") if segments else "model"
    if kind != "model":
        segments = segments[1:]
    # owner/name first; a single-name repo (old models like gpt2) only when that does not fit
    marker = next((i for i in (2, 1) if len(segments) > i + 1 and segments[i] in _MARKERS), None)
    if marker is None or len(segments) < marker + 3:
        raise _not_a_file()
    repo = "/".join(segments[:marker])
    path = "/".join(unquote(segment) for segment in segments[marker + 2 :])
    return Link(kind, repo, unquote(segments[marker + 1]), path)


def _short(text: str) -> Link:
    found = _SHORTHAND.fullmatch(text)
    if not found:
        raise _not_a_file()
    kind = _KINDS.get(found["kind"] or "", "model")
    return Link(kind, found["repo"], unquote(found["rev"] or "main"), found["path"])


def pin(url: str, metadata: dict[str, Any]) -> str:
    """The resolve link at the commit the download began with (X-Repo-Commit), so continuing
    it after the branch moved fetches the same bytes; the Hub keeps every commit readable."""
    commit = metadata.get("commit")
    if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
        return url
    link = dataclasses.replace(parse(url), revision=commit)
    return endpoint() + link.resolve_path()


def _not_a_file() -> OrchestratorError:
    return OrchestratorError(
        "hf_bad_link",
        "That Hugging Face link does not point to a file. Open the file on the Hub and copy its "
        "download link (.../resolve/main/<file>), or type <owner>/<repo>/<file>.",
    )


def describe(metadata: dict[str, Any], policy: Policy) -> Description | None:
    """A small `<stem>.json` says where the file came from: repo, commit, path."""
    if not isinstance(metadata.get("repo"), str) or not isinstance(metadata.get("path"), str):
        return None
    keep = ("repo", "repo_type", "revision", "commit", "path", "license")
    return Description("huggingface", {key: metadata[key] for key in keep if metadata.get(key)})


def resolve(url: str, credentials: Credentials, policy: Policy) -> Resolved:
    """Blocking: HEAD the resolve URL with the token, follow the Hub's own hops, stop at storage."""
    link = parse(url)
    token = http.token_from(credentials.huggingface, "HF_TOKEN")
    hub = endpoint()
    with http.session(policy) as session:
        response, storage = _head(session, hub + link.resolve_path(), hub, token, link)
        if storage is None and token:
            _check_public(session, response.url, link)
    return _describe(link, response, storage or response.url)


def _head(
    session: requests.Session, url: str, hub: str, token: str | None, link: Link
) -> tuple[requests.Response, str | None]:
    """The Hub's last answer and the storage URL it points to (None when the Hub serves the file)."""
    for _ in range(http.MAX_HOPS):
        response = http.send(session, "HEAD", url, SERVICE, headers=http.bearer(token))
        if response.is_redirect:
            location = urljoin(url, response.headers.get("Location", ""))
            if not http.same_origin(location, hub):
                return response, location
            url = location  # a renamed repository: still the Hub, so the token may go along
            continue
        if response.status_code >= 400:
            raise _error(response, link, token)
        return response, None
    raise OrchestratorError("too_many_redirects", "Hugging Face redirects this file too many times.", 502)


def _check_public(session: requests.Session, url: str, link: Link) -> None:
    """A small file the Hub serves itself must be readable without the token, or it cannot be fetched."""
    response = http.send(session, "HEAD", url, SERVICE)
    if response.status_code >= 400:
        raise OrchestratorError(
            "hf_private_file",
            f"{link.path} in the private or gated repository {link.repo} is served only to your account, "
            "and tokens are never given to the download engine. Model weights (Git LFS files) work; "
            "this small file does not.",
            403,
        )


def _error(response: requests.Response, link: Link, token: str | None) -> OrchestratorError:
    """Turn the Hub's X-Error-Code (or status) into a sentence a person can act on."""
    code = response.headers.get("X-Error-Code", "")
    status = response.status_code
    if code == "GatedRepo":
        then = (
            "make sure your token belongs to that account (access may still be pending)."
            if token
            else "give a Hugging Face token of that account."
        )
        return OrchestratorError(
            "hf_gated",
            f"{link.repo} is a gated repository: open {link.page()}, log in and accept its terms, "
            f"then {then}",
            403,
        )
    if code == "RepoNotFound" or (status == 401 and not token):
        private = "or your token cannot see it" if token else "or it is private (give a token that sees it)"
        return OrchestratorError(
            "hf_not_found", f"Hugging Face has no {link.kind} repository {link.repo}, {private}.", 404
        )
    if code == "RevisionNotFound":
        return OrchestratorError(
            "hf_revision_not_found",
            f"{link.repo} has no branch, tag or commit {link.revision!r}.",
            404,
        )
    if code == "EntryNotFound" or status == 404:
        return OrchestratorError(
            "hf_file_not_found", f"{link.path} is not in {link.repo} at revision {link.revision!r}.", 404
        )
    if status == 401:
        return OrchestratorError(
            "hf_token_rejected",
            "Hugging Face did not accept the token (wrong or expired). Create a read token at "
            f"{PUBLIC_SITE}/settings/tokens.",
            401,
        )
    return http_error(status, SERVICE)


def _describe(link: Link, response: requests.Response, url: str) -> Resolved:
    headers = response.headers
    etag = headers.get("X-Linked-Etag") or headers.get("ETag") or ""
    sha = etag.removeprefix("W/").strip('"').lower()
    # on a redirect Content-Length is the redirect's own body; only the Hub serving the file means it
    own_length = None if response.is_redirect else headers.get("Content-Length")
    size_text = headers.get("X-Linked-Size") or own_length
    size = int(size_text) if size_text and size_text.isdigit() else None
    sha256 = sha if _SHA256.fullmatch(sha) else None  # small files carry a git sha1 instead
    filename = link.path.rsplit("/", 1)[-1]
    return Resolved(
        urls=[url],
        source=NAME,
        filename=filename,
        size=size,
        sha256=sha256,
        metadata={
            "repo": link.repo,
            "repo_type": link.kind,
            "revision": link.revision,
            "commit": headers.get("X-Repo-Commit"),
            "path": link.path,
            "file_name": filename,
            "size": size,
            "sha256": sha256,
            "host": urlsplit(url).hostname,
        },
    )
