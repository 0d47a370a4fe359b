"""Fixtures of the AVSD dialogue tests: seeded sample data, tiny processors, the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mm_avsd_dialogue.sample_data import make_sample_data

VIDEOS = {"train": 4, "val": 2, "test": 2}


@pytest.fixture(scope="session")
def avsd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sample AVSD data (annotations/ + features/) written once for the session."""
    return make_sample_data(tmp_path_factory.mktemp("avsd") / "data", seed=0, videos=VIDEOS)


@pytest.fixture(scope="session")
def vis_processor():
    from mm_avsd_dialogue.video_processor import GPTVideoFeatureProcessor

    return GPTVideoFeatureProcessor(visual_ft=["i3d_flow", "i3d_rgb"], audio_ft=["vggish"], tokenizer="tiny")


@pytest.fixture(scope="session")
def text_processor():
    from mm_avsd_dialogue.dialogue_processor import GPTDialogueProcessor

    return GPTDialogueProcessor(max_turns=3, use_caption=True, tokenizer="tiny")


@pytest.fixture(scope="session")
def splits(avsd_root: Path, vis_processor, text_processor) -> dict:
    from mm_avsd_dialogue.dataset import AVSDDialogueDataset, AVSDDialogueEvalDataset

    ann = avsd_root / "annotations"
    features = avsd_root / "features"
    return {
        "train": AVSDDialogueDataset(vis_processor, text_processor, features, [ann / "train.json"]),
        "val": AVSDDialogueEvalDataset(vis_processor, text_processor, features, [ann / "val.json"]),
        "test": AVSDDialogueEvalDataset(vis_processor, text_processor, features, [ann / "test.json"]),
    }


@pytest.fixture(scope="session")
def tiny_model():
    """The registered tiny model type, in eval mode (no dropout), seeded."""
    from mm_core.api import load_model

    torch.manual_seed(0)
    return load_model("gpt_dialogue", "tiny", is_eval=True)

