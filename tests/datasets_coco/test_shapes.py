"""The shapes sample-data generator: real formats, deterministic, captions true to the pixels."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from coco_helpers import SMALL
from PIL import Image

from mm_datasets_coco.shapes import BACKGROUNDS, COLOURS, ShapesSpec, write_shapes


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_files_other_seed_other_files(tmp_path, shapes_root):
    again = write_shapes(tmp_path / "again", ShapesSpec(**SMALL))
    assert _digest(again) == _digest(shapes_root)
    other = write_shapes(tmp_path / "other", ShapesSpec(**{**SMALL, "seed": 4}))
    assert _digest(other) != _digest(shapes_root)


def test_annotation_files_follow_the_lavis_layouts(shapes_root):
    ann = shapes_root / "annotations"
    train = json.loads((ann / "karpathy_train.json").read_text())
    assert len(train) == SMALL["num_train"] * SMALL["captions_per_train_image"]
    assert set(train[0]) == {"image", "caption", "image_id"} and isinstance(train[0]["caption"], str)
    val = json.loads((ann / "karpathy_val.json").read_text())
    assert len(val) == SMALL["num_val"] and all(isinstance(r["caption"], list) and len(r["caption"]) == 5 for r in val)
    vqa = json.loads((ann / "vqa_val.json").read_text())
    assert len(vqa) == 3 * SMALL["num_val"]
    assert all({"question_id", "question", "answer", "image"} <= set(r) and len(r["answer"]) == 10 for r in vqa)
    assert len({r["question_id"] for r in vqa}) == len(vqa)
    instructions = json.loads((ann / "instruction.json").read_text())
    assert len(instructions) == SMALL["num_train"]
    assert all(set(r) == {"image", "instruction", "output"} and "<ImageHere>" in r["instruction"] for r in instructions)
    for record in train + val + vqa + instructions:
        assert (shapes_root / "images" / record["image"]).is_file()


def test_captions_and_answers_name_the_colour_drawn(shapes_root):
    """Independent check: the most frequent non-background pixel colour is the one the text names."""
    val = json.loads((shapes_root / "annotations" / "karpathy_val.json").read_text())
    vqa = {r["image"]: r for r in json.loads((shapes_root / "annotations" / "vqa_val.json").read_text())
           if r["question"].startswith("what color")}
    for record in val:
        pixels = np.asarray(Image.open(shapes_root / "images" / record["image"]).convert("RGB")).reshape(-1, 3)
        colours, counts = np.unique(pixels, axis=0, return_counts=True)
        drawn = [tuple(int(v) for v in c) for c, _ in sorted(zip(colours, counts), key=lambda x: -x[1])]
        shape_colour = next(c for c in drawn if c not in BACKGROUNDS.values())
        name = next(n for n, rgb in COLOURS.items() if rgb == shape_colour)
        assert all(name in caption for caption in record["caption"])
        assert vqa[record["image"]]["answer"].count(name) >= 7


def test_make_shapes_command(tmp_path, capsys):
    from mm_core.registry import get_registry

    main = get_registry().resolve("commands", "make-shapes")
    assert main([str(tmp_path / "out"), "--num-train", "3", "--num-val", "2", "--num-test", "1", "--image-size", "16"]) == 0
    assert "captions_train" in capsys.readouterr().out
    assert len(list((tmp_path / "out" / "images").rglob("*.png"))) == 6
