"""Whether the engine answers, as the health endpoint, `hello` and the page see it."""

from __future__ import annotations

import logging
from typing import Any

from .. import messages
from ..events import Hub

log = logging.getLogger(__name__)


class EngineHealth:
    """The one owner of the engine's public description; others read copies of it."""

    def __init__(self, hub: Hub, described: dict[str, Any]) -> None:
        self.hub = hub
        self._info = dict(described)
        self.up = True

    @property
    def info(self) -> dict[str, Any]:
        return dict(self._info)

    def learn(self, described: dict[str, Any]) -> None:
        """What the engine says about itself (name, version, connected), asked at start."""
        self._info.update(described)

    def describe_choice(self, choice: dict[str, Any]) -> None:
        """How the engine was picked (the fallback and why, the binary), told once at start."""
        self._info.update(choice)

    def mark(self, up: bool, message: str | None = None) -> None:
        if up == self.up:
            return
        self.up = up
        self._info["connected"] = up
        log.warning("engine %s", "is back" if up else f"unreachable: {message}")
        self.hub.publish(messages.engine_event(self.info, message))

    def announce(self, message: str) -> None:
        """Something the engine's owner did, e.g. restarting a daemon that died."""
        self.hub.publish(messages.engine_event(self.info, message))
