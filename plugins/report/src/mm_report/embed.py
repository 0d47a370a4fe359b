"""Files as ``data:`` URLs, so the report page is one self-contained file that needs no network
and no files beside it."""

from __future__ import annotations

import base64
import io
from pathlib import Path

THUMBNAIL_SIDE = 256  # gallery images are shown small; larger ones are scaled down
LOSSLESS_UP_TO = 128  # small images (synthetic data) stay PNG; photos become JPEG


def data_url(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def png_file_url(path: Path) -> str:
    """A PNG file (a plot) as a data URL."""
    return data_url(Path(path).read_bytes(), "image/png")


def image_url(path: Path, side: int = THUMBNAIL_SIDE) -> str:
    """An image of any format Pillow reads, scaled to fit ``side`` pixels, as a data URL.

    Raises ``OSError`` (Pillow's ``UnidentifiedImageError`` included) for an unreadable file.
    """
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        image.thumbnail((side, side))
        lossless = max(image.size) <= LOSSLESS_UP_TO
        converted = image.convert("RGBA" if lossless and image.mode in ("RGBA", "LA", "P") else "RGB")
    buffer = io.BytesIO()
    if lossless:
        converted.save(buffer, format="PNG", optimize=True)
        return data_url(buffer.getvalue(), "image/png")
    converted.save(buffer, format="JPEG", quality=85)
    return data_url(buffer.getvalue(), "image/jpeg")
