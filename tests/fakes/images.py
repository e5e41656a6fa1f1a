"""Real 1x1 PNG and WebP files carrying texts the way ComfyUI and other tools save them.

PNG: signature, IHDR, text chunks (tEXt, zTXt or iTXt as the PNG spec lays them out),
IDAT, IEND, each chunk with its CRC. WebP: the extended format (RIFF, VP8X with the EXIF
flag, a lossless VP8L image, an EXIF chunk holding a TIFF IFD of ASCII strings), as
Pillow writes for ComfyUI's SaveAnimatedWEBP: tag 0x0110 = "prompt:<json>", 0x010F =
"workflow:<json>".
"""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXIF_MAKE = 0x010F  # where SaveAnimatedWEBP puts "workflow:..."
EXIF_MODEL = 0x0110  # and "prompt:..."


def png(texts: dict[str, str] | None = None, chunk: str = "tEXt", before_image: bool = True) -> bytes:
    """A 1x1 grey PNG with one text chunk of the given kind per key."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    image = _png_chunk(b"IDAT", zlib.compress(b"\x00\x80"))  # filter "none", one grey pixel
    text = b"".join(_png_text(chunk, key, value) for key, value in (texts or {}).items())
    body = text + image if before_image else image + text
    return PNG_SIGNATURE + header + body + _png_chunk(b"IEND", b"")


def _png_text(chunk: str, key: str, value: str) -> bytes:
    keyword = key.encode("latin-1") + b"\x00"
    if chunk == "tEXt":
        return _png_chunk(b"tEXt", keyword + value.encode("latin-1"))
    if chunk == "zTXt":
        return _png_chunk(b"zTXt", keyword + b"\x00" + zlib.compress(value.encode("latin-1")))
    if chunk in ("iTXt", "iTXt-compressed"):
        compressed = chunk == "iTXt-compressed"
        text = value.encode("utf-8")
        flags = b"\x01\x00" if compressed else b"\x00\x00"
        data = zlib.compress(text) if compressed else text
        return _png_chunk(b"iTXt", keyword + flags + b"en\x00" + key.encode() + b"\x00" + data)
    raise ValueError(chunk)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def webp(exif: dict[int, str] | None = None, prefix: bool = False, byte_order: str = "II") -> bytes:
    """A 1x1 lossless WebP; with `exif`, an EXIF chunk of ASCII strings by tag."""
    image = _riff_chunk(b"VP8L", _vp8l_one_pixel())
    if exif is None:
        return _riff(image)
    flags = 0x08  # the EXIF flag of the VP8X chunk
    extended = _riff_chunk(b"VP8X", bytes([flags, 0, 0, 0]) + (0).to_bytes(3, "little") * 2)
    data = (b"Exif\x00\x00" if prefix else b"") + _tiff(exif, byte_order)
    return _riff(extended + image + _riff_chunk(b"EXIF", data))


def _riff(chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def _riff_chunk(fourcc: bytes, data: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")


def _vp8l_one_pixel() -> bytes:
    """A VP8L bitstream (RFC 9649) for one opaque black pixel.

    After the signature and the 14-bit width-1/height-1, alpha hint and version: no
    transform, no color cache, no meta prefix codes, then five "simple" prefix codes of
    one symbol each (green 0, red 0, blue 0, alpha 255, distance 0). A one-symbol code
    takes no bits, so the pixel itself needs none.
    """
    bits = _Bits()
    bits.put(0x2F, 8)
    bits.put(0, 14)  # width - 1
    bits.put(0, 14)  # height - 1
    bits.put(0, 1)  # alpha is used: no
    bits.put(0, 3)  # version
    bits.put(0, 1)  # no transform
    bits.put(0, 1)  # no color cache
    bits.put(0, 1)  # no meta prefix codes
    for symbol in (0, 0, 0, 255, 0):
        bits.put(1, 1)  # simple code
        bits.put(0, 1)  # one symbol
        wide = symbol > 1
        bits.put(int(wide), 1)
        bits.put(symbol, 8 if wide else 1)
    return bits.bytes()


class _Bits:
    """Least significant bit first, as VP8L reads them."""

    def __init__(self) -> None:
        self.value = 0
        self.count = 0

    def put(self, value: int, width: int) -> None:
        self.value |= value << self.count
        self.count += width

    def bytes(self) -> bytes:
        return self.value.to_bytes((self.count + 7) // 8, "little")


def _tiff(entries: dict[int, str], byte_order: str) -> bytes:
    """A TIFF header and one IFD of ASCII entries, values after the IFD."""
    order = "<" if byte_order == "II" else ">"
    header = byte_order.encode() + struct.pack(order + "HI", 42, 8)
    tags = sorted(entries)
    data_start = 8 + 2 + 12 * len(tags) + 4
    ifd = struct.pack(order + "H", len(tags))
    data = b""
    for tag in tags:
        value = entries[tag].encode("utf-8") + b"\x00"
        if len(value) <= 4:
            ifd += struct.pack(order + "HHI", tag, 2, len(value)) + value.ljust(4, b"\x00")
        else:
            ifd += struct.pack(order + "HHII", tag, 2, len(value), data_start + len(data))
            data += value + (b"\x00" if len(value) % 2 else b"")
    return header + ifd + struct.pack(order + "I", 0) + data
