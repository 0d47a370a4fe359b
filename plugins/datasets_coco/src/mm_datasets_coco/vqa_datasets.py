"""VQA v2 datasets in LAVIS' layout.

Records: ``{"question_id": int, "question": str, "answer": [str, ...], "image": "train2014/..."}``
(``answer`` is the list of human answers, ten in VQA v2). The eval split's files may also hold
LAVIS' ``answer_list.json`` (a list of candidate strings, for ranking) and the official VQA v2
question / annotation files; when the records carry no answers, the official annotation file
supplies them by ``question_id``, so accuracy is computed from the split's own data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from msgspec import UnsetType

from mm_core.base.dataset import read_json_file
from mm_core.errors import DataError
from mm_datasets_coco.compact import Interned, RaggedStrings, StringColumn
from mm_datasets_coco.image_dataset import CompactImageDataset, _collate_column
from mm_datasets_coco.json_columns import MISSING, DecodedColumnsMixin, field_columns


class _VQARecords(CompactImageDataset):
    """Columns shared by the train and eval splits."""

    def _store(self, records: list[dict], answers: list[list[str]]) -> None:
        for i, rec in enumerate(records):
            self.require(rec, "image", i)
            self.require(rec, "question", i)
        self._store_columns(field_columns(records, ("image", "question", "question_id")), answers)

    def _store_columns(self, columns: dict[str, list[Any]], answers: list[list[str]]) -> None:
        qids = [qid if isinstance(qid, int) else int(qid) if qid is not MISSING and str(qid).isdigit() else i
                for i, qid in enumerate(columns["question_id"])]
        self._images = Interned(columns["image"])
        self._questions = StringColumn(columns["question"])
        self._question_ids = np.asarray(qids, dtype=np.int64)
        self._answers = RaggedStrings(answers)

    def num_records(self) -> int:
        return len(self._questions)

    def record(self, index: int) -> dict:
        return {
            "image": self._images[index],
            "question": self._questions[index],
            "question_id": int(self._question_ids[index]),
            "answer": self._answers[index],
            "instance_id": str(index),
        }

    def _question(self, index: int) -> str:
        question = self._questions[index]
        return self.text_processor(question) if self.text_processor is not None else question


def _answers_of(rec: dict, where: str) -> list[str]:
    answer = rec.get("answer", rec.get("answers"))
    if answer is None:
        return []
    if isinstance(answer, str):
        return [answer]
    if isinstance(answer, list):
        # the official files hold {"answer": str, ...} objects, LAVIS' files plain strings
        return [a["answer"] if isinstance(a, dict) else str(a) for a in answer]
    raise DataError(f"{where}: field 'answer' must be a string or a list, got {type(answer).__name__}")


class VQADataset(DecodedColumnsMixin, _VQARecords):
    """Training split: ``{"image", "text_input", "answers", "weights", "question_id", ...}``.

    Each distinct answer is weighted by the share of annotators who gave it (LAVIS). The
    collater also flattens the answers (``answer``, ``weight``, ``n_answers``, as LAVIS) and
    adds ``text_output``, each question's most frequent answer, for generative training.
    """

    _record_fields = {"image": str, "question": str, "question_id": int | str | UnsetType,
                      "answer": str | list[str] | UnsetType, "answers": str | list[str] | UnsetType}

    def _load_records(self, records: list[dict]) -> None:
        self._store(records, self._training_answers(map(_answers_of, records, map(self.where, range(len(records))))))

    def _load_columns(self, columns: dict[str, list[Any]]) -> None:
        # the decoder took only strings and lists of strings: what _answers_of gives, without the dicts
        given = (b if a is MISSING else a for a, b in zip(columns["answer"], columns["answers"]))
        found = ([] if a is MISSING else [a] if isinstance(a, str) else a for a in given)
        self._store_columns(columns, self._training_answers(found))

    def _training_answers(self, answers: Iterable[list[str]]) -> list[list[str]]:
        listed = []
        for i, found in enumerate(answers):
            if not found:
                raise DataError(f"{self.where(i)}: a training question needs at least one answer")
            listed.append(found)
        return listed

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        image = self.load_image(self._images[index], index)
        if image is None:
            return None
        counts = Counter(self._answers[index])
        total = sum(counts.values())
        ranked = counts.most_common()
        return {
            "image": image,
            "text_input": self._question(index),
            "answers": [a for a, _ in ranked],
            "weights": [n / total for _, n in ranked],
            "question_id": int(self._question_ids[index]),
            "instance_id": str(index),
        }

    def collater(self, samples: list[Any]) -> Any:
        samples = [s for s in samples if s is not None]
        if not samples:
            return {}
        batch = {key: _collate_column([s[key] for s in samples]) for key in ("image", "text_input", "question_id", "instance_id")}
        batch["answer"] = [a for s in samples for a in s["answers"]]
        batch["weight"] = torch.tensor([w for s in samples for w in s["weights"]], dtype=torch.float32)
        batch["n_answers"] = torch.tensor([len(s["answers"]) for s in samples], dtype=torch.long)
        batch["text_output"] = [s["answers"][0] for s in samples]
        return batch


class VQAEvalDataset(_VQARecords):
    """Evaluation split: ``{"image", "text_input", "question_id", "instance_id", "answers", "image_path"}``
    (``image_path`` relative to the images root, for the saved results).

    ``answers`` holds every human answer (possibly empty for a test split without them);
    :attr:`answer_list` the candidates of ``answer_list.json`` when one was given.
    """

    def _load(self, paths: list[Path]) -> None:  # type: ignore[override]
        records: list[dict] = []
        starts = [0]
        self.answer_list: list[str] = []
        official: dict[int, list[str]] = {}
        for path in paths:
            data = read_json_file(path)
            if isinstance(data, list) and all(isinstance(x, str) for x in data):
                self.answer_list.extend(data)
            elif isinstance(data, list):
                records.extend(data)
            elif isinstance(data, dict) and isinstance(data.get("annotations"), list):
                for ann in data["annotations"]:
                    official[int(ann["question_id"])] = _answers_of(ann, str(path))
            elif isinstance(data, dict) and isinstance(data.get("questions"), list):
                pass  # official question file: the records already hold the questions
            else:
                raise DataError(f"{path}: not a VQA record list, answer list or VQA v2 question/annotation file")
            starts.append(len(records))
        self._source_starts = np.asarray(starts, dtype=np.int64)
        answers = []
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise DataError(f"{self.where(i)}: record is a {type(rec).__name__}, expected an object")
            found = _answers_of(rec, self.where(i))
            if not found and "question_id" in rec:
                found = official.get(int(rec["question_id"]), [])
            answers.append(found)
        self._store(records, answers)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        image = self.load_image(self._images[index], index)
        if image is None:
            return None
        return {
            "image": image,
            "text_input": self._question(index),
            "question_id": int(self._question_ids[index]),
            "instance_id": str(index),
            "answers": self._answers[index],
            "image_path": self._images[index],
        }

