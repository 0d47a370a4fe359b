"""Decoding for ``mmrun predict`` in DataLoader workers: each item is an :class:`Item` holding the
processed image, or the reason it could not be read, so one bad file never stops a run."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from mm_core.errors import MMError
from mm_serve.images import IMAGE_ERRORS, open_image
from mm_serve.predict.inputs import Record


@dataclass
class Item:
    """A record with its model input (``pixels``, or a dataset ``sample``) or its ``error``."""

    record: Record
    pixels: Any = None
    sample: dict[str, Any] | None = None
    error: str | None = None


class RecordImages(Dataset):
    """The records' images through the eval ``vis_processor`` (the PIL image when there is none)."""

    def __init__(self, records: list[Record], vis_processor: Any) -> None:
        self.records = records
        self.vis_processor = vis_processor

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Item:
        record = self.records[index]
        try:
            image = open_image(str(record.image))
            return Item(record, self.vis_processor(image) if self.vis_processor is not None else image)
        except IMAGE_ERRORS as exc:
            return Item(record, error=f"cannot read image {record.image}: {type(exc).__name__}: {exc}")


class SplitItems(Dataset):
    """Items of a dataset split, by the records' ids (their indices in the split); an item the
    dataset cannot load (or skips, ``on_bad_sample: skip``) becomes an error item."""

    def __init__(self, dataset: Any, records: list[Record]) -> None:
        self.dataset = dataset
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Item:
        record = self.records[index]
        try:
            sample = self.dataset[int(record.id)]
        except (*IMAGE_ERRORS, MMError) as exc:
            return Item(record, error=f"cannot load sample {record.id}: {type(exc).__name__}: {exc}")
        if sample is None:
            return Item(record, error=f"the dataset skipped sample {record.id} (unreadable; on_bad_sample: skip)")
        path = sample.get("image_path")
        if path is not None and getattr(self.dataset, "vis_root", None) is not None:
            path = str(Path(self.dataset.vis_root) / str(path))
        return Item(replace(record, image=path), sample=sample)


def as_list(items: list[Item]) -> list[Item]:
    """The DataLoader's ``collate_fn``: batches stay lists, so errors travel with the good items."""
    return items
