"""``blip_retrieval``'s ITC step (momentum update, queue ITC, enqueue) on a fixed global batch, in one
process or as one rank of a torchrun job (``python -m torch.distributed.run --nproc_per_node 2
ddp_retrieval.py OUT``): rank ``r`` takes its half of the batch, the step is wrapped in
DistributedDataParallel (gloo), and rank 0 writes the mean loss, the DDP-averaged gradients, the queues
after the step and, with ``negative_all_rank``, the ITM negatives it drew over 20 seeds."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

TEXTS = ["a red cat", "two dogs on the grass", "a bus in the city", "a red cat sleeping"]
IMAGE_IDS = [7, 3, 9, 7]  # rank 0 holds ids 7, 3 and rank 1 holds 9, 7: one image on both ranks
ALPHA = 0.3


class ITCStep(nn.Module):
    """The ITC part of ``blip_retrieval``'s forward, as a module DDP can wrap."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, samples: dict) -> torch.Tensor:
        from mm_blip.models.retrieval import image_id_tensor

        model = self.model
        _, image_feat = model.retrieval_image_features(samples["image"])
        input_ids, attention_mask = model.retrieval_tokenize(samples["text_input"])
        text_feat = model.retrieval_text_features(input_ids, attention_mask)
        return model.momentum_itc(samples["image"], input_ids, attention_mask, image_feat[:, 0], text_feat,
                                  image_id_tensor(samples, model.device), ALPHA)


def build(**options) -> ITCStep:
    from tests.blip.conftest import build_tiny

    torch.manual_seed(1)
    text = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    model = build_tiny("blip_retrieval", text=text, queue_size=8, **options).double().train()
    model.idx_queue[0] = torch.tensor([9, 1, 7, 2, 3, 4, 5, 6])  # queued positives of every id in the batch
    model.queue_ptr[0] = 2
    return ITCStep(model)


def global_batch() -> dict:
    generator = torch.Generator().manual_seed(5)
    return {"image": torch.randn(4, 3, 32, 32, generator=generator, dtype=torch.float64), "text_input": TEXTS,
            "image_id": torch.tensor(IMAGE_IDS)}


def gradients(step: ITCStep) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in step.model.named_parameters() if p.grad is not None}


def draw_negatives(model: nn.Module, samples: dict) -> list[list[int]]:
    """The negative texts ``itm_pairs`` draws for this rank's images over 20 seeds (as token-id rows)."""
    from mm_blip.models.retrieval import image_id_tensor

    with torch.no_grad():
        image_embeds, image_feat = model.retrieval_image_features(samples["image"])
        input_ids, attention_mask = model.retrieval_tokenize(samples["text_input"])
        text_feat = model.retrieval_text_features(input_ids, attention_mask)
        ids = image_id_tensor(samples, model.device)
        drawn = []
        for seed in range(20):
            torch.manual_seed(seed)
            _, texts, _ = model.itm_pairs(image_embeds, image_feat[:, 0], text_feat, input_ids, attention_mask, ids)
            drawn += texts[2 * len(ids):].tolist()
    return drawn


def main(out: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    step = build(negative_all_rank=True)
    batch = global_batch()
    per_rank = len(TEXTS) // world
    part = slice(rank * per_rank, (rank + 1) * per_rank)
    samples = {"image": batch["image"][part], "text_input": TEXTS[part], "image_id": batch["image_id"][part]}
    negatives = draw_negatives(step.model, samples)
    wrapped = DistributedDataParallel(step, find_unused_parameters=True)
    loss = wrapped(samples)
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    model = step.model
    if rank == 0:
        torch.save({"loss": total / world, "grads": gradients(step), "image_queue": model.image_queue,
                    "text_queue": model.text_queue, "idx_queue": model.idx_queue, "queue_ptr": model.queue_ptr,
                    "text_proj_m": model.text_proj_m.weight.detach(), "negatives": torch.tensor(negatives)}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
