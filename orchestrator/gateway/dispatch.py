"""One client payload (a call or a batch) through the gateway, whatever carried it.

For each call: the client's secret is checked and taken off (the daemon's own is put in
on the way out, by gateway/daemon.py), the policy judges the method and its options,
`aria2.addUri` is offered to the orchestrator's intake, the rest goes to the daemon,
and what comes back is redacted. `system.multicall` needs no secret itself; each call
inside it carries its own and is judged on its own, and a refused one becomes a fault
at its place in the answer, as aria2 answers a failing call there (aria2's
src/RpcMethodImpl.cc, SystemMulticallRpcMethod::execute).

Who may call without the secret: nobody, except that `system.listMethods` and
`system.listNotifications`, which aria2 answers to anyone (its manual, "RPC
authorization secret token"), are answered to a caller on this machine (a server on
loopback, a loopback Host header, no other web site's Origin).
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import OrchestratorError
from .intake import Intake
from .jsonrpc import (
    MAX_CALLS,
    METHOD_FAILED,
    MULTICALL,
    NO_SECRET_METHODS,
    Call,
    Fault,
    answer,
    error_answer,
    id_of,
    read_call,
    take_secret,
    unauthorized,
)
from .policy import Policy, redact

log = logging.getLogger(__name__)

ADD_URI = "aria2.addUri"


class Daemon(Protocol):
    async def call(self, method: str, params: list[Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Caller:
    local: bool  # on this machine: see the module docstring
    foreign_origin: bool = False  # sent by a page of another web site


@dataclass(frozen=True)
class Reply:
    body: Any  # an answer object, or a list of them for a batch
    status: int  # the HTTP status, when HTTP carries it


def too_many_calls() -> Fault:
    return Fault(
        METHOD_FAILED,
        f"Too many calls at once: at most {MAX_CALLS} in a batch or a system.multicall.",
        "too_many_calls",
    )


class Dispatcher:
    def __init__(self, access_token: str, policy: Policy, intake: Intake | None, daemon: Daemon) -> None:
        self._token = access_token.encode()
        self.policy = policy
        self.intake = intake
        self.daemon = daemon

    async def handle(self, payload: Any, caller: Caller) -> Reply:
        """The answer to a parsed payload; a batch is answered call by call, in order."""
        if isinstance(payload, list):
            if len(payload) > MAX_CALLS:
                return Reply(error_answer(None, too_many_calls()), 400)
            return Reply([(await self._answer(entry, caller))[0] for entry in payload], 200)
        body, status = await self._answer(payload, caller)
        return Reply(body, status)

    def secrets(self, payload: Any) -> list[bool]:
        """For every call in the payload (inside a multicall: every call in it), whether it
        carries the right secret. Reads only; runs nothing."""
        found = []
        for entry in payload if isinstance(payload, list) else [payload]:
            params = entry.get("params") if isinstance(entry, dict) else None
            if not isinstance(params, list):
                found.append(False)
            elif entry.get("method") == MULTICALL and params and isinstance(params[0], list):
                found += [isinstance(spec, dict) and self._valid(spec.get("params")) for spec in params[0]]
            else:
                found.append(self._valid(params))
        return found

    def _valid(self, params: Any) -> bool:
        return isinstance(params, list) and self._is_token(take_secret(params)[0])

    def _is_token(self, secret: str | None) -> bool:
        return secret is not None and hmac.compare_digest(secret.encode(), self._token)

    async def _answer(self, entry: Any, caller: Caller) -> tuple[dict[str, Any], int]:
        try:
            call = read_call(entry)
            result = await self._run(call, caller)
        except Fault as fault:
            return error_answer(id_of(entry), fault), fault.status
        return answer(call.id, result), 200

    async def _run(self, call: Call, caller: Caller) -> Any:
        if call.method == MULTICALL:
            return await self._multicall(call.params, caller)
        params = self._admit(call.method, call.params, caller)
        taken = await self._offer(call.method, params, caller)
        if taken is not None:
            return taken
        return _result_of(await self.daemon.call(call.method, params))

    def _admit(self, method: str, params: list[Any], caller: Caller) -> list[Any]:
        """The parameters to send on: the secret checked and taken off, the policy passed."""
        secret, params = take_secret(params)
        if not self._is_token(secret) and not (method in NO_SECRET_METHODS and caller.local):
            raise unauthorized()
        try:
            return self.policy.check(method, params)
        except OrchestratorError as error:
            log.info("refused %r through the aria2 gateway: %s", method[:80], error.code)
            raise Fault.refusal(error) from None

    async def _offer(self, method: str, params: list[Any], caller: Caller) -> str | None:
        """The GID of the orchestrator's job when its intake takes this addUri, else None."""
        if method != ADD_URI or self.intake is None or not _intake_shape(params):
            return None
        position = params[2] if len(params) > 2 else None
        try:
            gid = await self.intake.add_uri(list(params[0]), params[1], position, not caller.local)
        except OrchestratorError as error:
            raise Fault.refusal(error) from None
        except Exception:
            log.exception("the orchestrator's intake failed on an aria2 addUri")
            raise Fault(
                METHOD_FAILED,
                "The server could not take this link (an internal error).",
                "intake_failed",
                500,
            ) from None
        return gid if isinstance(gid, str) else None

    async def _multicall(self, params: list[Any], caller: Caller) -> list[Any]:
        if not params or not isinstance(params[0], list):
            raise Fault(
                METHOD_FAILED, "system.multicall takes one parameter: an array of calls.", "invalid_params"
            )
        specs = params[0]
        if len(specs) > MAX_CALLS:
            raise too_many_calls()
        results: list[Any] = [None] * len(specs)
        forward: list[tuple[int, dict[str, Any]]] = []
        for index, spec in enumerate(specs):
            try:
                method, inner = _read_spec(spec)
                inner = self._admit(method, inner, caller)
                taken = await self._offer(method, inner, caller)
            except Fault as fault:
                results[index] = fault.as_json()
                continue
            if taken is not None:
                results[index] = [taken]
            else:
                forward.append((index, {"methodName": method, "params": inner}))
        if forward:
            answers = _result_of(await self.daemon.call(MULTICALL, [[spec for _, spec in forward]]))
            if not isinstance(answers, list) or len(answers) != len(forward):
                raise Fault(
                    METHOD_FAILED,
                    "The server's aria2 daemon answered system.multicall oddly.",
                    "daemon_error",
                    502,
                )
            for (index, _), result in zip(forward, answers, strict=True):
                results[index] = result
        return results


