"""Contract checks every registered model, processor, dataset builder and task must pass."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mm_core.errors import MMError
from mm_core.registry import get_registry


class ContractError(AssertionError):
    """A plugin's name does not satisfy mm's contract for its kind."""


def _fail(kind: str, name: str, problem: str) -> ContractError:
    return ContractError(f"{kind} '{name}': {problem}")


def check_model(arch: str, batch: Any, model_type: str = "tiny", options: dict[str, Any] | None = None) -> Any:
    """Build ``arch``/``model_type`` twice (same seed), check ``forward(batch)``'s finite scalar ``loss``
    reaches trainable parameters, and round-trip them through safetensors; ``options`` are ``model.*``
    keys merged as a config file's (docs/plugins.md, "Testing a plugin")."""
    import torch
    from safetensors.torch import save_file

    from mm_core.config.loader import load_config

    cfg = load_config({"model": {"arch": arch, "model_type": model_type, **(options or {})}}).config.model
    model_cls = get_registry().resolve("models", arch)
    torch.manual_seed(0)
    model = model_cls.from_config(cfg)
    torch.manual_seed(0)
    again = model_cls.from_config(OmegaConf.create(OmegaConf.to_container(cfg)))
    if set(model.state_dict()) != set(again.state_dict()):
        raise _fail("model", arch, "two builds from one config have different state dict keys")
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise _fail("model", arch, f"model_type '{model_type}' has no trainable parameter")
    model.train()
    output = model(batch)
    if not isinstance(output, dict) or "loss" not in output:
        raise _fail("model", arch, "forward(samples) must return a dict with 'loss'")
    loss = output["loss"]
    if not (torch.is_tensor(loss) and loss.dim() == 0 and loss.requires_grad and torch.isfinite(loss)):
        raise _fail("model", arch, f"'loss' must be a finite scalar tensor with grad, got {loss!r}")
    loss.backward()
    if all(p.grad is None for p in trainable):
        raise _fail("model", arch, "the loss does not reach any trainable parameter")
    model.eval()
    with torch.no_grad():
        reference = model(batch)["loss"]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.safetensors"
            save_file({k: v.contiguous() for k, v in model.trainable_state_dict().items()}, str(path))
            torch.manual_seed(1)
            fresh = model_cls.from_config(cfg)
            fresh.eval()
            fresh.load_checkpoint(path, strict=True)
            fresh.load_state_dict({k: v for k, v in model.state_dict().items()
                                   if k not in model.trainable_state_dict()}, strict=False)
            if not torch.allclose(fresh(batch)["loss"], reference):
                raise _fail("model", arch, "outputs differ after a save/load round trip of trainable weights")
    return model


def check_processor(name: str, item: Any, cfg: dict[str, Any] | None = None) -> Any:
    """Build processor ``name`` from a config, apply it to ``item``, and pickle it (DataLoader
    workers receive processors by pickling). Returns the processed item."""
    from mm_core.api import processor_from_config

    processor = processor_from_config({"name": name, **(cfg or {})})
    output = processor(item)
    try:
        pickle.loads(pickle.dumps(processor))
    except Exception as exc:
        raise _fail("processor", name, f"cannot be pickled for DataLoader workers: {exc}") from exc
    return output


def check_builder(name: str, cache_dir: str | Path, cfg: dict[str, Any] | None = None,
                  config_type: str = "default") -> dict[str, Any]:
    """Build every split of dataset ``name`` from its ``config_type`` YAML (merged with ``cfg``);
    each must be non-empty and its collater must batch its first two samples. Returns the splits."""
    from mm_core.config.loader import load_dataset_defaults

    block = load_dataset_defaults(name, config_type)
    if cfg:
        block = OmegaConf.merge(block, cfg)
    builder = get_registry().resolve("datasets", name)(block, cache_dir=cache_dir)
    splits = builder.build_datasets()
    if not splits:
        raise _fail("dataset builder", name, "built no split")
    for split, dataset in splits.items():
        if len(dataset) == 0:
            raise _fail("dataset builder", name, f"split '{split}' is empty")
        batch = dataset.collater([dataset[i] for i in range(min(2, len(dataset)))])
        if not batch:
            raise _fail("dataset builder", name, f"collater of split '{split}' returned an empty batch")
    return splits


def check_task(name: str) -> Any:
    """``setup_task`` of task ``name`` with an empty config returns a task object."""
    task = get_registry().resolve("tasks", name).setup_task(OmegaConf.create({"run": {"task": name}}))
    for method in ("train_step", "valid_step", "after_evaluation"):
        if not callable(getattr(task, method, None)):
            raise _fail("task", name, f"has no {method}()")
    return task


def check_plugin(plugin: str, cache_dir: str | Path, batches: dict[str, Any] | None = None,
                 llm_options: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Check every name ``plugin`` registers (docs/plugins.md, "Testing a plugin"); returns ``"kind:name"``
    of each. A model is fed ``batches[arch]``, else two collated train samples of the plugin's first
    dataset; a backend is built with ``llm_options[name]``."""
    from mm_core.registry import KINDS
    from mm_core.testing.llm_contract import check_llm_backend

    registry = get_registry()
    mine = {kind: [e.name for e in registry.entries(kind) if e.plugin.name == plugin] for kind in KINDS}
    if not any(mine.values()):
        raise MMError(f"plugin '{plugin}' registers no name", hint="`mmrun plugins -v` shows what each plugin registers")
    checked: list[str] = []
    splits: dict[str, Any] = {}
    for name in mine["datasets"]:
        splits = splits or check_builder(name, cache_dir)
        checked.append(f"datasets:{name}")
    for name in mine["tasks"]:
        check_task(name)
        checked.append(f"tasks:{name}")
    for name in mine["llms"]:
        check_llm_backend(name, (llm_options or {}).get(name))
        checked.append(f"llms:{name}")
    for name in mine["models"]:
        batch = (batches or {}).get(name)
        if batch is None and splits:
            train = splits.get("train") or next(iter(splits.values()))
            batch = train.collater([train[0], train[min(1, len(train) - 1)]])
        if batch is None:
            raise _fail("model", name, "no batch to test with: pass batches={arch: batch}")
        for model_type in registry.model_types(name):
            check_model(name, batch, model_type)
        checked.append(f"models:{name}")
    for kind in ("processors", "runners", "lr_schedulers", "metrics", "commands"):
        checked += [f"{kind}:{name} (imported)" for name in mine[kind] if registry.resolve(kind, name)]
    return checked
