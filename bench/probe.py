"""The requests fallback engine on its own, in a process of its own (for tuning its chunk size).

    python -m bench.probe URL DEST [--chunk 1048576] [--variant engine|hashing]

--chunk 0 (the default) is the engine's own adaptive read size. `engine` fetches a
plain link (nothing to check, so nothing is hashed while streaming); `hashing` the
same as if the source had published a SHA-256, which the engine then computes while
streaming (the value given is a dummy: comparing is the manager's job).

Prints one JSON line: wall seconds, CPU seconds of this process, bytes, sha256.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from orchestrator.engines.base import ACTIVE, COMPLETE, ERROR, WAITING, Transfer
from orchestrator.engines.fallback import RequestsEngine

VARIANTS = ("engine", "hashing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--chunk", type=int, default=0, help="fixed read size; 0 adapts it (the default)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="engine")
    args = parser.parse_args()
    engine = RequestsEngine(max_active=1, chunk_size=args.chunk or None)
    published = "0" * 64 if args.variant == "hashing" else None
    transfer = Transfer(
        urls=[args.url], directory=args.dest.parent, filename=args.dest.name, sha256=published
    )
    cpu0, t0 = time.process_time(), time.perf_counter()
    handle = engine.start(transfer)
    worker = engine._runs[handle].thread
    while True:
        # like the app: a poll a second, from another thread; the worker's end is seen at once
        worker.join(timeout=1.0)
        status = engine.poll([handle])[handle]
        if status.state not in (ACTIVE, WAITING):
            break
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    ok = status.state == COMPLETE
    print(
        json.dumps(
            {
                "ok": ok,
                "wall": wall,
                "cpu": cpu,
                "size": status.completed,
                "sha256": status.sha256,
                "error": status.error_message if status.state == ERROR else None,
            }
        )
    )


if __name__ == "__main__":
    main()
