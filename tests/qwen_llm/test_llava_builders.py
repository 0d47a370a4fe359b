"""MPP-LLaVA's LLaVA builders under its names: ``llava_pretrain`` reads LLaVA-Pretrain /
LLaVA-CC3M-595K ``chat.json`` as published (and MPP-LLaVA's converted records); ``llava_instruct_100k``
and ``llava_instruct_156k`` find their files where MPP-LLaVA's dataset configs put them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mm_core.api import load_dataset
from mm_core.registry import get_registry

CONFIGS = Path(__import__("mm_qwen_llm").__file__).parent / "configs" / "datasets"


def test_llava_pretrain_reads_the_chat_json_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("MM_CACHE_ROOT", str(tmp_path))
    splits = load_dataset("llava_pretrain", cfg_path=CONFIGS / "llava_pretrain" / "shapes.yaml", cache_dir=tmp_path)
    raw = json.loads((tmp_path / "llava_pretrain_sample" / "train.json").read_text())
    first = raw[0]
    assert set(first) == {"id", "image", "conversations"} and first["conversations"][0]["from"] == "human"
    assert first["conversations"][0]["value"].endswith("\n<image>") and first["conversations"][1]["from"] == "gpt"
    assert all(isinstance(r["image"], str) for r in raw)  # LLaVA's layout: one image per record
    sample = splits["train"][0]
    assert tuple(sample["image"].shape) == (1, 3, 32, 32)
    question = sample["conversations"][0]["value"]
    assert question.count("<Img><ImageHere></Img>") == 1 and "<image>" not in question
    assert sample["conversations"][1] == {"from": "assistant", "value": first["conversations"][1]["value"]}
    assert len(splits["train"]) == 64 and len(splits["val"]) == 16


@pytest.mark.parametrize("name, ann", [("llava_instruct_100k", "llava_instruction_100k.json"),
                                       ("llava_instruct_156k", "llava_instruction_156k.json")])
def test_llava_instruct_builders_use_mpp_llavas_paths(name, ann, tmp_path):
    root = tmp_path / "dataset" / "llava_instruct"
    (root / "coco" / "train2017").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "coco" / "train2017" / "000000000009.jpg")
    records = [  # one record in each format MPP-LLaVA's files and LLaVA's own come in
        {"image": "000000000009.jpg", "instruction": ["<Img><ImageHere></Img> What colour?", "Sure?"],
         "output": ["Red.", "Yes."]},
        {"id": "9", "image": "000000000009.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red."}]},
    ]
    (root / ann).write_text(json.dumps(records))
    train = load_dataset(name, cache_dir=tmp_path)["train"]
    assert len(train) == 2
    assert [t["from"] for t in train[0]["conversations"]] == ["user", "assistant"] * 2
    assert train[1]["conversations"][0]["value"].startswith("<Img><ImageHere></Img>")
    assert tuple(train[1]["image"].shape) == (1, 3, 224, 224)


def test_the_builders_are_registered_under_mpp_llavas_names():
    entries = {e.name: e for e in get_registry().entries("datasets")}
    for name in ("llava_pretrain", "llava_instruct_100k", "llava_instruct_156k", "videochatgpt_100k"):
        assert entries[name].plugin.name == "qwen_llm", name
    assert entries["videochatgpt_100k"].registration.data_type == "videos"
