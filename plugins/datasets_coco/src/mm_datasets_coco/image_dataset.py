"""What the COCO datasets share: compact records read from JSON files, and image loading that
names the file and annotation at fault (or skips and counts bad samples when asked)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mm_core.base.dataset import BaseDataset, load_annotation_file, resolve_inside
from mm_core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

BAD_SAMPLE_POLICIES = ("error", "skip")


class AnnotationView(Sequence[dict]):
    """``dataset.annotation`` as BaseDataset's API has it, built one record at a time."""

    def __init__(self, dataset: CompactImageDataset) -> None:
        self._dataset = dataset

    def __len__(self) -> int:
        return self._dataset.num_records()

    def __getitem__(self, index: int) -> dict:  # type: ignore[override]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._dataset.record(index)

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(len(self)))


class CompactImageDataset(BaseDataset):
    """A :class:`BaseDataset` whose annotations live in numpy columns (see :mod:`.compact`).

    Subclasses implement :meth:`_load_records` (JSON records -> columns), :meth:`num_records`,
    :meth:`record` (one record as a dict) and ``__getitem__``. ``on_bad_sample`` is ``"error"``
    (a missing or unreadable image raises :class:`DataError` naming the image file, the
    annotation file and the record's index in it) or ``"skip"`` (the sample becomes ``None``,
    which :meth:`collater` drops, and :attr:`skipped` counts it in this process). An image path
    that leaves the images root is always an error.
    """

    def __init__(
        self,
        vis_processor: Callable | None = None,
        text_processor: Callable | None = None,
        vis_root: str | Path | None = None,
        ann_paths: Sequence[str | Path] = (),
        on_bad_sample: str = "error",
    ) -> None:
        if on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise ConfigError(
                f"on_bad_sample must be one of {', '.join(BAD_SAMPLE_POLICIES)}, got {on_bad_sample!r}"
            )
        self.on_bad_sample = on_bad_sample
        self.skipped = 0
        self.ann_paths = [Path(p) for p in ann_paths]
        self._source_starts = np.zeros(1, dtype=np.int64)
        self._load(self.ann_paths)
        super().__init__(vis_processor, text_processor, vis_root, ann_paths=())

    # -- BaseDataset API -------------------------------------------------------------
    @property
    def annotation(self) -> AnnotationView:  # type: ignore[override]
        return AnnotationView(self)

    @annotation.setter
    def annotation(self, value: Any) -> None:
        # BaseDataset.__init__ assigns an empty list; the records live in the columns instead.
        if len(value):
            raise AttributeError("annotations of a compact dataset are read from ann_paths")

    def _add_instance_ids(self, key: str = "instance_id") -> None:
        """Instance ids are the record indices, computed on access (nothing to store)."""

    def __len__(self) -> int:
        return self.num_records()

    def num_records(self) -> int:
        raise NotImplementedError

    def record(self, index: int) -> dict:
        raise NotImplementedError

    # -- loading ---------------------------------------------------------------------
    def _load(self, paths: Sequence[Path]) -> None:
        records: list[dict] = []
        starts = [0]
        for path in paths:
            loaded = self._read_file(path)
            for i, rec in enumerate(loaded):
                if not isinstance(rec, dict):
                    raise DataError(f"{path}: record {i} is a {type(rec).__name__}, expected an object")
            records.extend(loaded)
            starts.append(len(records))
        self._source_starts = np.asarray(starts, dtype=np.int64)
        self._load_records(records)

    def _read_file(self, path: Path) -> list[Any]:
        """The records of one annotation file (override for files of another shape)."""
        return load_annotation_file(path)

    def _load_records(self, records: list[dict]) -> None:
        raise NotImplementedError

    def source_of(self, record_index: int) -> tuple[Path | None, int]:
        """The annotation file a record came from and its index in that file."""
        if not self.ann_paths:
            return None, record_index
        file_index = int(np.searchsorted(self._source_starts, record_index, side="right")) - 1
        file_index = min(max(file_index, 0), len(self.ann_paths) - 1)
        return self.ann_paths[file_index], record_index - int(self._source_starts[file_index])

    def where(self, record_index: int) -> str:
        path, local = self.source_of(record_index)
        return f"annotation {local} of {path}" if path is not None else f"annotation {record_index}"

    def require(self, rec: dict, key: str, index: int, types: tuple[type, ...] = (str,)) -> Any:
        """``rec[key]``, or a DataError naming the file and record when absent or mistyped."""
        value = rec.get(key)
        if value is None or not isinstance(value, types):
            raise DataError(
                f"{self.where(index)}: field '{key}' is "
                + ("missing" if value is None else f"a {type(value).__name__}, expected {types[0].__name__}"),
                hint="is this file in the expected (LAVIS) layout? see the dataset card",
            )
        return value

    # -- images ----------------------------------------------------------------------
    def load_image(self, relative: str, record_index: int) -> Any:
        """The processed image of a record; ``None`` when it is bad and the policy is ``skip``."""
        if self.vis_root is None:
            raise DataError("this dataset has no images root (build_info.images.storage)")
        # A path escaping the root is always an error, whatever on_bad_sample says.
        path = resolve_inside(self.vis_root, relative, what=self.where(record_index))
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")  # forces a full decode, so truncation shows here
        except (FileNotFoundError, IsADirectoryError):
            return self._bad_sample(record_index, path, "image not found")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            return self._bad_sample(record_index, path, f"image unreadable ({exc})")
        except Image.DecompressionBombError as exc:  # not an OSError: Pillow's guard against huge images
            return self._bad_sample(record_index, path, f"image refused by Pillow's decompression-bomb guard ({exc})")
        return self.vis_processor(image) if self.vis_processor is not None else pil_to_float_tensor(image)

    def _bad_sample(self, record_index: int, path: Path, problem: str) -> None:
        message = f"{problem}: {path} ({self.where(record_index)})"
        if self.on_bad_sample == "error":
            raise DataError(
                message,
                hint="fix or remove the file, or set on_bad_sample: skip in the dataset's config to skip "
                "such samples (they are counted and logged)",
            )
        self.skipped += 1
        log.warning("skipping sample %d (%d skipped so far in this process): %s", record_index, self.skipped, message)
        return None

    def collater(self, samples: list[Any]) -> Any:
        """Drop skipped samples; stack tensors and numbers, keep strings and lists as lists."""
        samples = [s for s in samples if s is not None]
        if not samples:
            return {}
        batch: dict[str, Any] = {}
        for key in samples[0]:
            values = [s[key] for s in samples]
            batch[key] = _collate_column(values)
        return batch


def _collate_column(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(values)
    if isinstance(first, bool):
        return values
    if isinstance(first, int):
        return torch.tensor(values, dtype=torch.long)
    if isinstance(first, float):
        return torch.tensor(values, dtype=torch.float32)
    return values


def pil_to_float_tensor(image: Image.Image) -> torch.Tensor:
    """A ``(3, H, W)`` float tensor in [0, 1]: the image when no vis_processor is configured."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def image_id_from_path(relative: str, fallback: int) -> int:
    """The number at the end of an image file name (``COCO_val2014_000000522418.jpg`` -> 522418)."""
    stem = Path(relative).stem
    digits = ""
    for ch in reversed(stem):
        if not ch.isdigit():
            break
        digits = ch + digits
    return int(digits) if digits else fallback
