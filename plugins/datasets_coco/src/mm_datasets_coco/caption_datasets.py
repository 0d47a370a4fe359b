"""COCO caption datasets in the Karpathy-split layout LAVIS uses.

* train files: one record per caption, ``{"image": "val2014/COCO_val2014_000000522418.jpg",
  "caption": str, "image_id": "coco_522418"}``; a sample is one caption.
* val/test files: one record per image, ``{"image": ..., "caption": [str, ...]}``; a sample is
  one image with every reference caption (``text_references``) for the metrics.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any

import numpy as np

from mm_datasets_coco.column_cache import CachedColumnsMixin
from mm_datasets_coco.compact import Interned, RaggedStrings, StringColumn, all_of_type
from mm_datasets_coco.image_dataset import CompactImageDataset, image_id_from_path


def _field(records: list[dict], key: str) -> list[Any]:
    """``rec.get(key)`` of every record, in one C-level pass."""
    return list(map(dict.get, records, repeat(key)))


class CaptionDataset(CachedColumnsMixin, CompactImageDataset):
    """Training split: ``{"image", "text_input", "image_id", "instance_id"}`` per caption.

    ``image_id`` is the image's position among the split's distinct ``image_id`` values (as in
    LAVIS), so it batches as a tensor. ``annotation_cache`` (keyword): see
    :class:`~mm_datasets_coco.column_cache.CachedColumnsMixin`.
    """

    _cached_columns = {"_images": Interned, "_captions": StringColumn, "_image_ids": Interned}

    def _load_records(self, records: list[dict]) -> None:
        images, captions = _field(records, "image"), _field(records, "caption")
        if not (all_of_type(images, str) and all_of_type(captions, str)):
            # the per-record checks, in file order, raise the first bad record's error
            for i, rec in enumerate(records):
                self.require(rec, "image", i)
                self.require(rec, "caption", i)
        image_ids = list(map(dict.get, records, repeat("image_id"), images))
        if not all_of_type(image_ids, str):
            image_ids = list(map(str, image_ids))
        self._images = Interned(images)
        self._captions = StringColumn(captions)
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


class CaptionEvalDataset(CachedColumnsMixin, CompactImageDataset):
    """Evaluation split: ``{"image", "image_id", "instance_id", "text_references", "image_path"}`` per
    image (``image_path`` relative to the images root, for the saved results).

    ``image_id`` is the number in the image file name (COCO's id), else the record index.
    """

    _cached_columns = {"_images": StringColumn, "_references": RaggedStrings, "_ids": np.ndarray}

    def _load_records(self, records: list[dict]) -> None:
        images, captions = _field(records, "image"), _field(records, "caption")
        if not (all_of_type(images, str) and set(map(type, captions)) <= {list, str}):
            for i, rec in enumerate(records):
                self.require(rec, "image", i)
                self.require(rec, "caption", i, (list, str))
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
