"""Asking CivitAI what the library's files are (by hash), and whether newer versions exist.

The API, as CivitAI's own code defines it (civitai/civitai, src/pages/api/v1/model-versions/):
- `POST /api/v1/model-versions/by-hash` (by-hash/index.ts) takes a JSON array of at most 100
  SHA-256 strings (64 characters each, any case; 400 otherwise) and answers a JSON array of
  model-version records, one per matching *file*: a hash that matches nothing is simply
  absent, the order is not the request's, a version can appear twice, and an entry can be
  null (a version without a primary file). Which hash an entry answers is found in its
  `files[].hashes.SHA256` (upper case). A version's linked VAE is appended to its `files`
  with `type: "VAE"` (model.service.ts, getVaeFiles), so a match on such a file is weaker
  than a match on the version's own file.
- `GET /api/v1/model-versions/by-hash/{hash}` (by-hash/[hash].ts) takes any of the file's
  hashes (SHA256, AutoV2...) and answers one record, or 404 `{"error": "Model not found"}`.
  It is the fallback when the bulk call is refused.
- `GET /api/v1/models/{id}` lists `modelVersions`, newest first.
Clients that do the same: CivitAI Browser+ (scripts/civitai_file_manage.py) asks by-hash one
file at a time; Stability Matrix (StabilityMatrix.Core/Api/ICivitApi.cs) likewise.

Rules kept here: calls are paced (`pause` between two); a 429 waits for its Retry-After
and asks again; 5xx are retried a few times, then the run stops; an HTML answer
(Cloudflare's check page), a timeout or bad JSON is an error for that batch, stored with
a clear message, and the run goes on. A miss is remembered for a day (index.MISS_TTL).
The token, when one is set, goes as a Bearer header to the API only; without one no
Authorization header is sent at all.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict

from ..errors import OrchestratorError
from .index import LibraryIndex
from .records import FileRecord, normal_sha256

SERVICE = "CivitAI"
BULK_LIMIT = 100  # hashes per bulk call, as the API's schema allows
MAX_BODY = 64 * 1024 * 1024  # a bulk answer with images for 100 versions is a few MiB
MODEL_CACHE_AGE = 6 * 3600.0
_REFUSED = {400, 404, 405, 410, 501}  # the bulk endpoint said no (gone, changed), not "try later"


@dataclass(frozen=True)
class LookupSettings:
    batch_size: int = BULK_LIMIT
    pause: float = 1.0  # seconds between two calls
    timeout: tuple[float, float] = (10.0, 60.0)  # connect, read
    max_wait: float = 300.0  # the longest Retry-After honoured; longer stops the run
    max_rate_limited: int = 5  # 429s in a row for one call before giving up
    max_server_errors: int = 3  # 5xx in a row before the run stops
    max_failed_batches: int = 3  # failed calls in a row (timeouts, HTML...) before the run stops
    backoff: float = 2.0  # first wait after a 5xx; doubles each time
    sleep: Callable[[float], None] | None = None  # how to wait (default: interruptible by cancel)

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= BULK_LIMIT:
            raise ValueError(f"batch_size must be 1..{BULK_LIMIT}")


@dataclass(frozen=True)
class Hit:
    sha256: str
    model_id: int | None
    version_id: int | None
    record: dict[str, Any] = field(repr=False)  # CivitAI's model-version record, for sidecars
    files: tuple[FileRecord, ...] = ()  # the library's files with these bytes


@dataclass(frozen=True)
class BatchError:
    code: str
    message: str
    hashes: tuple[str, ...]


@dataclass
class LookupReport:
    asked: int = 0
    hits: list[Hit] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    errors: list[BatchError] = field(default_factory=list)
    stopped: OrchestratorError | None = None  # why the run ended early, if it did
    requests: int = 0
    bulk_refused: bool = False  # the bulk call was refused; hashes were asked one by one


@dataclass(frozen=True)
class Update:
    model_id: int
    model_name: str | None
    installed_version_id: int
    installed_version_name: str | None
    latest_version_id: int
    latest_version_name: str | None
    latest_published_at: str | None
    latest_availability: str | None  # "Public", "EarlyAccess"...
    files: tuple[FileRecord, ...]


@dataclass
class UpdateReport:
    checked: int = 0
    updates: list[Update] = field(default_factory=list)
    up_to_date: list[int] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)  # models CivitAI no longer has
    errors: dict[int, OrchestratorError] = field(default_factory=dict)
    stopped: OrchestratorError | None = None
    requests: int = 0


class _Stop(Exception):
    """The run must end: the error says why."""

    def __init__(self, error: OrchestratorError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass
class Reply:
    """An answer the caller must judge: 200 with its JSON, or a status such as 404."""

    status: int
    data: Any = None


class CivitaiApi:
    """The few API calls the library makes, with pacing, retries and errors people can read."""

    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        token: str | None = None,
        settings: LookupSettings | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self._token = token or None
        self.settings = settings or LookupSettings()
        self.cancel = cancel or threading.Event()
        self.requests = 0
        self._server_errors = 0
        self._last_call = float("-inf")

    def by_hashes(self, hashes: list[str]) -> Reply:
        """POST the bulk look-up: 200 with a list, or a status that says the call was refused."""
        return self._call("POST", "/api/v1/model-versions/by-hash", body=[h.upper() for h in hashes])

    def by_hash(self, sha256: str) -> Reply:
        return self._call("GET", f"/api/v1/model-versions/by-hash/{sha256.upper()}")

    def model(self, model_id: int) -> Reply:
        return self._call("GET", f"/api/v1/models/{int(model_id)}")

    # -- one call, with its retries ----------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None) -> Reply:
        rate_limited = 0
        while True:
            self._pace()
            status, raw, headers = self._send(method, path, body)
            if status == 429:
                rate_limited += 1
                self._wait_rate_limit(headers.get("Retry-After"), rate_limited)
                continue
            if status >= 500:
                self._server_errors += 1
                if self._server_errors >= self.settings.max_server_errors:
                    raise _Stop(_unavailable(status))
                self._sleep(self.settings.backoff * 2 ** (self._server_errors - 1))
                continue
            self._server_errors = 0
            return self._read(status, raw, headers)

    def _pace(self) -> None:
        if self.cancel.is_set():
            raise _Stop(OrchestratorError("cancelled", "The CivitAI look-up was cancelled.", 499))
        wait = self._last_call + self.settings.pause - time.monotonic()
        if wait > 0:
            self._sleep(wait)
        self._last_call = time.monotonic()

    def _send(self, method: str, path: str, body: Any) -> tuple[int, bytes, CaseInsensitiveDict[str]]:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        self.requests += 1
        try:
            response = self.session.request(
                method,
                self.base_url + path,
                json=body,
                headers=headers,
                timeout=self.settings.timeout,
                allow_redirects=False,
                stream=True,
            )
            with response:
                raw = response.raw.read(MAX_BODY + 1, decode_content=True) or b""
        except requests.Timeout:
            raise OrchestratorError(
                "civitai_timeout",
                "CivitAI did not answer in time; the look-up will be tried again later.",
                504,
            ) from None
        except (requests.RequestException, OSError):
            raise OrchestratorError(
                "civitai_unreachable",
                "Could not reach CivitAI (the connection failed); check the network.",
                502,
            ) from None
        if len(raw) > MAX_BODY:
            raise _bad_answer("an answer far larger than any look-up")
        return response.status_code, raw, response.headers

    def _wait_rate_limit(self, retry_after: str | None, times: int) -> None:
        wait = retry_after_seconds(retry_after)
        if times > self.settings.max_rate_limited or wait > self.settings.max_wait:
            raise _Stop(
                OrchestratorError(
                    "civitai_rate_limited",
                    "CivitAI is limiting how fast it may be asked (HTTP 429); the rest is left for later.",
                    429,
                )
            )
        self._sleep(wait)

    def _read(self, status: int, raw: bytes, headers: CaseInsensitiveDict[str]) -> Reply:
        kind = headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind == "text/html" or raw.lstrip()[:1] == b"<":
            raise OrchestratorError(
                "civitai_blocked",
                f"CivitAI answered with a web page instead of data (HTTP {status}), usually its "
                "Cloudflare browser check; try again later.",
                502,
            )
        if status in (401, 403):
            message = (
                "CivitAI refused the API token (HTTP {s}); check it in your CivitAI account settings."
                if self._token
                else "CivitAI refused the request (HTTP {s}) and asks for a login; set a CivitAI API token."
            )
            raise OrchestratorError("civitai_token_rejected", message.format(s=status), 502)
        if 300 <= status < 400:
            raise _bad_answer(f"a redirect (HTTP {status}) where data was expected")
        if status != 200:
            return Reply(status)
        try:
            return Reply(status, json.loads(raw))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise _bad_answer("broken JSON") from None

    def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.settings.sleep is not None:
            self.settings.sleep(seconds)
        else:
            self.cancel.wait(seconds)


def retry_after_seconds(value: str | None, default: float = 10.0) -> float:
    """Retry-After as seconds: a number, or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return default
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


