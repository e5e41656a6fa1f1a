"""Statistics and the interleaved schedule: A, B, C, A, B, C... with the start rotated each round."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

MB = 1_000_000  # rates are MB/s, 10^6 bytes per second, as in docs/PROTOCOL.md


@dataclass(frozen=True)
class Summary:
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        return cls(tuple(v for v in values if v is not None))

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")

    def percentile(self, p: float) -> float:
        if not self.values:
            return float("nan")
        ordered = sorted(self.values)
        rank = p / 100 * (len(ordered) - 1)
        low = int(rank)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)

    def text(self, digits: int = 1, scale: float = 1.0) -> str:
        if not self.values:
            return "n/a"
        if self.n == 1:
            return f"{self.median * scale:.{digits}f}"
        return (
            f"{self.median * scale:.{digits}f} [{self.low * scale:.{digits}f}-{self.high * scale:.{digits}f}]"
        )


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> Summary:
    """Per-round ratios (round i of A over round i of B): pairs measured close together in time."""
    return Summary.of(a / b for a, b in zip(numerators, denominators, strict=False) if a and b)


def settle(pause: float = 0.3) -> None:
    """Between runs: flush dirty pages (the deleted outputs have none left) and let the box breathe."""
    os.sync()
    time.sleep(pause)


def interleave(
    contenders: dict[str, Callable[[], object]],
    rounds: int,
    on_result: Callable[[str, int, object], None],
    pause: float = 0.3,
) -> None:
    """Run each contender once per round, in an order that rotates and reverses every other
    round (A B C, C B A, B C A, A C B, ...): each runs both before and after each other one, so
    what a run leaves behind (freed page cache, a busy disk) does not always hit the same one."""
    names = list(contenders)
    for r in range(rounds):
        shift = (r // 2) % len(names)
        order = names[shift:] + names[:shift]
        if r % 2:
            order.reverse()
        for name in order:
            result = contenders[name]()
            on_result(name, r, result)
            settle(pause)


def load_average() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])
