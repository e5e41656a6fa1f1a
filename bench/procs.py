"""Child processes the benchmark starts, and what /proc says about them.

Every child is started through `Children`, which stops them all on exit, on an
exception and on Ctrl-C. On Linux each child also gets PR_SET_PDEATHSIG, so even
a SIGKILLed benchmark leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before listening")
        with socket.socket() as probe:
            probe.settimeout(0.2)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM this child when the benchmark dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """A short-lived child (aria2c, curl) that dies with us."""
    return subprocess.run(command, preexec_fn=_die_with_parent, check=False, **kwargs)


def spawn(command: list[str], **kwargs) -> subprocess.Popen:
    """A short-lived child running alongside others; the caller waits for it."""
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent, **kwargs)


class Children:
    """The long-lived processes of one benchmark run (nginx, the app)."""

    def __init__(self) -> None:
        self._processes: list[tuple[subprocess.Popen, int]] = []

    def start(self, command: list[str], stop_signal: int = signal.SIGTERM, **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            **kwargs,
        )
        self._processes.append((process, stop_signal))
        return process

    def stop(self, process: subprocess.Popen, timeout: float = 20.0) -> None:
        for entry in list(self._processes):
            if entry[0] is process:
                self._processes.remove(entry)
                _stop(process, entry[1], timeout)

    def stop_all(self) -> None:
        while self._processes:
            process, stop_signal = self._processes.pop()
            _stop(process, stop_signal, 20.0)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _stop(process: subprocess.Popen, stop_signal: int, timeout: float) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(stop_signal)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # anything it left in its session (nginx workers, an embedded aria2c has its own)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


@dataclass
class CpuWindow:
    """CPU use of a process between start() and stop(), as % of one core."""

    pid: int
    cpu0: float = 0.0
    wall0: float = 0.0
    cpu: float = 0.0
    wall: float = 0.0

    def start(self) -> CpuWindow:
        self.cpu0, self.wall0 = cpu_seconds(self.pid), time.monotonic()
        return self

    def stop(self) -> CpuWindow:
        self.cpu = cpu_seconds(self.pid) - self.cpu0
        self.wall = time.monotonic() - self.wall0
        return self

    @property
    def percent(self) -> float:
        return 100.0 * self.cpu / self.wall if self.wall > 0 else 0.0
