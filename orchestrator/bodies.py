"""Reading what a client sends: JSON as browsers can read it back, and bodies of bounded size."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from .errors import OrchestratorError

MAX_MESSAGE_BYTES = 64 * 1024  # a download request, a command: far below this


def strict_json(raw: str | bytes) -> Any:
    """json.loads that refuses NaN and Infinity, which no browser could read back."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(raw, parse_constant=refuse)


def parse_json(raw: str | bytes) -> Any:
    """strict_json, with the error a person sees."""
    try:
        return strict_json(raw)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, NaN, nesting past the stack
        raise OrchestratorError("invalid_json", "The request body is not valid JSON.") from None


async def read_limited(request: Request, limit: int = MAX_MESSAGE_BYTES, too_large: str = "") -> bytes:
    """The body, refused as soon as it grows past `limit` (never read whole into memory)."""
    error = OrchestratorError("message_too_large", too_large or "The request body is too large.", 413)
    if int(request.headers.get("content-length") or 0) > limit:
        raise error
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise error
    return bytes(body)
