"""The model library: every model file in the models folders, what it is, where it came from.

`index.LibraryIndex` (SQLite) is the one place that knows which file has which SHA-256;
`scan` lists the roots and hashes what is new; `civitai_lookup` asks CivitAI what a hash
is and whether a newer version exists; `remove` deletes a model and its sidecars;
`duplicates` reuses bytes the library already has. Roots are `(model_type, folder)`
pairs given by the caller; nothing here reads the app's settings.
"""

from .civitai_lookup import LookupReport, LookupSettings, UpdateReport, check_updates, identify
from .duplicates import LinkResult, find_existing, link_copy, link_from_library
from .hashing import Pacing
from .index import LibraryIndex
from .records import DuplicateGroup, FileRecord, Lookup, SidecarInfo, Source
from .remove import Removal, remove_model, remove_record
from .scan import ScanHandle, ScanProgress, ScanResult, scan, start_scan

__all__ = [
    "DuplicateGroup",
    "FileRecord",
    "LibraryIndex",
    "LinkResult",
    "Lookup",
    "LookupReport",
    "LookupSettings",
    "Pacing",
    "Removal",
    "ScanHandle",
    "ScanProgress",
    "ScanResult",
    "SidecarInfo",
    "Source",
    "UpdateReport",
    "check_updates",
    "find_existing",
    "identify",
    "link_copy",
    "link_from_library",
    "remove_model",
    "remove_record",
    "scan",
    "start_scan",
]
