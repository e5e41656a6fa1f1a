"""aria2's JSON-RPC on the wire: reading calls, writing answers and errors.

aria2 clients are written against aria2's own server, so these rules are its rules
(aria2's src/rpc_helper.cc `processJsonRpcRequest`, src/json.cc `decodeGetParams`,
src/HttpServerBodyCommand.cc, src/RpcMethod.cc `authorize`; its manual, "RPC INTERFACE"):

- a call needs an `id` (any JSON value, 0 included) and a string `method`, else -32600
  "Invalid Request."; `params`, when present, must be an array, else -32602 "Invalid
  params."; the `jsonrpc` member is not checked (the npm client sends `json-rpc`);
- a body that is not JSON is -32700 "Parse error."; an array is a batch of calls;
- the secret is a first parameter `token:<secret>`, taken off before the method runs;
- an error while a method runs is code 1 with a sentence ("Unauthorized" for the secret);
- a single answer's HTTP status follows its error code (1 and -32600: 400, -32601: 404,
  anything else 500); a batch is always 200;
- the GET form is `?method=M&id=I&params=<base64 of the JSON params>`, or `params` alone
  holding a whole batch; `jsoncallback` asks for JSONP.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from ..errors import OrchestratorError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
METHOD_FAILED = 1  # aria2's code for every error raised while a method runs

TOKEN_PREFIX = "token:"  # noqa: S105 (a prefix, not a password)
MULTICALL = "system.multicall"  # needs no secret itself: each call inside carries its own
NO_SECRET_METHODS = frozenset({"system.listMethods", "system.listNotifications"})  # aria2 answers anyone
MAX_BODY_BYTES = 64 * 1024
MAX_CALLS = 100  # per batch, and per system.multicall


class Fault(Exception):
    """A JSON-RPC error object. `reason` is the gateway's stable snake_case code, sent as
    `data.code` (aria2 itself sends no `data`); `status` answers a single call over HTTP."""

    def __init__(self, code: int, message: str, reason: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.status = status if status is not None else status_for(code)

    @classmethod
    def refusal(cls, error: OrchestratorError) -> Fault:
        """An OrchestratorError as aria2 clients show errors: code 1, the sentence as message."""
        return cls(METHOD_FAILED, error.message, error.code, error.status)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.reason:
            body["data"] = {"code": self.reason}
        return body


def unauthorized() -> Fault:
    """aria2's answer to a wrong or missing secret, to the letter (clients compare it)."""
    return Fault(METHOD_FAILED, "Unauthorized")


def status_for(code: int) -> int:
    if code in (METHOD_FAILED, INVALID_REQUEST):
        return 400
    if code == METHOD_NOT_FOUND:
        return 404
    return 500


@dataclass(frozen=True)
class Call:
    id: Any
    method: str
    params: list[Any]


def parse_body(raw: bytes | str) -> Any:
    """Strict JSON: bad UTF-8, NaN and Infinity are parse errors, as in aria2's parser."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    try:
        return json.loads(raw, parse_constant=refuse)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Fault(PARSE_ERROR, "Parse error.") from None


def read_call(entry: Any) -> Call:
    if not isinstance(entry, dict) or "id" not in entry:
        raise Fault(INVALID_REQUEST, "Invalid Request.")
    method = entry.get("method")
    if not isinstance(method, str):
        raise Fault(INVALID_REQUEST, "Invalid Request.")
    params = entry.get("params", [])
    if not isinstance(params, list):
        raise Fault(INVALID_PARAMS, "Invalid params.")
    return Call(entry["id"], method, params)


def id_of(entry: Any) -> Any:
    """The id to answer a call with, also one too broken to read (null without one)."""
    return entry.get("id") if isinstance(entry, dict) else None


def answer(call_id: Any, result: Any) -> dict[str, Any]:
    return {"id": call_id, "jsonrpc": "2.0", "result": result}


def error_answer(call_id: Any, fault: Fault) -> dict[str, Any]:
    return {"id": call_id, "jsonrpc": "2.0", "error": fault.as_json()}


def take_secret(params: list[Any]) -> tuple[str | None, list[Any]]:
    """The secret a call carries (None without one) and the parameters after it."""
    if params and isinstance(params[0], str) and params[0].startswith(TOKEN_PREFIX):
        return params[0][len(TOKEN_PREFIX) :], params[1:]
    return None, params


def with_secret(secret: str, params: list[Any]) -> list[Any]:
    return [TOKEN_PREFIX + secret, *params]


# -- the GET form -----------------------------------------------------------------------


def _query_fields(query: str) -> dict[str, str]:
    fields = {}
    for part in query.split("&"):
        name, _, value = part.partition("=")
        fields[name] = value  # the last one wins, as in aria2
    return fields


def decode_get(query: str) -> tuple[Any, str | None]:
    """The payload a GET carries, as a POST body would, and its `jsoncallback` (JSONP) if any."""
    fields = _query_fields(query)
    params: Any = None
    if "params" in fields:
        text = unquote(fields["params"]).replace("-", "+").replace("_", "/")
        try:
            decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise Fault(PARSE_ERROR, "Parse error.") from None
        params = parse_body(decoded)
    callback = unquote(fields["jsoncallback"]) if "jsoncallback" in fields else None
    if "method" not in fields and "id" not in fields:
        if params is None:
            raise Fault(PARSE_ERROR, "Parse error.")
        return params, callback  # a batch (or one call) in `params` alone
    payload: dict[str, Any] = {}
    if "method" in fields:
        payload["method"] = unquote(fields["method"])
    if "id" in fields:
        payload["id"] = unquote(fields["id"])  # always a string in this form (aria2's manual)
    if params is not None:
        payload["params"] = params
    return payload, callback


def loggable_query(query: str) -> str:
    """The GET form's query with its params (holding the secret, base64 is no disguise) hidden."""
    fields = _query_fields(query)
    shown = [f"{name}={fields[name]}" for name in ("method", "id") if name in fields]
    if "params" in fields:
        shown.append("params=[redacted]")
    return "&".join(shown)
