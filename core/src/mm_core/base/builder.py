"""BaseDatasetBuilder: from a ``datasets.<name>`` config block to dataset splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from omegaconf import DictConfig, ListConfig

from mm_core.base.dataset import BaseDataset
from mm_core.download import cache_root, ensure_file, resolve_storage
from mm_core.errors import ConfigError, DataError

DATA_TYPES = ("images", "videos", "features")


class BaseDatasetBuilder:
    """Builds the splits of one dataset (LAVIS semantics; the ``datasets.<name>`` block's layout:
    docs/plugins.md). Splits named ``train*`` use ``train_dataset_cls`` and the train processors."""

    train_dataset_cls: ClassVar[type[BaseDataset] | None] = None
    eval_dataset_cls: ClassVar[type[BaseDataset] | None] = None

    def __init__(self, cfg: DictConfig | None = None, cache_dir: str | Path | None = None):
        if cfg is None:
            from mm_core.config.loader import load_dataset_defaults

            cfg = load_dataset_defaults(self.registered_name())
        self.config = cfg
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
        self.data_type = str(cfg.get("data_type", "images"))
        if self.data_type not in DATA_TYPES:
            raise ConfigError(f"data_type '{self.data_type}' is not one of {', '.join(DATA_TYPES)}")

    @classmethod
    def registered_name(cls) -> str:
        """The name this builder is registered under."""
        from mm_core.registry import get_registry

        return get_registry().name_of("datasets", cls)

    @classmethod
    def default_config_path(cls, type: str = "default") -> Path:
        from mm_core.config.loader import dataset_default_path

        return Path(str(dataset_default_path(cls.registered_name(), type)))

    # -- the steps -------------------------------------------------------------------
    def build_datasets(self) -> dict[str, BaseDataset]:
        """Download what is missing (annotations with checksums), then build every split."""
        self.download()
        return self.build()

    def download(self) -> None:
        """Fetch annotation files that are not present; present files are used as they are."""
        for split, info in self._annotation_info().items():
            for url, storage, md5 in _files_of(info, split):
                ensure_file(url, resolve_storage(storage, self.cache_dir), md5)

    def build_processors(self) -> dict[str, dict[str, Any]]:
        """``{"vis": {"train": p, "eval": p}, "text": {...}}`` from the config's processor blocks."""
        from mm_core.api import load_preprocess

        vis, text = load_preprocess(self.config)
        return {"vis": vis, "text": text}

    def media_root(self) -> Path | None:
        """Root of images/videos/features, or ``None`` when the config names none."""
        info = (self.config.get("build_info") or {}).get(self.data_type)
        if not info or not info.get("storage"):
            return None
        return resolve_storage(str(info.storage), self.cache_dir)

    def build(self) -> dict[str, BaseDataset]:
        processors = self.build_processors()
        root = self.media_root()
        if root is not None and not root.exists():
            raise DataError(f"{self.data_type} for dataset '{self._name()}' were expected under {root}, which does not exist",
                            hint=f"see the dataset card (`mmrun info {self._name()}`) for how to obtain them, "
                            f"or set datasets.{self._name()}.build_info.{self.data_type}.storage")
        datasets = {}
        for split, info in self._annotation_info().items():
            is_train = split.startswith("train")
            cls = self.train_dataset_cls if is_train else self.eval_dataset_cls
            if cls is None:
                raise ConfigError(f"dataset builder {type(self).__name__} has no dataset class for split '{split}'")
            stage = "train" if is_train else "eval"
            ann_paths = [resolve_storage(s, self.cache_dir) for _, s, _ in _files_of(info, split)]
            datasets[split] = self.make_dataset(cls, processors["vis"][stage], processors["text"][stage], root, ann_paths, split)
        return datasets

    def make_dataset(self, cls: type[BaseDataset], vis_processor: Any, text_processor: Any,
                     root: Path | None, ann_paths: list[Path], split: str) -> BaseDataset:
        """Instantiate one split; override to pass extra arguments."""
        return cls(vis_processor=vis_processor, text_processor=text_processor, vis_root=root, ann_paths=ann_paths)

    # -- helpers ---------------------------------------------------------------------
    def _annotation_info(self) -> dict[str, Any]:
        where = f"datasets.{self._name()}.build_info.annotations"
        annotations = (self.config.get("build_info") or {}).get("annotations")
        if not annotations or not hasattr(annotations, "items"):
            raise ConfigError(f"{where} is missing, empty or not a mapping of split -> files")
        for split, info in annotations.items():
            if not hasattr(info, "get"):
                raise ConfigError(f"{where}.{split} is {info!r}, not a block with storage (url, md5)",
                                  hint=f"give {where}.{split}.storage, or remove the split")
        return dict(annotations.items())

    def _name(self) -> str:
        try:
            return self.registered_name()
        except ConfigError:
            return type(self).__name__


def _files_of(info: Any, split: str) -> list[tuple[str | None, str, str | None]]:
    def as_list(value: Any) -> list:
        if value is None:
            return []
        if isinstance(value, (list, tuple, ListConfig)):
            return list(value)
        return [value]

    storages = as_list(info.get("storage"))
    if not storages:
        raise ConfigError(f"build_info.annotations.{split}.storage is missing")
    urls = as_list(info.get("url")) or [None] * len(storages)
    md5s = as_list(info.get("md5")) or [None] * len(storages)
    if not (len(urls) == len(storages) == len(md5s)):
        raise ConfigError(f"build_info.annotations.{split}: url, storage and md5 lists differ in length")
    return [(u, str(s), m) for u, s, m in zip(urls, storages, md5s)]
