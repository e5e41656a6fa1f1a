"""Every HTTP request the app makes itself goes through one kind of session: this one.

Sources, sidecar and preview fetches all use `session(policy)`. It checks the
policy before each request and before each redirect hop it follows (requests
sends every hop through `Session.send`), so no path around the check exists.
It never asks for compressed bytes: sizes and Range offsets must be about the
bytes on disk, not a gzip stream.
"""

from __future__ import annotations

from typing import Any

import requests

from .policy import Policy

USER_AGENT = "orchestrator/0.1 (+model downloader)"
HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}


class GuardedSession(requests.Session):
    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy
        self.headers.update(HEADERS)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.policy.check(request.url or "")
        return super().send(request, **kwargs)


def session(policy: Policy) -> GuardedSession:
    return GuardedSession(policy)
