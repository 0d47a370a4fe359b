"""Image instruction data: MiniGPT4-Qwen's JSON and LLaVA's ``conversations``, as conversations.

Accepted records (one JSON list per annotation file)::

    {"image": "2461.jpg", "instruction": "<Img><ImageHere></Img> Describe ...", "output": "It shows ..."}
    {"image": "a.jpg", "instruction": ["<ImageHere> Q1", "Q2"], "output": ["A1", "A2"]}      # multi-turn
    {"image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\\nQ"}, {"from": "gpt", "value": "A"}]}

``image`` may also be a list (several images, or the frames of a video); each image needs one
``<ImageHere>`` mark in the user turns (LLaVA's ``<image>`` counts as one). A record with one
image and no mark gets ``<Img><ImageHere></Img>`` before its first question.

A sample is ``{"image": tensor (N, C, H, W), "conversations": [{"from", "value"}], ...}``; the
collater batches ``image`` as BLIP-2 -> LLM models take it ((B, C, H, W) for one image per
sample, else a list of (N, C, H, W)) and keeps the conversations as lists.

Bad records (no image, unequal instruction/output lists, empty text, an image file that does
not exist, marks that do not match the images) raise a :class:`DataError` naming the file and
index, or, with ``skip_bad_records: true`` in the dataset's config, are skipped and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from PIL import Image

from mm_core.base.builder import BaseDatasetBuilder
from mm_core.base.dataset import BaseDataset, load_annotation_file, resolve_inside
from mm_core.base.llm import IMAGE_MARK
from mm_core.download import resolve_storage
from mm_core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

LLAVA_IMAGE_MARK = "<image>"
IMAGE_TAG = f"<Img>{IMAGE_MARK}</Img>"
USER_ROLES = ("user", "human")
#: For :meth:`InstructionDataset.sample_lengths`: ~characters per BPE token of English text,
#: and tokens per image (MiniGPT4-Qwen's num_query_token).
CHARS_PER_TOKEN = 4
TOKENS_PER_IMAGE = 32


@dataclass
class SkippedRecords:
    """Records left out of a split, with the first reasons (for the log and for tests)."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(reason)


class InstructionDataset(BaseDataset):
    """Image-grounded conversations from instruction records (see the module docstring)."""

    def __init__(
        self,
        vis_processor: Callable | None = None,
        text_processor: Callable | None = None,
        vis_root: str | Path | None = None,
        ann_paths: Sequence[str | Path] = (),
        skip_bad_records: bool = False,
    ) -> None:
        super().__init__(vis_processor, text_processor, vis_root, ann_paths=())
        self.skipped = SkippedRecords()
        for path in ann_paths:
            for index, record in enumerate(load_annotation_file(path)):
                where = f"{path}: record {index}"
                try:
                    self.annotation.append(self.parse_record(record, where))
                except DataError as exc:
                    if not skip_bad_records:
                        raise
                    self.skipped.add(exc.message)
        if self.skipped.count:
            log.warning("skipped %d bad instruction records, e.g. %s", self.skipped.count,
                        "; ".join(self.skipped.examples))
        self._add_instance_ids()

    # -- records -----------------------------------------------------------------------------
    def parse_record(self, record: Any, where: str) -> dict[str, Any]:
        """``{"images": [paths], "conversations": [...], "where": ...}`` from a raw record."""
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected an object, found {type(record).__name__}")
        images = record.get("image", record.get("images"))
        if isinstance(images, str):
            images = [images]
        if not images or not all(isinstance(i, str) and i for i in images):
            raise DataError(f"{where}: no 'image'", hint="every instruction record names its image file(s)")
        turns = _conversation_of(record, where)
        turns = _with_image_marks(turns, len(images), where)
        for image in images:
            if self.vis_root is not None and not resolve_inside(self.vis_root, image, what=where).is_file():
                raise DataError(f"{where}: image '{image}' not found under {self.vis_root}")
        return {"images": list(images), "conversations": turns, "where": where}

    def sample_lengths(self) -> list[int]:
        """Approximate token count of every sample, from the annotation text alone (no
        tokenizer, no image read): characters / :data:`CHARS_PER_TOKEN` plus
        :data:`TOKENS_PER_IMAGE` per image. The engine's ``run.group_by_length`` orders samples
        by it; only the order matters, so an estimate suffices."""
        return [sum(len(t["value"]) for t in ann["conversations"]) // CHARS_PER_TOKEN
                + TOKENS_PER_IMAGE * len(ann["images"]) for ann in self.annotation]

    def __getitem__(self, index: int) -> dict[str, Any]:
        ann = self.annotation[index]
        images = [self._load_image(path, ann["where"]) for path in ann["images"]]
        turns = [
            {"from": t["from"], "value": self.text_processor(t["value"]) if self.text_processor and t["from"] == "user"
             else t["value"]}
            for t in ann["conversations"]
        ]
        image = torch.stack(images) if images and isinstance(images[0], torch.Tensor) else images
        return {"image": image, "conversations": turns, "instance_id": ann["instance_id"]}

    def _load_image(self, relative: str, where: str) -> Any:
        path = resolve_inside(self.vis_root, relative, what=where) if self.vis_root is not None else Path(relative)
        try:
            image = Image.open(path).convert("RGB")
        except (OSError, Image.DecompressionBombError) as exc:  # the bomb guard's error is no OSError
            raise DataError(f"{where}: cannot read image {path}: {exc}") from exc
        return self.vis_processor(image) if self.vis_processor is not None else image

    def collater(self, samples: list[Any]) -> dict[str, Any]:
        """``image`` (B, C, H, W) when every sample has one image, else a list of per-sample
        (N, C, H, W) tensors; ``conversations`` as lists (the model tokenises them)."""
        samples = [s for s in samples if s is not None]
        if not samples:
            return {}
        images = [s["image"] for s in samples]
        single = all(isinstance(i, torch.Tensor) and i.shape[0] == 1 for i in images)
        return {
            "image": torch.cat(images) if single else images,
            "conversations": [s["conversations"] for s in samples],
            "instance_id": [s["instance_id"] for s in samples],
        }


