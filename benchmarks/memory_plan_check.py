"""Plan vs measurement on CPU: build a ``minigpt4qwen`` config for real, train a few steps and compare
with the memory plan of the same config: bytes autograd saved for backward (``saved_tensors_hooks``)
vs the activation estimate, gradients and AdamW states vs the DDP row, and the process's peak RSS.

    python benchmarks/memory_plan_check.py tiny       # the tiny type (tests/memory_plan runs it)
    python benchmarks/memory_plan_check.py mid        # real EVA ViT-g and Q-Former dims, a small LLM

Prints one JSON object. Run each in its own process: peak RSS is the process's.
"""

from __future__ import annotations

import json
import resource
import sys

import torch
from omegaconf import OmegaConf

from mm_core.config.loader import load_model_defaults
from mm_core.registry import get_registry
from mm_memory_plan.model_facts import build_on_meta, read_facts
from mm_memory_plan.plan import Plan, PlanSettings

BATCH = 4
#: The mid-size configuration: the tiny type with LAVIS' EVA ViT-g (224 px) and BERT-base Q-Former
#: dims (mm_blip2's defaults when the tiny's ``vision`` / ``qformer`` blocks are removed), fp32.
MID = {"image_size": 224, "vision": None, "qformer": None, "cross_attention_freq": 2, "num_query_token": 32}


def model_config(kind: str):
    cfg = load_model_defaults("minigpt4qwen", "tiny").model
    if kind == "mid":
        cfg = OmegaConf.merge(cfg, MID)
    return cfg


def batch(cfg) -> dict:
    size = int(cfg.image_size)
    words = " ".join(["a small red square on a blue field"] * 40)
    return {"image": torch.randn(BATCH, 3, size, size), "text_input": [words] * BATCH}


def saved_bytes(model, samples) -> tuple[int, int]:
    """(bytes of the distinct non-parameter storages autograd saved during forward, tokens per sample)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}
    lengths = []

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params and tensor.device.type != "meta":
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    def record_length(module, args, kwargs):
        lengths.append(kwargs["inputs_embeds"].shape[1])

    handle = model.llm.model.register_forward_pre_hook(record_length, with_kwargs=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(samples)["loss"]
    handle.remove()
    loss.backward()
    return sum(storages.values()), lengths[0]


def main(kind: str) -> dict:
    cfg = model_config(kind)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model = get_registry().resolve("models", "minigpt4qwen").from_config(cfg)
    samples = batch(cfg)
    activations, tokens = saved_bytes(model, samples)
    trainable = [p for p in model.parameters() if p.requires_grad]
    gradients = sum(p.grad.nbytes for p in trainable)
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    for _ in range(2):
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        model(samples)["loss"].backward()
    states = sum(v.nbytes for s in optimizer.state.values() for k, v in s.items() if k != "step")
    run = OmegaConf.create({"model": cfg, "run": {"batch_size_train": BATCH}})
    run.model.max_txt_len = tokens
    plan = Plan.build(read_facts(build_on_meta(cfg)), PlanSettings.from_config(run))
    ddp = plan.rows[0]
    return {"config": kind, "parameters": plan.facts.total.params, "tokens": tokens, "batch": BATCH,
            "measured": {"saved_for_backward": activations, "gradients": gradients, "adamw_states": states,
                         "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                         "rss_before_build": rss_start},
            "plan": {"activations": plan.activations.full, "gradients": ddp.gradients, "optimizer": ddp.optimizer,
                     "weights": ddp.weights, "ddp_total": plan.total(ddp, False)}}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else "tiny"), indent=1))
