"""``mmrun --config X --dry-run``: resolve every name and print what a run would build, loading no
weights and reading no data; plugins add lines through the ``describe_run`` hook."""

from __future__ import annotations

from omegaconf import OmegaConf

from mm_core.config.loader import LoadedConfig
from mm_core.download import cache_root, resolve_storage
from mm_core.registry import get_registry


def print_plan(loaded: LoadedConfig) -> int:
    cfg = loaded.config
    registry = get_registry()
    run = cfg.get("run") or {}
    lines = [f"config: {loaded.user_file} (valid)"]
    if "task" in run:
        registry.resolve("tasks", str(run.task))
        lines.append(f"task: {run.task} ({registry.get('tasks', str(run.task)).target})")
    runner = str(run.get("runner", "runner_base"))
    registry.resolve("runners", runner)
    lines.append(f"runner: {runner} ({registry.get('runners', runner).target})")
    if run.get("lr_sched"):
        registry.resolve("lr_schedulers", str(run.lr_sched))
        lines.append(f"lr schedule: {run.lr_sched}")
    if cfg.get("model") is not None:
        arch = str(cfg.model.arch)
        model_cls = registry.resolve("models", arch)
        lines.append(f"model: {arch} / {cfg.model.get('model_type')} ({registry.get('models', arch).target})")
        lines += [f"  weights: {modules} <- {source}" for modules, source in model_cls.weights_plan(cfg.model)]
        lines += _processor_lines(cfg.get("preprocess"), "  preprocess")
        llm = OmegaConf.select(cfg, "model.llm.name")
        if llm:
            registry.resolve("llms", str(llm))
            lines.append(f"  llm backend: {llm} ({registry.get('llms', str(llm)).target})")
    root = cache_root(OmegaConf.select(cfg, "env.cache_root"))
    for name, block in (cfg.get("datasets") or {}).items():
        registry.resolve("datasets", str(name))
        lines.append(f"dataset: {name} ({block.get('data_type', 'images')})")
        for split, info in (OmegaConf.select(block, "build_info.annotations") or {}).items():
            storages = info.storage if OmegaConf.is_list(info.storage) else [info.storage]
            for storage in storages:
                path = resolve_storage(str(storage), root)
                state = "present" if path.exists() else ("will download" if info.get("url") else "MISSING")
                lines.append(f"  {split}: {path} [{state}]")
        lines += _processor_lines(block, "  processors")
    if run.get("output_dir"):
        lines.append(f"outputs: {run.output_dir}")
    lines += sum(registry.host.pm.hook.describe_run(config=cfg, model=None), [])
    print("\n".join(lines))
    print("dry run: nothing was built")
    return 0


def _processor_lines(block, label: str) -> list[str]:
    registry = get_registry()
    lines = []
    for key in ("vis_processor", "text_processor"):
        for stage in ("train", "eval"):
            name = OmegaConf.select(block, f"{key}.{stage}.name") if block is not None else None
            if name:
                registry.resolve("processors", str(name))
                lines.append(f"{label}: {key}.{stage} = {name}")
    return lines