def _conversation_of(record: dict[str, Any], where: str) -> list[dict[str, str]]:
    """User/assistant turns of a MiniGPT4-Qwen or LLaVA record."""
    if "conversations" in record:
        turns = []
        for k, turn in enumerate(record["conversations"] or []):
            speaker = str(turn.get("from", "")).lower() if isinstance(turn, dict) else ""
            if speaker not in ("human", "user", "gpt", "assistant"):
                raise DataError(f"{where}: conversation turn {k} has speaker {speaker!r}",
                                hint="LLaVA turns use from: human | gpt")
            role = "user" if speaker in USER_ROLES else "assistant"
            turns.append({"from": role, "value": _text(turn.get("value"), where, f"conversations[{k}]")})
    else:
        if "instruction" not in record or "output" not in record:
            raise DataError(f"{where}: needs 'instruction' and 'output' (or LLaVA 'conversations')")
        questions, answers = record["instruction"], record["output"]
        if isinstance(questions, str) != isinstance(answers, str):
            raise DataError(f"{where}: 'instruction' and 'output' must both be strings or both lists")
        if isinstance(questions, str):
            questions, answers = [questions], [answers]
        if len(questions) != len(answers):
            raise DataError(f"{where}: {len(questions)} instructions but {len(answers)} outputs",
                            hint="multi-turn records pair each instruction with one output")
        turns = []
        for k, (q, a) in enumerate(zip(questions, answers)):
            turns += [{"from": "user", "value": _text(q, where, f"instruction[{k}]")},
                      {"from": "assistant", "value": _text(a, where, f"output[{k}]")}]
    if not any(t["from"] == "assistant" for t in turns):
        raise DataError(f"{where}: no assistant answer to learn from")
    return turns


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: {key} is empty or not text")
    return value


def _with_image_marks(turns: list[dict[str, str]], num_images: int, where: str) -> list[dict[str, str]]:
    """LLaVA's ``<image>`` as MiniGPT-4's tag; one mark per image, added when a lone image has none."""
    for turn in turns:
        if turn["from"] == "user":
            turn["value"] = turn["value"].replace(LLAVA_IMAGE_MARK, IMAGE_TAG)
    marks = sum(t["value"].count(IMAGE_MARK) for t in turns if t["from"] == "user")
    if marks == 0 and num_images == 1:
        first_user = next((t for t in turns if t["from"] == "user"), None)
        if first_user is None:
            raise DataError(f"{where}: no user turn to attach the image to")
        first_user["value"] = f"{IMAGE_TAG} {first_user['value']}"
        marks = 1
    if marks != num_images:
        raise DataError(f"{where}: {num_images} image(s) but {marks} '{IMAGE_MARK}' mark(s) in the user turns",
                        hint="put one mark where each image goes")
    return turns


class InstructionBuilder(BaseDatasetBuilder):
    """``minigpt4_instruction``: MiniGPT4-Qwen's instruction JSON (also LLaVA records).

    ``build_info.generate`` (``{root, seed, num_train, num_val, image_size}``) renders the
    offline sample data of :mod:`mm_qwen_llm.sample_data` into ``root`` (relative: under the
    cache root) when it is absent; the ``shapes`` config type uses it.
    """

    train_dataset_cls = InstructionDataset
    eval_dataset_cls = InstructionDataset

    def download(self) -> None:
        spec = OmegaConf.select(self.config, "build_info.generate")
        if spec:
            from mm_qwen_llm.sample_data import InstructionSampleSpec, ensure_instruction_sample

            options = dict(OmegaConf.to_container(spec, resolve=True))
            root = resolve_storage(str(options.pop("root", "minigpt4qwen_sample")), self.cache_dir)
            layout = str(options.pop("layout", "minigpt4qwen"))
            try:
                ensure_instruction_sample(root, InstructionSampleSpec(**options), layout)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"datasets.{self._name()}.build_info.generate: {exc}",
                                  hint="options: root, seed, num_train, num_val, image_size, layout") from exc
        super().download()

    def make_dataset(self, cls, vis_processor, text_processor, root, ann_paths, split):  # noqa: ANN001
        return cls(vis_processor=vis_processor, text_processor=text_processor, vis_root=root,
                   ann_paths=ann_paths, skip_bad_records=bool(self.config.get("skip_bad_records", False)))


class LlavaInstructionBuilder(InstructionBuilder):
    """``llava_instruction``: LLaVA-Instruct in MiniGPT4-Qwen's format or LLaVA's own."""
