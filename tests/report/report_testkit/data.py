"""``report_squares``: a dataset that is not COCO's, so the report is shown to need no COCO
knowledge. Pictures of one to three squares of one colour, each with two descriptions, written
under the cache root the first time a run builds it (``pictures/<split>/sq_<n>.png``)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from report_testkit.model import COLOURS, COUNTS

from mm_core.base.builder import BaseDatasetBuilder
from mm_core.base.dataset import BaseDataset

RGB = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40),
       "purple": (130, 40, 170), "orange": (240, 140, 20)}
SIZES = {"train": 18, "val": 6}
SIDE = 24


def write_squares(root: Path, seed: int = 5) -> None:
    """Pictures and ``<split>.json`` records ``{"file", "texts"}`` under ``root``."""
    rng = random.Random(seed)
    for split, count in SIZES.items():
        records = []
        for n in range(count):
            colour, number = rng.choice(COLOURS), rng.randrange(len(COUNTS))
            image = Image.new("RGB", (SIDE, SIDE), (250, 250, 250))
            for k in range(number + 1):
                image.paste(RGB[colour], (2 + 7 * k, 2 + 7 * k, 7 + 7 * k, 7 + 7 * k))
            relative = f"{split}/sq_{n}.png"
            (root / "pictures" / split).mkdir(parents=True, exist_ok=True)
            image.save(root / "pictures" / relative)
            records.append({"file": relative, "texts": [f"{COUNTS[number]} {colour} shapes",
                                                        f"a picture of {COUNTS[number]} {colour} squares"]})
        (root / f"{split}.json").write_text(json.dumps(records))


class SquaresDataset(BaseDataset):
    """Samples ``{"image", "text_input", "file", "texts", "sample_id"}``."""

    def __getitem__(self, index: int) -> dict:
        record = self.annotation[index]
        with Image.open(self.media_path(record["file"], index)) as picture:
            array = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
        return {"image": torch.from_numpy(array).permute(2, 0, 1), "text_input": record["texts"][0],
                "file": record["file"], "texts": record["texts"], "sample_id": f"sq{index}"}

    def collater(self, samples: list) -> dict:
        return {"image": torch.stack([s["image"] for s in samples]),
                **{k: [s[k] for s in samples] for k in ("text_input", "file", "texts", "sample_id")}}


class SquaresBuilder(BaseDatasetBuilder):
    train_dataset_cls = SquaresDataset
    eval_dataset_cls = SquaresDataset

    def download(self) -> None:
        root = self.cache_dir / "report_squares"
        if not (root / "val.json").is_file():
            write_squares(root)
