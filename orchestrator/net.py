"""Every HTTP request the app makes itself goes through one kind of session: this one.

Sources, sidecar and preview fetches all use `session(policy)`. It checks the
policy before each request and before each redirect hop it follows (requests
sends every hop through `Session.send`), so no path around the check exists.
It never asks for compressed bytes: sizes and Range offsets must be about the
bytes on disk, not a gzip stream.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests

from .policy import Policy, blocked

USER_AGENT = "orchestrator/0.1 (+model downloader)"
HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}


class GuardedSession(requests.Session):
    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy
        self.headers.update(HEADERS)
        if policy.block_private and policy.proxy:
            self.trust_env = False  # only our proxy: it checks where each connection really goes
            self.proxies = {"http": policy.proxy, "https": policy.proxy}

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        host = urlsplit(request.url or "").hostname or "the server"
        self.policy.check(request.url or "")
        try:
            return super().send(request, **kwargs)
        except requests.exceptions.ProxyError as exc:
            if "403" in str(exc):  # the egress proxy refused the address this name stood for now
                raise blocked(host, "a private address when it was connected to") from None
            raise


def session(policy: Policy) -> GuardedSession:
    return GuardedSession(policy)
