"""The ITC step of the tiny ``blip2`` on a fixed global batch, in one process or as one rank of a
torchrun job (``python -m torch.distributed.run --nproc_per_node 2 ddp_itc.py OUT``): rank ``r`` takes
its slice of the batch, the model is wrapped in DistributedDataParallel (gloo), and rank 0 writes the
mean loss and the (DDP-averaged) gradients to OUT."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lavis_reference as ref  # noqa: E402

TEXTS = ["a red cat", "two dogs on the grass", "a bus in the city", "a red cat sleeping"]
IMAGE_IDS = [7, 3, 9, 7]  # rank 0 holds ids 7, 3 and rank 1 holds 9, 7: a positive across ranks


class ITCStep(nn.Module):
    """The ITC loss of ``blip2``'s forward (features -> ``contrastive``), as a module DDP can wrap."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, samples: dict) -> torch.Tensor:
        _, image_feats = self.model.retrieval_image_features(samples["image"])
        text_feat = self.model.retrieval_text_features(*self.model.retrieval_tokenize(samples["text_input"]))
        return self.model.contrastive(image_feats, text_feat, samples)[0]


def build() -> ITCStep:
    from mm_blip2.checkpoints import load_lavis_state_dict
    from mm_core.config.loader import load_model_defaults
    from mm_core.registry import get_registry

    cfg = load_model_defaults("blip2", "tiny").model
    torch.manual_seed(1)
    model = get_registry().resolve("models", "blip2").from_config(cfg)
    load_lavis_state_dict(model, ref.lavis_state_dict(seed=2))
    return ITCStep(model.double().eval())  # eval: no dropout; float64: the comparison is exact to 1e-6


def global_batch() -> dict:
    generator = torch.Generator().manual_seed(5)
    return {"image": torch.randn(4, 3, 28, 28, generator=generator), "text_input": TEXTS,
            "image_id": torch.tensor(IMAGE_IDS)}


def step(module: nn.Module, samples: dict) -> float:
    loss = module(samples)
    loss.backward()
    return float(loss.detach())


def gradients(step_module: ITCStep) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in step_module.model.named_parameters() if p.grad is not None}


def main(out: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    module = build()
    batch = global_batch()
    per_rank = len(TEXTS) // world
    part = slice(rank * per_rank, (rank + 1) * per_rank)
    samples = {"image": batch["image"][part], "text_input": TEXTS[part], "image_id": batch["image_id"][part]}
    loss = torch.tensor(step(DistributedDataParallel(module, find_unused_parameters=True), samples),
                        dtype=torch.float64)
    dist.all_reduce(loss)
    if rank == 0:
        torch.save({"loss": loss / world, "grads": gradients(module)}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
