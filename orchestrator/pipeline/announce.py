"""Job events to every connected client, with progress at most about once a poll interval."""

from __future__ import annotations

import time
from typing import Any

from .. import messages
from ..events import Hub
from .registry import LiveJob


class Announcer:
    def __init__(self, hub: Hub, poll_interval: float) -> None:
        self.hub = hub
        self.poll_interval = poll_interval

    def event(self, live: LiveJob, status: str, **data: Any) -> None:
        self.hub.publish(messages.job_event(live.job, status, **data))

    def progress(self, live: LiveJob, status: str, force: bool = True) -> None:
        """`progress`, `queued` or `paused` with the numbers; unforced ones are rate-limited."""
        now = time.monotonic()
        if not force and now - live.last_event < self.poll_interval * 0.9:
            return
        live.last_event = now
        self.event(live, status, **messages.progress_fields(live.job))

    def started(self, live: LiveJob) -> None:
        self.event(live, "started", url=live.job.url, type=live.job.model_type)
