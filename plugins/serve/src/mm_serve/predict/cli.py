"""``mmrun predict``: answer every image of a folder, glob, records file or dataset split, in batches.

    mmrun predict --config run.yaml [--checkpoint CKPT] --inputs SRC --output preds.jsonl
    mmrun predict --config run.yaml --split test --output preds.jsonl       # the config's dataset split
    torchrun --nproc-per-node 4 -m mm_serve.predict --config ... --inputs ... --output ...   # sharded

One JSON line per input (``id``, ``image``, ``prompt`` / ``question``, ``output`` and
``generation``, or ``error`` for an input that could not be read), flushed as it goes. A rerun
with the same output skips what is done; the final file is in input order (docs/serving.md,
"Batch inference").
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from mm_core.errors import ConfigError
from mm_serve.chat_model import add_model_options
from mm_serve.predict.calls import Predictor, Settings
from mm_serve.predict.inputs import Record, read_records
from mm_serve.predict.output import PredictionFile

log = logging.getLogger("mm_serve.predict")


def build_parser(prog: str = "mmrun predict") -> argparse.ArgumentParser:
    """The options of ``mmrun predict``."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_model_options(parser, "a run config naming the model (and datasets, for --split)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--inputs", help="a folder of images, a glob, or a .jsonl/.json/.csv of records "
                                         "(image, optional prompt / question / id)")
    source.add_argument("--split", help="a split of the config's dataset (e.g. test)")
    parser.add_argument("--dataset", default=None, help="with --split: which of the config's datasets (if several)")
    parser.add_argument("--image-root", default=None, help="folder relative image paths of a records file are in "
                                                           "(default: the records file's folder)")
    parser.add_argument("--output", required=True, help="the JSONL file to write (appended to when resuming)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers that decode images")
    parser.add_argument("--method", default="auto", choices=["auto", "generate", "predict_answers", "chat"])
    parser.add_argument("--prompt", default=None, help="the prompt of inputs that have none (default: the model's)")
    parser.add_argument("--max-new-tokens", type=int, default=30)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=0.0, help="> 0 samples (default: greedy)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling (each rank adds its rank)")
    parser.add_argument("--progress-bar", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar with images/s (default: when stderr is a terminal)")
    return parser


@dataclass
class Summary:
    """What a run did: inputs in all, skipped as done, answered now, error lines, rank 0's seconds."""

    total: int
    skipped: int
    answered: int = 0
    errors: int = 0
    seconds: float = 0.0

    def text(self, output: str, world_size: int) -> str:
        rate = self.answered / self.seconds if self.seconds > 0 else 0.0
        where = f" on {world_size} processes" if world_size > 1 else ""
        return (f"mmrun predict: {self.total} inputs: {self.answered} predicted, {self.skipped} skipped (already in "
                f"{output}), {self.errors} errors ('error' lines){where}; {rate:.1f} images/s; wrote {output}")


def main(argv: list[str]) -> int:
    """Run ``mmrun predict``; 0 when every input has a line (errors included), 2 for bad options."""
    args = build_parser().parse_args(argv)
    check_args(args)
    from mm_core.engine.distributed import init_distributed, shutdown_distributed

    ctx = init_distributed(args.device)
    try:
        return predict(args, ctx)
    finally:
        shutdown_distributed()


def check_args(args: argparse.Namespace) -> None:
    for name in ("batch_size", "max_new_tokens", "num_beams"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    if args.num_workers < 0:
        raise ConfigError(f"--num-workers must be 0 or more, not {args.num_workers}")


def predict(args: argparse.Namespace, ctx: Any) -> int:
    """Load, skip what is done, answer this rank's share, merge on rank 0."""
    from mm_core.api import load_model_for_inference
    from mm_core.config.loader import load_config

    loaded = load_config(args.config, args.options)
    dataset = split_dataset(loaded.config, args.split, args.dataset) if args.split else None
    records = read_records(args.inputs, args.image_root) if dataset is None else split_records(dataset, args.split)
    out = PredictionFile(args.output, ctx.rank, ctx.world_size)
    out.open()  # each rank cuts its own half-written line before any rank reads
    ctx.barrier()
    done = out.done_keys()
    todo = [r for r in records if r.key not in done]
    model = load_model_for_inference(loaded, checkpoint=args.checkpoint, device=str(ctx.device))
    predictor = Predictor(model.model, settings_of(args), args.method)
    predictor.collater = getattr(dataset, "collater", None)
    summary = Summary(len(records), len(records) - len(todo))
    try:
        run_share(args, ctx, predictor, model.vis_processor, todo[ctx.rank::ctx.world_size], dataset, out, summary)
    finally:
        out.close()
    ctx.barrier()
    if ctx.is_main:
        lines = out.merge(records)
        todo_keys = {r.key for r in todo}
        summary.errors = sum("error" in line for line in lines)
        summary.answered = sum("output" in line and str(line["id"]) in todo_keys for line in lines)
        print(summary.text(args.output, ctx.world_size), file=sys.stderr, flush=True)
    return 0


def settings_of(args: argparse.Namespace) -> Settings:
    return Settings(args.max_new_tokens, args.num_beams, args.temperature, args.top_p, args.repetition_penalty,
                    args.prompt)


def run_share(args: argparse.Namespace, ctx: Any, predictor: Predictor, vis_processor: Any, share: list[Record],
              dataset: Any, out: PredictionFile, summary: Summary) -> None:
    """Decode (DataLoader workers) and answer ``share`` batch by batch, appending each batch's lines."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from mm_serve.predict.loading import RecordImages, SplitItems, as_list

    torch.manual_seed(args.seed + ctx.rank)
    items = RecordImages(share, vis_processor) if dataset is None else SplitItems(dataset, share)
    loader = DataLoader(items, batch_size=args.batch_size, num_workers=args.num_workers, collate_fn=as_list,
                        persistent_workers=False)
    show = args.progress_bar if args.progress_bar is not None else sys.stderr.isatty()
    bar = tqdm(total=len(share), unit="img", desc=f"predict{f' [rank {ctx.rank}]' if ctx.world_size > 1 else ''}",
               disable=not (show and ctx.is_main), dynamic_ncols=True)
    start = time.perf_counter()
    for batch in loader:
        lines = predictor.answer(batch)
        out.write(lines)
        bar.update(len(batch))
    summary.seconds = time.perf_counter() - start
    bar.close()


def split_dataset(cfg: Any, split: str, name: str | None) -> Any:
    """The ``split`` of the config's dataset ``name`` (the only one when ``None``), as a run builds it."""
    from mm_core.registry import get_registry

    names = list(cfg.get("datasets") or {})
    if not names:
        raise ConfigError("--split needs a config with a datasets block", hint="or give --inputs")
    if name is None and len(names) > 1:
        raise ConfigError(f"--split: the config has datasets {', '.join(names)}; choose one with --dataset")
    name = name or names[0]
    if name not in names:
        raise ConfigError(f"--dataset {name}: not in the config's datasets ({', '.join(names)})")
    task_name = str((cfg.get("run") or {}).get("task") or "base")
    task = get_registry().resolve("tasks", task_name).setup_task(cfg)
    splits = task.build_datasets(_only(cfg, name))[name]
    if split not in splits:
        raise ConfigError(f"--split {split}: dataset {name} has splits {', '.join(splits)}")
    return splits[split]


def _only(cfg: Any, name: str) -> Any:
    from omegaconf import OmegaConf

    only = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    only.datasets = {name: cfg.datasets[name]}
    return only


def split_records(dataset: Any, split: str) -> list[Record]:
    """One record per sample of the split; its id is the sample's index, stable between runs."""
    return [Record(i, None, i) for i in range(len(dataset))]
