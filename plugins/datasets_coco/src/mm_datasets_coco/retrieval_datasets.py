"""Retrieval evaluation splits in LAVIS' layout (the Karpathy / Flickr30k val and test files).

A file holds one record per image, ``{"image": path, "caption": [str, ...]}``. The split exposes
LAVIS' attributes: ``text`` (every caption, processed, in file order), ``image`` (the image
paths), ``txt2img`` (text index -> image index) and ``img2txt`` (image index -> its text
indices); a sample is one image, ``{"image", "index", "image_path"}``. Training splits are
:class:`~mm_datasets_coco.caption_datasets.CaptionDataset` (one sample per caption, ``image_id``
the image's index among the split's distinct images, as LAVIS' ``RetrievalDataset``).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from mm_datasets_coco.caption_datasets import CaptionEvalDataset


class RetrievalEvalDataset(CaptionEvalDataset):
    """Evaluation split of a retrieval dataset: images to encode, and every caption as a query."""

    @cached_property
    def text(self) -> list[str]:
        """Every caption of the split, image by image, through the eval text processor."""
        process = self.text_processor if self.text_processor is not None else str
        return [process(caption) for index in range(self.num_records()) for caption in self.references(index)]

    @property
    def image(self) -> list[str]:
        """The image paths, relative to the images root."""
        return [self._images[i] for i in range(self.num_records())]

    @cached_property
    def img2txt(self) -> dict[int, list[int]]:
        """Image index -> the indices in :attr:`text` of its captions."""
        mapping, next_text = {}, 0
        for index in range(self.num_records()):
            count = len(self.references(index))
            mapping[index] = list(range(next_text, next_text + count))
            next_text += count
        return mapping

    @cached_property
    def txt2img(self) -> dict[int, int]:
        """Text index -> the index of the image it describes."""
        return {text: image for image, texts in self.img2txt.items() for text in texts}

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        image = self.load_image(self._images[index], index)
        if image is None:
            return None
        return {"image": image, "index": index, "image_path": self._images[index]}