def _read_spec(spec: Any) -> tuple[str, list[Any]]:
    """One call inside system.multicall, refused as aria2 refuses it."""
    if not isinstance(spec, dict):
        raise Fault(METHOD_FAILED, "system.multicall expected struct.")
    method = spec.get("methodName")
    if not isinstance(method, str):
        raise Fault(METHOD_FAILED, "Missing methodName.")
    if method == MULTICALL:
        raise Fault(METHOD_FAILED, "Recursive system.multicall forbidden.")
    params = spec.get("params")
    return method, params if isinstance(params, list) else []


def _intake_shape(params: list[Any]) -> bool:
    """addUri(uris, options[, position]) as the intake takes it; anything else is aria2's to refuse."""
    if len(params) < 2 or not isinstance(params[0], list) or not isinstance(params[1], dict):
        return False
    position = params[2] if len(params) > 2 else None
    return all(isinstance(uri, str) for uri in params[0]) and (
        position is None or (isinstance(position, int) and not isinstance(position, bool))
    )


def _result_of(daemon_answer: dict[str, Any]) -> Any:
    """The daemon's result, redacted; its error, redacted, as a Fault."""
    error = daemon_answer.get("error")
    if isinstance(error, dict):
        clean = redact(error)
        code = clean.get("code")
        raise Fault(
            code if isinstance(code, int) else METHOD_FAILED, str(clean.get("message", "aria2 failed."))
        )
    return redact(daemon_answer.get("result"))
