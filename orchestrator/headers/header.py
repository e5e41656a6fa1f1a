"""What the parsers hand the classifier: tensor names and shapes, metadata, nothing else.

Both file formats come down to the same picture. A safetensors header and a GGUF header each
name every tensor with its shape, and carry free-form key/value metadata; the tensor data
that follows is never needed to tell what the file is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..errors import OrchestratorError

FileFormat = Literal["safetensors", "gguf"]


@dataclass(frozen=True)
class Tensor:
    """One tensor as the header describes it. Shapes are outermost dimension first."""

    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Header:
    """A parsed header. `size` is how many bytes of the file it takes (the data starts there)."""

    format: FileFormat
    tensors: Mapping[str, Tensor]
    metadata: Mapping[str, str] = field(default_factory=dict)
    size: int = 0


@dataclass(frozen=True)
class NeedMore:
    """The bytes given end before the header does: read at least `size` bytes from the start."""

    size: int


def bad_header(code: str, message: str) -> OrchestratorError:
    """A file whose header cannot be trusted: 422, the file itself is wrong, not the request."""
    return OrchestratorError(code, message, 422)


def truncated(format_name: str, needed: int, file_size: int) -> OrchestratorError:
    return bad_header(
        "header_truncated",
        f"The {format_name} file is {file_size} bytes long but its header needs at least {needed}: "
        "the file is cut short or damaged. Download it again from its source.",
    )
