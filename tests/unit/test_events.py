"""The publish/subscribe hub that relays job events to every client."""

from __future__ import annotations

import asyncio
import json

from orchestrator import events
from orchestrator.events import Hub


def drain(subscription) -> list[dict]:
    out = []
    while not subscription.queue.empty():
        out.append(json.loads(subscription.queue.get_nowait()))
    return out


def test_every_subscription_gets_every_message() -> None:
    hub = Hub()
    subs = [hub.subscribe() for _ in range(3)]
    assert hub.clients == 3
    hub.publish({"type": "download", "n": 1})
    hub.publish({"type": "download", "n": 2, "text": "模型"})
    for sub in subs:
        assert drain(sub) == [{"type": "download", "n": 1}, {"type": "download", "n": 2, "text": "模型"}]
    assert hub.sent == 6


def test_get_waits_for_the_next_message() -> None:
    async def scenario() -> str:
        hub = Hub()
        sub = hub.subscribe()
        waiter = asyncio.create_task(sub.get())
        await asyncio.sleep(0)
        hub.publish({"type": "pong"})
        return await asyncio.wait_for(waiter, 5)

    assert json.loads(asyncio.run(scenario())) == {"type": "pong"}


def test_full_queue_drops_the_oldest_and_keeps_the_newest() -> None:
    hub = Hub()
    slow, fast = hub.subscribe(), hub.subscribe()
    total = events.QUEUE_LIMIT + 5
    for n in range(total):
        hub.publish({"n": n})
        drain(fast)  # a client that keeps up
    received = [m["n"] for m in drain(slow)]
    assert slow.dropped == 5
    assert fast.dropped == 0
    assert len(received) == events.QUEUE_LIMIT
    assert received[0] == 5  # the five oldest went
    assert received[-1] == total - 1  # the newest survived
    assert received == sorted(received)


def test_unsubscribe_stops_delivery() -> None:
    hub = Hub()
    stays, leaves = hub.subscribe(), hub.subscribe()
    leaves.close()
    assert hub.clients == 1
    hub.publish({"n": 1})
    assert drain(stays) == [{"n": 1}]
    assert drain(leaves) == []
    hub.unsubscribe(leaves)  # twice: harmless
    assert hub.clients == 1


def test_publish_without_subscribers() -> None:
    hub = Hub()
    hub.publish({"n": 1})
    assert hub.sent == 0
