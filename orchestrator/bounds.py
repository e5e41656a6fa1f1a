"""Limits on what outside answers may make the app hold, store and send.

A service's JSON is read up to a cap (counted after decompression, so a small gzip
answer cannot become a huge one), parsed without Python's recursion limit being a
crash, and what a job keeps of it is trimmed: one job's metadata goes into SQLite and
into the `hello` of every client, so it must stay small whatever a server sends.
"""

from __future__ import annotations

import json
from typing import Any

import requests

from .errors import OrchestratorError

MAX_ANSWER_BYTES = 8 * 1024 * 1024  # a CivitAI model with every version is well under 1 MiB
MAX_METADATA_BYTES = 64 * 1024  # per job, as stored and as sent
MAX_TEXT = 2000  # characters of one string kept
MAX_ITEMS = 64  # entries of one list or object kept
MAX_DEPTH = 8


def read_json(response: requests.Response, service: str, limit: int = MAX_ANSWER_BYTES) -> Any:
    """The answer's JSON, read at most `limit` bytes (decoded); an error that names the service."""
    body = bytearray()
    try:
        for chunk in response.iter_content(64 * 1024):
            body += chunk
            if len(body) > limit:
                raise OrchestratorError(
                    "origin_error",
                    f"{service} sent a far larger answer than it should (over {limit // 1024 // 1024} MiB); "
                    "try again later.",
                    502,
                )
    except requests.RequestException:
        raise OrchestratorError(
            "origin_error", f"{service} broke off its answer; try again later.", 502
        ) from None
    finally:
        response.close()
    return parse_json(bytes(body), service)


def parse_json(raw: bytes | str, service: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        raise OrchestratorError(
            "origin_error",
            f"{service} answered with something that is not the JSON it should send; try again later.",
            502,
        ) from None


def trimmed(value: Any, depth: int = 0) -> Any:
    """A copy of JSON data cut down to what a person could read: short strings, short lists."""
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"
    if isinstance(value, list):
        return [trimmed(item, depth + 1) for item in value[:MAX_ITEMS]] if depth < MAX_DEPTH else []
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return {}
        pairs = list(value.items())[:MAX_ITEMS]
        return {str(key)[:200]: trimmed(item, depth + 1) for key, item in pairs}
    return value


def bounded_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """A job's metadata, trimmed, and under MAX_METADATA_BYTES: the largest parts go first."""
    kept = trimmed(metadata)
    if not isinstance(kept, dict):
        return {}
    while kept and len(json.dumps(kept)) > MAX_METADATA_BYTES:
        largest = max(kept, key=lambda key: len(json.dumps(kept[key])))
        del kept[largest]
    return kept
