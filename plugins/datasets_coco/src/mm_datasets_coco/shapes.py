"""A small synthetic "shapes" dataset in the real annotation formats, rendered with Pillow.

Each image shows one to three shapes of one kind and colour on a plain background. The
generator writes, under a root folder::

    images/{train,val,test}/shapes_<id>.png
    annotations/karpathy_{train,val,test}.json   COCO Karpathy caption layout (LAVIS)
    annotations/vqa_{train,val,test}.json        VQA v2 layout (LAVIS), colour/count/shape questions
    annotations/instruction.json                 MiniGPT4-Qwen instruction records
    manifest.json                                the spec and counts (written last)

Everything is a function of :class:`ShapesSpec` (seed included): two runs give identical files.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from mm_core.generated_data import SHAPE_COLOURS, Box, ensure_generated, render_shapes

COLOURS = SHAPE_COLOURS
BACKGROUNDS = {"white": (250, 250, 250), "gray": (150, 150, 150), "black": (15, 15, 15)}
SHAPES = {"circle": "circles", "square": "squares", "triangle": "triangles"}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
SPLITS = ("train", "val", "test")

CAPTION_TEMPLATES = (
    "{count} {colour} {noun} on a {background} background",
    "a picture of {count} {colour} {noun}",
    "there {verb} {count} {colour} {noun} in the image",
    "{count} {colour} {noun} against a {background} backdrop",
    "an image showing {count} {colour} {noun}",
)
INSTRUCTIONS = (
    "Describe this image briefly.",
    "What is shown in the picture?",
    "Write a short caption for this image.",
)
IMAGE_TAG = "<Img><ImageHere></Img>"


@dataclass(frozen=True)
class ShapesSpec:
    """What to generate; the defaults are the quickstart's size."""

    seed: int = 0
    num_train: int = 240
    num_val: int = 24
    num_test: int = 24
    image_size: int = 64
    captions_per_train_image: int = 2

    def __post_init__(self) -> None:
        if self.image_size < 12:
            raise ValueError(f"image_size must be at least 12 pixels, got {self.image_size}")
        if not 1 <= self.captions_per_train_image <= len(CAPTION_TEMPLATES):
            raise ValueError(f"captions_per_train_image must be 1..{len(CAPTION_TEMPLATES)}")

    def count(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]


@dataclass(frozen=True)
class Scene:
    """The content of one image, from which its captions and answers are written."""

    image_id: int
    split: str
    shape: str
    colour: str
    background: str
    count: int

    @property
    def path(self) -> str:
        return f"{self.split}/shapes_{self.image_id:06d}.png"

    def caption(self, template: str) -> str:
        count = "a" if self.count == 1 and not template.startswith("{count}") else NUMBER_WORDS[self.count]
        noun = self.shape if self.count == 1 else SHAPES[self.shape]
        return template.format(count=count, colour=self.colour, noun=noun, background=self.background,
                               verb="is" if self.count == 1 else "are")


