"""The requests fallback engine on its own, in a process of its own (for tuning its chunk size).

    python -m bench.probe URL DEST [--chunk 1048576] [--variant engine|threaded-hash|read1]

--chunk 0 (the default) is the engine's own adaptive read size.

Prints one JSON line: wall seconds, CPU seconds of this process, bytes, sha256.
`threaded-hash` and `read1` are prototypes, not product code: the same engine
with the SHA-256 moved to a second thread, or reading whatever has arrived
instead of waiting for a full chunk, to show what such a change would buy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import queue
import threading
import time
from pathlib import Path

from orchestrator.engines.base import ACTIVE, COMPLETE, ERROR, WAITING, Transfer
from orchestrator.engines.fallback import RequestsEngine, _Stopped


class _ThreadedHash:
    """hashlib releases the GIL on big buffers, so a second thread hashes while the first reads."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.queue: queue.Queue = queue.Queue(maxsize=16)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (chunk := self.queue.get()) is not None:
            self.digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        self.queue.put(chunk)

    def hexdigest(self) -> str:
        self.queue.put(None)
        self.thread.join()
        return self.digest.hexdigest()


class ThreadedHashEngine(RequestsEngine):
    def _stream(self, run, response, have):  # same loop as the engine's, hashing elsewhere
        hasher = _ThreadedHash()
        run.completed = have
        with open(run.path, "wb") as handle:
            for chunk in response.iter_content(self.chunk_size):
                if run.stop:
                    raise _Stopped
                handle.write(chunk)
                hasher.update(chunk)
                run.completed += len(chunk)
                run.samples.append((time.monotonic(), run.completed))
        run.hasher, run.hashed = _Done(hasher.hexdigest()), run.completed

    def _hash_prefix(self, run, have):
        if run.hasher is None:
            run.hasher, run.hashed = hashlib.sha256(), 0


class Read1Engine(RequestsEngine):
    """Prototype: read what has arrived (up to chunk_size) instead of waiting for a full chunk.

    iter_content(n) blocks until n bytes are in, so a big n makes progress and pause
    coarse on a slow link; read1(n) returns after one receive, so chunks are big only
    when the data is there.
    """

    def _stream(self, run, response, have):
        self._hash_prefix(run, have)
        run.completed = have
        run.samples.append((time.monotonic(), have))
        with open(run.path, "r+b" if have else "wb") as handle:
            handle.seek(have)
            while chunk := response.raw.read1(self.chunk_size):
                if run.stop:
                    raise _Stopped
                handle.write(chunk)
                run.hasher.update(chunk)
                run.completed += len(chunk)
                run.hashed = run.completed
                run.samples.append((time.monotonic(), run.completed))


class _Done:
    def __init__(self, value: str) -> None:
        self.value = value

    def hexdigest(self) -> str:
        return self.value


VARIANTS = {"engine": RequestsEngine, "threaded-hash": ThreadedHashEngine, "read1": Read1Engine}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--chunk", type=int, default=0, help="fixed read size; 0 adapts it (the default)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="engine")
    args = parser.parse_args()
    engine_class = VARIANTS[args.variant]
    engine = engine_class(max_active=1, chunk_size=args.chunk or None)
    transfer = Transfer(urls=[args.url], directory=args.dest.parent, filename=args.dest.name)
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
