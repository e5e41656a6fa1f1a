"""What this machine's own network can do, as far as downloads care: is there a usable IPv6?

aria2 prefers IPv6 when a name has both kinds of address. On a machine whose IPv6 goes
nowhere (a default route but no global address, common on rented boxes and containers)
every such download fails, so `--ipv6 auto` turns aria2's IPv6 off there. `doctor`
also tries both kinds of connection to the services, to tell a black hole when there is one.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

PROC_ROUTES = Path("/proc/net/ipv6_route")
PROC_ADDRESSES = Path("/proc/net/if_inet6")


def ipv6_usable(routes: str | None = None, addresses: str | None = None) -> bool:
    """A default IPv6 route and a global IPv6 address (not link-local, not a private fd00:: one)."""
    routes = _read(PROC_ROUTES) if routes is None else routes
    addresses = _read(PROC_ADDRESSES) if addresses is None else addresses
    default_route = any(
        line.split()[:2] == ["0" * 32, "00"] for line in routes.splitlines() if len(line.split()) > 2
    )
    return default_route and any(_global(line.split()[0]) for line in addresses.splitlines() if line.strip())


def aria2_disables_ipv6(setting: str) -> bool:
    """`--ipv6`: on, off, or auto (off when IPv6 cannot reach anything)."""
    return setting == "off" or (setting == "auto" and not ipv6_usable())


@dataclass(frozen=True)
class Reach:
    host: str
    ipv4: bool | None  # None: the name has no address of that kind
    ipv6: bool | None

    @property
    def black_hole(self) -> bool:
        """IPv6 addresses exist but do not answer while IPv4 does: aria2 would try IPv6 first."""
        return self.ipv6 is False and self.ipv4 is True


def reach(host: str, port: int = 443, timeout: float = 3.0) -> Reach:
    """Try one TCP connection over each kind of address `host` has."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return Reach(host, None, None)
    results: dict[int, bool] = {}
    for family, kind, proto, _, address in infos:
        if results.get(family):
            continue
        with socket.socket(family, kind, proto) as probe:
            probe.settimeout(timeout)
            try:
                probe.connect(address)
                results[family] = True
            except OSError:
                results.setdefault(family, False)
    return Reach(host, results.get(socket.AF_INET), results.get(socket.AF_INET6))


def _global(hex_address: str) -> bool:
    try:
        address = ipaddress.IPv6Address(int(hex_address, 16))
    except ValueError:
        return False
    return address.is_global


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
