"""Video instruction data (``videochatgpt_100k``): MPP-LLaVA's frame sampling, real mp4 files
decoded with PyAV, one ``<ImageHere>`` per frame, decode errors naming the file (the rest of the
batch kept), and image + video samples in one dynamically padded batch of the tiny MiniGPT4-Qwen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mm_core.errors import DataError
from mm_qwen_llm.instruction_data import InstructionDataset
from mm_qwen_llm.sample_data import InstructionSampleSpec, write_instruction_sample
from mm_qwen_llm.sample_video import VideoSampleSpec, moving_shape, write_video_sample
from mm_qwen_llm.video import VideoInstructionDataset, read_frames, sample_indices

SPEC = VideoSampleSpec(seed=3, num_train=8, num_val=0, image_size=32, num_frames=24, fps=8)


def mpp_llava_indices(total: int, num_frames: int) -> list[int]:
    """MPP-LLaVA's extract_frames loop, re-written: read frames in order, keep those whose index is a
    multiple of int(total / num_frames) (1 when that is 0), stop after num_frames."""
    interval = int(total / num_frames) or 1
    kept = []
    for index in range(total):
        if index % interval == 0:
            kept.append(index)
        if len(kept) >= num_frames:
            break
    return kept


@pytest.mark.parametrize("total", [1, 3, 7, 24, 31, 32, 33, 100, 1000])
@pytest.mark.parametrize("max_frames", [1, 4, 8, 32])
def test_sampling_indices_are_mpp_llavas(total, max_frames):
    assert sample_indices(total, max_frames) == mpp_llava_indices(total, max_frames)


def test_sampling_indices_by_hand():
    assert sample_indices(24, 4) == [0, 6, 12, 18]
    assert sample_indices(3, 8) == [0, 1, 2]  # a short video gives all its frames
    assert sample_indices(100, 32)[-1] == 93 and len(sample_indices(100, 32)) == 32


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return write_video_sample(tmp_path_factory.mktemp("videos"), SPEC)


def _records(root: Path) -> list[dict]:
    return json.loads((root / "train.json").read_text())


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def test_decoded_mp4_frames_are_the_rendered_frames_at_the_sampled_indices(videos):
    """The generated file is a real MPEG-4 video; the frames read back are the ones drawn at
    0, 6, 12, 18 (within the codec's loss), not their neighbours."""
    record = next(r for r in _records(videos) if r["video"].endswith(".mp4"))
    _, colour, shape, _, _, *motion = record["output"].rstrip(".").split(" ")
    drawn = moving_shape(shape, colour, " ".join(motion), SPEC.image_size, SPEC.num_frames)
    import av

    with av.open(str(videos / "videos" / record["video"])) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
        assert container.streams.video[0].frames == SPEC.num_frames
    frames = read_frames(videos / "videos" / record["video"], max_frames=4)
    assert len(frames) == 4
    for frame, index in zip(frames, [0, 6, 12, 18]):
        error = np.abs(_pixels(frame) - _pixels(drawn[index])).mean()
        wrong = np.abs(_pixels(frame) - _pixels(drawn[(index + 6) % 24])).mean()
        assert error < 6 and wrong > 3 * error, (index, error, wrong)


def test_a_folder_of_frames_is_sampled_the_same_way(videos):
    folder = next(videos / "videos" / r["video"] for r in _records(videos) if not r["video"].endswith(".mp4"))
    frames = read_frames(folder, max_frames=4)
    files = sorted(folder.iterdir())
    assert [np.array_equal(_pixels(f), _pixels(Image.open(files[i]))) for f, i in zip(frames, [0, 6, 12, 18])] \
        == [True] * 4


def test_an_unreadable_frame_in_a_folder_is_an_error_naming_the_folder(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "0000.png")
    (folder / "0001.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"cannot read a frame of video {folder}"):
        read_frames(folder, max_frames=2)
    with pytest.raises(DataError, match="has no frames"):
        read_frames(tmp_path, max_frames=2)  # a folder without images


def _dataset(root: Path, ann: Path | None = None, **options) -> VideoInstructionDataset:
    def to_tensor(image):
        return torch.from_numpy(_pixels(image)).permute(2, 0, 1) / 255

    return VideoInstructionDataset(vis_processor=to_tensor, vis_root=root / "videos",
                                   ann_paths=[ann or root / "train.json"], **options)


def test_one_image_mark_per_sampled_frame_in_mpp_llavas_layout(videos):
    data = _dataset(videos, max_frames=4)
    sample = data[0]
    assert sample["image"].shape == (4, 3, 32, 32)
    question = sample["conversations"][0]["value"]
    assert question.startswith("<Img>" + "<ImageHere>" * 4 + "</Img> ")
    assert sample["conversations"][1] == {"from": "assistant", "value": _records(videos)[0]["output"]}
    short = _dataset(videos, max_frames=64)[0]  # 24 frames < 64: every frame, one mark each
    assert short["image"].shape[0] == 24 and short["conversations"][0]["value"].count("<ImageHere>") == 24


def test_video_chatgpts_own_records_find_their_video_by_id(videos, tmp_path):
    ann = tmp_path / "videoinstruct.json"
    ann.write_text(json.dumps([{"q": "Where does it go?", "a": "Up.", "video_id": "train_0"},
                               {"q": "And this one?", "a": "Left.", "video_id": "train_3"}]))
    data = _dataset(videos, ann, max_frames=4)
    assert [a["video"] for a in data.annotation] == ["train_0.mp4", "train_3"]  # a file, a frames folder
    sample = data[0]
    assert sample["image"].shape[0] == 4 and sample["conversations"] == [
        {"from": "user", "value": "<Img>" + "<ImageHere>" * 4 + "</Img> Where does it go?"},
        {"from": "assistant", "value": "Up."}]
    ann.write_text(json.dumps([{"q": "?", "a": "!", "video_id": "v_missing"}]))
    with pytest.raises(DataError, match="no video for video_id 'v_missing'"):
        _dataset(videos, ann)


def _with_bad_video(videos: Path, tmp_path: Path, content: bytes) -> Path:
    (videos / "videos" / "broken.mp4").write_bytes(content)
    records = _records(videos)[:3]
    records.insert(1, {"video": "broken.mp4", "instruction": "<Img><ImageHere></Img> What?", "output": "x"})
    ann = tmp_path / "with_bad.json"
    ann.write_text(json.dumps(records))
    return ann


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 50])
def test_a_video_that_cannot_be_decoded_is_an_error_naming_the_file(videos, tmp_path, content):
    ann = _with_bad_video(videos, tmp_path, content)
    data = _dataset(videos, ann, max_frames=4)
    with pytest.raises(DataError) as info:
        data[1]
    assert "broken.mp4" in info.value.message and f"{ann}: record 1" in info.value.message
    assert "on_bad_sample: skip" in info.value.hint


