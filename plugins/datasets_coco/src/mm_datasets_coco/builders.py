"""The COCO-family dataset builders: ``coco_caption``, ``coco_vqa`` (and LAVIS' ``ok_vqa`` and ``gqa``), the retrieval datasets
``coco_retrieval`` and ``flickr30k``, and ``vg_caption`` (Visual Genome captions, train only).

Besides LAVIS' ``build_info`` (annotation ``url`` / ``storage`` / ``md5`` per split and the
``images.storage`` root), a config block may set:

* ``on_bad_sample: error | skip`` — what a missing or unreadable image does (default ``error``);
* ``build_info.generate`` — ``{dataset: shapes, root: <dir>, seed: 0, ...}``: render the
  synthetic "shapes" data (:mod:`mm_datasets_coco.shapes`) into ``root`` (relative paths are
  under the cache root) when its files are absent, so a run works offline on real formats.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mm_core.base.builder import BaseDatasetBuilder
from mm_core.base.dataset import BaseDataset
from mm_core.download import resolve_storage
from mm_core.errors import ConfigError
from mm_datasets_coco.caption_datasets import CaptionDataset, CaptionEvalDataset
from mm_datasets_coco.retrieval_datasets import RetrievalEvalDataset
from mm_datasets_coco.vqa_datasets import VQADataset, VQAEvalDataset

log = logging.getLogger(__name__)


class _CocoBuilder(BaseDatasetBuilder):
    """Shared by both builders: the bad-sample policy and on-demand sample-data generation."""

    def download(self) -> None:
        self.generate_if_asked()
        super().download()

    def generate_if_asked(self) -> Path | None:
        """Render the shapes data when ``build_info.generate`` asks for it and it is absent."""
        spec = OmegaConf.select(self.config, "build_info.generate")
        if not spec:
            return None
        options: dict[str, Any] = dict(OmegaConf.to_container(spec, resolve=True))
        kind = options.pop("dataset", "shapes")
        if kind != "shapes":
            raise ConfigError(f"build_info.generate.dataset: unknown generator '{kind}'", hint="the generator is 'shapes'")
        root = resolve_storage(str(options.pop("root", "shapes")), self.cache_dir)
        from mm_datasets_coco.shapes import ShapesSpec, ensure_shapes

        try:
            spec_obj = ShapesSpec(**options)
        except TypeError as exc:
            raise ConfigError(f"build_info.generate: {exc}", hint="options are those of ShapesSpec (`mmrun make-shapes --help`)") from exc
        return ensure_shapes(root, spec_obj)

    def make_dataset(self, cls: type[BaseDataset], vis_processor: Any, text_processor: Any,
                     root: Path | None, ann_paths: list[Path], split: str) -> BaseDataset:
        policy = str(self.config.get("on_bad_sample", "error"))
        return cls(vis_processor=vis_processor, text_processor=text_processor, vis_root=root,
                   ann_paths=ann_paths, on_bad_sample=policy)


class CocoCaptionBuilder(_CocoBuilder):
    """COCO captions, Karpathy splits (train: one sample per caption; val/test: per image)."""

    train_dataset_cls = CaptionDataset
    eval_dataset_cls = CaptionEvalDataset


class CocoVQABuilder(_CocoBuilder):
    """VQA v2 on COCO images in LAVIS' layout."""

    train_dataset_cls = VQADataset
    eval_dataset_cls = VQAEvalDataset


class OKVQABuilder(CocoVQABuilder):
    """OK-VQA (LAVIS' ``ok_vqa``): COCO images, LAVIS' VQA layout; train and test splits."""


class GQABuilder(CocoVQABuilder):
    """GQA (LAVIS' ``gqa``): records with one ``answer`` string each (a list is read too), which the
    VQA datasets hold as a one-answer list; types ``balanced_testdev`` / ``balanced_val`` pick the val questions."""


class CocoRetrievalBuilder(_CocoBuilder):
    """COCO image-text retrieval on the Karpathy split files (LAVIS' ``coco_retrieval``): train one
    sample per caption, val/test one image per sample with every caption as a query."""

    train_dataset_cls = CaptionDataset
    eval_dataset_cls = RetrievalEvalDataset


class Flickr30kBuilder(CocoRetrievalBuilder):
    """Flickr30k retrieval (LAVIS' ``flickr30k``), in the same annotation layout as COCO's."""


class VGCaptionBuilder(_CocoBuilder):
    """Visual Genome region captions as image-caption pairs (LAVIS' ``vg_caption``: a train split)."""

    train_dataset_cls = CaptionDataset
    eval_dataset_cls = CaptionEvalDataset
