"""Instruction builders, records (MiniGPT4-Qwen and LLaVA layouts), bad records and ``base_instruction``."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf
from PIL import Image

from mm_core.errors import DataError
from mm_core.registry import get_registry


def write_images(root, names):
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (16, 16), (i * 40 % 255, 80, 160)).save(root / name)


def builder(name, tmp_path, records, skip=False):
    write_images(tmp_path / "img", ["a.png", "b.png", "c.png"])
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(records))
    cfg = OmegaConf.create({
        "data_type": "images", "skip_bad_records": skip,
        "build_info": {"annotations": {"train": {"storage": str(ann)}}, "images": {"storage": str(tmp_path / "img")}},
        "vis_processor": {"train": {"name": "blip2_image_eval", "image_size": 16}},
        "text_processor": {"train": {"name": "base_instruction", "max_words": 4}},
    })
    return get_registry().resolve("datasets", name)(cfg, cache_dir=tmp_path), ann


GOOD = [
    {"image": "a.png", "instruction": "<Img><ImageHere></Img> Describe this image in detail please.", "output": "A cat."},
    {"image": "b.png", "instruction": ["<ImageHere> What shape?", "What color?"], "output": ["A star.", "Blue."]},
    {"image": ["a.png", "c.png"], "instruction": "Compare <ImageHere> with <ImageHere>.", "output": "Same."},
    {"image": "c.png", "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                         {"from": "gpt", "value": "A dog."},
                                         {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes."}]},
    {"image": "b.png", "instruction": "No mark here.", "output": "Fine."},
]


@pytest.mark.parametrize("name", ["minigpt4_instruction", "llava_instruction"])
def test_records_become_conversations(tmp_path, name):
    split = builder(name, tmp_path, GOOD)[0].build_datasets()["train"]
    assert len(split) == 5
    first = split[0]
    assert first["image"].shape == (1, 3, 16, 16)
    # base_instruction: at most 4 words, the image tag kept whole
    assert first["conversations"] == [{"from": "user", "value": "<Img><ImageHere></Img> Describe this image in"},
                                      {"from": "assistant", "value": "A cat."}]
    assert [t["from"] for t in split[1]["conversations"]] == ["user", "assistant", "user", "assistant"]
    assert split[2]["image"].shape == (2, 3, 16, 16)
    assert split[3]["conversations"][0]["value"] == "<Img><ImageHere></Img>\nWhat is it?"
    assert split[4]["conversations"][0]["value"].startswith("<Img><ImageHere></Img> No mark")
    one_each = split.collater([split[0], split[1]])
    assert one_each["image"].shape == (2, 3, 16, 16) and len(one_each["conversations"]) == 2
    mixed = split.collater([split[0], split[2]])
    assert [im.shape[0] for im in mixed["image"]] == [1, 2]


BAD = [
    ({"instruction": "x", "output": "y"}, "record 1: no 'image'"),
    ({"image": "a.png", "instruction": ["q1", "q2"], "output": ["a1"]}, "record 1: 2 instructions but 1 outputs"),
    ({"image": "a.png", "instruction": "<ImageHere> q", "output": "  "}, "record 1: output\\[0\\] is empty"),
    ({"image": "zzz.png", "instruction": "<ImageHere> q", "output": "a"}, "record 1: image 'zzz.png' not found"),
    ({"image": ["a.png", "b.png"], "instruction": "<ImageHere> q", "output": "a"}, "record 1: 2 image\\(s\\) but 1"),
]


@pytest.mark.parametrize("record,message", BAD, ids=[m.split(":")[1][:20] for _, m in BAD])
def test_bad_records_are_errors_naming_file_and_index(tmp_path, record, message):
    b, ann = builder("minigpt4_instruction", tmp_path, [GOOD[0], record])
    with pytest.raises(DataError, match=message) as err:
        b.build_datasets()
    assert str(ann) in str(err.value)


def test_bad_records_are_skipped_and_counted_when_asked(tmp_path):
    records = [GOOD[0]] + [r for r, _ in BAD] + [GOOD[1]]
    split = builder("minigpt4_instruction", tmp_path, records, skip=True)[0].build_datasets()["train"]
    assert len(split) == 2 and split.skipped.count == len(BAD)
    assert [a["images"] for a in split.annotation] == [["a.png"], ["b.png"]]


def test_base_instruction_processor():
    from mm_core.api import load_processor

    proc = load_processor("base_instruction", {"max_words": 3})
    assert proc("  one   two\tthree four <ImageHere> five ") == "one two three <ImageHere>"
    assert proc(["a  b", "c d e f"]) == ["a b", "c d e"]


def test_generated_sample_data_is_deterministic(tmp_path):
    from mm_qwen_llm.sample_data import InstructionSampleSpec, write_instruction_sample

    spec = InstructionSampleSpec(num_train=6, num_val=2, image_size=16)
    a, b = write_instruction_sample(tmp_path / "a", spec), write_instruction_sample(tmp_path / "b", spec)
    assert (a / "train.json").read_text() == (b / "train.json").read_text()
    assert Image.open(a / "images/train_3.png").tobytes() == Image.open(b / "images/train_3.png").tobytes()
    records = json.loads((a / "train.json").read_text())
    assert any(isinstance(r["image"], list) for r in records) and any(isinstance(r["output"], list) for r in records)
