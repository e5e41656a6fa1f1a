"""The hook through which the orchestrator takes the links an aria2 client adds.

A link the orchestrator knows how to resolve (CivitAI, Hugging Face, Drive, or a plain
link meant for a model folder) does better as an orchestrator job than as a bare aria2
download: resolved, verified, installed into its type folder. So before an
`aria2.addUri` goes to the daemon, the gateway offers it to its intake:

    class Intake(Protocol):
        async def add_uri(
            self, uris: list[str], options: dict[str, str | list[str]], position: int | None, remote: bool
        ) -> str | None: ...

- It is called for every `aria2.addUri` (alone, in a batch, or inside `system.multicall`)
  that carries the right secret and passed the policy (gateway/policy.py): `dir`, when
  given, is an absolute path inside the models folder with symlinks resolved, `out` is a
  bare name, and `follow-torrent`/`follow-metalink` are "false".
- It returns the GID aria2 was given for the orchestrator's job: the client gets it as
  addUri's answer and follows it with tellStatus like any download.
- It returns None when the link is not one the orchestrator takes: the call then goes to
  aria2 with `options` as the intake left them (it may add options, e.g. the egress proxy
  of a download a remote caller asked for while private addresses are refused).
- `remote`: the caller is not on this machine (a tunnel, the network).
- It raises OrchestratorError to refuse the link: the client gets a JSON-RPC error
  `{"code": 1, "message": error.message, "data": {"code": error.code}}`. Any other
  exception is logged and answered with a generic error.
- It runs on the event loop: blocking work belongs in a thread.
"""

from __future__ import annotations

from typing import Protocol

Options = dict[str, str | list[str]]


class Intake(Protocol):
    async def add_uri(
        self, uris: list[str], options: Options, position: int | None, remote: bool
    ) -> str | None: ...
