"""Generated video instruction data in MPP-LLaVA's format, for offline runs (``type: shapes``).

Each video is a few seconds of one coloured shape moving across a white square (left to right,
right to left, top to bottom or bottom to top); its record asks where the shape goes. Videos are
real MPEG-4 files written with PyAV; every fourth is a folder of PNG frames instead (the other
form ``video`` may take). Written under a root folder::

    videos/<split>_<index>.mp4 | videos/<split>_<index>/<frame>.png
    train.json, val.json     MPP-LLaVA video instruction records
    manifest.json            the spec (written last: its presence means the data is complete)

Everything is a function of :class:`VideoSampleSpec` (seed included).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from mm_core.generated_data import SHAPE_KINDS, ensure_generated, render_shapes
from mm_qwen_llm.sample_data import COLOURS, IMAGE_TAG

MOTIONS = ("left to right", "right to left", "top to bottom", "bottom to top")


@dataclass(frozen=True)
class VideoSampleSpec:
    """What to generate (``image_size`` even: MPEG-4's 4:2:0 chroma)."""

    seed: int = 0
    num_train: int = 32
    num_val: int = 8
    image_size: int = 32
    num_frames: int = 24
    fps: int = 8


def moving_shape(shape: str, colour: str, motion: str, size: int, num_frames: int) -> list[Image.Image]:
    """``num_frames`` frames of a ``size // 3`` shape travelling along ``motion``."""
    side = size // 3
    frames = []
    for k in range(num_frames):
        travel = round(k * (size - side) / max(num_frames - 1, 1))
        along = travel if motion in ("left to right", "top to bottom") else size - side - travel
        middle = (size - side) // 2
        x, y = (along, middle) if motion in ("left to right", "right to left") else (middle, along)
        frames.append(render_shapes(size, (250, 250, 250), [(shape, (x, y, x + side, y + side), colour)]))
    return frames


def write_mp4(path: Path, frames: list[Image.Image], fps: int) -> None:
    """An MPEG-4 Part 2 video (FFmpeg's own encoder, in every PyAV wheel)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 400_000
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_video_sample(root: str | Path, spec: VideoSampleSpec = VideoSampleSpec()) -> Path:
    """Render the videos and write ``train.json`` / ``val.json`` into ``root``."""
    if spec.image_size % 2:
        raise ValueError(f"image_size must be even for MPEG-4 video, got {spec.image_size}")
    root = Path(root)
    rng = random.Random(spec.seed)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", spec.num_train), ("val", spec.num_val)):
        records = []
        for index in range(count):
            shape, colour, motion = rng.choice(SHAPE_KINDS), rng.choice(COLOURS), rng.choice(MOTIONS)
            frames = moving_shape(shape, colour, motion, spec.image_size, spec.num_frames)
            name = f"{split}_{index}"
            if index % 4 == 3:
                (root / "videos" / name).mkdir(exist_ok=True)
                for k, frame in enumerate(frames):
                    frame.save(root / "videos" / name / f"{k:04d}.png", format="PNG")
            else:
                name += ".mp4"
                write_mp4(root / "videos" / name, frames, spec.fps)
            records.append({"video": name, "instruction": f"{IMAGE_TAG} Where does the shape move?",
                            "output": f"The {colour} {shape} moves from {motion}."})
        (root / f"{split}.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    (root / "manifest.json").write_text(json.dumps({"spec": asdict(spec)}), encoding="utf-8")
    return root


def ensure_video_sample(root: str | Path, spec: VideoSampleSpec = VideoSampleSpec()) -> Path:
    """``root`` holding the data of ``spec``, generated (atomically) when absent."""
    return ensure_generated(root, asdict(spec), lambda folder: write_video_sample(folder, spec))
