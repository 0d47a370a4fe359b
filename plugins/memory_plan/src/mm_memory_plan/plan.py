"""The plan of one config: what it asks for (world size, micro-batch, tokens, precision, runner,
ZeRO stage, device memory) and the lines ``mmrun --dry-run`` prints and a run logs first."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mm_core.errors import ConfigError
from mm_memory_plan.activations import Activations, estimate, pipeline_stage
from mm_memory_plan.model_facts import ModelFacts
from mm_memory_plan.strategies import Row, all_rows

GIB = 2**30
#: ``run.*`` keys of the plan (declared by the plugin's ``register_run_keys``).
RUN_KEYS = {"plan_world_size": "int", "plan_pipeline_stages": "int", "plan_gpu_memory_gib": "float"}
GPU_MEMORY_ENV = "MM_PLAN_GPU_MEMORY_GIB"


@dataclass
class PlanSettings:
    """What the config asks for, as far as memory goes."""

    world: int
    stages: int
    batch: int
    seq_len: int | None
    mixed_precision: bool
    checkpointing: bool
    runner: str
    zero_stage: int | None
    offload_optimizer: bool
    offload_params: bool
    gpu_bytes: int | None
    gpu_source: str

    @classmethod
    def from_config(cls, cfg: DictConfig) -> PlanSettings:
        run = cfg.get("run") or OmegaConf.create({})
        world = int(run.get("plan_world_size") or os.environ.get("WORLD_SIZE", "1"))
        ds = deepspeed_config(run) if str(run.get("runner", "runner_base")).startswith("deepspeed_") else None
        zero = (ds or {}).get("zero_optimization") or {}
        mixed = bool(run.get("amp")) or any(((ds or {}).get(k) or {}).get("enabled") for k in ("bf16", "fp16"))
        checkpointing = any(bool(OmegaConf.select(cfg, key)) for key in (
            "run.gradient_checkpointing", "model.use_grad_checkpoint", "model.llm_gradient_checkpointing",
            "model.llm.gradient_checkpointing"))
        gpu_bytes, gpu_source = device_memory(run)
        seq_len = OmegaConf.select(cfg, "model.max_txt_len")
        return cls(world, int(run.get("plan_pipeline_stages") or run.get("num_stages") or max(world, 2)),
                   int((ds or {}).get("train_micro_batch_size_per_gpu") or run.get("batch_size_train") or 1),
                   int(seq_len) if seq_len else None, mixed, checkpointing, str(run.get("runner", "runner_base")),
                   int(zero.get("stage", 0)) if ds is not None else None,
                   _offloaded(zero, "offload_optimizer"), _offloaded(zero, "offload_param"), gpu_bytes, gpu_source)

    def configured(self, rows: list[Row]) -> Row:
        """The row of the strategy this run uses."""
        if self.runner == "deepspeed_pipe_runner":
            return next((r for r in rows if r.name.startswith("pipeline")), rows[0])
        if not self.zero_stage:
            return rows[0]
        suffix = " + offload optimizer and params" if self.offload_params else (
            " + offload optimizer" if self.offload_optimizer else "")
        return next((r for r in rows if r.name == f"ZeRO-{self.zero_stage}{suffix}"),
                    next(r for r in rows if r.name == f"ZeRO-{self.zero_stage}"))


def _offloaded(zero: dict[str, Any], key: str) -> bool:
    return str((zero.get(key) or {}).get("device", "none")).lower() in ("cpu", "nvme")


def deepspeed_config(run: DictConfig) -> dict[str, Any]:
    """``run.deepspeed_config``: inline, or a JSON / YAML file (read only; the deepspeed plugin checks it)."""
    value = run.get("deepspeed_config")
    if value is None or OmegaConf.is_dict(value):
        return OmegaConf.to_container(value, resolve=True) if value is not None else {}
    path = Path(str(value)).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text) or {}
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"run.deepspeed_config: cannot read {path}: {exc}",
                          hint="give the DeepSpeed config inline or as a JSON/YAML file") from exc


def device_memory(run: DictConfig) -> tuple[int | None, str]:
    """(bytes, where from) of one GPU: ``run.plan_gpu_memory_gib``, ``$MM_PLAN_GPU_MEMORY_GIB``,
    else CUDA device 0 when there is one."""
    for value, source in ((run.get("plan_gpu_memory_gib"), "run.plan_gpu_memory_gib"),
                          (os.environ.get(GPU_MEMORY_ENV), GPU_MEMORY_ENV)):
        if value not in (None, ""):
            try:
                return int(float(value) * GIB), source
            except ValueError:
                raise ConfigError(f"{source}: {value!r} is not a number of GiB", hint="e.g. 24 or 80") from None
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory), torch.cuda.get_device_name(0)
    return None, ""


@dataclass
class Plan:
    """The numbers of a plan: facts of the model, the rows, and activations."""

    facts: ModelFacts
    settings: PlanSettings
    rows: list[Row]
    activations: Activations | None

    @classmethod
    def build(cls, facts: ModelFacts, settings: PlanSettings) -> Plan:
        element = 2 if settings.mixed_precision else (facts.llm.element_size if facts.llm else 4)
        acts = estimate(facts, settings.batch, settings.seq_len, element) if settings.seq_len else None
        return cls(facts, settings, all_rows(facts, settings.world, settings.stages), acts)

    def activation_bytes(self, row: Row, checkpointed: bool) -> int:
        if self.activations is None:
            return 0
        if row.stages > 1:
            return pipeline_stage(self.activations, self.facts, row.stages, checkpointed)
        return self.activations.checkpointed if checkpointed else self.activations.full

    def total(self, row: Row, checkpointed: bool) -> int:
        return row.states + self.activation_bytes(row, checkpointed)
