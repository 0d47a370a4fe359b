"""``deepspeed_runner``: the shared training loop with a DeepSpeed engine (ZeRO 0-3, bf16/fp16).

Only what DeepSpeed changes is overridden; evaluation, metrics, hooks, lr schedules and the
best-checkpoint logic are :class:`~mm_core.engine.runner.Runner`'s.

* The model is wrapped by ``deepspeed.initialize`` with an optimizer built from mm's parameter
  groups (only trainable parameters): torch's AdamW, or DeepSpeed's CPU Adam when the optimizer
  is offloaded. Passing a torch optimizer avoids compiling DeepSpeed's fused ops.
* Micro-batches go through ``engine.backward``; the runner marks the micro-batch that ends an
  optimizer step itself (``set_gradient_accumulation_boundary``), so a short group at the end of
  an epoch steps exactly like the plain runners.
* A checkpoint ``checkpoints/<tag>/`` is the plain runners' (``model.safetensors`` with the
  consolidated fp32 trainable parameters, ``training_state.pt``, ``config.yaml``,
  ``meta.json``), and DeepSpeed's own sharded state (optimizer, fp32 master weights) is written
  by every rank to ``checkpoints/deepspeed/<tag>/`` first, with mm's progress, data position,
  scheduler and every rank's RNG in its ``client_state``. The mm directory is written last and
  atomically, so ``latest`` never names a checkpoint whose DeepSpeed half is missing.
* Resume with ``run.resume_ckpt_path`` (an mm checkpoint, ``latest``, ``best``) or MiniGPT4-Qwen's
  ``run.resume_ckpt_load_dir`` + ``run.resume_ckpt_tag`` (a DeepSpeed checkpoint directory).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mm_core.engine.checkpoint import capture_rng
from mm_core.engine.optim import build_adamw, param_groups
from mm_core.engine.precision import Precision
from mm_core.engine.runner import EpochRunner, IterRunner, Progress, Runner
from mm_core.errors import CheckpointError, ConfigError
from mm_deepspeed.config import DeepSpeedPlan, plan_deepspeed

log = logging.getLogger(__name__)

#: DeepSpeed's sharded checkpoints live beside mm's, under ``checkpoints/<DS_SUBDIR>/<tag>``.
DS_SUBDIR = "deepspeed"
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeepSpeedRunner(Runner):
    """Trains with a DeepSpeed engine; epochs as ``runner_base`` (or ``run.max_iters`` as
    ``runner_iter`` when it is set)."""

    def __init__(self, cfg: DictConfig, task: Any, model: torch.nn.Module, datasets: dict[str, dict[str, Any]]):
        run = OmegaConf.to_container(cfg.run, resolve=True) if "run" in cfg else {}
        super().__init__(cfg, task, model, datasets)
        s = self.settings
        if run.get("resume_ckpt_load_dir") and s.resume_ckpt_path:
            raise ConfigError("run.resume_ckpt_path and run.resume_ckpt_load_dir are both set",
                              hint="resume either from an mm checkpoint or from a DeepSpeed checkpoint directory")
        self.plan_ds: DeepSpeedPlan = plan_deepspeed(run, s, self.data_parallel_size())
        self.settings = self.plan_ds.settings
        self.resume_load_dir = run.get("resume_ckpt_load_dir")
        self.resume_tag = run.get("resume_ckpt_tag")
        dtype = _DTYPES.get(self.plan_ds.dtype or "")
        # DeepSpeed keeps the module in bf16/fp16 and scales fp16 losses itself: autocast only
        # lets fp32 inputs meet low-precision weights; no GradScaler.
        self.precision = Precision(self.ctx.device.type, dtype, None)
        self.engine: Any = None
        self._consolidated: dict[str, torch.Tensor] | None = None

    def data_parallel_size(self) -> int:
        """Model replicas that split the data (all processes here; the pipeline runner divides)."""
        return self.ctx.world_size

    # -- plan ----------------------------------------------------------------------------
    def plan(self) -> list[int]:
        if self.settings.max_iters:
            return IterRunner.plan(self)
        return EpochRunner.plan(self)

    # -- building ------------------------------------------------------------------------
    def build_optimizer(self) -> torch.optim.Optimizer:
        """AdamW over mm's parameter groups with the DeepSpeed config's betas and eps."""
        s, plan = self.settings, self.plan_ds
        groups = param_groups(self.model, s.weight_decay, s.lr_layer_decay)
        if plan.offload_optimizer:
            # ZeRO-Offload steps on the CPU with DeepSpeed's own Adam (compiled on first use)
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return DeepSpeedCPUAdam(groups, lr=s.init_lr, betas=plan.betas, eps=plan.eps,
                                    weight_decay=s.weight_decay, adamw_mode=True)
        # run.optimizer_impl picks the kernels, as for the plain runners
        return build_adamw(groups, s.optimizer_impl, lr=s.init_lr, betas=plan.betas, eps=plan.eps,
                           weight_decay=s.weight_decay)

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        deepspeed = _import_deepspeed(self.ctx.device)
        self._ensure_process_group(deepspeed)
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=self.optimizer, config=self.plan_ds.config,
                                               dist_init_required=False)
        self.engine = engine
        log.info("deepspeed: ZeRO stage %d, %s, micro-batch %d x accumulation %d x %d process(es)",
                 self.plan_ds.stage, self.plan_ds.dtype or "fp32", self.settings.batch_size_train,
                 self.settings.accum_grad_iters, self.ctx.world_size)
        return engine

    def _ensure_process_group(self, deepspeed: Any) -> None:
        """DeepSpeed needs a process group even for one process; mm starts one only for several."""
        import datetime

        import torch.distributed as dist

        backend = self.settings.dist_backend or ("nccl" if self.ctx.device.type == "cuda" else "gloo")
        if not dist.is_initialized():
            for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
                os.environ.setdefault(key, value)
            dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1,
                                    timeout=datetime.timedelta(seconds=self.settings.dist_timeout))
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
        self.ctx.backend = dist.get_backend()
        # DeepSpeed caches a clone of the world group; one made for an earlier run in this
        # process (a notebook, a test session) belongs to a destroyed process group.
        from deepspeed.utils import groups

        groups._WORLD_GROUP = None

    # -- a step ----------------------------------------------------------------------------
    def accumulation_context(self, model: torch.nn.Module, last: bool) -> Any:
        """Tell the engine whether this micro-batch ends the optimizer step (it reduces
        gradients and steps then); DeepSpeed has no use for DDP's ``no_sync``."""
        import contextlib

        self.engine.set_gradient_accumulation_boundary(last)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        # the runner already divided by the micro-batches of this step
        self.engine.backward(loss, scale_wrt_gas=False)

    def optimizer_step(self) -> None:
        """Clipping (``gradient_clipping``), loss scaling and zeroing are the engine's."""
        self.engine.step()

    # -- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self, best: bool = False) -> str:
        """DeepSpeed's sharded state on every rank, then mm's checkpoint directory on rank 0."""
        if self.engine is None or self.last_saved_step == self.progress.step:
            return super().save_checkpoint(best)
        tag = self.tag()
        rng_states = self.ctx.gather_to_main(capture_rng())
        client_state = self.client_state(rng_states)
        self.engine.save_checkpoint(str(self.ds_root), tag=tag, client_state=client_state, save_latest=True,
                                    exclude_frozen_parameters=True)
        self._consolidated = self.consolidate()  # collective under ZeRO-3
        try:
            saved = super().save_checkpoint(best)
        finally:
            self._consolidated = None
        if self.ctx.is_main:
            self._prune_deepspeed_dirs()
        return saved

    def client_state(self, rng_states: list[Any] | None) -> dict[str, Any]:
        """mm's state inside DeepSpeed's checkpoint (rank 0 writes the only model-states file)."""
        return {"mm": self._mm_state(rng_states)} if self.ctx.is_main else {}

    def consolidate(self) -> dict[str, torch.Tensor]:
        """fp32 trainable weights for mm's ``model.safetensors``; every rank calls it."""
        return consolidated_trainable_state(self.model)

    @property
    def ds_root(self) -> Path:
        return self.store.root / DS_SUBDIR

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        if self._consolidated is not None:
            return self._consolidated
        return consolidated_trainable_state(self.model)

    def training_state(self, rng_states: list[Any]) -> dict[str, Any]:
        """mm's part of the state; the optimizer's lives in DeepSpeed's directory."""
        state = self._mm_state(rng_states)
        state["optimizer"] = {}
        state["deepspeed"] = {"dir": DS_SUBDIR, "stage": self.plan_ds.stage, "dtype": self.plan_ds.dtype or "fp32"}
        return state

    def _mm_state(self, rng_states: list[Any] | None) -> dict[str, Any]:
        self.progress.elapsed = self.metrics.wall_time if self.metrics else self.progress.elapsed
        return {
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "rng": rng_states or [],
            "progress": asdict(self.progress),
            "stream": self.stream.state_dict() if self.stream is not None else {},
            "world_size": self.ctx.world_size,
        }

    def _prune_deepspeed_dirs(self) -> None:
        """Keep DeepSpeed states only for the mm checkpoints that still exist."""
        if not self.ds_root.is_dir():
            return
        keep = set(self.store.tags())
        for path in self.ds_root.iterdir():
            if path.is_dir() and path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def load_model_weights(self, path: Path) -> None:
        """Under ZeRO-3 the parameters are partitioned: gather them, load on rank 0, re-partition."""
        if self.engine is None or self.plan_ds.stage < 3:
            return super().load_model_weights(path)
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=0):
            if self.ctx.is_main:
                super().load_model_weights(path)

    def setup_training(self) -> list[int]:
        epochs = super().setup_training()
        if self.resume_load_dir:
            tag = None if self.resume_tag in (None, "") else str(self.resume_tag)
            self._load_deepspeed(Path(str(self.resume_load_dir)).expanduser(), tag)
        return epochs

    def load_checkpoint(self, path: Path) -> None:
        """Continue from an mm checkpoint written by this runner (its DeepSpeed state included)."""
        ds_dir = path.parent / DS_SUBDIR
        if not (ds_dir / path.name).is_dir():
            raise CheckpointError(
                f"{path} has no DeepSpeed state ({ds_dir / path.name} is missing): it was not written by the "
                "deepspeed_runner, or its DeepSpeed directory was removed",
                hint="to start from its weights only, set model.load_checkpoint-style options or resume it "
                "with the runner that wrote it",
            )
        self._load_deepspeed(ds_dir, path.name)

    def _load_deepspeed(self, load_dir: Path, tag: str | None) -> None:
        """``engine.load_checkpoint`` (weights, optimizer, fp32 masters) plus mm's progress."""
        if not load_dir.is_dir():
            raise CheckpointError(f"run.resume_ckpt_load_dir: {load_dir} is not a directory",
                                  hint="give the folder that holds the DeepSpeed checkpoint tags")
        if tag is None and not (load_dir / "latest").is_file():
            raise CheckpointError(f"{load_dir} has no 'latest' file; name the checkpoint with run.resume_ckpt_tag")
        load_path, client_state = self.engine.load_checkpoint(
            str(load_dir), tag=tag, load_module_strict=False, load_optimizer_states=True,
            load_lr_scheduler_states=False)
        if load_path is None:
            raise CheckpointError(f"DeepSpeed could not load checkpoint '{tag or 'latest'}' from {load_dir}",
                                  hint="check run.resume_ckpt_tag against the folders in that directory")
        state = (client_state or {}).get("mm")
        if state is None:
            # a DeepSpeed checkpoint from elsewhere (e.g. MiniGPT4-Qwen): weights and optimizer only
            self.progress = Progress(step=int(self.engine.global_steps))
            log.warning("%s has no mm progress: weights and optimizer restored, data and schedule restart "
                        "(step counter set to %d)", load_path, self.progress.step)
        else:
            self.restore_training_state(state, str(load_path))
        self.last_checkpoint = Path(load_path).name
        self.last_saved_step = self.progress.step
        log.info("resumed from %s at step %d (epoch %d)", load_path, self.progress.step, self.progress.epoch)


