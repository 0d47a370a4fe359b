"""Small AVSD-format data for tests, the tiny example and trying the plugin without the real set.

The layout is the real one (DSTC7 AVSD):

    <root>/annotations/{train,val,test}.json   {"dialogs": [{"image_id", "caption", "summary",
                                                              "dialog": [{"question", "answer"}, ...]}]}
    <root>/features/<feature>/<video_id>.npy   float32 (frames, dim) for i3d_flow, i3d_rgb, vggish

Dialogs are made from templates so that answers follow from the question and the caption (a model
can learn them); features are seeded Gaussian noise whose number of frames differs per video and
per feature type (the processor truncates to the shortest). The test split carries six reference
answers on its last turn (``"answers"``), like the official DSTC7 test set.

``mmrun make-avsd OUT_DIR`` writes it from the command line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

#: Feature types of AVSD and their sizes (I3D flow and RGB: 2048 each, VGGish audio: 128).
FEATURE_DIMS: dict[str, int] = {"i3d_flow": 2048, "i3d_rgb": 2048, "vggish": 128}

DEFAULT_VIDEOS: dict[str, int] = {"train": 8, "val": 3, "test": 3}

ACTIONS = (("opens", "opening"), ("closes", "closing"), ("picks up", "picking up"), ("holds", "holding"),
           ("cleans", "cleaning"), ("carries", "carrying"), ("puts down", "putting down"), ("looks at", "looking at"))
OBJECTS = ("door", "book", "cup", "laptop", "towel", "box", "phone", "blanket", "bag", "window")
ROOMS = ("kitchen", "bedroom", "living room", "bathroom", "hallway", "garage")
COLORS = ("red", "blue", "white", "black", "green", "brown")
SOUNDS = ("music", "a dog barking", "people talking", "a television", "footsteps", "nothing")
PEOPLE = (("one person", "a man"), ("one person", "a woman"), ("two people", "two people"))

#: Question templates and several phrasings of the answer (the test split keeps them all).
QA_TEMPLATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("what is the person doing ?",
     ("the person is {acting} a {object}", "{who} is {acting} the {object}", "they are {acting} a {object}")),
    ("where does the video take place ?",
     ("it takes place in the {room}", "in a {room}", "the video is in the {room}")),
    ("how many people are in the video ?",
     ("there is {count} in the video", "i see {who} only", "{count} , {who}")),
    ("what color is the {object} ?",
     ("the {object} is {color}", "it is {color}", "it looks {color} to me")),
    ("is there any sound ?",
     ("yes , i can hear {sound}", "you can hear {sound}", "there is {sound} in the background")),
    ("what happens at the end ?",
     ("the person {acts} the {object} and leaves", "they {acts} the {object} then walk away",
      "{who} {acts} the {object} at the end")),
)

NUM_TEST_REFERENCES = 6


def _video_facts(rng: np.random.Generator) -> dict[str, str]:
    acts, acting = ACTIONS[rng.integers(len(ACTIONS))]
    count, who = PEOPLE[rng.integers(len(PEOPLE))]
    return {"acts": acts, "acting": acting, "object": OBJECTS[rng.integers(len(OBJECTS))],
            "room": ROOMS[rng.integers(len(ROOMS))], "color": COLORS[rng.integers(len(COLORS))],
            "sound": SOUNDS[rng.integers(len(SOUNDS))], "count": count, "who": who}


def _dialog(rng: np.random.Generator, video_id: str, num_turns: int, references: int) -> dict:
    facts = _video_facts(rng)
    order = rng.permutation(len(QA_TEMPLATES))[:num_turns]
    turns = []
    for index in order:
        question, answers = QA_TEMPLATES[index]
        filled = [a.format(**facts) for a in answers]
        turns.append({"question": question.format(**facts), "answer": filled[0]})
    if references > 1:
        # the last turn of an evaluation dialog holds every reference answer (official test format)
        _, answers = QA_TEMPLATES[order[-1]]
        filled = [a.format(**facts) for a in answers]
        turns[-1]["answers"] = [filled[i % len(filled)] for i in range(references)]
    return {
        "image_id": video_id,
        "caption": f"{facts['who']} {facts['acts']} a {facts['object']} in the {facts['room']} .",
        "summary": f"the person {facts['acts']} the {facts['object']} while {facts['sound']} plays .",
        "dialog": turns,
    }


def _write_features(rng: np.random.Generator, feature_root: Path, video_id: str,
                    frames: tuple[int, int], feature_dims: Mapping[str, int]) -> None:
    base = int(rng.integers(frames[0], frames[1] + 1))
    for name, dim in feature_dims.items():
        # feature extractors sample audio and video at different rates: lengths differ per type
        length = max(1, base + int(rng.integers(-2, 3)))
        folder = feature_root / name
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{video_id}.npy", rng.standard_normal((length, dim)).astype(np.float32))


def write_sample_dataset(
    annotation_paths: Mapping[str, str | Path],
    feature_root: str | Path,
    seed: int = 0,
    videos: Mapping[str, int] | None = None,
    turns: tuple[int, int] = (3, 5),
    frames: tuple[int, int] = (4, 10),
    feature_dims: Mapping[str, int] | None = None,
) -> dict[str, Path]:
    """Write seeded AVSD-format dialogs to ``annotation_paths[split]`` and their features under
    ``feature_root``; returns the annotation paths. Splits not starting with ``train`` get
    :data:`NUM_TEST_REFERENCES` references on their last turn when named ``test``."""
    rng = np.random.default_rng(seed)
    feature_root = Path(feature_root)
    dims = dict(feature_dims or FEATURE_DIMS)
    counts = dict(videos or DEFAULT_VIDEOS)
    written = {}
    for split, path in annotation_paths.items():
        references = NUM_TEST_REFERENCES if split.startswith("test") else 1
        dialogs = []
        for i in range(counts.get(split, counts.get("val", 3))):
            video_id = f"{split[:2].upper()}{i:03d}{''.join(chr(65 + int(c)) for c in rng.integers(0, 26, 2))}"
            num_turns = int(rng.integers(turns[0], turns[1] + 1))
            dialogs.append(_dialog(rng, video_id, min(num_turns, len(QA_TEMPLATES)), references))
            _write_features(rng, feature_root, video_id, frames, dims)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"dialogs": dialogs}, indent=1), encoding="utf-8")
        written[split] = path
    return written


def make_sample_data(out_dir: str | Path, seed: int = 0, videos: Mapping[str, int] | None = None,
                     feature_dims: Mapping[str, int] | None = None) -> Path:
    """The standard layout under ``out_dir`` (``annotations/`` and ``features/``); returns ``out_dir``."""
    out = Path(out_dir)
    splits = dict(videos or DEFAULT_VIDEOS)
    write_sample_dataset({s: out / "annotations" / f"{s}.json" for s in splits}, out / "features",
                         seed=seed, videos=splits, feature_dims=feature_dims)
    return out


def corpus_lines() -> list[str]:
    """Every distinct sentence the templates can produce, in a fixed order (the tiny tokenizer's
    corpus)."""
    lines = []
    for acts, acting in ACTIONS:
        for obj in OBJECTS:
            for count, who in PEOPLE:
                facts = {"acts": acts, "acting": acting, "object": obj, "who": who, "count": count}
                for room, color, sound in zip(ROOMS, COLORS, SOUNDS):
                    facts.update(room=room, color=color, sound=sound)
                    for question, answers in QA_TEMPLATES:
                        lines.append(question.format(**facts))
                        lines.extend(a.format(**facts) for a in answers)
                    lines.append(f"{who} {acts} a {obj} in the {room} .")
                    lines.append(f"the person {acts} the {obj} while {sound} plays .")
    return list(dict.fromkeys(lines))  # first occurrences, in order


def main(argv: Sequence[str]) -> int:
    """``mmrun make-avsd OUT_DIR``: write the sample AVSD data and print how to use it."""
    from mm_core.cli.main import command_parser

    parser = command_parser("make-avsd", "Write small seeded AVSD-format data (dialogs + .npy features).")
    parser.add_argument("out_dir", help="folder to write annotations/ and features/ into")
    parser.add_argument("--seed", type=int, default=0)
    for split, n in DEFAULT_VIDEOS.items():
        parser.add_argument(f"--{split}-videos", type=int, default=n, help=f"videos in {split} (default {n})")
    args = parser.parse_args(list(argv))
    videos = {s: getattr(args, f"{s}_videos") for s in DEFAULT_VIDEOS}
    out = make_sample_data(args.out_dir, seed=args.seed, videos=videos).resolve()
    print(f"wrote AVSD sample data to {out}")
    options = [f"datasets.avsd_dialogue.build_info.annotations.{s}.storage={out}/annotations/{s}.json"
               for s in DEFAULT_VIDEOS]
    options.append(f"datasets.avsd_dialogue.build_info.features.storage={out}/features")
    print("use it with:\n  mmrun --config RUN.yaml --options " + " ".join(options))
    return 0
