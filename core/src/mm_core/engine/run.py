"""``run_config``: everything ``mmrun --config run.yaml`` does after the config is merged.

Also runnable as ``python -m mm_core.engine.run --config run.yaml [--options k=v ...]``, the
same thing without the rest of the CLI (handy under ``torchrun``)."""

from __future__ import annotations

import logging
import random
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from mm_core.config.loader import LoadedConfig
from mm_core.engine.distributed import DistContext, init_distributed, shutdown_distributed
from mm_core.engine.guards import preflight_output_dir
from mm_core.engine.settings import RunSettings
from mm_core.errors import MMError
from mm_core.weights import report_weights

log = logging.getLogger("mm_core.engine")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_config(loaded: LoadedConfig) -> int:
    """Set up distributed, seed, write ``config.yaml``, build task, datasets, model and runner,
    then train (or evaluate when ``run.evaluate``). Returns the process exit code: 0 when done,
    2 for an error in the config, data or checkpoints (message printed), 128+signal when stopped
    by SIGINT/SIGTERM after saving a checkpoint."""
    cfg = loaded.config
    ctx = DistContext()
    handlers: list[logging.Handler] = []
    try:
        settings = RunSettings.from_config(cfg)
        if settings.num_threads:
            torch.set_num_threads(settings.num_threads)
        ctx = init_distributed(settings.device, settings.dist_backend, settings.dist_timeout)
        output_dir = Path(settings.output_dir)
        if ctx.is_main:
            preflight_output_dir(output_dir)
            (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True), encoding="utf-8")
        handlers = _setup_logging(ctx, output_dir)
        seed_everything(settings.seed + ctx.rank)
        ctx.barrier()

        from mm_core.registry import get_registry

        registry = get_registry()
        task = registry.resolve("tasks", settings.task).setup_task(cfg)
        datasets = task.build_datasets(cfg)
        model = task.build_model(cfg)
        report_weights(model, output_dir if ctx.is_main else None)
        if ctx.is_main:  # the plugins' plan of this run (describe_run), e.g. its memory per GPU
            log.info("\n".join(sum(registry.host.pm.hook.describe_run(config=cfg, model=model), ["plan:"])))
        runner_cls = registry.resolve("runners", settings.runner)
        runner = runner_cls(cfg, task, model, datasets)
        result = runner.evaluate() if settings.evaluate else runner.train()
        signum = (result or {}).get("signal")
        return 128 + int(signum) if signum else 0
    except MMError as exc:
        where = f"[rank {ctx.rank}] " if ctx.world_size > 1 else ""
        print(f"error: {where}{exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        for handler in handlers:
            logging.getLogger("mm_core").removeHandler(handler)
            handler.close()
        shutdown_distributed()


def _setup_logging(ctx: DistContext, output_dir: Path) -> list[logging.Handler]:
    """Console (and ``<output_dir>/log.txt``) logging on rank 0; warnings only elsewhere."""
    logger = logging.getLogger("mm_core")
    logger.setLevel(logging.INFO if ctx.is_main else logging.WARNING)
    has_console = any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                      for h in logger.handlers + logging.getLogger().handlers)
    handlers: list[logging.Handler] = [] if has_console else [logging.StreamHandler(sys.stderr)]
    if ctx.is_main:
        handlers.append(logging.FileHandler(output_dir / "log.txt", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    return handlers


def main(argv: list[str] | None = None) -> int:
    """``python -m mm_core.engine.run --config X.yaml [--options a.b=c ...]``."""
    import argparse

    from mm_core.config.loader import load_config

    parser = argparse.ArgumentParser(prog="python -m mm_core.engine.run")
    parser.add_argument("--config", required=True)
    parser.add_argument("--options", nargs="*", default=[])
    args = parser.parse_args(argv)
    try:
        loaded = load_config(args.config, args.options)
    except MMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_config(loaded)


if __name__ == "__main__":
    sys.exit(main())
