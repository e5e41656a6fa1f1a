"""Which addresses the app may contact for a download, when it must not reach the local network.

A server others can reach must not become their way into the machine's own
network (SSRF): with the policy on, every host a link or redirect names must
resolve to public addresses only. Off on loopback, where local mirrors and tests
are legitimate targets. The policy is a value handed to whoever connects (the
guarded session in net.py), never a global setting.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import OrchestratorError


@dataclass(frozen=True)
class Policy:
    block_private: bool = False
    # host names or addresses let through although they are private (a NAS the operator trusts)
    allowed: frozenset[str] = frozenset()

    def check(self, url: str) -> None:
        """Raise `blocked_target` if the policy is on and the URL's host is not public."""
        if not self.block_private:
            return
        host = (urlsplit(url).hostname or "").lower()
        if host in self.allowed:
            return
        try:
            addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
        except (socket.gaierror, UnicodeError):
            return  # unresolvable: the request itself will fail with a clear error
        for address in addresses:
            if not (is_public(address) or address in self.allowed):
                raise blocked(host)


def blocked(host: str) -> OrchestratorError:
    """The refusal, with the way out: a LAN mirror or NAS is often what the user wants."""
    return OrchestratorError(
        "blocked_target",
        f"This server does not download from private or local network addresses ({host}), since it "
        "can be reached from outside. To allow them, start it with --block-private off "
        "(ORCHESTRATOR_BLOCK_PRIVATE=off).",
        403,
    )


OPEN = Policy(block_private=False)
GUARDED = Policy(block_private=True)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    return ip.is_global and not ip.is_multicast