# -- identification --------------------------------------------------------------------------------


def identify(
    index: LibraryIndex,
    session: requests.Session,
    base_url: str,
    token: str | None = None,
    *,
    hashes: Iterable[str] | None = None,
    settings: LookupSettings | None = None,
    cancel: threading.Event | None = None,
) -> LookupReport:
    """Blocking: look up every hash the index has not asked CivitAI about (or the given ones).

    Hits, misses and errors are saved in the index as they come; hits are also returned,
    with CivitAI's record and the files concerned, for whoever writes sidecars.
    """
    api = CivitaiApi(session, base_url, token, settings, cancel)
    wanted = sorted({normal_sha256(h) for h in hashes}) if hashes is not None else index.pending_lookups()
    report = LookupReport(asked=len(wanted))
    size = api.settings.batch_size
    failed_in_a_row = 0
    try:
        for start in range(0, len(wanted), size):
            batch = wanted[start : start + size]
            try:
                if report.bulk_refused:
                    _one_by_one(index, api, batch, report)
                else:
                    _in_bulk(index, api, batch, report)
                failed_in_a_row = 0
            except OrchestratorError as error:
                _batch_failed(index, batch, error, report)
                failed_in_a_row += 1
                if failed_in_a_row >= api.settings.max_failed_batches:
                    raise _Stop(error) from None
    except _Stop as stop:
        report.stopped = stop.error
    report.requests = api.requests
    return report


