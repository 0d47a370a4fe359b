"""AVSD dialogue datasets: DSTC7 dialog files -> one sample per turn (train) or per dialog (eval),
and the collater that puts the video features in front of the dialogue tokens."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from mm_core.base.dataset import BaseDataset, read_json_file
from mm_core.base.llm import IGNORE_INDEX
from mm_core.errors import ConfigError, DataError


def read_dialogs(path: str | Path) -> list[dict[str, Any]]:
    """The ``dialogs`` of a DSTC7 AVSD file, checked: each has an ``image_id`` and at least one
    turn with a question and an answer (errors name the file and the dialog's index)."""
    path = Path(path)
    data = read_json_file(path, what="AVSD annotation file")
    dialogs = data.get("dialogs") if isinstance(data, dict) else None
    if not isinstance(dialogs, list):
        raise DataError(f"{path}: expected an object with a 'dialogs' list (DSTC7 AVSD format)")
    for index, dialog in enumerate(dialogs):
        where = f"{path}: dialog {index}"
        if not isinstance(dialog, dict) or "image_id" not in dialog:
            raise DataError(f"{where} has no 'image_id'", hint="every dialog names its video in 'image_id'")
        turns = dialog.get("dialog")
        if not isinstance(turns, list) or not turns:
            raise DataError(f"{where} (video '{dialog['image_id']}') has no turns",
                            hint="remove the dialog or give it at least one question/answer turn")
        for t, turn in enumerate(turns):
            if not isinstance(turn, dict) or "question" not in turn or "answer" not in turn:
                raise DataError(f"{where} (video '{dialog['image_id']}'), turn {t}: needs 'question' and 'answer'")
    return dialogs


def _sample(dialog: dict[str, Any], turn_index: int) -> dict[str, Any]:
    turns = dialog["dialog"]
    turn = turns[turn_index]
    answers = turn.get("answers")
    references = [str(a) for a in answers] if isinstance(answers, list) and answers else [str(turn["answer"])]
    return {
        "image_id": str(dialog["image_id"]),
        "caption": dialog.get("caption", ""),
        "summary": dialog.get("summary", ""),
        "dialog": turns[:turn_index],
        "question": turn["question"],
        "answer": turn["answer"],
        "references": references,
    }


def turn_samples(dialogs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training samples: every turn, with the turns before it as history."""
    return [_sample(d, i) for d in dialogs for i in range(len(d["dialog"]))]


def last_turn_samples(dialogs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluation samples: the last turn of each dialog, with all its reference answers."""
    return [_sample(d, len(d["dialog"]) - 1) for d in dialogs]


class AVSDDialogueDataset(BaseDataset):
    """Training split: one sample per turn. Items hold the video features, the encoded dialogue
    and ``image_id`` (the video id, as COCO-style evaluation expects) and ``instance_id``."""

    expand: Callable[[Sequence[dict[str, Any]]], list[dict[str, Any]]] = staticmethod(turn_samples)

    def __init__(self, vis_processor: Callable | None = None, text_processor: Callable | None = None,
                 vis_root: str | Path | None = None, ann_paths: Sequence[str | Path] = ()) -> None:
        super().__init__(vis_processor, text_processor, vis_root, ann_paths=())
        for path in ann_paths:
            self.annotation.extend(self.expand(read_dialogs(path)))
        self._add_instance_ids()

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.vis_processor is None or self.text_processor is None:
            raise ConfigError("AVSD dataset needs vis_processor (gpt_video_ft) and text_processor (gpt_dialogue)")
        ann = self.annotation[index]
        video = self.vis_processor(self.vis_root, ann["image_id"])
        dialogue = self.text_processor(ann)
        return {
            "video_fts": video["video_fts"],
            "video_token_type_ids": video["token_type_ids"],
            **dialogue,
            "image_id": ann["image_id"],
            "instance_id": ann["instance_id"],
            "question": ann["question"],
            "references": ann["references"],
        }

    def collater(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        samples = [s for s in samples if s is not None]
        if not samples:
            return {}
        return collate_dialogue(samples, pad_token_id=self.text_processor.pad_token_id)


class AVSDDialogueEvalDataset(AVSDDialogueDataset):
    """Evaluation split: one sample per dialog, its last turn asked, all references kept."""

    expand = staticmethod(last_turn_samples)


def collate_dialogue(samples: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Batch samples as ``[video frames | video padding | dialogue tokens | text padding]``.

    Padding and masks come from the real lengths (a feature value is never taken for padding):

    * ``video_fts`` (B, V, D), zeros after each video's frames; ``video_lengths`` (B,);
    * ``input_ids`` (B, T), ``<pad>`` after each dialogue;
    * ``attention_mask``, ``token_type_ids`` and ``labels`` over the joint (B, V + T) sequence,
      ``labels`` being ``-100`` on video, padding and everything but the answer.
    """
    video = [s["video_fts"] for s in samples]
    video_lengths = torch.tensor([len(v) for v in video], dtype=torch.long)
    text_lengths = torch.tensor([len(s["input_ids"]) for s in samples], dtype=torch.long)
    video_fts = pad_sequence(video, batch_first=True, padding_value=0.0)
    input_ids = pad_sequence([s["input_ids"] for s in samples], batch_first=True, padding_value=pad_token_id)
    v_max, t_max = video_fts.shape[1], input_ids.shape[1]
    video_mask = torch.arange(v_max)[None, :] < video_lengths[:, None]
    text_mask = torch.arange(t_max)[None, :] < text_lengths[:, None]

    video_types = pad_sequence([s["video_token_type_ids"] for s in samples], batch_first=True,
                               padding_value=pad_token_id)
    text_types = pad_sequence([s["token_type_ids"] for s in samples], batch_first=True, padding_value=pad_token_id)
    text_labels = pad_sequence([s["labels"] for s in samples], batch_first=True, padding_value=IGNORE_INDEX)
    video_labels = torch.full((len(samples), v_max), IGNORE_INDEX, dtype=torch.long)
    return {
        "video_fts": video_fts,
        "video_lengths": video_lengths,
        "input_ids": input_ids,
        "attention_mask": torch.cat([video_mask, text_mask], dim=1).long(),
        "token_type_ids": torch.cat([video_types, text_types], dim=1),
        "labels": torch.cat([video_labels, text_labels], dim=1),
        "image_id": [s["image_id"] for s in samples],
        "instance_id": [s["instance_id"] for s in samples],
        "question": [s["question"] for s in samples],
        "references": [s["references"] for s in samples],
    }
