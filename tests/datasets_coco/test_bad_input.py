"""Bad input to the coco builders ends in an error naming the key or file, never a traceback:
a split's annotation entry set to null, and images that trip Pillow's decompression-bomb guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from coco_helpers import caption_config, shared_helpers
from PIL import Image

from mm_core.errors import ConfigError, DataError
from mm_datasets_coco.builders import CocoCaptionBuilder

_shared = shared_helpers()


@pytest.mark.parametrize("entry", [None, "coco/annotations/val.json", 3])
def test_a_split_whose_annotation_entry_is_not_a_block_is_an_error_naming_it(shapes_root, entry):
    cfg = caption_config(shapes_root)
    cfg.build_info.annotations.val = entry
    with pytest.raises(ConfigError) as err:
        CocoCaptionBuilder(cfg).build_datasets()
    assert "datasets.coco_caption.build_info.annotations.val is" in str(err.value)
    assert "annotations.val.storage" in err.value.hint


def test_annotations_or_build_info_null_is_an_error_naming_the_key(shapes_root):
    cfg = caption_config(shapes_root)
    cfg.build_info.annotations = None
    with pytest.raises(ConfigError, match="datasets.coco_caption.build_info.annotations is missing"):
        CocoCaptionBuilder(cfg).build_datasets()
    cfg.build_info = None
    with pytest.raises(ConfigError, match="datasets.coco_caption.build_info.annotations is missing"):
        CocoCaptionBuilder(cfg).build_datasets()


def _bomb(path: Path) -> None:
    """A PNG whose pixel count is over twice Pillow's MAX_IMAGE_PIXELS (its bomb error, not a warning)."""
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 16
    Image.new("1", (side, side)).save(path)  # 1 bit per pixel, compresses to a few kB


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_a_decompression_bomb_is_a_bad_sample_naming_the_file(shapes_copy, policy):
    records = json.loads((shapes_copy / "annotations" / "karpathy_val.json").read_text())
    path = shapes_copy / "images" / records[2]["image"]
    _bomb(path)
    val = CocoCaptionBuilder(caption_config(shapes_copy, on_bad_sample=policy)).build_datasets()["val"]
    if policy == "skip":
        assert val[2] is None and val.skipped == 1
        return
    with pytest.raises(DataError) as err:
        val[2]
    assert "decompression-bomb guard" in str(err.value) and str(path) in str(err.value)


@pytest.mark.slow
def test_a_run_over_a_bomb_image_exits_2_without_a_traceback(shapes_copy, tmp_path):
    records = json.loads((shapes_copy / "annotations" / "vqa_val.json").read_text())
    _bomb(shapes_copy / "images" / records[0]["image"])
    config = tmp_path / "run.yaml"
    config.write_text(f"""
model: {{arch: minigpt4qwen, model_type: tiny}}
datasets:
  coco_vqa:
    build_info:
      annotations:
        train: {{url: [], storage: {shapes_copy}/annotations/vqa_train.json}}
        val: {{url: [], storage: {shapes_copy}/annotations/vqa_val.json}}
        test: {{url: [], storage: {shapes_copy}/annotations/vqa_test.json}}
      images: {{storage: {shapes_copy}/images}}
run: {{task: vqa, max_epoch: 1, iters_per_epoch: 1, batch_size_train: 2, batch_size_eval: 4, valid_splits: [val],
       eval_before_train: true, output_dir: {tmp_path / "out"}, device: cpu, progress_bar: false}}
""")
    result = _shared.run_mmrun(["--config", str(config)], _shared.mm_env(), timeout=600)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "decompression-bomb guard" in result.stderr and "Traceback" not in result.stderr
