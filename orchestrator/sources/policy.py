"""Which hosts a download may come from, when the server is exposed.

A server others can reach must not become their way into the machine's own
network (SSRF): with the policy on, every host a link or redirect names must
resolve to public addresses only. Off by default on loopback, where local
mirrors and tests are legitimate targets.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator
from contextvars import ContextVar
from urllib.parse import urlsplit

from ..errors import OrchestratorError

_BLOCK_PRIVATE: ContextVar[bool] = ContextVar("block_private", default=False)


@contextlib.contextmanager
def blocking_private(enabled: bool) -> Iterator[None]:
    marker = _BLOCK_PRIVATE.set(enabled)
    try:
        yield
    finally:
        _BLOCK_PRIVATE.reset(marker)


def enabled() -> bool:
    return _BLOCK_PRIVATE.get()


def check_target(url: str) -> None:
    """Raise `blocked_target` if the policy is on and the URL's host is not public."""
    if not _BLOCK_PRIVATE.get():
        return
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return  # unresolvable: the request itself will fail with a clear error
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise OrchestratorError(
                "blocked_target",
                f"This server does not download from private or local network addresses ({host}).",
                403,
            )
