"""Download links for models known only by their SHA-256 (a ComfyUI workflow's `hash` with no
`url`): what CivitAI's by-hash answer says of each.

The answers live where every other CivitAI look-up lives, in the library index: a hash asked
about once is answered from it (a miss is asked again after a day; a call that failed is asked
again the next time someone looks), and a hit is the same knowledge the library uses to
identify files.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import requests

from ..sources import civitai
from .civitai_lookup import LookupSettings, identify
from .index import MISS_TTL, LibraryIndex
from .records import Lookup, normal_sha256


def civitai_links(
    index: LibraryIndex,
    session: requests.Session,
    base_url: str,
    token: str | None,
    hashes: Iterable[str],
    settings: LookupSettings | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, str]:
    """Blocking: {sha256: the link that downloads exactly that file} for each hash CivitAI knows."""
    wanted = sorted({normal_sha256(sha) for sha in hashes})
    now = time.time()
    ask = [sha for sha in wanted if _worth_asking(index.lookup(sha), now)]
    if ask:
        identify(index, session, base_url, token, hashes=ask, settings=settings, cancel=cancel)
    links = {}
    for sha in wanted:
        link = _link(index.lookup(sha), sha)
        if link is not None:
            links[sha] = link
    return links


def _worth_asking(known: Lookup | None, now: float) -> bool:
    """Never asked, a miss older than a day, or a failed call (a person is asking again now)."""
    if known is None or known.state == "error":
        return True
    return known.state == "miss" and known.checked < now - MISS_TTL


def _link(known: Lookup | None, sha: str) -> str | None:
    """The version's file with these bytes (not the VAE CivitAI lists beside another version's)."""
    if known is None or known.state != "hit" or known.version_id is None or not known.record:
        return None
    for item in known.record.get("files") or []:
        hashes = item.get("hashes") if isinstance(item, dict) else None
        if isinstance(hashes, dict) and str(hashes.get("SHA256") or "").lower() == sha:
            file_id = item.get("id")
            return civitai.download_link(known.version_id, file_id if isinstance(file_id, int) else None)
    return None
