"""BaseModel: what every registered model architecture provides (LAVIS semantics)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mm_core.errors import CheckpointError

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What :meth:`BaseModel.load_checkpoint` loaded, summarised in one log line."""

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def short(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f", ... (+{len(keys) - 5})" if len(keys) > 5 else "")

        text = f"loaded {len(self.loaded)} tensors from {self.path}"
        if self.missing:
            text += f"; {len(self.missing)} missing: {short(self.missing)}"
        if self.unexpected:
            text += f"; {len(self.unexpected)} unexpected: {short(self.unexpected)}"
        return text


class BaseModel(nn.Module):
    """A model built from the ``model:`` block of a config: subclasses implement :meth:`from_config`
    and ``forward(samples) -> {"loss": tensor, ...}`` (other ``loss*`` scalars are logged as terms)."""

    @classmethod
    def from_config(cls, cfg: DictConfig) -> BaseModel:
        """Build the model from its config block (``arch``, ``model_type`` and options)."""
        raise NotImplementedError(f"{cls.__name__} must implement from_config")

    @classmethod
    def registered_name(cls) -> str:
        """The ``arch`` this class is registered under."""
        from mm_core.registry import get_registry

        return get_registry().name_of("models", cls)

    @classmethod
    def default_config_path(cls, model_type: str) -> Path:
        """Path of the default YAML of ``model_type`` (package data of the plugin)."""
        from mm_core.config.loader import model_default_path

        return Path(str(model_default_path(cls.registered_name(), model_type)))

    @classmethod
    def from_pretrained(cls, model_type: str) -> BaseModel:
        """Build the model from the default config of ``model_type``."""
        from mm_core.config.loader import load_model_defaults

        defaults = load_model_defaults(cls.registered_name(), model_type)
        return cls.from_config(defaults.model)

    @classmethod
    def weights_plan(cls, cfg: DictConfig) -> list[tuple[str, str]]:
        """(modules, file) in load order, printed by ``mmrun --dry-run`` without reading anything."""
        return []

    # -- weights ---------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Parameters that require grad: what mm checkpoints hold (frozen ones come from their source)."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def map_checkpoint_keys(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Translate foreign key names (e.g. LAVIS checkpoints) to this model's; identity here."""
        return state_dict

    def load_checkpoint(self, path_or_url: str | Path, strict: bool = False) -> LoadReport:
        """Load a ``.safetensors`` / ``.pth`` file, an mm checkpoint directory or a URL (docs/weights.md);
        with ``strict=True`` every trainable parameter must be present, frozen ones may be absent."""
        from mm_core.checkpoint_io import read_state_dict

        state, where = read_state_dict(path_or_url)
        state = self.map_checkpoint_keys(state)
        own = self.state_dict()
        report = LoadReport(where)
        usable = {}
        for key, value in state.items():
            if key not in own:
                report.unexpected.append(key)
            elif own[key].shape != value.shape:
                raise CheckpointError(f"{where}: tensor '{key}' has shape {tuple(value.shape)}, the model expects "
                                      f"{tuple(own[key].shape)}",
                                      hint="the checkpoint was saved from a different model_type or size")
            else:
                usable[key] = value
        self.load_state_dict(usable, strict=False)
        report.loaded = sorted(usable)
        if getattr(self, "weight_sources", None) is not None:  # mm_core.weights.WeightSources
            self.weight_sources.loaded(report.loaded, where)
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        report.missing = sorted(k for k in own if k not in usable and (not strict or k in trainable))
        if strict:
            missing_trainable = sorted(trainable - set(usable))
            if missing_trainable or report.unexpected:
                raise CheckpointError(f"{where} does not fit {type(self).__name__}: missing trainable "
                                      f"{missing_trainable[:5]}, unexpected {report.unexpected[:5]}",
                                      hint="was it saved from another model_type or with other freeze_* options?")
        log.info(report.summary())
        return report

    # -- facts -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the first parameter (CPU for a model without parameters)."""
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters, or of trainable ones."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def get_optimizer_params(self, weight_decay: float, lr_scale: float = 1.0) -> list[dict[str, Any]] | None:
        """Optimizer parameter groups (each may carry ``lr_scale``); ``None``: the engine's groups."""
        return None

    def pipeline_layers(self) -> dict[str, Any] | None:
        """Pipeline stages (deepspeed_pipe_runner): ``{"layers": [nn.Module, ...], "loss_fn": f(output, labels),
        "batch": f(samples) -> (inputs, labels)}`` (docs/distributed.md); ``None``: it cannot split."""
        return None

    def before_evaluation(self, **kwargs: Any) -> None:
        """Called before a split is evaluated (LAVIS hook); nothing by default."""

    def set_gradient_checkpointing(self, enable: bool) -> None:
        """Turn activation checkpointing on for sub-modules that support it."""
        for module in self.modules():
            if module is not self and hasattr(module, "gradient_checkpointing_enable") and enable:
                module.gradient_checkpointing_enable()


def config_value(cfg: DictConfig | Mapping[str, Any] | None, key: str, default: Any) -> Any:
    """``cfg.key`` (a dotted path) of a ``DictConfig`` or plain dict, or ``default`` when ``cfg`` is
    None or the key is absent or null: the one option reader of models and processors."""
    if cfg is None:
        return default
    if isinstance(cfg, DictConfig):
        value = OmegaConf.select(cfg, key, default=None)
    else:
        value = cfg
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    return default if value is None else value
