"""``mmrun`` sub-commands of this plugin: ``make-shapes`` and ``download-coco``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

IMAGES_HOWTO = """\
Images are not downloaded (about 19 GB). Get the COCO 2014 train and val images from
https://cocodataset.org/#download (train2014.zip, val2014.zip) and unpack them so that
  {images}/train2014/COCO_train2014_000000000009.jpg
  {images}/val2014/COCO_val2014_000000000042.jpg
exist, or link a copy you already have:  ln -s /path/to/coco/images {images}
(set datasets.<name>.build_info.images.storage to use another folder)."""


def make_shapes_main(argv: list[str]) -> int:
    """Render the synthetic shapes dataset into OUT_DIR and print what was written."""
    from mm_datasets_coco.shapes import ShapesSpec, write_shapes

    parser = argparse.ArgumentParser(prog="mmrun make-shapes", description=make_shapes_main.__doc__)
    parser.add_argument("out_dir", type=Path, help="folder to write (created)")
    defaults = ShapesSpec()
    for f in fields(ShapesSpec):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=getattr(defaults, f.name),
                            help=f"default {getattr(defaults, f.name)}")
    args = parser.parse_args(argv)
    spec = ShapesSpec(**{f.name: getattr(args, f.name) for f in fields(ShapesSpec)})
    root = write_shapes(args.out_dir, spec)
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    print(f"wrote the shapes dataset to {root}")
    for key, value in manifest["counts"].items():
        print(f"  {key:18s} {value}")
    return 0


def download_coco_main(argv: list[str]) -> int:
    """Download the annotation files of coco_caption / coco_vqa with md5 checks."""
    from mm_core.config.loader import load_dataset_defaults
    from mm_core.download import cache_root, resolve_storage
    from mm_core.errors import MMError
    from mm_core.registry import get_registry

    parser = argparse.ArgumentParser(prog="mmrun download-coco", description=download_coco_main.__doc__)
    parser.add_argument("--datasets", default="coco_caption",
                        help="comma-separated builders: coco_caption, coco_vqa (default coco_caption)")
    parser.add_argument("--cache-root", type=Path, default=None, help="default: $MM_CACHE_ROOT or ~/.cache/mm")
    args = parser.parse_args(argv)
    root = args.cache_root.expanduser() if args.cache_root else cache_root()
    for name in [n.strip() for n in args.datasets.split(",") if n.strip()]:
        try:
            cfg = load_dataset_defaults(name)
            builder = get_registry().resolve("datasets", name)(cfg, cache_dir=root)
            builder.download()
        except MMError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{name}: annotations present under {root} (md5 verified on download)")
        images = resolve_storage(str(cfg.build_info.images.storage), root)
        if not images.exists():
            print(IMAGES_HOWTO.format(images=images))
    return 0
