"""The ``qwen`` backend: loading rules, placeholder choice, LoRA targets and the tiny assets
(``minigpt4qwen``, its BLIP-2 composition, is tested in tests/blip2/test_minigpt4qwen.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mm_core.errors import ConfigError
from mm_core.registry import get_registry


def test_backend_is_registered_and_torch_free_to_list():
    registry = get_registry()
    assert registry.get("llms", "qwen").target == "mm_qwen_llm.qwen:QwenLLM"
    assert registry.get("commands", "export-lora").target == "mm_qwen_llm.export:main"


def test_tiny_assets_are_regenerated_byte_for_byte(capsys):
    from mm_qwen_llm.tiny import main

    assert main(["--check"]) == 0, capsys.readouterr().out


def test_tiny_tokenizer_has_chatml_and_pads_with_end_of_text(tiny_llm, tokenizer):
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|image_pad|>"):
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id or token == tokenizer.unk_token
        assert len(tokenizer(f"a{token}b").input_ids) == 3  # a special token is never split
    assert tiny_llm.pad_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert (tiny_llm.image_token, tiny_llm.image_token_id) == ("<|image_pad|>", tokenizer.convert_tokens_to_ids("<|image_pad|>"))
    assert tokenizer.decode(tokenizer("Hello, wörld 42!\n").input_ids) == "Hello, wörld 42!\n"  # byte-level: lossless


def test_placeholder_choice_per_tokenizer(tokenizer):
    from mm_qwen_llm.qwen import choose_image_token

    assert choose_image_token(tokenizer) == ("<|image_pad|>", tokenizer.convert_tokens_to_ids("<|image_pad|>"))
    assert choose_image_token(tokenizer, "<|vision_start|>")[0] == "<|vision_start|>"
    with pytest.raises(ConfigError, match="<|extra_0|>"):  # a Qwen-1 token this tokenizer lacks
        choose_image_token(tokenizer, "<|extra_0|>")


def test_lora_targets_per_architecture():
    from mm_qwen_llm.qwen import lora_targets

    assert lora_targets("qwen") == ["c_attn"]  # Qwen-1 fuses q, k, v
    assert lora_targets("qwen2") == ["q_proj", "v_proj"]
    assert lora_targets("qwen3") == ["q_proj", "v_proj"]
    assert lora_targets("qwen2", ["o_proj"]) == ["o_proj"]


def test_remote_code_is_refused_unless_configured(tmp_path, tiny_dir):
    from mm_qwen_llm.qwen import QwenLLM

    folder = tmp_path / "qwen1"
    shutil.copytree(tiny_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="qwen", auto_map={"AutoConfig": "configuration_qwen.QWenConfig",
                                               "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="trust_remote_code") as err:
        QwenLLM.from_config({"model": str(folder)})
    assert "llm_trust_remote_code: true" in str(err.value)


def test_missing_model_is_a_config_error(tmp_path):
    from mm_qwen_llm.qwen import QwenLLM

    with pytest.raises(ConfigError, match="cannot load the LLM"):
        QwenLLM.from_config({"model": str(tmp_path / "nowhere" / "model-dir")})


def test_freezing_lora_and_gradient_checkpointing():
    from mm_qwen_llm.qwen import QwenLLM

    base = {"model": "mm_qwen_llm:assets/tiny_qwen2", "random_init": True}
    frozen = QwenLLM.from_config(base)
    assert not any(p.requires_grad for p in frozen.parameters())
    full = QwenLLM.from_config({**base, "freeze": False})
    assert all(p.requires_grad for p in full.parameters())
    lora = QwenLLM.from_config({**base, "lora": True, "lora_r": 2, "gradient_checkpointing": True})
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    base_model = lora.model.get_base_model()
    assert getattr(base_model, "is_activation_checkpointing", None) or base_model.is_gradient_checkpointing
    lora.train()
    batch = lora.collate([lora.encode_conversation([{"from": "user", "value": "hi"}, {"from": "assistant", "value": "ok"}], 4)])
    lora(lora.embed_tokens(batch["input_ids"]), batch["attention_mask"], batch["labels"]).loss.backward()
    assert all(p.grad is not None for n, p in lora.named_parameters() if "lora_B" in n)
    # same seed, same random LLM: a rebuilt model plus a trainable-only checkpoint is the same model
    again = QwenLLM.from_config(base)
    assert all(torch.equal(a, b) for a, b in zip(frozen.state_dict().values(), again.state_dict().values()))
