"""Publish/subscribe hub: every job event goes to every connected client.

Each client has its own bounded queue so one slow browser cannot hold up the
others or grow memory without limit: when its queue is full, its oldest
pending event is dropped (progress is resent every second anyway).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

QUEUE_LIMIT = 512


class Subscription:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self.queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_LIMIT)
        self.dropped = 0

    def put(self, text: str) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(text)

    async def get(self) -> str:
        return await self.queue.get()

    def close(self) -> None:
        self._hub.unsubscribe(self)


class Hub:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self.sent = 0

    def subscribe(self) -> Subscription:
        subscription = Subscription(self)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    def publish(self, message: dict[str, Any]) -> None:
        """Serialise once, queue for everyone. Must be called on the event loop."""
        text = json.dumps(message, separators=(",", ":"))
        for subscription in list(self._subscribers):
            subscription.put(text)
        self.sent += len(self._subscribers)