def consolidated_trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full fp32 values of the trainable parameters, on CPU, named as in ``model.state_dict()``.

    DeepSpeed's ``safe_get_full_fp32_param`` assembles a parameter from its ZeRO partitions
    (the fp32 master copy under bf16/fp16; an all-gather under ZeRO-3, so every rank must call
    this). Without a ZeRO optimizer (stage 0, fp32) the parameter itself is the value.
    """
    from deepspeed.utils import safe_get_full_fp32_param

    names = list(model.trainable_state_dict()) if hasattr(model, "trainable_state_dict") else None
    params = dict(model.named_parameters())
    out: dict[str, torch.Tensor] = {}
    for name, param in params.items():
        if not param.requires_grad or (names is not None and name not in names):
            continue
        full = safe_get_full_fp32_param(param)
        out[name] = (full if full is not None else param.detach()).float().cpu().clone()
    return out


def _import_deepspeed(device: torch.device) -> Any:
    """``import deepspeed`` with the CPU accelerator when training on CPU (gloo)."""
    if device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import deepspeed
    except ImportError as exc:
        raise ConfigError(
            f"run.runner is deepspeed_runner but DeepSpeed cannot be imported: {exc}",
            hint="DS_BUILD_OPS=0 pip install --no-build-isolation 'deepspeed>=0.15' (it builds against the installed torch)",
        ) from exc
    if device.type == "cpu":
        # DeepSpeed's shared-memory all-reduce kernel would be compiled on first use (about 70 s,
        # or a hang on a busy machine); it only speeds up CPU collectives, and gloo does the job.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return deepspeed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
