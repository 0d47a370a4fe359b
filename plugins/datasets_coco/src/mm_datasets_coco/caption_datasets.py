"""COCO caption datasets in the Karpathy-split layout LAVIS uses.

* train files: one record per caption, ``{"image": "val2014/COCO_val2014_000000522418.jpg",
  "caption": str, "image_id": "coco_522418"}``; a sample is one caption.
* val/test files: one record per image, ``{"image": ..., "caption": [str, ...]}``; a sample is
  one image with every reference caption (``text_references``) for the metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from msgspec import UnsetType

from mm_datasets_coco.column_cache import CachedColumnsMixin
from mm_datasets_coco.compact import Interned, RaggedStrings, StringColumn, all_of_type
from mm_datasets_coco.image_dataset import CompactImageDataset, image_id_from_path
from mm_datasets_coco.json_columns import MISSING, DecodedColumnsMixin, field_columns


class CaptionDataset(CachedColumnsMixin, DecodedColumnsMixin, CompactImageDataset):
    """Training split: ``{"image", "text_input", "image_id", "instance_id"}`` per caption.

    ``image_id`` is the image's position among the split's distinct ``image_id`` values (as in
    LAVIS), so it batches as a tensor. ``annotation_cache`` (keyword): see
    :class:`~mm_datasets_coco.column_cache.CachedColumnsMixin`.
    """

    _cached_columns = {"_images": Interned, "_captions": StringColumn, "_image_ids": Interned}
    _record_fields = {"image": str, "caption": str, "image_id": str | int | UnsetType}

    def _load_records(self, records: list[dict]) -> None:
        columns = field_columns(records, self._record_fields)
        if not (all_of_type(columns["image"], str) and all_of_type(columns["caption"], str)):
            # the per-record checks, in file order, raise the first bad record's error
            for i, rec in enumerate(records):
                self.require(rec, "image", i)
                self.require(rec, "caption", i)
        self._load_columns(columns)

    def _load_columns(self, columns: dict[str, list[Any]]) -> None:
        images, image_ids = columns["image"], columns["image_id"]
        if not all_of_type(image_ids, str):  # a record without one stands for its image path (LAVIS)
            image_ids = [image if i is MISSING else str(i) for i, image in zip(image_ids, images)]
        self._images = Interned(images)
        self._captions = StringColumn(columns["caption"])
        self._image_ids = Interned(image_ids)

    def num_records(self) -> int:
        return len(self._captions)

    def record(self, index: int) -> dict:
        return {
            "image": self._images[index],
            "caption": self._captions[index],
            "image_id": self._image_ids[index],
            "instance_id": str(index),
        }

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        image = self.load_image(self._images[index], index)
        if image is None:
            return None
        caption = self._captions[index]
        return {
            "image": image,
            "text_input": self.text_processor(caption) if self.text_processor is not None else caption,
            "image_id": self._image_ids.code(index),
            "instance_id": str(index),
        }


class CaptionEvalDataset(CachedColumnsMixin, DecodedColumnsMixin, CompactImageDataset):
    """Evaluation split: ``{"image", "image_id", "instance_id", "text_references", "image_path"}`` per
    image (``image_path`` relative to the images root, for the saved results).

    ``image_id`` is the number in the image file name (COCO's id), else the record index.
    """

    _cached_columns = {"_images": StringColumn, "_references": RaggedStrings, "_ids": np.ndarray}
    _record_fields = {"image": str, "caption": str | list[str | int]}

    def _load_records(self, records: list[dict]) -> None:
        columns = field_columns(records, self._record_fields)
        if not (all_of_type(columns["image"], str) and set(map(type, columns["caption"])) <= {list, str}):
            for i, rec in enumerate(records):
                self.require(rec, "image", i)
                self.require(rec, "caption", i, (list, str))
        self._load_columns(columns)

    def _load_columns(self, columns: dict[str, list[Any]]) -> None:
        images, captions = columns["image"], columns["caption"]
        references = [[refs] if isinstance(refs, str) else list(map(str, refs)) for refs in captions]
        ids = [image_id_from_path(image, i) for i, image in enumerate(images)]
        self._images = StringColumn(images)
        self._references = RaggedStrings(references)
        self._ids = np.asarray(ids, dtype=np.int64)

    def num_records(self) -> int:
        return len(self._images)

    def record(self, index: int) -> dict:
        return {
            "image": self._images[index],
            "caption": self._references[index],
            "image_id": int(self._ids[index]),
            "instance_id": str(index),
        }

    def references(self, index: int) -> list[str]:
        """The reference captions of record ``index``."""
        return self._references[index]

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        image = self.load_image(self._images[index], index)
        if image is None:
            return None
        return {
            "image": image,
            "image_id": int(self._ids[index]),
            "instance_id": str(index),
            "text_references": self._references[index],
            "image_path": self._images[index],
        }
