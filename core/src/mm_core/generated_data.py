"""Sample data that plugins generate into the cache root on first use, complete or absent even
with several processes asking (docs/engine.md, "Generated data"); :func:`render_shapes` draws
the synthetic "shapes" images."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image, ImageDraw

MANIFEST = "manifest.json"

RGB = tuple[int, int, int]
#: ``(x0, y0, x1, y1)``, corners included, as Pillow's ``ImageDraw`` takes them.
Box = tuple[int, int, int, int]

#: Fill of each colour name the generators draw with (the order is part of their seeded output).
SHAPE_COLOURS: dict[str, RGB] = {
    "red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220),
    "yellow": (235, 210, 40), "purple": (140, 50, 170), "orange": (245, 140, 20),
}
#: Shapes :func:`draw_shape` knows.
SHAPE_KINDS: tuple[str, ...] = ("circle", "square", "triangle")


def manifest_spec(root: Path) -> dict[str, Any] | None:
    """The ``spec`` recorded in ``root/manifest.json``, or ``None`` when absent or unreadable."""
    try:
        return json.loads((root / MANIFEST).read_text(encoding="utf-8")).get("spec")
    except (OSError, ValueError, AttributeError):
        return None


def ensure_generated(root: str | Path, spec: dict[str, Any], write: Callable[[Path], Any]) -> Path:
    """``root`` holding the data of ``spec``; ``write(folder)`` generates it (and must write the
    manifest with this ``spec`` last) when ``root`` is absent or was made from another spec."""
    root = Path(root)
    if manifest_spec(root) == spec:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write(tmp)
        if manifest_spec(root) == spec:  # another process finished first
            return root
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except OSError:
        if manifest_spec(root) != spec:
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: Box, fill: RGB) -> None:
    """One filled ``shape`` filling ``box``: a circle, a square, or a triangle pointing up."""
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPE_KINDS)}")


def render_shapes(size: int, background: RGB, shapes: Sequence[tuple[str, Box, str]]) -> Image.Image:
    """A ``size`` x ``size`` RGB image of ``background`` with each ``(shape, box, colour name)`` drawn in order."""
    # Pillow comes with the plugins that generate images; mm-core does not need it otherwise.
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for shape, box, colour in shapes:
        draw_shape(draw, shape, box, SHAPE_COLOURS[colour])
    return image
