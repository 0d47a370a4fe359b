"""The tiny MiniGPT4-Qwen composition trained, resumed and exported through ``mmrun``
(chatting with it: tests/serve/test_chat_cli.py)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from mm_core.config.loader import load_config
from mm_core.engine.checkpoint import resolve_checkpoint
from mm_core.registry import get_registry

from .conftest import EXAMPLE, mmrun, train_losses

pytestmark = pytest.mark.slow  # real runs / several processes: `make test-fast` skips this module

LORA = ["model.freeze_llm=true", "model.get_lora=true"]


def build_model(options: list[str]):
    cfg = load_config(str(EXAMPLE), options).config
    return get_registry().resolve("models", "minigpt4qwen").from_config(cfg.model)


def checkpoint_keys(run) -> set[str]:
    return set(load_file(str(resolve_checkpoint(run / "checkpoints" / "latest") / "model.safetensors")))


def test_example_trains_and_the_loss_decreases(trained_run):
    losses = train_losses(trained_run)
    steps = sorted(losses)
    assert steps[-1] == 24  # 3 epochs of 64 samples in batches of 8
    first, last = losses[steps[0]], losses[steps[-1]]
    assert last < 0.6 * first, losses


def test_checkpoint_holds_exactly_the_trainable_tensors(trained_run):
    model = build_model([])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    keys = checkpoint_keys(trained_run)
    assert keys == trainable
    assert any(k.startswith("visual_encoder.") for k in frozen) and not keys & frozen


def test_lora_trains_only_adapters_and_projection(lora_run):
    keys = checkpoint_keys(lora_run)
    adapters = {k for k in keys if ".lora_A." in k or ".lora_B." in k}
    assert keys - adapters == {"llm_proj.weight", "llm_proj.bias"}
    # Qwen2.x: adapters on q_proj and v_proj of both layers, A and B each
    assert {k.split(".self_attn.")[1].split(".")[0] for k in adapters} == {"q_proj", "v_proj"}
    assert len(adapters) == 2 * 2 * 2
    model = build_model(LORA)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == keys


def test_resume_continues_the_run_exactly(trained_run, cache_root):
    out = cache_root / "run_resumed"
    start = trained_run / "checkpoints" / "step_0000008"
    mmrun(["--config", str(EXAMPLE), "--options", f"run.output_dir={out}", "run.max_epoch=3",
           f"run.resume_ckpt_path={start}"], cache_root)
    original, resumed = train_losses(trained_run), train_losses(out)
    later = sorted(s for s in original if s > 8)
    assert sorted(s for s in resumed if s > 8) == later
    for step in later:  # bit for bit: the RNG states, data position and optimizer come back exactly
        assert resumed[step] == original[step], step


def test_export_lora_writes_a_plain_model_with_the_adapters_merged(lora_run, cache_root):
    from transformers import AutoModelForCausalLM

    out = cache_root / "merged_llm"
    checkpoint = lora_run / "checkpoints" / "latest"
    mmrun(["export-lora", "--config", str(EXAMPLE), "--checkpoint", str(checkpoint), "--out", str(out),
           "--options", *LORA], cache_root)
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())

    model = build_model(LORA).eval()
    model.load_checkpoint(resolve_checkpoint(checkpoint))
    ids = torch.tensor([model.llm.encode_prompt([{"from": "user", "value": "What shape is in the picture?"}], 4)])
    with torch.no_grad():
        with_adapters = model.llm.model(input_ids=ids).logits
        plain = merged(input_ids=ids).logits
        with model.llm.model.disable_adapter():
            base = model.llm.model(input_ids=ids).logits
    assert torch.allclose(with_adapters, plain, atol=1e-5)
    assert not torch.allclose(with_adapters, base, atol=1e-4)  # the adapters did train
