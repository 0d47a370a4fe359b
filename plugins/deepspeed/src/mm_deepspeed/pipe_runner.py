"""``deepspeed_pipe_runner``: pipeline parallelism with DeepSpeed's ``PipelineModule`` and
``PipelineEngine.train_batch`` (MPP-LLaVA's ``train_pipeline.py``), as an mm runner.

* The model splits itself: ``BaseModel.pipeline_layers()`` gives its layers in order, the loss
  on the last layer's output and the function that turns a collated batch into the first
  stage's tensors and the last stage's labels. ``run.num_stages`` stages (default 2; MPP-LLaVA's
  ``--num-stages``) x ``world_size / num_stages`` data-parallel replicas; ``run.partition_method``
  is DeepSpeed's (``uniform`` by default: as many layers per stage as possible).
* Every process builds the whole model (the layers hold the model's own modules), trains its
  stage's part, and before evaluating or saving the stages' trained weights are broadcast to all
  processes: evaluation, ``model.safetensors`` (the consolidated single file MPP-LLaVA's
  ``pipemodel2pth`` makes) and ``mmrun chat --checkpoint`` see the whole trained model.
* One optimizer step is one ``train_batch`` over ``run.accum_grad_iters`` micro-batches; the mm
  scheduler sets the learning rate first, as in the plain runners. DeepSpeed's per-layer files
  (``layer_XX-model_states.pt``) and optimizer states go to ``checkpoints/deepspeed/<tag>``; resume
  is the deepspeed_runner's (``run.resume_ckpt_path`` or ``resume_ckpt_load_dir`` + ``_tag``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mm_core.base.dataset import batch_size_of
from mm_core.engine.data import build_train_stream, move_to_device
from mm_core.engine.guards import check_finite, preflight_output_dir
from mm_core.engine.optim import build_adamw, param_groups
from mm_core.errors import ConfigError
from mm_deepspeed.runner import DeepSpeedRunner, _import_deepspeed

log = logging.getLogger(__name__)


class DeepSpeedPipeRunner(DeepSpeedRunner):
    """Trains ``run.num_stages`` pipeline stages with DeepSpeed's pipeline engine."""

    def __init__(self, cfg: DictConfig, task: Any, model: torch.nn.Module, datasets: dict[str, dict[str, Any]]):
        run = OmegaConf.to_container(cfg.run, resolve=True) if "run" in cfg else {}
        self.num_stages = _positive_int(run.get("num_stages", 2), "run.num_stages")
        self.partition_method = str(run.get("partition_method") or "uniform")
        spec = model.pipeline_layers() if hasattr(model, "pipeline_layers") else None
        if spec is None:
            raise ConfigError(f"model {type(model).__name__} cannot be split into pipeline stages "
                              "(its pipeline_layers() returns None)",
                              hint="use a model that declares pipeline_layers(), or run.runner: deepspeed_runner")
        self.spec: dict[str, Any] = spec
        super().__init__(cfg, task, model, datasets)
        world = self.ctx.world_size
        if world % self.num_stages or self.num_stages > len(spec["layers"]):
            raise ConfigError(f"run.num_stages is {self.num_stages}: it must divide the {world} process(es) "
                              f"and be at most the model's {len(spec['layers'])} pipeline layers",
                              hint="launch num_stages x data-parallel replicas processes (torchrun --nproc_per_node)")
        if self.plan_ds.stage > 1:
            raise ConfigError(f"run.deepspeed_config.zero_optimization.stage is {self.plan_ds.stage}: DeepSpeed's "
                              "pipeline engine supports ZeRO stage 0 or 1",
                              hint="set zero_optimization.stage to 0 or 1 (or use the deepspeed_runner for ZeRO-2/3)")
        from deepspeed.runtime.pipe.topology import PipeDataParallelTopology

        self.topology = PipeDataParallelTopology(num_pp=self.num_stages, num_dp=world // self.num_stages)
        coord = self.topology.get_coord(self.ctx.rank)
        self.stage_id, self.dp_rank = coord.pipe, coord.data
        self.pipe: Any = None

    def data_parallel_size(self) -> int:
        return self.ctx.world_size // self.num_stages

    # -- building ------------------------------------------------------------------------
    def setup_training(self) -> list[int]:
        """The runner's setup with the stream sharded over data-parallel replicas (every stage
        of a replica reads the same micro-batches)."""
        s = self.settings
        self.check_splits(training=True)
        self.stream = build_train_stream(self.datasets, s, self.dp_rank, self.data_parallel_size())
        epochs = self.plan()
        if self.ctx.is_main:
            preflight_output_dir(self.output_dir, needed_bytes=16 * sum(p.numel() for p in self.model.parameters() if p.requires_grad) + (16 << 20))
            self.store.clean_temporaries()
        self.optimizer = self.build_optimizer()
        self.scheduler = self.build_scheduler(epochs)
        self.wrapped_model = self.wrap_model(self.model)
        if self.resume_load_dir:
            from pathlib import Path

            tag = None if self.resume_tag in (None, "") else str(self.resume_tag)
            self._load_deepspeed(Path(str(self.resume_load_dir)).expanduser(), tag)
        return epochs

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The PipelineModule of this stage, then AdamW over mm's groups restricted to its parameters."""
        from deepspeed.pipe import PipelineModule

        deepspeed = _import_deepspeed(self.ctx.device)
        self._ensure_process_group(deepspeed)
        self.pipe = PipelineModule(layers=self.spec["layers"], loss_fn=self.spec["loss_fn"], topology=self.topology,
                                   partition_method=self.partition_method, dynamic_shape=True)
        self.owners = self._param_owners()
        for param in self.pipe.parameters():
            # DeepSpeed's gradient norm counts a parameter only on the first stage unless it is
            # marked model-parallel; marked, each stage adds its own and clipping is global
            param.model_parallel = True
        local = {id(p) for p in self.pipe.parameters()}
        s, plan = self.settings, self.plan_ds
        groups = [{**g, "params": [p for p in g["params"] if id(p) in local]}
                  for g in param_groups(self.model, s.weight_decay, s.lr_layer_decay)]
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise ConfigError(f"pipeline stage {self.stage_id} has no trainable parameters",
                              hint="change run.partition_method or run.num_stages so that every stage trains something")
        if plan.offload_optimizer:  # MPP-LLaVA's sft configs: ZeRO-1 with the optimizer on the CPU
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return DeepSpeedCPUAdam(groups, lr=s.init_lr, betas=plan.betas, eps=plan.eps,
                                    weight_decay=s.weight_decay, adamw_mode=True)
        return build_adamw(groups, s.optimizer_impl, lr=s.init_lr, betas=plan.betas, eps=plan.eps,
                           weight_decay=s.weight_decay)

    def _param_owners(self) -> dict[str, int]:
        """``name -> stage`` of every trainable parameter of the model that a pipeline layer holds."""
        bounds = self.pipe.parts
        stage_of = {}
        for index, layer in enumerate(self.spec["layers"]):
            stage = next(k for k in range(self.num_stages) if bounds[k] <= index < bounds[k + 1])
            for param in layer.parameters():
                if stage_of.setdefault(id(param), stage) != stage:
                    raise ConfigError("a parameter is shared by layers of two pipeline stages (tied embeddings?)",
                                      hint="untie the LM head from the embeddings or use run.num_stages: 1")
        return {name: stage_of[id(p)] for name, p in self.model.named_parameters()
                if p.requires_grad and id(p) in stage_of}

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        deepspeed = _import_deepspeed(self.ctx.device)
        engine, _, _, _ = deepspeed.initialize(model=self.pipe, optimizer=self.optimizer, config=self.plan_ds.config,
                                               dist_init_required=False)
        self.engine = engine
        log.info("deepspeed pipeline: %d stage(s) x %d replica(s), layers %s, %s, micro-batch %d x %d",
                 self.num_stages, self.data_parallel_size(), self.pipe.parts, self.plan_ds.dtype or "fp32",
                 self.settings.batch_size_train, self.settings.accum_grad_iters)
        return engine

    # -- a step ----------------------------------------------------------------------------
    def train_step(self, group: int) -> tuple[dict[str, float], int]:
        """One ``train_batch`` over ``group`` micro-batches (a short last group steps alike)."""
        batches, n_samples = [], 0
        for _ in range(group):
            samples = move_to_device(self.stream.next(), self.ctx.device)
            n_samples += batch_size_of(samples)
            batches.append(self.spec["batch"](samples))
        engine, s = self.engine, self.settings
        if engine.micro_batches != group:
            engine.set_train_batch_size(group * s.batch_size_train * self.data_parallel_size())
        lr = self.scheduler.step(cur_epoch=self.progress.epoch, cur_step=self.progress.step)
        with self.precision.autocast():  # fp32 inputs (images) meet the bf16/fp16 stage modules
            loss = float(engine.train_batch(data_iter=iter(batches)))
        if group != s.accum_grad_iters:
            engine.set_train_batch_size(s.accum_grad_iters * s.batch_size_train * self.data_parallel_size())
        self.progress.iter_in_epoch += group
        self.progress.global_iter += group
        self.progress.step += 1
        if not math.isfinite(loss):
            check_finite(loss, self.progress.step, self.progress.epoch, self.last_checkpoint)
        values = {"loss": loss, "lr": lr, "epoch": self.progress.epoch}
        self.hook.after_train_step(run=self.run_view(values), step=self.progress.step, metrics=dict(values))
        self.metrics.advance(group, loss=loss, lr=lr)
        # samples/s counts every process: the stages of one replica share their samples
        return values, n_samples / self.num_stages

    # -- the whole model on every process ---------------------------------------------------
    def sync_stages(self) -> dict[str, torch.Tensor]:
        """Broadcast each stage's trained weights (fp32 masters under bf16/fp16) to every process;
        returns them by the model's names. Every process calls it (collective)."""
        import torch.distributed as dist
        from deepspeed.utils import safe_get_full_fp32_param

        params = dict(self.model.named_parameters())
        mine = sorted(n for n, stage in self.owners.items() if stage == self.stage_id)
        full = {}
        for name in mine:  # a collective over this stage's data-parallel group under ZeRO-1
            value = safe_get_full_fp32_param(params[name])
            full[name] = (value if value is not None else params[name].detach()).float().cpu().clone()
        out = {}
        for name in sorted(self.owners):
            stage = self.owners[name]
            value = full[name] if name in full else torch.empty(params[name].shape, dtype=torch.float32)
            if self.ctx.world_size > 1:
                dist.broadcast(value, src=self.topology.get_rank(pipe=stage, data=0))
            with torch.no_grad():
                params[name].copy_(value.to(params[name].dtype))
            out[name] = value
        return out

    def client_state(self, rng_states: list[Any] | None) -> dict[str, Any]:
        """Every stage writes its own ``mp_rank_XX`` file and reads mm's state back from it."""
        return {"mm": self._mm_state(self.ctx.broadcast_from_main(rng_states))}

    def consolidate(self) -> dict[str, torch.Tensor]:
        """The whole model's fp32 trainable weights (the parts no layer holds as they are)."""
        synced = self.sync_stages()
        names = (set(self.model.trainable_state_dict()) if hasattr(self.model, "trainable_state_dict") else None)
        return {name: synced[name] if name in synced else p.detach().float().cpu().clone()
                for name, p in self.model.named_parameters()
                if p.requires_grad and (names is None or name in names)}

    def evaluate_splits(self, splits: list[str], epoch: int | str) -> dict[str, dict[str, float]]:
        if self.engine is not None and self.eval_labels(splits):
            self.sync_stages()
        return super().evaluate_splits(splits, epoch)

    def _load_deepspeed(self, load_dir: Any, tag: str | None) -> None:
        super()._load_deepspeed(load_dir, tag)
        self.sync_stages()


def _positive_int(value: Any, key: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or str(value).strip() not in (str(number), f"{number}.0"):
        raise ConfigError(f"{key} must be a positive integer, got {value!r}", hint=f"e.g. {key}=2")
    return number
