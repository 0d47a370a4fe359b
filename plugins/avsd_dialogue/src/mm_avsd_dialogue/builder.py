"""The ``avsd_dialogue`` builder: DSTC7 AVSD dialogs + pre-extracted video features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mm_avsd_dialogue.dataset import AVSDDialogueDataset, AVSDDialogueEvalDataset
from mm_core.base.builder import BaseDatasetBuilder, _files_of
from mm_core.base.dataset import BaseDataset
from mm_core.download import resolve_storage
from mm_core.errors import ConfigError, DataError


class AVSDDialogueBuilder(BaseDatasetBuilder):
    """Splits of AVSD: ``train*`` one sample per turn, the others one per dialog (last turn).

    Nothing is downloaded (the data is distributed by the DSTC7 organisers; see the dataset
    card). With a ``sample_data`` block (``{seed: 0}``, optionally ``videos: {train: 8, ...}``),
    missing annotation files and features are generated with
    :func:`mm_avsd_dialogue.sample_data.write_sample_dataset` instead — the tiny config type uses
    this so that the example runs on a fresh machine.
    """

    train_dataset_cls = AVSDDialogueDataset
    eval_dataset_cls = AVSDDialogueEvalDataset

    def download(self) -> None:
        paths = self._annotation_paths()
        missing = {split: path for split, path in paths.items() if not path.exists()}
        if not missing:
            return
        sample = self.config.get("sample_data")
        if sample:
            self._write_sample_data(paths, sample)
            return
        split, path = next(iter(missing.items()))
        raise DataError(
            f"AVSD annotation file for split '{split}' not found: {path}",
            hint="AVSD is not downloaded automatically: see `mmrun info avsd_dialogue` for where to get it, "
            "or write sample data with `mmrun make-avsd DIR`",
        )

    def make_dataset(self, cls: type[BaseDataset], vis_processor: Any, text_processor: Any,
                     root: Path | None, ann_paths: list[Path], split: str) -> BaseDataset:
        if root is None:
            raise ConfigError("datasets.avsd_dialogue.build_info.features.storage is missing",
                              hint="point it at the folder holding <feature_name>/<video_id>.npy")
        if vis_processor is None or text_processor is None:
            raise ConfigError(
                f"datasets.avsd_dialogue: split '{split}' has no vis_processor or text_processor",
                hint="set vis_processor.{train,eval}.name: gpt_video_ft and text_processor.{train,eval}.name: gpt_dialogue",
            )
        return cls(vis_processor=vis_processor, text_processor=text_processor, vis_root=root, ann_paths=ann_paths)

    # -- helpers ---------------------------------------------------------------------
    def _annotation_paths(self) -> dict[str, Path]:
        paths = {}
        for split, info in self._annotation_info().items():
            files = _files_of(info, split)
            if len(files) != 1:
                # the sample-data generator writes one file per split; real data may list several
                paths.update({f"{split}[{i}]": resolve_storage(s, self.cache_dir) for i, (_, s, _) in enumerate(files)})
            else:
                paths[split] = resolve_storage(files[0][1], self.cache_dir)
        return paths

    def _write_sample_data(self, paths: dict[str, Path], sample: Any) -> None:
        from mm_avsd_dialogue.sample_data import write_sample_dataset

        root = self.media_root()
        if root is None:
            raise ConfigError("datasets.avsd_dialogue.build_info.features.storage is missing")
        videos = sample.get("videos") if hasattr(sample, "get") else None
        seed = int(sample.get("seed", 0)) if hasattr(sample, "get") else 0
        write_sample_dataset(paths, root, seed=seed, videos=dict(videos) if videos else None)