def test_skipped_bad_video_leaves_the_rest_of_the_batch(videos, tmp_path, caplog):
    ann = _with_bad_video(videos, tmp_path, b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    data = _dataset(videos, ann, max_frames=4, on_bad_sample="skip")
    samples = [data[i] for i in range(4)]
    assert samples[1] is None and data.bad_samples.count == 1
    assert "broken.mp4" in data.bad_samples.examples[0] and "broken.mp4" in caplog.text
    batch = data.collater(samples)
    assert len(batch["image"]) == 3 and batch["instance_id"] == [samples[i]["instance_id"] for i in (0, 2, 3)]


def test_bad_records_are_errors_at_build_time(videos, tmp_path):
    cases = {"no video": {"instruction": "<Img><ImageHere></Img> q", "output": "a"},
             "not found": {"video": "missing.mp4", "instruction": "<Img><ImageHere></Img> q", "output": "a"},
             "two marks": {"video": "train_0.mp4", "instruction": "<Img><ImageHere></Img><Img><ImageHere></Img> q",
                           "output": "a"}}
    messages = {"no video": "no 'video'", "not found": "video 'missing.mp4' not found",
                "two marks": r"1 image\(s\) but 2"}
    for case, record in cases.items():
        ann = tmp_path / f"{case}.json"
        ann.write_text(json.dumps([record]))
        with pytest.raises(DataError, match=messages[case]):
            _dataset(videos, ann)
    with pytest.raises(Exception, match="on_bad_sample"):
        _dataset(videos, on_bad_sample="ignore")


def test_image_and_video_samples_share_a_dynamically_padded_batch(videos, tmp_path):
    """One batch of two image samples and two videos (4 frames) through the tiny MiniGPT4-Qwen:
    padded to its longest sample (not max_txt_len), each video's 4 marks taking 4 x num_query_token
    positions, and the batch loss equal to the token-weighted mean of the per-sample losses."""
    from mm_core.api import load_model

    images = write_instruction_sample(tmp_path / "images", InstructionSampleSpec(num_train=4, num_val=0))
    image_data = InstructionDataset(vis_processor=_dataset(videos).vis_processor, vis_root=images / "images",
                                    ann_paths=[images / "train.json"])
    video_data = _dataset(videos, max_frames=4)
    samples = [image_data[0], video_data[0], image_data[1], video_data[1]]
    batch = image_data.collater(samples)  # a concatenation of both uses the first dataset's collater
    assert [tuple(x.shape) for x in batch["image"]] == [(1, 3, 32, 32), (4, 3, 32, 32), (1, 3, 32, 32), (4, 3, 32, 32)]

    model = load_model("minigpt4qwen", "tiny").eval()
    model.max_txt_len = 400
    encoded = [model.llm.encode_conversation(c, model.num_query_token, model.max_txt_len) for c in batch["conversations"]]
    lengths = [len(e["input_ids"]) for e in encoded]
    padded = model.llm.collate(encoded)["input_ids"]
    assert padded.shape[1] == max(lengths) < model.max_txt_len
    one_frame = [dict(t, value=t["value"].replace("<ImageHere>" * 4, "<ImageHere>")) for t in batch["conversations"][1]]
    assert lengths[1] - len(model.llm.encode_conversation(one_frame, model.num_query_token, 400)["input_ids"]) \
        == 3 * model.num_query_token
    with torch.no_grad():
        together = model(batch)["loss"]
        alone = [model(image_data.collater([s]))["loss"] for s in samples]
    tokens = [sum(1 for label in e["labels"][1:] if label != -100) for e in encoded]
    weighted = sum(loss * n for loss, n in zip(alone, tokens)) / sum(tokens)
    assert torch.isfinite(together) and together.item() == pytest.approx(weighted.item(), rel=1e-5)
