"""The Python API: build models, processors and datasets by name, as LAVIS users expect
(``load_model_and_preprocess("blip2_feature_extractor", "tiny")``), and a trained model from a run
config and a checkpoint (``load_model_for_inference``, what ``mmrun serve`` / ``chat`` use)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mm_core.config.loader import LoadedConfig, load_config, load_dataset_defaults, load_model_defaults, read_yaml
from mm_core.errors import ConfigError
from mm_core.registry import get_registry


def load_model(name: str, model_type: str, is_eval: bool = False, device: str = "cpu",
               checkpoint: str | None = None) -> Any:
    """Build ``name`` with the default config of ``model_type``; optionally load a checkpoint."""
    return _build_model(load_model_defaults(name, model_type).model, checkpoint, is_eval, device)


def load_processor(name: str, cfg: DictConfig | dict | None = None) -> Any:
    """Build the processor registered as ``name`` from an options mapping."""
    processor_cls = get_registry().resolve("processors", name)
    return processor_cls.from_config(OmegaConf.create(dict(cfg or {})))


def processor_from_config(cfg: DictConfig | dict | None) -> Any:
    """Build a processor from a block ``{name: ..., **options}``; ``None`` for an empty block."""
    if not cfg:
        return None
    if "name" not in cfg:
        raise ConfigError(f"processor block {OmegaConf.to_container(OmegaConf.create(cfg))} has no 'name'")
    return get_registry().resolve("processors", str(cfg["name"])).from_config(OmegaConf.create(cfg))


def load_preprocess(preprocess: DictConfig | dict | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``({"train": vis, "eval": vis}, {"train": text, "eval": text})`` from a ``preprocess`` block (or a
    dataset's block, which holds the same ``vis_processor`` / ``text_processor`` keys)."""
    preprocess = preprocess if isinstance(preprocess, DictConfig) else OmegaConf.create(dict(preprocess or {}))
    vis = {stage: processor_from_config(OmegaConf.select(preprocess, f"vis_processor.{stage}")) for stage in ("train", "eval")}
    text = {stage: processor_from_config(OmegaConf.select(preprocess, f"text_processor.{stage}")) for stage in ("train", "eval")}
    return vis, text


def load_model_and_preprocess(name: str, model_type: str, is_eval: bool = False, device: str = "cpu",
                              checkpoint: str | None = None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The model and its train/eval processors, from the model type's ``preprocess`` block."""
    defaults = load_model_defaults(name, model_type)
    model = _build_model(defaults.model, checkpoint, is_eval, device)
    vis, text = load_preprocess(defaults.get("preprocess"))
    return model, vis, text


@dataclass
class InferenceModel:
    """What :func:`load_model_for_inference` returns: the model (eval mode), the ``preprocess`` block's
    eval processors (``None`` when it names none), the merged config and the name ``ARCH-MODEL_TYPE``."""

    model: Any
    vis_processor: Any
    text_processor: Any
    config: DictConfig
    name: str


def load_model_for_inference(
    config: str | Path | DictConfig | dict | LoadedConfig, options: list[str] | tuple[str, ...] = (),
    checkpoint: str | Path | None = None, device: str | None = "cpu",
) -> InferenceModel:
    """The model of a run config, built as a run builds it, with ``checkpoint`` (what
    :func:`~mm_core.engine.checkpoint.resolve_checkpoint` reads, or a URL) loaded, in eval mode on
    ``device`` (``None``: CUDA when available); what ``mmrun serve`` / ``chat`` use."""
    loaded = config if isinstance(config, LoadedConfig) else load_config(config, options)
    cfg = loaded.config
    if cfg.get("model") is None or cfg.model.get("arch") is None:
        raise ConfigError(f"{loaded.user_file}: no model.arch to load",
                          hint="give a run config with a model block (model.arch, model.model_type)")
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _build_model(cfg.model, checkpoint, True, device)
    vis, text = load_preprocess(cfg.get("preprocess"))
    name = f"{cfg.model.arch}-{cfg.model.get('model_type') or 'default'}"
    return InferenceModel(model, vis["eval"], text["eval"], cfg, name)


def _checkpoint_source(checkpoint: str | Path) -> str | Path:
    """A URL as is (``BaseModel.load_checkpoint`` downloads it); a local path resolved."""
    if str(checkpoint).startswith(("http://", "https://")):
        return checkpoint
    from mm_core.engine.checkpoint import resolve_checkpoint

    return resolve_checkpoint(checkpoint)


def load_dataset(name: str, cfg_path: str | Path | None = None, vis_path: str | Path | None = None,
                 cache_dir: str | Path | None = None) -> dict[str, Any]:
    """All splits of dataset ``name`` from its default config (or ``cfg_path``); ``vis_path``: its media."""
    if cfg_path is not None:
        cfg = OmegaConf.select(read_yaml(cfg_path), f"datasets.{name}")
        if cfg is None:
            raise ConfigError(f"{cfg_path}: no datasets.{name} block")
    else:
        cfg = load_dataset_defaults(name)
    if vis_path is not None:
        data_type = cfg.get("data_type", "images")
        OmegaConf.update(cfg, f"build_info.{data_type}.storage", str(vis_path), force_add=True)
    builder = get_registry().resolve("datasets", name)(cfg, cache_dir=cache_dir)
    return builder.build_datasets()


def _build_model(model_cfg: DictConfig, checkpoint: str | Path | None, is_eval: bool = False,
                 device: str | None = None) -> Any:
    model = get_registry().resolve("models", str(model_cfg.arch)).from_config(model_cfg)
    if checkpoint is not None:
        model.load_checkpoint(_checkpoint_source(checkpoint))
    return model.to(device).eval() if is_eval else model.to(device)


class _Zoo:
    """Printable table of registered names (LAVIS' ``model_zoo`` / ``dataset_zoo``)."""

    def __init__(self, kind: str):
        self.kind = kind

    def rows(self) -> list[tuple[str, str]]:
        registry = get_registry()
        if self.kind == "models":
            return [(n, ", ".join(registry.model_types(n))) for n in registry.names("models")]
        return [(e.name, e.registration.data_type or "") for e in registry.entries("datasets")]

    def __str__(self) -> str:
        header = ("Architectures", "Types") if self.kind == "models" else ("Dataset builders", "Data type")
        rows = [header, *self.rows()]
        width = max(len(r[0]) for r in rows) + 2
        line = "=" * (width + max(len(r[1]) for r in rows))
        body = [f"{a:<{width}}{b}" for a, b in rows]
        return "\n".join([line, body[0], line, *body[1:]])

    __repr__ = __str__

    def __iter__(self):
        return iter(self.rows())


model_zoo = _Zoo("models")
dataset_zoo = _Zoo("datasets")
