"""A tiny HTTP/1.1 file server that paces every connection smoothly (for the latency probe).

nginx's limit_rate works in whole seconds: at low rates it hands each connection a
second's worth of bytes in one burst, so aria2's byte count jumps a few times a
second and "how long until a change reaches a browser" measures the bursts rather
than the app. This server sends `rate / 50` bytes every 20 ms instead, like a
TCP-paced CDN, each connection at a slightly different rate (+-25%) so that aria2's
16 connections do not fill their 16 KiB buffers in lockstep. HEAD and GET with one
Range are enough for aria2 and the app.

    python -m bench.smooth --port 8123 --root DIR --rate 128k
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .nginx import parse_rate

TICK = 0.02
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


async def serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, root: Path, rate: float
) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")
            method, target, _ = [*lines[0].split(" "), "", ""][:3]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            path = root / Path(unquote(urlsplit(target).path)).name
            if method not in ("GET", "HEAD") or not path.is_file():
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                continue
            size = path.stat().st_size
            start, end, status = 0, size - 1, "200 OK"
            match = _RANGE.match(headers.get("range", ""))
            if match and (match.group(1) or match.group(2)):
                if match.group(1):
                    start = int(match.group(1))
                    end = min(size - 1, int(match.group(2))) if match.group(2) else size - 1
                else:
                    start = max(0, size - int(match.group(2)))
                status = "206 Partial Content"
            length = max(0, end - start + 1)
            lines = [
                f"HTTP/1.1 {status}",
                f"Content-Length: {length}",
                "Content-Type: application/octet-stream",
                "Accept-Ranges: bytes",
            ]
            if status.startswith("206"):
                lines.append(f"Content-Range: bytes {start}-{end}/{size}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            if method == "GET":
                await send_paced(writer, path, start, length, rate * random.uniform(0.75, 1.25))
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.close()


async def send_paced(writer: asyncio.StreamWriter, path: Path, start: int, length: int, rate: float) -> None:
    loop = asyncio.get_running_loop()
    per_tick = max(1, int(rate * TICK))
    deadline = loop.time()
    with open(path, "rb") as handle:
        handle.seek(start)
        while length > 0:
            block = handle.read(min(per_tick, length))
            if not block:
                break
            writer.write(block)
            await writer.drain()
            length -= len(block)
            deadline += TICK
            await asyncio.sleep(max(0.0, deadline - loop.time()))


async def main_async(port: int, root: Path, rate: float) -> None:
    server = await asyncio.start_server(
        lambda r, w: serve_connection(r, w, root, rate), "127.0.0.1", port, limit=64 * 1024
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--rate", default="128k", help="bytes per second per connection (nginx syntax)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args.port, args.root, parse_rate(args.rate)))


if __name__ == "__main__":
    main()
