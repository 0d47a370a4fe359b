"""Video instruction data (MPP-LLaVA's ``videochatgpt_100k``): a video file or a folder of frames,
``max_frames`` of it sampled, each frame through the image processor, one ``<ImageHere>`` per frame.

Records (MPP-LLaVA's format; ``instruction`` / ``output`` may be lists for several turns), or
Video-ChatGPT's own ``VideoInstruct_100K.json`` records (the video found by its id)::

    {"video": "v_abc.mp4", "instruction": "<Img><ImageHere></Img> What happens?", "output": "A ..."}
    {"video_id": "v_abc", "q": "What happens?", "a": "A ..."}

``video`` names a file PyAV decodes (mp4, mkv, webm, avi, ...) or a folder of frame images
(sorted by name). Frames are sampled as MPP-LLaVA samples them (:func:`sample_indices`), and the
record's one ``<Img><ImageHere></Img>`` becomes ``<Img>`` + ``<ImageHere>`` x frames + ``</Img>``.
A video that cannot be decoded raises :class:`DataError` naming the file; with
``on_bad_sample: skip`` it is logged, counted and dropped from its batch, the other samples stay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from PIL import Image

from mm_core.base.builder import BaseDatasetBuilder
from mm_core.base.dataset import resolve_inside
from mm_core.base.llm import IMAGE_MARK
from mm_core.download import resolve_storage
from mm_core.errors import ConfigError, DataError
from mm_qwen_llm.instruction_data import (
    IMAGE_TAG,
    InstructionBuilder,
    InstructionDataset,
    SkippedRecords,
    _conversation_of,
    _with_image_marks,
)

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
BAD_SAMPLE_POLICIES = ("error", "skip")


def sample_indices(total: int, max_frames: int) -> list[int]:
    """MPP-LLaVA's frame choice: every ``max(1, total // max_frames)``-th frame from the first,
    at most ``max_frames`` of them (all frames of a video shorter than ``max_frames``)."""
    if max_frames < 1:
        raise ConfigError(f"max_frames must be >= 1, got {max_frames}")
    stride = max(1, total // max_frames)
    return list(range(0, total, stride))[:max_frames]


def read_frames(path: Path, max_frames: int) -> list[Image.Image]:
    """The sampled frames of a video file or a folder of frames, as RGB images."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        chosen = [files[i] for i in sample_indices(len(files), max_frames)]
        try:
            frames = [Image.open(file).convert("RGB") for file in chosen]
        except (OSError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot read a frame of video {path}: {exc}") from exc
    elif not path.is_file():
        raise DataError(f"video {path} not found")
    else:
        frames = _decode(path, max_frames)
    if not frames:
        raise DataError(f"video {path} has no frames")
    return frames


def _decode(path: Path, max_frames: int) -> list[Image.Image]:
    try:
        import av  # PyAV: FFmpeg's decoders, a wheel on PyPI
    except ImportError as exc:
        raise ConfigError("decoding video files needs PyAV", hint="pip install av (a dependency of "
                          "mm-plugin-qwen-llm), or give folders of frames") from exc
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            total = stream.frames or _count_frames(container, stream)
        wanted = set(sample_indices(total, max_frames))
        frames = []
        with av.open(str(path)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index in wanted:
                    frames.append(frame.to_image().convert("RGB"))
                if index >= max(wanted, default=0):
                    break
        return frames
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:  # IndexError: no video stream
        raise DataError(f"cannot decode video {path}: {exc}") from exc


def _count_frames(container: Any, stream: Any) -> int:
    """Frames of a stream whose header does not say (some mkv / webm): demux and count."""
    return sum(1 for packet in container.demux(stream) if packet.size)


class VideoInstructionDataset(InstructionDataset):
    """Conversations about videos (MPP-LLaVA records, see the module docstring); samples have the
    layout of :class:`InstructionDataset`'s, so image and video datasets share batches."""

    def __init__(self, vis_processor: Callable | None = None, text_processor: Callable | None = None,
                 vis_root: str | Path | None = None, ann_paths: Sequence[str | Path] = (), max_frames: int = 32,
                 skip_bad_records: bool = False, on_bad_sample: str = "error") -> None:
        if on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise ConfigError(f"on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got {on_bad_sample!r}")
        self.max_frames = int(max_frames)
        sample_indices(1, self.max_frames)  # validates max_frames
        self.on_bad_sample = on_bad_sample
        self.bad_samples = SkippedRecords()
        super().__init__(vis_processor, text_processor, vis_root, ann_paths, skip_bad_records)

    def parse_record(self, record: Any, where: str) -> dict[str, Any]:
        if isinstance(record, dict) and "video_id" in record and "video" not in record:  # Video-ChatGPT's own file
            record = {"video": self._video_named(str(record["video_id"]), where),
                      "instruction": f"{IMAGE_TAG} {record.get('q') or ''}", "output": record.get("a")}
        if not isinstance(record, dict) or not isinstance(record.get("video"), str) or not record["video"]:
            raise DataError(f"{where}: no 'video'", hint="every video record names its file or frames folder")
        turns = _with_image_marks(_conversation_of(record, where), 1, where)
        if sum(t["value"].count(IMAGE_TAG) for t in turns if t["from"] == "user") != 1:
            raise DataError(f"{where}: a video record needs its one '{IMAGE_TAG}' in the user turns",
                            hint="MPP-LLaVA expands it to one mark per sampled frame")
        if self.vis_root is not None and not resolve_inside(self.vis_root, record["video"], what=where).exists():
            raise DataError(f"{where}: video '{record['video']}' not found under {self.vis_root}")
        return {"video": record["video"], "conversations": turns, "where": where}

    def _video_named(self, video_id: str, where: str) -> str:
        """The file (``<id>.mp4``, ``.mkv``, ...) or frames folder of a Video-ChatGPT ``video_id``."""
        if self.vis_root is None:
            return video_id + ".mp4"
        for name in [video_id, *(video_id + suffix for suffix in VIDEO_SUFFIXES)]:
            if resolve_inside(self.vis_root, name, what=where).exists():
                return name
        raise DataError(f"{where}: no video for video_id '{video_id}' under {self.vis_root}",
                        hint=f"looked for a folder or a file ending in {', '.join(VIDEO_SUFFIXES)}")

    def sample_lengths(self) -> list[int]:
        return [sum(len(t["value"]) for t in ann["conversations"]) // 4 + 32 * self.max_frames
                for ann in self.annotation]

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        ann = self.annotation[index]
        try:
            frames = self._frames(ann)
        except DataError as exc:
            if self.on_bad_sample == "error":
                raise DataError(f"{ann['where']}: {exc.message}",
                                hint="fix or remove the file, or set on_bad_sample: skip in the dataset's config") from exc
            self.bad_samples.add(exc.message)
            log.warning("skipping %s (%d skipped so far in this process): %s", ann["where"], self.bad_samples.count,
                        exc.message)
            return None
        expanded = f"<Img>{IMAGE_MARK * len(frames)}</Img>"
        turns = [{"from": t["from"], "value": (self.text_processor(t["value"]) if self.text_processor else t["value"])
                  .replace(IMAGE_TAG, expanded) if t["from"] == "user" else t["value"]} for t in ann["conversations"]]
        image = torch.stack(frames) if isinstance(frames[0], torch.Tensor) else frames
        return {"image": image, "conversations": turns, "instance_id": ann["instance_id"]}

    def _frames(self, ann: dict[str, Any]) -> list[Any]:
        root = self.vis_root
        path = resolve_inside(root, ann["video"], what=ann["where"]) if root is not None else Path(ann["video"])
        frames = read_frames(path, self.max_frames)
        return [self.vis_processor(f) for f in frames] if self.vis_processor is not None else frames


class VideoInstructionBuilder(InstructionBuilder):
    """``videochatgpt_100k``: VideoChatGPT-100K in MPP-LLaVA's format; ``build_info.max_frames``
    (MPP-LLaVA's key, default 32) and ``on_bad_sample`` (``error`` | ``skip``) in the dataset's config.
    ``build_info.generate`` renders videos of moving shapes (:mod:`mm_qwen_llm.sample_video`)."""

    train_dataset_cls = VideoInstructionDataset
    eval_dataset_cls = VideoInstructionDataset

    def make_dataset(self, cls, vis_processor, text_processor, root, ann_paths, split):  # noqa: ANN001
        return cls(vis_processor=vis_processor, text_processor=text_processor, vis_root=root, ann_paths=ann_paths,
                   max_frames=int(self.config.build_info.get("max_frames", 32)),
                   skip_bad_records=bool(self.config.get("skip_bad_records", False)),
                   on_bad_sample=str(self.config.get("on_bad_sample", "error")))

    def download(self) -> None:
        spec = OmegaConf.select(self.config, "build_info.generate")
        if spec:
            from mm_qwen_llm.sample_video import VideoSampleSpec, ensure_video_sample

            options = dict(OmegaConf.to_container(spec, resolve=True))
            root = resolve_storage(str(options.pop("root", "videochatgpt_sample")), self.cache_dir)
            try:
                ensure_video_sample(root, VideoSampleSpec(**options))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"datasets.{self._name()}.build_info.generate: {exc}",
                                  hint="options: root, seed, num_train, num_val, image_size, num_frames, fps") from exc
        BaseDatasetBuilder.download(self)
