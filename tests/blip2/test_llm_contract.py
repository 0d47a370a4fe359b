"""mm_core.testing's backend checks on mm's own backends and on broken ones, and the model-type
defaults' `llm` block going only to its own backend (issue 21)."""

from __future__ import annotations

import blip2_testllm
import pytest
import torch
from omegaconf import OmegaConf

from mm_core.base.llm import IGNORE_INDEX
from mm_core.config.loader import load_config
from mm_core.errors import ConfigError, UnknownNameError
from mm_core.hookspecs import hookimpl
from mm_core.plugins import plugin_registered
from mm_core.testing import ContractError, check_llm_backend, check_model, check_plugin

QWEN_TINY = {"model": "mm_qwen_llm:assets/tiny_qwen2", "random_init": True, "init_seed": 0, "dtype": "float32"}


class SupervisesTheQuestion(blip2_testllm.TinyGPT2LLM):
    def encode_conversation(self, conversation, num_image_tokens, max_len=None):
        encoded = super().encode_conversation(conversation, num_image_tokens, max_len)
        return {**encoded, "labels": list(encoded["input_ids"])}


class RandomEachBuild(blip2_testllm.TinyGPT2LLM):
    def __init__(self, **kw):
        super().__init__(**kw)
        torch.seed()  # a non-deterministic seed: the frozen weights differ per build
        torch.nn.init.normal_(self.model.transformer.h[0].mlp.c_fc.weight)


class OnePlaceholder(blip2_testllm.TinyGPT2LLM):
    def _text(self, text, num_image_tokens):
        return super()._text(text, 1)


class BrokenBackends:
    @hookimpl
    def register_llms(self):
        return {name: f"{__name__}:{cls}" for name, cls in (("bad_labels", "SupervisesTheQuestion"),
                ("bad_rebuild", "RandomEachBuild"), ("bad_images", "OnePlaceholder"))}


def test_mm_backends_pass_the_contract(test_llm_plugin):
    assert check_llm_backend("tiny_gpt2", {"hidden_size": 32}).hidden_size == 32
    assert check_llm_backend("qwen", QWEN_TINY).image_token_id is not None


@pytest.mark.parametrize("name,problem", [("bad_labels", "only the assistant's answer"),
                                          ("bad_rebuild", "frozen weights differ"),
                                          ("bad_images", "contiguous image_token_id")])
def test_broken_backends_fail_with_what_is_wrong(name, problem):
    with plugin_registered(BrokenBackends(), name="broken-backends"), pytest.raises(ContractError, match=problem):
        check_llm_backend(name)


def test_check_plugin_checks_the_backends_and_says_so(test_llm_plugin):
    assert check_plugin(test_llm_plugin.name, cache_dir=".", llm_options={"tiny_gpt2": {"hidden_size": 32}}) \
        == ["llms:tiny_gpt2"]


def test_check_model_composes_with_a_chosen_backend(test_llm_plugin):
    batch = {"image": torch.randn(2, 3, 28, 28), "text_input": ["a cat sitting on a red sofa", "a bus"]}
    model = check_model("blip2_llm", batch, options={"llm": {"name": "tiny_gpt2", "hidden_size": 32}})
    assert type(model.llm).__name__ == "TinyGPT2LLM" and model.llm.hidden_size == 32
    encoded = model.llm.encode_conversation([{"from": "user", "value": "hi"}, {"from": "assistant", "value": "yes"}], 4)
    assert encoded["labels"][0] == IGNORE_INDEX


def test_the_type_defaults_llm_block_goes_only_to_its_own_backend(test_llm_plugin):
    other = load_config({"model": {"arch": "blip2_llm", "model_type": "tiny", "llm": {"name": "tiny_gpt2"}}})
    assert OmegaConf.to_container(other.config.model.llm) == {"name": "tiny_gpt2"}
    same = load_config({"model": {"arch": "blip2_llm", "model_type": "tiny", "llm": {"name": "qwen", "dtype": "float32"}}})
    assert same.config.model.llm.model == "mm_qwen_llm:assets/tiny_qwen2" and same.config.model.llm.freeze is True
    unnamed = load_config({"model": {"arch": "blip2_llm", "model_type": "tiny"}}, ["model.llm.init_seed=3"])
    assert unnamed.config.model.llm.name == "qwen" and unnamed.config.model.llm.init_seed == 3


def test_a_key_the_backend_does_not_declare_is_an_error_naming_file_and_key(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model:\n  arch: blip2_llm\n  model_type: tiny\n  llm: {name: qwen, frezze: false}\n")
    with pytest.raises(ConfigError, match=r"run.yaml: LLM backend 'qwen' has no option 'model.llm.frezze' "
                                          r"\(did you mean 'freeze'\?\)"):
        load_config(str(config))
    with pytest.raises(ConfigError, match=r"--options: model.llm.lora_r must be an integer"):
        load_config({"model": {"arch": "blip2_llm", "llm": {"name": "qwen"}}}, ["model.llm.lora_r=big"])
    config.write_text("model:\n  arch: blip2_llm\n  llm: {name: qwne}\n")
    with pytest.raises(UnknownNameError, match=r"run.yaml: model.llm.name: unknown LLM backend 'qwne'.*did you mean 'qwen'"):
        load_config(str(config))
