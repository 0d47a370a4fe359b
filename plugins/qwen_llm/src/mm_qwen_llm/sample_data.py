"""Generated instruction data in MiniGPT4-Qwen's format, for offline runs (``type: shapes``).

One filled shape of one colour per image; records are single-turn descriptions or
multi-turn question/answer conversations about shape and colour, and some compare two
images (multi-image records). Written under a root folder::

    images/<split>_<index>.png
    train.json, val.json     MiniGPT4-Qwen instruction records
    manifest.json            the spec (written last: its presence means the data is complete)

Everything is a function of :class:`InstructionSampleSpec` (seed included).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from mm_core.generated_data import SHAPE_KINDS, ensure_generated, render_shapes

#: Colour names drawn here (a subset of :data:`mm_core.generated_data.SHAPE_COLOURS`), sorted.
COLOURS = ("blue", "green", "red", "yellow")
SHAPES = SHAPE_KINDS
IMAGE_TAG = "<Img><ImageHere></Img>"


@dataclass(frozen=True)
class InstructionSampleSpec:
    """What to generate."""

    seed: int = 0
    num_train: int = 64
    num_val: int = 16
    image_size: int = 32


def render(shape: str, colour: str, size: int) -> Image.Image:
    """One ``colour`` ``shape`` centred on white, a sixth of the image as margin."""
    m = size // 6
    return render_shapes(size, (250, 250, 250), [(shape, (m, m, size - m, size - m), colour)])


def make_record(rng: random.Random, images: list[tuple[str, str, str]]) -> dict:
    """A record about ``images`` ([(file, shape, colour)]): one of three conversation kinds."""
    (path, shape, colour), *others = images
    kind = rng.randrange(3)
    if others:
        path2, shape2, colour2 = others[0]
        return {"image": [path, path2],
                "instruction": f"First {IMAGE_TAG} then {IMAGE_TAG} Compare the two images.",
                "output": f"The first image has a {colour} {shape}, the second one has a {colour2} {shape2}."}
    if kind == 0:
        return {"image": path, "instruction": f"{IMAGE_TAG} Describe this image briefly.",
                "output": f"A {colour} {shape} on a white background."}
    return {"image": path,
            "instruction": [f"{IMAGE_TAG} What shape is in the picture?", "What color is the shape?"],
            "output": [f"It is a {shape}.", f"The shape is {colour}."]}


def write_instruction_sample(root: str | Path, spec: InstructionSampleSpec = InstructionSampleSpec()) -> Path:
    """Render images and write ``train.json`` / ``val.json`` into ``root``."""
    root = Path(root)
    rng = random.Random(spec.seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", spec.num_train), ("val", spec.num_val)):
        drawn = []
        for index in range(count):
            shape, colour = rng.choice(SHAPES), rng.choice(COLOURS)
            name = f"{split}_{index}.png"
            render(shape, colour, spec.image_size).save(root / "images" / name, format="PNG")
            drawn.append((name, shape, colour))
        records = []
        for index, item in enumerate(drawn):
            pair = [item, drawn[(index + 1) % len(drawn)]] if index % 5 == 4 else [item]
            records.append(make_record(rng, pair))
        (root / f"{split}.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    (root / "manifest.json").write_text(json.dumps({"spec": asdict(spec)}), encoding="utf-8")
    return root


def ensure_instruction_sample(root: str | Path, spec: InstructionSampleSpec = InstructionSampleSpec()) -> Path:
    """``root`` holding the data of ``spec``, generated (atomically) when absent (see
    :func:`mm_core.generated_data.ensure_generated`)."""
    return ensure_generated(root, asdict(spec), lambda folder: write_instruction_sample(folder, spec))
