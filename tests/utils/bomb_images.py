"""Decompression bombs for the pixel-limit tests: small files whose header declares huge dimensions."""

from __future__ import annotations

import io

import PIL.Image

#: 196 million pixels: over PIL's default limit (2 x ``PIL.Image.MAX_IMAGE_PIXELS``, about 179 million).
BOMB_SIZE = (14000, 14000)


def huge_header_jpeg(width: int = BOMB_SIZE[0], height: int = BOMB_SIZE[1]) -> bytes:
    """A 16 x 16 baseline JPEG (a few hundred bytes) whose frame header (SOF0) declares ``width`` x ``height``.

    A decoder that trusts the header allocates ``width * height * 3`` bytes before it meets the missing data; the
    pixel limit must refuse it from the header alone.
    """
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (16, 16), (120, 30, 200)).save(buffer, format="JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)