def _in_bulk(index: LibraryIndex, api: CivitaiApi, batch: list[str], report: LookupReport) -> None:
    try:
        reply = api.by_hashes(batch)
    except _Stop as stop:
        _batch_failed(index, batch, stop.error, report)
        raise
    if reply.status in _REFUSED:
        report.bulk_refused = True
        _one_by_one(index, api, batch, report)
        return
    if reply.status != 200 or not isinstance(reply.data, list):
        raise _bad_answer(f"HTTP {reply.status} without the list of versions it should send")
    found = match_records(reply.data, batch)
    for sha in batch:
        if sha in found:
            _save_hit(index, sha, found[sha], report)
        else:
            index.save_miss(sha)
            report.misses.append(sha)


def _one_by_one(index: LibraryIndex, api: CivitaiApi, batch: list[str], report: LookupReport) -> None:
    failed_in_a_row = 0
    for position, sha in enumerate(batch):
        try:
            reply = api.by_hash(sha)
            if reply.status == 404:
                index.save_miss(sha)
                report.misses.append(sha)
            elif reply.status == 200 and isinstance(reply.data, dict):
                _save_hit(index, sha, reply.data, report)
            else:
                raise _bad_answer(f"HTTP {reply.status} without the version record it should send")
            failed_in_a_row = 0
        except OrchestratorError as error:
            _batch_failed(index, [sha], error, report)
            failed_in_a_row += 1
            if failed_in_a_row >= api.settings.max_failed_batches:
                raise _Stop(error) from None  # the rest stays pending for the next run
        except _Stop as stop:
            _batch_failed(index, batch[position:], stop.error, report)
            raise


