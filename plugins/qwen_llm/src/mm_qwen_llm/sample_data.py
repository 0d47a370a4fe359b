"""Generated instruction data in MiniGPT4-Qwen's format, for offline runs (``type: shapes``).

One filled shape of one colour per image; records are single-turn descriptions or
multi-turn question/answer conversations about shape and colour, and some compare two
images (multi-image records). Written under a root folder::

    images/<split>_<index>.png
    train.json, val.json     MiniGPT4-Qwen instruction records (layout "minigpt4qwen"), or LLaVA's
                             chat.json conversations, one image each (layout "llava": LLaVA-Pretrain /
                             LLaVA-CC3M-595K, ``{"id", "image", "conversations": [{"from": "human", ...}]}``)
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


def as_llava_record(record: dict) -> dict:
    """A one-image record in LLaVA's chat.json layout: ``<image>`` on the first human turn."""
    questions, answers = record["instruction"], record["output"]
    if isinstance(questions, str):
        questions, answers = [questions], [answers]
    turns = []
    for k, (question, answer) in enumerate(zip(questions, answers)):
        question = question.replace(IMAGE_TAG, "").strip()
        turns += [{"from": "human", "value": f"{question}\n<image>" if k == 0 else question},
                  {"from": "gpt", "value": answer}]
    return {"id": Path(record["image"]).stem, "image": record["image"], "conversations": turns}


def write_instruction_sample(root: str | Path, spec: InstructionSampleSpec = InstructionSampleSpec(),
                             layout: str = "minigpt4qwen") -> Path:
    """Render images and write ``train.json`` / ``val.json`` into ``root``."""
    if layout not in ("minigpt4qwen", "llava"):
        raise ValueError(f"layout must be minigpt4qwen or llava, got {layout!r}")
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
            pair = [item, drawn[(index + 1) % len(drawn)]] if index % 5 == 4 and layout == "minigpt4qwen" else [item]
            record = make_record(rng, pair)
            records.append(as_llava_record(record) if layout == "llava" else record)
        (root / f"{split}.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    (root / "manifest.json").write_text(json.dumps({"spec": asdict(spec)}), encoding="utf-8")
    return root


def ensure_instruction_sample(root: str | Path, spec: InstructionSampleSpec = InstructionSampleSpec(),
                              layout: str = "minigpt4qwen") -> Path:
    """``root`` holding the data of ``spec``, generated (atomically) when absent (see
    :func:`mm_core.generated_data.ensure_generated`)."""
    recorded = asdict(spec) if layout == "minigpt4qwen" else {**asdict(spec), "layout": layout}
    return ensure_generated(root, recorded, lambda folder: write_instruction_sample(folder, spec, layout))
