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
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import OrchestratorError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598: carrier-grade NAT, not global
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the well-known prefix, IPv4 in the last 32 bits


@dataclass(frozen=True)
class Policy:
    block_private: bool = False
    # host names or addresses let through although they are private (a NAS the operator trusts)
    allowed: frozenset[str] = frozenset()
    # the egress proxy the app's own requests go through when the policy is on: it connects to
    # the address it checked, so a name that resolves anew (DNS rebinding) cannot switch it
    proxy: str | None = field(default=None, repr=False, compare=False)

    def check(self, url: str) -> None:
        """Raise `blocked_target` if the policy is on and the URL's host is not public (or
        cannot be resolved: what cannot be checked is not let through)."""
        if not self.block_private:
            return
        host = (urlsplit(url).hostname or "").lower()
        if host in self.allowed:
            return
        try:
            addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
        except (socket.gaierror, UnicodeError):
            raise unresolvable(host) from None
        for address in addresses:
            reason = self.refusal(host, ipaddress.ip_address(address.split("%")[0]))
            if reason:
                raise blocked(host, reason)

    def refusal(self, host: str, address: IPAddress) -> str | None:
        """Why this host's address may not be contacted, or None (the egress proxy asks this)."""
        if not self.block_private or host.lower() in self.allowed or str(address) in self.allowed:
            return None
        return address_refusal(address)


def address_refusal(address: IPAddress) -> str | None:
    """Refuse every address that is not a public unicast one, also inside IPv6 wrappers.

    `is_global` alone is not enough: Python counts multicast and site-local addresses as
    global, and wrappers like ::ffff:127.0.0.1 reach the wrapped address.
    """
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            reason = address_refusal(inner)
            return f"{reason} in IPv6 form" if reason else None
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for: mapped (::ffff:), 6to4 (2002::/16), NAT64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def blocked(host: str, reason: str | None = None) -> OrchestratorError:
    """The refusal, with the way out: a LAN mirror or NAS is often what the user wants."""
    what = f"{host} is {reason}" if reason else host
    return OrchestratorError(
        "blocked_target",
        f"This server does not download from private or local network addresses: {what}. It can be "
        "reached from outside; to allow them, start it with --block-private off "
        "(ORCHESTRATOR_BLOCK_PRIVATE=off), or name a trusted host with --private-allow.",
        403,
    )


def unresolvable(host: str) -> OrchestratorError:
    return OrchestratorError(
        "dns",
        f"{host} cannot be resolved, so this server cannot check that it is a public address.",
        502,
    )


OPEN = Policy(block_private=False)
GUARDED = Policy(block_private=True)
