"""``minigpt4qwen``: the BLIP-2 -> Qwen composition of this plugin, registered here with
MiniGPT4-Qwen's model types and flat YAML keys, reaching the ``qwen`` backend by name."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from mm_blip2.models.minigpt4qwen import MiniGPT4Qwen
from mm_core.errors import DataError, UnknownNameError
from mm_core.registry import get_registry


def test_minigpt4qwen_is_a_blip2_model_with_minigpt4qwen_types():
    registry = get_registry()
    entry = registry.get("models", "minigpt4qwen")
    assert entry.target == "mm_blip2.models.minigpt4qwen:MiniGPT4Qwen" and entry.package == "mm_blip2"
    assert set(registry.model_types("minigpt4qwen")) == {"qwen7b_chat", "qwen14b_chat", "qwen2_5_7b_instruct", "tiny"}
    assert registry.default_model_type("minigpt4qwen") == "qwen7b_chat"
    assert "mm-plugin-qwen-llm" in registry.card("models", "minigpt4qwen")


def test_without_the_qwen_plugin_the_error_names_what_to_install(monkeypatch):
    from mm_core.api import load_model
    from mm_core.plugins import reset_plugin_host

    monkeypatch.setenv("MM_PLUGINS", "blip2")
    reset_plugin_host()
    try:
        assert "qwen" not in get_registry().names("llms")
        with pytest.raises(UnknownNameError, match="unknown LLM backend 'qwen'") as err:
            load_model("minigpt4qwen", "tiny")
        assert ("LLM backend 'qwen' is provided by mm-plugin-qwen-llm (model 'minigpt4qwen' of "
                "'mm-plugin-blip2 0.1.0' needs it): pip install mm-plugin-qwen-llm") in str(err.value)
    finally:
        monkeypatch.delenv("MM_PLUGINS")
        reset_plugin_host()


PUBLISHED = """
model:
  arch: minigpt4qwen
  model_type: qwen7b_chat
  load_finetuned: False
  load_pretrained: True
  pretrained: "ckpt/blip2/blip2_pretrained_flant5xxl.pth"
  finetuned: ""
  vit_model: "eva_clip_g"
  image_size: 224
  drop_path_rate: 0
  use_grad_checkpoint: True
  vit_precision: "fp16"
  freeze_vit: True
  unfreeze_pos_embed: False
  num_query_token: 32
  qformer_text_input: False
  freeze_qformer: True
  freeze_queries: True
  freeze_proj: False
  llm_model: "ckpt/Qwen7B-chat"
  get_lora: False
  lora_alpha: 32
  lora_r: 8
  lora_dropout: 0.05
  max_txt_len: 256
  enable_autocast: False
"""


def test_minigpt4qwen_accepts_the_published_model_section(tmp_path):
    from mm_core.config.loader import load_config

    path = tmp_path / "published.yaml"
    path.write_text(PUBLISHED)
    cfg = load_config(str(path)).config.model
    assert cfg.max_txt_len == 256 and cfg.llm_model == "ckpt/Qwen7B-chat"
    llm = OmegaConf.to_container(MiniGPT4Qwen.llm_config(None, cfg))
    assert llm == {"name": "qwen", "model": "ckpt/Qwen7B-chat", "freeze": True, "lora": False, "lora_r": 8,
                   "lora_alpha": 32, "lora_dropout": 0.05, "dtype": "bfloat16", "trust_remote_code": False,
                   "gradient_checkpointing": True}
    explicit = OmegaConf.merge(cfg, {"llm": {"model": "elsewhere", "lora": True}})
    assert OmegaConf.to_container(MiniGPT4Qwen.llm_config(None, explicit))["model"] == "elsewhere"


def test_image_marks_must_match_images(tmp_path):
    from mm_core.api import load_model

    model = load_model("minigpt4qwen", "tiny")
    conv = [{"from": "user", "value": "<ImageHere> and <ImageHere>?"}, {"from": "assistant", "value": "two"}]
    with pytest.raises(DataError, match="sample a7: 2 image mark"):
        model({"image": torch.randn(1, 3, 32, 32), "conversations": [conv], "instance_id": ["a7"]})
    two = model({"image": [torch.randn(2, 3, 32, 32)], "conversations": [conv]})
    assert torch.isfinite(two["loss"])
