"""Model-download orchestrator: resolve a link, let aria2 move the bytes, verify, file it."""

__version__ = "0.1.0"
