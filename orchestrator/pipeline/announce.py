"""Job events to every connected client, with progress at most about once a poll interval."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .. import messages
from ..events import Hub
from ..jobs import Job
from .registry import LiveJob

log = logging.getLogger(__name__)

JobListener = Callable[[Job, str], None]


class Announcer:
    def __init__(self, hub: Hub, poll_interval: float) -> None:
        self.hub = hub
        self.poll_interval = poll_interval
        self.listeners: list[JobListener] = []  # told of every job event (bundles follow their files)

    def event(self, live: LiveJob, status: str, **data: Any) -> None:
        self.hub.publish(messages.job_event(live.job, status, **data))
        for listener in self.listeners:
            try:
                listener(live.job, status)
            except Exception:  # a listener's bug must not stop the job's own events
                log.exception("a job event listener failed")

    def progress(self, live: LiveJob, status: str, force: bool = True) -> None:
        """`progress`, `queued` or `paused` with the numbers; unforced ones are rate-limited."""
        now = time.monotonic()
        if not force and now - live.last_event < self.poll_interval * 0.9:
            return
        live.last_event = now
        self.event(live, status, **messages.progress_fields(live.job))

    def started(self, live: LiveJob) -> None:
        # a bundle's file says so from its first event: a page shows it inside the bundle's card
        bundled = {"bundle": live.job.bundle} if live.job.bundle else {}
        self.event(live, "started", url=live.job.url, type=live.job.model_type, **bundled)
