"""Sample data, the AVSD dialog files, the two processors and the collater."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mm_avsd_dialogue.dataset import AVSDDialogueDataset, read_dialogs
from mm_avsd_dialogue.sample_data import FEATURE_DIMS, make_sample_data
from mm_core.errors import DataError


def _dialogs(root: Path, split: str) -> list[dict]:
    return json.loads((root / "annotations" / f"{split}.json").read_text())["dialogs"]


def test_sample_data_is_avsd_shaped_and_seeded(avsd_root: Path, tmp_path: Path) -> None:
    train = _dialogs(avsd_root, "train")
    assert len(train) == 4 and all(3 <= len(d["dialog"]) <= 5 for d in train)
    assert all({"image_id", "caption", "summary", "dialog"} <= set(d) for d in train)
    test = _dialogs(avsd_root, "test")
    assert all(len(d["dialog"][-1]["answers"]) == 6 for d in test)  # official test: 6 references
    lengths = []
    for d in train:
        shapes = {name: np.load(avsd_root / "features" / name / f"{d['image_id']}.npy").shape for name in FEATURE_DIMS}
        assert {name: s[1] for name, s in shapes.items()} == FEATURE_DIMS
        lengths.append(tuple(s[0] for s in shapes.values()))
    assert len(set(lengths)) > 1  # lengths differ between videos
    assert any(len(set(per_video)) > 1 for per_video in lengths)  # and between feature types
    again = make_sample_data(tmp_path / "again", seed=0, videos={"train": 4, "val": 2, "test": 2})
    assert (again / "annotations" / "train.json").read_bytes() == (avsd_root / "annotations" / "train.json").read_bytes()
    other = make_sample_data(tmp_path / "other", seed=1, videos={"train": 4})
    assert (other / "annotations" / "train.json").read_bytes() != (avsd_root / "annotations" / "train.json").read_bytes()


def test_train_has_a_sample_per_turn_and_eval_one_per_dialog(avsd_root: Path, splits: dict) -> None:
    dialogs = _dialogs(avsd_root, "train")
    train = splits["train"]
    assert len(train) == sum(len(d["dialog"]) for d in dialogs)
    last = dialogs[0]["dialog"]
    third = train.annotation[2]
    assert third["question"] == last[2]["question"] and third["dialog"] == last[:2]
    test_dialogs = _dialogs(avsd_root, "test")
    test = splits["test"]
    assert len(test) == len(test_dialogs)
    for ann, dialog in zip(test.annotation, test_dialogs):
        assert ann["question"] == dialog["dialog"][-1]["question"]
        assert ann["dialog"] == dialog["dialog"][:-1]
        assert ann["references"] == dialog["dialog"][-1]["answers"]
    val_ann = splits["val"].annotation[0]
    assert val_ann["references"] == [_dialogs(avsd_root, "val")[0]["dialog"][-1]["answer"]]


def test_video_features_are_truncated_and_concatenated(avsd_root: Path, vis_processor) -> None:
    video_id = _dialogs(avsd_root, "train")[1]["image_id"]
    arrays = [np.load(avsd_root / "features" / n / f"{video_id}.npy") for n in ("i3d_flow", "i3d_rgb", "vggish")]
    shortest = min(len(a) for a in arrays)
    out = vis_processor(avsd_root / "features", video_id)
    assert vis_processor.dim == 4224
    assert out["video_fts"].shape == (shortest, 4224)
    assert np.array_equal(out["video_fts"].numpy(), np.concatenate([a[:shortest] for a in arrays], axis=1))
    assert out["token_type_ids"].tolist() == [5] * shortest  # <video> is id 5 in the tiny tokenizer


def test_dialogue_sequence_types_and_labels(text_processor) -> None:
    tok = text_processor.tokenizer
    ann = {"caption": "a man opens a door .", "summary": "he leaves .",
           "dialog": [{"question": "q one ?", "answer": "a one"}, {"question": "q two ?", "answer": "a two"}],
           "question": "q three ?", "answer": "the answer"}
    out = text_processor(ann)

    def enc(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False)

    eos, sp1, sp2, cap = tok.convert_tokens_to_ids(["<eos>", "<speaker1>", "<speaker2>", "<cap>"])
    segments = [enc("a man opens a door . he leaves ."), enc("q one ?"), enc("a one"), enc("q two ?"),
                enc("a two"), enc("q three ?"), enc("the answer")]
    expected = [t for seg in segments for t in seg + [eos]]
    types = [cap] * (len(segments[0]) + 1)
    for i, seg in enumerate(segments[1:]):
        types += [sp1 if i % 2 == 0 else sp2] * (len(seg) + 1)
    answer_len = len(segments[-1]) + 1
    assert out["input_ids"].tolist() == expected
    assert out["token_type_ids"].tolist() == types
    assert out["labels"].tolist() == [-100] * (len(expected) - answer_len) + expected[-answer_len:]
    short = type(text_processor)(max_turns=1, use_caption=False, tokenizer="tiny")(ann)
    assert short["input_ids"].tolist() == [eos] + [t for seg in segments[3:] for t in seg + [eos]]


def test_collation_with_videos_of_different_lengths(avsd_root: Path, vis_processor, text_processor,
                                                    tmp_path: Path) -> None:
    dialogs = _dialogs(avsd_root, "train")[:3]
    # one video whose features are all 1.0: real values, never to be taken for padding
    features = tmp_path / "features"
    rng = np.random.default_rng(0)
    for name, dim in FEATURE_DIMS.items():
        (features / name).mkdir(parents=True)
        extra = {"i3d_flow": 1, "i3d_rgb": 0, "vggish": 2}[name]  # the processor keeps the shortest
        for i, d in enumerate(dialogs):
            shape = ((2, 5, 8)[i] + extra, dim)
            array = np.ones(shape, np.float32) if i == 0 else rng.standard_normal(shape).astype(np.float32)
            np.save(features / name / f"{d['image_id']}.npy", array)
    ann = tmp_path / "train.json"
    ann.write_text(json.dumps({"dialogs": dialogs}))
    data = AVSDDialogueDataset(vis_processor, text_processor, features, [ann])
    items = [data[0], data[len(dialogs[0]["dialog"]) + 1], data[len(data) - 1]]
    batch = data.collater(items)

    v_lens = [len(s["video_fts"]) for s in items]
    t_lens = [len(s["input_ids"]) for s in items]
    assert sorted(v_lens) == [2, 5, 8] and len(set(t_lens)) > 1
    V, T = max(v_lens), max(t_lens)
    assert batch["video_fts"].shape == (3, V, 4224) and batch["input_ids"].shape == (3, T)
    assert batch["video_lengths"].tolist() == v_lens
    pad, video_type = text_processor.pad_token_id, 5
    for b, s in enumerate(items):
        v, t = v_lens[b], t_lens[b]
        assert batch["attention_mask"][b].tolist() == [1] * v + [0] * (V - v) + [1] * t + [0] * (T - t)
        assert torch.equal(batch["video_fts"][b, :v], s["video_fts"])
        assert not batch["video_fts"][b, v:].any()
        assert batch["token_type_ids"][b, :v].tolist() == [video_type] * v
        assert batch["token_type_ids"][b, V:V + t].tolist() == s["token_type_ids"].tolist()
        assert batch["input_ids"][b].tolist() == s["input_ids"].tolist() + [pad] * (T - t)
        labels = batch["labels"][b]
        assert (labels[:V] == -100).all() and (labels[V + t:] == -100).all()
        answer = [i for i, x in enumerate(s["labels"].tolist()) if x != -100]
        # labels only on the answer: its tokens and its <eos>, which end the dialogue
        assert answer == list(range(t - len(answer), t))
        assert labels[V:V + t].tolist() == s["labels"].tolist()
    assert items[0]["video_fts"].eq(1.0).all()  # the all-ones video is still fully attended
    assert batch["attention_mask"][0, : v_lens[0]].all()


def test_missing_feature_names_video_and_feature(avsd_root: Path, vis_processor, tmp_path: Path) -> None:
    features = tmp_path / "features"
    for name in ("i3d_flow", "i3d_rgb"):
        (features / name).mkdir(parents=True)
        np.save(features / name / "VID1.npy", np.zeros((3, 2048), np.float32))
    with pytest.raises(DataError, match=r"video 'VID1': feature 'vggish' not found"):
        vis_processor(features, "VID1")


def test_wrong_feature_size_names_file_and_expected_size(vis_processor, tmp_path: Path) -> None:
    features = tmp_path / "features"
    for name, dim in FEATURE_DIMS.items():
        (features / name).mkdir(parents=True)
        np.save(features / name / "VID2.npy", np.zeros((3, dim if name != "i3d_rgb" else 1024), np.float32))
    with pytest.raises(DataError, match=r"i3d_rgb/VID2\.npy: feature 'i3d_rgb' has shape \(3, 1024\), expected \(frames, 2048\)"):
        vis_processor(features, "VID2")


def test_dialog_without_turns_is_rejected_with_its_index(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    good = {"image_id": "A", "caption": "", "summary": "", "dialog": [{"question": "q", "answer": "a"}]}
    path.write_text(json.dumps({"dialogs": [good, good, {**good, "image_id": "B", "dialog": []}]}))
    with pytest.raises(DataError, match=r"bad\.json: dialog 2 \(video 'B'\) has no turns"):
        read_dialogs(path)
