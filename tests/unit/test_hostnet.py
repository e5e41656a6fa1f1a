"""IPv6 that reaches nothing, FUSE mounts: what the machine itself does to downloads."""

from __future__ import annotations

import socket
from pathlib import Path

from orchestrator import files, hostnet
from orchestrator.cli import doctor
from orchestrator.config import Settings
from orchestrator.engines.aria2_daemon import write_runtime_config

DEFAULT_ROUTE = (  # /proc/net/ipv6_route: destination ::/0 through an fd00:: gateway
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fd000000000000000000000000000001 00000400 00000003 00000000 00000003     eth0\n"
)
ULA_ADDRESS = "fd000000000000000000000000000002 04 40 00 82     eth0\n"
GLOBAL_ADDRESS = "2a0100000000000000000000000000a1 04 40 00 80     eth0\n"
LINK_LOCAL = "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n"


def test_ipv6_counts_as_usable_only_with_a_default_route_and_a_global_address() -> None:
    assert hostnet.ipv6_usable(DEFAULT_ROUTE, GLOBAL_ADDRESS + LINK_LOCAL)
    # a route to a private fd00:: gateway with only private and link-local addresses: a black hole
    assert not hostnet.ipv6_usable(DEFAULT_ROUTE, ULA_ADDRESS + LINK_LOCAL)
    assert not hostnet.ipv6_usable("", GLOBAL_ADDRESS)  # no default route
    assert not hostnet.ipv6_usable("", "")  # no IPv6 at all


def test_ipv6_off_reaches_aria2s_runtime_config(tmp_path: Path) -> None:
    config = write_runtime_config(tmp_path, "s3cret", 6800, tmp_path / "downloads", disable_ipv6=True)
    assert "disable-ipv6=true" in config.read_text().splitlines()
    config = write_runtime_config(tmp_path, "s3cret", 6800, tmp_path / "downloads", disable_ipv6=False)
    assert not any(line.startswith("disable-ipv6") for line in config.read_text().splitlines())
    assert hostnet.aria2_disables_ipv6("off") and not hostnet.aria2_disables_ipv6("on")


def test_reach_tells_a_listening_address_from_a_closed_one() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert hostnet.reach("127.0.0.1", port).ipv4 is True
    assert hostnet.reach("127.0.0.1", port, timeout=1).ipv4 is False
    assert hostnet.reach("no-such-host.invalid", port) == hostnet.Reach("no-such-host.invalid", None, None)
    assert hostnet.Reach("h", ipv4=True, ipv6=False).black_hole
    assert not hostnet.Reach("h", ipv4=True, ipv6=None).black_hole  # no IPv6 address: nothing to fall in


def test_doctor_names_an_ipv6_black_hole_and_the_setting_that_fixes_it(monkeypatch) -> None:
    # the neighbour faked here is the network: a host whose IPv6 addresses never answer
    monkeypatch.setattr(hostnet, "reach", lambda host: hostnet.Reach(host, ipv4=True, ipv6=False))
    check = doctor.check_ipv6(Settings(ipv6="on"), ["civitai.example"])
    assert check.level == "FAIL" and "civitai.example" in check.detail
    assert "--ipv6 off" in (check.fix or "")
    assert doctor.check_ipv6(Settings(ipv6="off"), ["civitai.example"]).level == "ok"


def test_a_fuse_mount_is_told_from_a_disk(tmp_path: Path) -> None:
    mounts = (
        "/dev/vda / ext4 rw 0 0\n"
        "sshfs#box:/models /mnt/box fuse.sshfs rw 0 0\n"
        "drive /content/drive fuse.drive rw 0 0\n"
    )
    assert files.on_fuse(Path("/mnt/box/models/lora"), mounts)
    assert files.on_fuse(Path("/content/drive/MyDrive/models"), mounts)
    assert not files.on_fuse(Path("/home/me/models"), mounts)
    assert files.filesystem_type(Path("/mnt/boxes"), mounts) == "ext4"  # a prefix is not a mount
