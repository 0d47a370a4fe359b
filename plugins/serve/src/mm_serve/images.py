"""Opening images for the serve plugin: an OpenAI ``image_url`` within the server's limits, and a
local file for ``mmrun chat`` / ``mmrun predict`` (:func:`open_image`).

Accepted: ``data:image/...;base64,...`` URLs, and — only when the server was started with one
or more image roots — local paths (``/abs/path.png``, ``file:///abs/path.png``, or a path
relative to the first root) whose real location (symlinks followed) lies inside a root.
Remote URLs are refused: fetching them would let any client make the server send requests.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image

from mm_serve.schemas import APIError

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,(?P<data>.*)$",
                       re.DOTALL)


#: What decoding an image may raise; Pillow's decompression-bomb guard raises an error that is no OSError.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def open_image(path: str | Path) -> Image.Image:
    """The RGB image at ``path``, fully decoded (a truncated file fails here, not in the model);
    raises one of :data:`IMAGE_ERRORS`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the 2x-limit error still applies
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")


@dataclass(frozen=True)
class ImageLimits:
    """What one request may send: bytes per image, pixels per image, images per conversation,
    and the folders local paths may point into (none: local paths are refused)."""

    max_bytes: int = 10 * 2**20
    max_pixels: int = 4096 * 4096
    max_images: int = 4
    roots: tuple[Path, ...] = field(default_factory=tuple)


def load_image(url: str, limits: ImageLimits, param: str = "image_url") -> Image.Image:
    """The RGB image ``url`` names; :class:`APIError` (4xx) for anything the limits refuse."""
    if url.startswith("data:"):
        data = _data_url_bytes(url, limits, param)
    else:
        data = _local_file_bytes(url, limits, param)
    return _decode(data, limits, param)


def _data_url_bytes(url: str, limits: ImageLimits, param: str) -> bytes:
    match = _DATA_URL.match(url)
    if match is None or not match.group("b64"):
        raise APIError(400, f"{param}: a data URL must look like data:image/png;base64,<data>",
                       code="invalid_image_url", param=param)
    mime = match.group("mime") or ""
    if mime and not mime.startswith("image/"):
        raise APIError(400, f"{param}: data URL has media type '{mime}', not an image", code="invalid_image",
                       param=param)
    encoded = re.sub(r"\s+", "", match.group("data"))
    if len(encoded) * 3 // 4 > limits.max_bytes:  # refuse before decoding
        raise _too_large(len(encoded) * 3 // 4, limits, param)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise APIError(400, f"{param}: the data URL is not valid base64 ({exc})", code="invalid_image",
                       param=param) from exc


def _local_file_bytes(url: str, limits: ImageLimits, param: str) -> bytes:
    parsed = urlparse(url)
    if parsed.scheme not in ("", "file") and not re.match(r"^[a-zA-Z]:[\\/]", url):
        raise APIError(400, f"{param}: '{parsed.scheme}' URLs are not fetched; send the image as a "
                       "data:image/...;base64 URL", code="unsupported_image_url", param=param)
    if not limits.roots:
        raise APIError(400, f"{param}: local image paths are disabled on this server; send a data URL, or start "
                       "it with --image-root DIR", code="local_images_disabled", param=param)
    raw = unquote(parsed.path) if parsed.scheme == "file" else url
    path = Path(raw)
    if not path.is_absolute():
        path = limits.roots[0] / path
    real = path.resolve()
    if not any(real.is_relative_to(root.resolve()) for root in limits.roots):
        raise APIError(403, f"{param}: '{raw}' is outside the allowed image roots", code="path_not_allowed",
                       param=param)
    if not real.is_file():
        raise APIError(400, f"{param}: no image file at '{raw}'", code="image_not_found", param=param)
    size = real.stat().st_size
    if size > limits.max_bytes:
        raise _too_large(size, limits, param)
    return real.read_bytes()


def _decode(data: bytes, limits: ImageLimits, param: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise APIError(413, f"{param}: the image is {width}x{height} pixels, more than the server's limit "
                               f"of {limits.max_pixels}", code="image_too_large", param=param)
            image.load()
            return image.convert("RGB")
    except APIError:
        raise
    except (*IMAGE_ERRORS, Image.DecompressionBombWarning) as exc:
        raise APIError(400, f"{param}: the image cannot be decoded ({type(exc).__name__}: {exc})",
                       code="invalid_image", param=param) from exc


def _too_large(size: int, limits: ImageLimits, param: str) -> APIError:
    return APIError(413, f"{param}: the image has {size} bytes, more than the server's limit of {limits.max_bytes}",
                    code="image_too_large", param=param)
