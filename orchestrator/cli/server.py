"""Talking to a running `orchestrator serve` over its REST API (docs/PROTOCOL.md)."""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import urlsplit

import requests

from ..security import is_loopback

HEALTH_TIMEOUT = 1.5  # a server on this machine answers at once; don't make `get` wait
CALL_TIMEOUT = 30.0


class ServerError(Exception):
    """The server answered with an error; `message` is its sentence for a person."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class ServerGone(ServerError):
    """Nothing (or not an orchestrator) answers at the address."""


def default_server_url() -> str:
    """Where `serve` listens by default: ORCHESTRATOR_HOST / ORCHESTRATOR_PORT, as it reads them."""
    host = os.environ.get("ORCHESTRATOR_HOST", "127.0.0.1").strip() or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):  # noqa: S104 - listening everywhere; we connect locally
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{os.environ.get('ORCHESTRATOR_PORT', '8000').strip()}"


def open_server(url: str | None = None) -> ServerClient:
    """A client of the server at `url` (default: where `serve` listens), checked with /api/health.

    Raises ServerGone when nothing (or not an orchestrator) answers, ServerError when it refuses us.
    """
    url = url or default_server_url()
    client = ServerClient(url if "://" in url else f"http://{url}", os.environ.get("ORCHESTRATOR_TOKEN"))
    try:
        client.health()
    except ServerError:
        client.close()
        raise
    return client


class ServerClient:
    """One running server. The access token (ORCHESTRATOR_TOKEN) goes as a Bearer header."""

    def __init__(self, base_url: str, access_token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.health_info: dict[str, Any] = {}
        self.session = requests.Session()
        self.session.trust_env = False  # an HTTP proxy from the environment must not see local calls
        if access_token:
            self.session.headers["Authorization"] = f"Bearer {access_token}"

    @property
    def plain_http_elsewhere(self) -> bool:
        """True when tokens we send would cross a network unencrypted."""
        parts = urlsplit(self.base_url)
        return parts.scheme == "http" and not is_loopback(parts.hostname or "")

    def warn_if_tokens_go_in_clear(self) -> None:
        """Said before tokens are sent to a server reached over plain http across a network."""
        if self.plain_http_elsewhere:
            print(
                "warning: tokens go to that server over plain http; use https or an SSH tunnel",
                file=sys.stderr,
                flush=True,
            )

    def health(self) -> dict[str, Any]:
        """The health answer; ServerGone when no orchestrator answers, ServerError on 401."""
        answer = self._call("GET", "/api/health", timeout=HEALTH_TIMEOUT)
        if not isinstance(answer, dict) or "engine" not in answer:
            raise ServerGone("not_orchestrator", f"{self.base_url} answers, but it is not an orchestrator.")
        self.health_info = answer
        return answer

    def submit(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(job, created): created is False when an identical active job already existed."""
        response = self._request("POST", "/api/downloads", json=body)
        return self._job(response), response.status_code == 201

    def create_bundle(self, body: dict[str, Any]) -> dict[str, Any]:
        """A bundle (a list, a workflow, a folder), with its files' jobs under `files`."""
        answer = self._decode(self._request("POST", "/api/bundles", json=body))
        bundle = answer.get("bundle") if isinstance(answer, dict) else None
        if not isinstance(bundle, dict) or not isinstance(bundle.get("files"), list):
            raise ServerGone("bad_answer", f"{self.base_url} sent something other than a bundle.")
        return bundle

    def bundle(self, bundle_id: str) -> dict[str, Any]:
        answer = self._decode(self._request("GET", f"/api/bundles/{bundle_id}"))
        if not isinstance(answer, dict) or not isinstance(answer.get("bundle"), dict):
            raise ServerGone("bad_answer", f"{self.base_url} sent something other than a bundle.")
        return answer["bundle"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._job(self._request("GET", f"/api/downloads/{job_id}"))

    def jobs(self) -> list[dict[str, Any]]:
        answer = self._call("GET", "/api/downloads")
        return answer.get("jobs", []) if isinstance(answer, dict) else []

    def act(self, job_id: str, action: str) -> dict[str, Any]:
        """cancel, pause, resume or retry one job."""
        if action == "cancel":
            return self._job(self._request("DELETE", f"/api/downloads/{job_id}"))
        return self._job(self._request("POST", f"/api/downloads/{job_id}/{action}"))

    def models(self) -> dict[str, Any]:
        """GET /api/models: {"models": {type: [file, ...]}, "library": summary}."""
        answer = self._call("GET", "/api/models")
        if not isinstance(answer, dict) or not isinstance(answer.get("models"), dict):
            raise ServerGone("not_orchestrator", f"{self.base_url} gave an answer without models.")
        return answer

    def scan(self) -> dict[str, Any]:
        answer = self._call("POST", "/api/models/scan")
        return answer if isinstance(answer, dict) else {}

    def remove_model(self, path: str) -> dict[str, Any]:
        answer = self._call("DELETE", "/api/models", params={"path": path})
        return answer.get("removed", {}) if isinstance(answer, dict) else {}

    def update_model(self, path: str, civitai_token: str | None = None) -> dict[str, Any]:
        body = {"path": path, **({"civitai_token": civitai_token} if civitai_token else {})}
        return self._job(self._request("POST", "/api/models/update", json=body))

    def close(self) -> None:
        self.session.close()

    # -- plumbing -------------------------------------------------------------------

    def _call(self, method: str, path: str, timeout: float = CALL_TIMEOUT, **kwargs: Any) -> Any:
        return self._decode(self._request(method, path, timeout=timeout, **kwargs))

    def _request(
        self, method: str, path: str, timeout: float = CALL_TIMEOUT, **kwargs: Any
    ) -> requests.Response:
        try:
            response = self.session.request(method, self.base_url + path, timeout=timeout, **kwargs)
        except requests.RequestException as exc:
            # the exception text holds the URL only, never the body with tokens; keep just its kind
            raise ServerGone(
                "unreachable", f"no orchestrator server answers at {self.base_url} ({type(exc).__name__})"
            ) from None
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _error(self, response: requests.Response) -> ServerError:
        try:
            error = response.json()["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            return ServerGone(
                "not_orchestrator",
                f"{self.base_url} answered HTTP {response.status_code}; is it an orchestrator server?",
                response.status_code,
            )
        if code == "unauthorized":
            message = (
                f"the server at {self.base_url} needs its access token: set ORCHESTRATOR_TOKEN "
                "to the token it printed when it started"
            )
        return ServerError(code, message, response.status_code)

    def _decode(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ServerGone("not_orchestrator", f"{self.base_url} did not answer with JSON.") from None

    def _job(self, response: requests.Response) -> dict[str, Any]:
        answer = self._decode(response)
        if not isinstance(answer, dict) or not isinstance(answer.get("job"), dict):
            raise ServerGone("not_orchestrator", f"{self.base_url} gave an answer without a job.")
        return answer["job"]
