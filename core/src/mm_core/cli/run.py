"""``mmrun --config X`` (a run, or a dry run) and ``mmrun config`` (the merged config)."""

from __future__ import annotations

import argparse
import os

from omegaconf import OmegaConf

from mm_core.cli.main import command_parser
from mm_core.config.loader import LoadedConfig, load_config


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "--cfg-path", dest="config", required=True, help="the run config YAML")
    parser.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys, LAVIS style (e.g. run.max_epoch=1)")


def run_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmrun", description="Run a training/evaluation config.")
    _add_config_args(parser)
    parser.add_argument("--dry-run", action="store_true", help="resolve and validate, build nothing heavy")
    # the `deepspeed` launcher appends --local_rank=N; torchrun sets LOCAL_RANK instead
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    loaded = load_config(args.config, args.options)
    if args.dry_run:
        from mm_core.cli.dry_run import print_plan

        return print_plan(loaded)
    from mm_core.engine.run import run_config

    return int(run_config(loaded) or 0)


def config_main(argv: list[str]) -> int:
    parser = command_parser("config", "Print the merged config and which file each block came from.")
    _add_config_args(parser)
    parser.add_argument("--resolve", action="store_true", help="resolve ${...} interpolations")
    args = parser.parse_args(argv)
    loaded = load_config(args.config, args.options)
    print(format_sources(loaded))
    print(OmegaConf.to_yaml(loaded.config, resolve=args.resolve), end="")
    return 0


def format_sources(loaded: LoadedConfig) -> str:
    """Comment lines: each block and the files merged into it, lowest first."""
    lines = ["# merged from (lowest first):"]
    for block, files in loaded.sources.items():
        lines.append(f"#   {block}: {' < '.join(files)}")
    return "\n".join(lines)
