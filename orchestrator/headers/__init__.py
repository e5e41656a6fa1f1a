"""Tell what a model file is from its own header, before any byte of its body is fetched.

A safetensors or GGUF file names every tensor it holds in a header at its start. The names
say what the file is, the way each loader decides whether it will take a file: a checkpoint
(diffusion model, VAE and text encoder together), a diffusion model alone, a LoRA, a VAE, a
text encoder, a ControlNet, an upscaler, an embedding or a CLIP vision encoder, and for most
the architecture family (SD1, SDXL, Flux, Wan...).

- `inspect_bytes(data, file_size)`: the first bytes of a file -> `Finding`, or `NeedMore`.
- `fetch_finding(session, url, headers)`: the same for a URL, with ranged GETs.
- `classify(header)`: the rules alone, for an already parsed `Header`.

safetensors.py and gguf.py parse (pure, defensive); rules.py and classify.py decide, citing
the loaders (ComfyUI, AUTOMATIC1111, ComfyUI-GGUF) each rule comes from; remote.py reads.
"""

from .classify import Finding, classify
from .detect import inspect_bytes, parse_header
from .header import Header, NeedMore, Tensor
from .remote import RemoteFinding, fetch_finding

__all__ = [
    "Finding",
    "Header",
    "NeedMore",
    "RemoteFinding",
    "Tensor",
    "classify",
    "fetch_finding",
    "inspect_bytes",
    "parse_header",
]
