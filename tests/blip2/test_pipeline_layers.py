"""``Blip2LLM.pipeline_layers()`` (the split the deepspeed_pipe_runner hands to DeepSpeed): the
layers run in sequence give ``forward``'s loss and gradients on a batch with padding and several
images in one sample; the layers hold the model's own parameters."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mm_qwen_llm", reason="needs mm-plugin-qwen-llm (the qwen backend)")


@pytest.fixture(scope="module")
def model():
    from mm_core.api import load_model

    torch.manual_seed(0)
    return load_model("minigpt4qwen", "tiny").train()


def _samples() -> dict:
    generator = torch.Generator().manual_seed(1)
    images = [torch.randn(n, 3, 32, 32, generator=generator) for n in (1, 2, 1)]
    turns = [("<ImageHere> What is this?", "a red square on a blue ground"),
             ("<ImageHere> and <ImageHere>: which is larger?", "the first"),
             ("<ImageHere> Describe the picture in detail, please.", "a small green circle in the top left corner")]
    return {"image": images, "conversations": [[{"from": "user", "value": q}, {"from": "assistant", "value": a}]
                                               for q, a in turns]}


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_layers_in_sequence_equal_forward(model):
    samples = _samples()
    model.zero_grad()
    reference = model(samples)["loss"]
    reference.backward()
    expected = _grads(model)

    spec = model.pipeline_layers()
    model.zero_grad()
    inputs, labels = spec["batch"](samples)
    assert inputs[3].tolist() == [1, 2, 1] and labels.shape == inputs[0].shape
    output = inputs
    for layer in spec["layers"]:
        output = layer(output)
    loss = spec["loss_fn"](output, labels)
    loss.backward()
    assert torch.allclose(loss, reference, rtol=1e-6, atol=1e-6), (loss.item(), reference.item())
    got = _grads(model)
    assert sorted(got) == sorted(expected) and "llm_proj.weight" in got
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_layers_hold_the_models_parameters_once(model):
    spec = model.pipeline_layers()
    kinds = [type(layer).__name__ for layer in spec["layers"]]
    blocks = model.llm.model.config.num_hidden_layers
    assert kinds == ["ImageTextEmbedding", *["DecoderBlock"] * blocks, "LMHead"]
    owned = [id(p) for layer in spec["layers"] for p in layer.parameters()]
    assert len(owned) == len(set(owned))  # no parameter in two layers
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable <= set(owned)  # every trained parameter sits in some stage


def test_frozen_parts_stay_in_eval_mode(model):
    first = model.pipeline_layers()["layers"][0]
    first.train()
    frozen = getattr(model, "_frozen", [])
    assert frozen and all(not m.training for m in frozen)
    assert first.llm_proj.training


@pytest.mark.parametrize("arch,message", [
    ("blip2_opt", "OPTForCausalLM has no model.layers / lm_head"),
    ("blip2_vicuna_instruct", "Q-Former reads the instruction text"),
])
def test_models_that_cannot_split_say_why(arch, message):
    from mm_core.api import load_model
    from mm_core.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_model(arch, "tiny").pipeline_layers()
