"""Helpers of the datasets_coco tests (imported by the test modules; fixtures are in conftest.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

HERE = Path(__file__).resolve().parent

SMALL = {"seed": 3, "num_train": 12, "num_val": 6, "num_test": 4, "image_size": 32, "captions_per_train_image": 2}



def shared_helpers():
    """The repository's tests/conftest.py, loaded under its own name (mm_env, run_mmrun)."""
    spec = importlib.util.spec_from_file_location("mm_tests_shared", HERE.parent / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def caption_config(root: Path, **extra) -> DictConfig:
    """A ``datasets.coco_caption`` block reading the shapes data at ``root``."""
    block = {
        "data_type": "images",
        "build_info": {
            "annotations": {s: {"storage": str(root / "annotations" / f"karpathy_{s}.json")} for s in ("train", "val", "test")},
            "images": {"storage": str(root / "images")},
        },
        **extra,
    }
    return OmegaConf.create(block)
