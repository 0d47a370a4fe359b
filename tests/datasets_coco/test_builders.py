"""coco_caption / coco_vqa builders on generated data: splits, samples, downloads, bad data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from coco_helpers import SMALL, caption_config
from omegaconf import OmegaConf
from PIL import Image

from mm_core.errors import DataError
from mm_datasets_coco.builders import CocoCaptionBuilder, CocoVQABuilder


def _load(path: Path):
    return json.loads(path.read_text())


def test_caption_splits_and_samples(shapes_root):
    datasets = CocoCaptionBuilder(caption_config(shapes_root)).build_datasets()
    train_ann = _load(shapes_root / "annotations" / "karpathy_train.json")
    val_ann = _load(shapes_root / "annotations" / "karpathy_val.json")
    assert {k: len(v) for k, v in datasets.items()} == {"train": len(train_ann), "val": SMALL["num_val"], "test": SMALL["num_test"]}

    sample = datasets["train"][5]
    pixels = np.asarray(Image.open(shapes_root / "images" / train_ann[5]["image"]).convert("RGB"), dtype=np.float32) / 255
    assert torch.allclose(sample["image"], torch.from_numpy(pixels).permute(2, 0, 1))
    assert sample["text_input"] == train_ann[5]["caption"]
    distinct = list(dict.fromkeys(r["image_id"] for r in train_ann))
    assert sample["image_id"] == distinct.index(train_ann[5]["image_id"])

    ev = datasets["val"][2]
    assert ev["text_references"] == val_ann[2]["caption"]
    assert ev["image_id"] == int(Path(val_ann[2]["image"]).stem.split("_")[-1])
    assert ev["instance_id"] == "2"
    batch = datasets["val"].collater([datasets["val"][i] for i in range(3)])
    assert batch["image"].shape == (3, 3, SMALL["image_size"], SMALL["image_size"])
    assert batch["text_references"] == [r["caption"] for r in val_ann[:3]]
    # BaseDataset's API stays: annotation records with instance ids
    assert datasets["val"].annotation[2]["caption"] == val_ann[2]["caption"]
    assert len(datasets["train"].annotation) == len(train_ann)


def test_vqa_splits_samples_and_official_answers(shapes_copy):
    ann = shapes_copy / "annotations"
    records = _load(ann / "vqa_val.json")
    # LAVIS' eval layout: records without answers + answer list + the official annotation file
    (ann / "eval_records.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "answer"} for r in records]))
    (ann / "answer_list.json").write_text(json.dumps(["red", "2", "circle"]))
    official = {"annotations": [{"question_id": r["question_id"], "answers": [{"answer": a, "answer_id": i + 1}
                                 for i, a in enumerate(r["answer"])]} for r in records]}
    (ann / "official.json").write_text(json.dumps(official))
    cfg = OmegaConf.create({"data_type": "images", "build_info": {"images": {"storage": str(shapes_copy / "images")},
        "annotations": {"train": {"storage": str(ann / "vqa_train.json")},
                        "val": {"storage": [str(ann / n) for n in ("eval_records.json", "answer_list.json", "official.json")]}}}})
    datasets = CocoVQABuilder(cfg).build_datasets()
    assert len(datasets["train"]) == 3 * SMALL["num_train"] and len(datasets["val"]) == len(records)
    assert datasets["val"].answer_list == ["red", "2", "circle"]
    sample = datasets["val"][4]
    assert sample["answers"] == records[4]["answer"] and sample["text_input"] == records[4]["question"]

    train = _load(ann / "vqa_train.json")
    item = datasets["train"][1]
    counts = {a: train[1]["answer"].count(a) / 10 for a in set(train[1]["answer"])}
    assert dict(zip(item["answers"], item["weights"])) == pytest.approx(counts)
    batch = datasets["train"].collater([datasets["train"][i] for i in range(3)])
    assert batch["n_answers"].tolist() == [len(set(train[i]["answer"])) for i in range(3)]
    assert batch["weight"].sum().item() == pytest.approx(3.0)
    assert batch["text_output"] == [max(set(train[i]["answer"]), key=train[i]["answer"].count) for i in range(3)]


def test_generate_option_renders_shapes_when_absent(tmp_path):
    from mm_core.config.loader import load_dataset_defaults

    cfg = load_dataset_defaults("coco_caption", "shapes")
    OmegaConf.update(cfg, "build_info.generate", {**cfg.build_info.generate, **SMALL})
    datasets = CocoCaptionBuilder(cfg, cache_dir=tmp_path).build_datasets()
    assert (tmp_path / "shapes" / "manifest.json").is_file()
    assert len(datasets["val"]) == SMALL["num_val"]
    stamp = (tmp_path / "shapes" / "manifest.json").stat().st_mtime_ns
    CocoCaptionBuilder(cfg, cache_dir=tmp_path).build_datasets()  # present: not regenerated
    assert (tmp_path / "shapes" / "manifest.json").stat().st_mtime_ns == stamp


def _download_config(url: str, md5: str, storage: Path):
    return OmegaConf.create({"data_type": "images", "build_info": {
        "annotations": {"val": {"url": url, "md5": md5, "storage": str(storage)}}, "images": {"storage": "images"}}})


def test_download_checks_md5_and_leaves_no_bad_file(shapes_root, tmp_path):
    source = shapes_root / "annotations" / "karpathy_val.json"
    target = tmp_path / "cache" / "coco" / "annotations" / "coco_karpathy_val.json"
    with pytest.raises(DataError, match="checksum mismatch"):
        CocoCaptionBuilder(_download_config(source.as_uri(), "0" * 32, target), cache_dir=tmp_path).download()
    assert not target.exists() and list(target.parent.iterdir()) == []

    import hashlib

    good = hashlib.md5(source.read_bytes()).hexdigest()
    CocoCaptionBuilder(_download_config(source.as_uri(), good, target), cache_dir=tmp_path).download()
    assert target.read_bytes() == source.read_bytes()


def test_present_or_symlinked_annotations_are_used_as_they_are_when_their_md5_matches(shapes_root, tmp_path):
    import hashlib

    target = tmp_path / "coco_karpathy_val.json"
    target.symlink_to(shapes_root / "annotations" / "karpathy_val.json")
    good = hashlib.md5(target.read_bytes()).hexdigest()
    # an unreachable URL: not consulted for a file already in place
    CocoCaptionBuilder(_download_config("http://127.0.0.1:9/none.json", good, target), cache_dir=tmp_path).download()
    assert target.is_symlink()
    # a declared md5 that the local file does not have is an error naming the file and both sums
    with pytest.raises(DataError) as err:
        CocoCaptionBuilder(_download_config("http://127.0.0.1:9/none.json", "0" * 32, target), cache_dir=tmp_path).download()
    assert all(part in str(err.value) for part in (str(target), "0" * 32, good))
    assert target.is_symlink()


def test_download_command_fetches_default_annotations(tmp_path, capsys, monkeypatch):
    """``mmrun download-coco`` with the default config, the URLs served from local files."""
    from mm_core.config.loader import load_dataset_defaults
    from mm_core.registry import get_registry

    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    for split in ("train", "val", "test"):  # pretend they were fetched before
        (tmp_path / "coco" / "annotations" / f"coco_karpathy_{split}.json").write_text("[]")
    main = get_registry().resolve("commands", "download-coco")
    # coco_caption's defaults declare md5s: files in place with other contents are refused, by name
    assert main(["--cache-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "checksum mismatch for " + str(tmp_path / "coco" / "annotations" / "coco_karpathy_train.json") in err
    # coco_vqa's declare none: files in place are used as they are
    annotations = load_dataset_defaults("coco_vqa").build_info.annotations
    for info in annotations.values():
        for storage in info.storage:
            (tmp_path / storage).write_text("[]")
    assert main(["--datasets", "coco_vqa", "--cache-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "cocodataset.org" in out and str(tmp_path / "coco" / "images") in out


def _image_of(root: Path, split: str, index: int) -> Path:
    return root / "images" / _load(root / "annotations" / f"karpathy_{split}.json")[index]["image"]


def test_missing_image_names_file_and_annotation_index(shapes_copy):
    _image_of(shapes_copy, "val", 3).unlink()
    val = CocoCaptionBuilder(caption_config(shapes_copy)).build_datasets()["val"]
    with pytest.raises(DataError) as info:
        val[3]
    message = str(info.value)
    assert "image not found" in message and str(_image_of(shapes_copy, "val", 3)) in message
    assert "annotation 3 of" in message and "karpathy_val.json" in message


def test_skip_mode_drops_and_counts_bad_samples(shapes_copy):
    _image_of(shapes_copy, "val", 1).unlink()
    truncated = _image_of(shapes_copy, "val", 4)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    val = CocoCaptionBuilder(caption_config(shapes_copy, on_bad_sample="skip")).build_datasets()["val"]
    batch = val.collater([val[i] for i in range(len(val))])
    assert val.skipped == 2
    assert batch["image"].shape[0] == SMALL["num_val"] - 2
    assert [int(i) for i in batch["instance_id"]] == [i for i in range(SMALL["num_val"]) if i not in (1, 4)]


def test_truncated_png_is_an_error_naming_the_file(shapes_copy):
    path = _image_of(shapes_copy, "train", 2)
    path.write_bytes(path.read_bytes()[:60])
    train = CocoCaptionBuilder(caption_config(shapes_copy)).build_datasets()["train"]
    with pytest.raises(DataError, match="image unreadable") as info:
        train[2]
    assert str(path) in str(info.value) and "annotation 2 of" in str(info.value)


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_image_path_escaping_the_root_is_rejected(shapes_copy, policy):
    ann = shapes_copy / "annotations" / "karpathy_val.json"
    records = _load(ann)
    (shapes_copy / "secret.png").write_bytes(_image_of(shapes_copy, "val", 0).read_bytes())
    records[0]["image"] = "../secret.png"
    ann.write_text(json.dumps(records))
    val = CocoCaptionBuilder(caption_config(shapes_copy, on_bad_sample=policy)).build_datasets()["val"]
    with pytest.raises(DataError, match="outside the data root"):
        val[0]


def test_bad_records_name_file_and_index(shapes_copy):
    ann = shapes_copy / "annotations" / "karpathy_train.json"
    records = _load(ann)
    del records[7]["caption"]
    ann.write_text(json.dumps(records))
    with pytest.raises(DataError, match=r"annotation 7 of .*karpathy_train.json: field 'caption' is missing"):
        CocoCaptionBuilder(caption_config(shapes_copy)).build_datasets()
