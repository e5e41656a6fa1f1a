"""The words of the protocol, said once: model types and their folders, sources, states, actions.

The page and the CLI take these from the server (`hello`, `/api/types`) instead of
keeping copies of their own, so a new type or source needs no change there.
"""

from __future__ import annotations

from typing import Any

from . import sources
from .config import AUTO_DESCRIPTION, AUTO_TYPE, MODEL_TYPES, folder_for
from .jobs import ACTIONS, State


def model_types(layout: str) -> list[dict[str, str]]:
    """`auto` first (it has no folder of its own: the source's answer picks one), then every type."""
    auto = {"name": AUTO_TYPE, "description": AUTO_DESCRIPTION, "folder": ""}
    return [auto] + [
        {"name": name, "description": text, "folder": folder_for(name, layout)}
        for name, text in MODEL_TYPES.items()
    ]


def vocabulary(layout: str) -> dict[str, Any]:
    return {
        "layout": layout,
        "types": model_types(layout),
        "states": [state.value for state in State],
        "actions": {action: sorted(state.value for state in states) for action, states in ACTIONS.items()},
        "sources": [{"name": source.NAME, "label": source.LABEL} for source in sources.SOURCES],
        "civitai_site": sources.civitai.site_url(),
        "max_url_length": sources.MAX_URL_LENGTH,
    }