def match_records(records: list[Any], asked: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Which record answers which asked hash, by the SHA256 of the files it lists.

    A version's own file wins over a VAE CivitAI appended to another version's files.
    """
    wanted = {sha.lower() for sha in asked}
    found: dict[str, tuple[dict[str, Any], bool]] = {}
    for record in records:
        if not isinstance(record, dict):
            continue  # CivitAI sends null for a version without a primary file
        for item in record.get("files") or []:
            if not isinstance(item, dict) or not isinstance(item.get("hashes"), dict):
                continue
            sha = str(item["hashes"].get("SHA256") or "").lower()
            if sha in wanted:
                own = item.get("type") != "VAE"
                if sha not in found or (own and not found[sha][1]):
                    found[sha] = (record, own)
    return {sha: record for sha, (record, _) in found.items()}


def _save_hit(index: LibraryIndex, sha: str, record: dict[str, Any], report: LookupReport) -> None:
    files = index.save_hit(sha, record)
    report.hits.append(Hit(sha, _int(record.get("modelId")), _int(record.get("id")), record, tuple(files)))


def _batch_failed(
    index: LibraryIndex, batch: list[str], error: OrchestratorError, report: LookupReport
) -> None:
    if error.code == "cancelled":
        return
    for sha in batch:
        index.save_error(sha, error)
    report.errors.append(BatchError(error.code, error.message, tuple(batch)))


# -- update checks -------------------------------------------------------------------------------------


def check_updates(
    index: LibraryIndex,
    session: requests.Session,
    base_url: str,
    token: str | None = None,
    *,
    max_age: float = MODEL_CACHE_AGE,
    settings: LookupSettings | None = None,
    cancel: threading.Event | None = None,
) -> UpdateReport:
    """Blocking: for each CivitAI model in the library, is a newer version out?

    One `GET /api/v1/models/{id}` per model, cached in the index for `max_age` seconds.
    """
    api = CivitaiApi(session, base_url, token, settings, cancel)
    report = UpdateReport()
    for model_id, files in sorted(index.civitai_models().items()):
        report.checked += 1
        try:
            answer = _model_versions(index, api, model_id, max_age)
        except OrchestratorError as error:
            report.errors[model_id] = error
            continue
        except _Stop as stop:
            report.stopped = stop.error
            break
        if answer is None:
            report.gone.append(model_id)
            continue
        update = newer_version(model_id, answer, files)
        if update is None:
            report.up_to_date.append(model_id)
        else:
            report.updates.append(update)
    report.requests = api.requests
    return report


def _model_versions(
    index: LibraryIndex, api: CivitaiApi, model_id: int, max_age: float
) -> dict[str, Any] | None:
    """{name, versions: [{id, name, publishedAt, availability}]} newest first; None if gone."""
    cached = index.cached_model(model_id, max_age)
    if cached is not None:
        state, data = cached
        return data if state == "ok" and isinstance(data, dict) else None
    reply = api.model(model_id)
    if reply.status == 404:
        index.save_model(model_id, "gone", None)
        return None
    if reply.status != 200 or not isinstance(reply.data, dict):
        raise _bad_answer(f"HTTP {reply.status} without the model record it should send")
    versions = [
        {key: version.get(key) for key in ("id", "name", "publishedAt", "availability")}
        for version in reply.data.get("modelVersions") or []
        if isinstance(version, dict) and _int(version.get("id")) is not None
    ]
    answer = {"name": reply.data.get("name"), "versions": versions}
    index.save_model(model_id, "ok", answer)
    return answer


def newer_version(model_id: int, answer: dict[str, Any], files: list[FileRecord]) -> Update | None:
    """The newest version, if it is newer than the newest one installed.

    CivitAI lists versions newest first, so position decides; publishedAt guards against
    a list whose order says otherwise (a version published after the listed first one).
    """
    versions = [v for v in answer.get("versions") or [] if isinstance(v, dict)]
    if not versions:
        return None
    position = {int(v["id"]): i for i, v in enumerate(versions)}
    installed = [f for f in files if f.source.version_id is not None]
    if not installed:
        return None
    newest = min(installed, key=lambda f: position.get(f.source.version_id or 0, len(versions)))
    mine = newest.source.version_id or 0
    latest = versions[0]
    if int(latest["id"]) == mine:
        return None
    published = _published(newest)
    latest_published = latest.get("publishedAt") if isinstance(latest.get("publishedAt"), str) else None
    if published and latest_published and latest_published <= published:
        return None  # listed first, but not published later than the installed version
    return Update(
        model_id=model_id,
        model_name=answer.get("name") if isinstance(answer.get("name"), str) else newest.title,
        installed_version_id=mine,
        installed_version_name=_installed_name(newest, versions, position),
        latest_version_id=int(latest["id"]),
        latest_version_name=latest.get("name") if isinstance(latest.get("name"), str) else None,
        latest_published_at=latest_published,
        latest_availability=latest.get("availability")
        if isinstance(latest.get("availability"), str)
        else None,
        files=tuple(f for f in files if f.source.version_id == mine),
    )


def _published(record: FileRecord) -> str | None:
    if record.lookup is not None and record.lookup.version_id == record.source.version_id:
        return record.lookup.published_at
    return None


def _installed_name(
    record: FileRecord, versions: list[dict[str, Any]], position: dict[int, int]
) -> str | None:
    mine = record.source.version_id or 0
    if mine in position and isinstance(versions[position[mine]].get("name"), str):
        return str(versions[position[mine]]["name"])
    if record.lookup is not None and record.lookup.version_id == mine:
        return record.lookup.version_name
    return record.sidecars.version_name


# -- errors ----------------------------------------------------------------------------------------


def _bad_answer(what: str) -> OrchestratorError:
    return OrchestratorError(
        "civitai_bad_answer", f"CivitAI sent {what}; the look-up will be tried again later.", 502
    )


def _unavailable(status: int) -> OrchestratorError:
    return OrchestratorError(
        "civitai_unavailable",
        f"CivitAI keeps failing (HTTP {status} several times in a row); the rest is left for later.",
        502,
    )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