# -- rendering -----------------------------------------------------------------------------
def render(scene: Scene, size: int, rng: random.Random) -> Image.Image:
    """Draw ``scene``: its shapes in separate horizontal slots, sizes and offsets jittered."""
    slot = size // scene.count
    boxes: list[Box] = []
    for k in rng.sample(range(scene.count), scene.count):
        extent = rng.randint(max(2, slot // 2), max(2, int(slot * 0.85)))
        x0 = k * slot + rng.randint(0, slot - extent)
        y0 = rng.randint(0, size - extent)
        boxes.append((x0, y0, x0 + extent - 1, y0 + extent - 1))
    return render_shapes(size, BACKGROUNDS[scene.background], [(scene.shape, box, scene.colour) for box in boxes])


def make_scenes(spec: ShapesSpec, rng: random.Random) -> list[Scene]:
    scenes, next_id = [], 1
    for split in SPLITS:
        for _ in range(spec.count(split)):
            scenes.append(Scene(next_id, split, rng.choice(list(SHAPES)), rng.choice(list(COLOURS)),
                                rng.choice(list(BACKGROUNDS)), rng.randint(1, 3)))
            next_id += 1
    return scenes


# -- annotations ---------------------------------------------------------------------------
def caption_records(scenes: list[Scene], split: str, spec: ShapesSpec, rng: random.Random) -> list[dict]:
    """Karpathy layout: train one record per caption, val/test one per image with all captions."""
    records = []
    for scene in scenes:
        if split == "train":
            for template in rng.sample(CAPTION_TEMPLATES, spec.captions_per_train_image):
                records.append({"image": scene.path, "caption": scene.caption(template),
                                "image_id": f"shapes_{scene.image_id}"})
        else:
            records.append({"image": scene.path, "caption": [scene.caption(t) for t in CAPTION_TEMPLATES]})
    return records


def _ten_answers(canonical: str, variants: list[str], rng: random.Random) -> list[str]:
    """Ten annotators: mostly the canonical answer, a few variants that normalise to it."""
    answers = [canonical] * 7 + [rng.choice(variants) for _ in range(3)]
    rng.shuffle(answers)
    return answers


def vqa_records(scenes: list[Scene], rng: random.Random) -> list[dict]:
    """LAVIS VQA layout: three questions per image (colour, count, shape), ten answers each."""
    records = []
    for scene in scenes:
        plural = SHAPES[scene.shape]
        is_one = scene.count == 1
        questions = [
            (f"what color is the {scene.shape}?" if is_one else f"what color are the {plural}?",
             _ten_answers(scene.colour, [scene.colour, f"{scene.colour}."], rng)),
            (f"how many {plural} are there?",
             _ten_answers(str(scene.count), [NUMBER_WORDS[scene.count], str(scene.count)], rng)),
            ("what shape is shown?",
             _ten_answers(scene.shape, [f"a {scene.shape}", plural if not is_one else scene.shape], rng)),
        ]
        for k, (question, answers) in enumerate(questions):
            records.append({"question_id": scene.image_id * 10 + k, "question": question, "answer": answers,
                            "image": scene.path, "dataset": "vqa"})
    return records


def instruction_records(scenes: list[Scene], rng: random.Random) -> list[dict]:
    """MiniGPT4-Qwen instruction layout: ``{"image", "instruction", "output"}``."""
    return [
        {"image": scene.path, "instruction": f"{IMAGE_TAG} {rng.choice(INSTRUCTIONS)}",
         "output": scene.caption(rng.choice(CAPTION_TEMPLATES)).capitalize() + "."}
        for scene in scenes
    ]


# -- writing -------------------------------------------------------------------------------
def write_shapes(root: str | Path, spec: ShapesSpec = ShapesSpec()) -> Path:
    """Render the dataset into ``root`` (created; existing files are overwritten)."""
    root = Path(root)
    rng = random.Random(spec.seed)
    scenes = make_scenes(spec, rng)
    for split in SPLITS:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
    for scene in scenes:
        render(scene, spec.image_size, rng).save(root / "images" / scene.path, format="PNG")
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for split in SPLITS:
        in_split = [s for s in scenes if s.split == split]
        captions = caption_records(in_split, split, spec, rng)
        questions = vqa_records(in_split, rng)
        _dump(ann / f"karpathy_{split}.json", captions)
        _dump(ann / f"vqa_{split}.json", questions)
        counts.update({f"images_{split}": len(in_split), f"captions_{split}": len(captions),
                       f"questions_{split}": len(questions)})
    _dump(ann / "instruction.json", instruction_records([s for s in scenes if s.split == "train"], rng))
    _dump(root / "manifest.json", {"generator": "mm_datasets_coco.shapes", "spec": asdict(spec), "counts": counts})
    return root


def ensure_shapes(root: str | Path, spec: ShapesSpec = ShapesSpec()) -> Path:
    """``root`` holding the dataset of ``spec``: generated (atomically) when absent or made from
    another spec (see :func:`mm_core.generated_data.ensure_generated`)."""
    return ensure_generated(root, asdict(spec), lambda folder: write_shapes(folder, spec))


def _dump(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
