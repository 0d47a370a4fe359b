"""blip2_llm composes with an LLM backend from a test plugin, trains its projection, generates."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from mm_core.config.loader import load_model_defaults
from mm_core.registry import get_registry


def tiny_cfg(**overrides):
    cfg = load_model_defaults("blip2_llm", "tiny").model
    cfg.llm = OmegaConf.create({"name": "tiny_gpt2", "hidden_size": 32})
    cfg.freeze_queries = True
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def build(**overrides):
    torch.manual_seed(0)
    cls = get_registry().resolve("models", "blip2_llm")
    return cls.from_config(tiny_cfg(**overrides))


CAPTIONS = {"image": torch.randn(2, 3, 28, 28), "text_input": ["a cat sitting on a red sofa", "a bus on a city street"]}


def test_composes_with_a_backend_from_another_plugin(test_llm_plugin):
    model = build()
    assert type(model.llm).__module__ == "blip2_testllm"
    assert model.llm_proj.out_features == model.llm.hidden_size == 32
    # Only the projection trains: the checkpoint holds exactly its two tensors.
    assert sorted(model.trainable_state_dict()) == ["llm_proj.bias", "llm_proj.weight"]


def test_trains_the_projection_only(test_llm_plugin):
    model = build()
    model.train()
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("llm_proj")}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    losses = []
    for _ in range(8):
        loss = model(CAPTIONS)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses
    assert model.visual_encoder.training is False  # frozen modules stay in eval mode
    changed = [k for k, v in model.state_dict().items() if not k.startswith("llm_proj") and not torch.equal(v, frozen_before[k])]
    assert changed == []


def test_caption_style_equals_the_conversation_it_stands_for(test_llm_plugin):
    model = build().eval()
    prompt = model.prompts[0]
    conversations = [[{"from": "user", "value": prompt}, {"from": "assistant", "value": t}] for t in CAPTIONS["text_input"]]
    loss_caption = model(CAPTIONS)["loss"]
    loss_conv = model({"image": CAPTIONS["image"], "conversations": conversations})["loss"]
    torch.testing.assert_close(loss_caption, loss_conv)


def test_image_embeddings_reach_the_loss(test_llm_plugin):
    model = build().eval()
    other = {"image": torch.randn(2, 3, 28, 28), "text_input": CAPTIONS["text_input"]}
    assert abs(model(CAPTIONS)["loss"].item() - model(other)["loss"].item()) > 1e-6


def test_several_images_per_sample_and_dynamic_padding(test_llm_plugin):
    model = build().eval()
    images = [torch.randn(2, 3, 28, 28), torch.randn(3, 28, 28)]
    conversations = [
        [{"from": "user", "value": "<ImageHere> and <ImageHere> what is in the picture"},
         {"from": "assistant", "value": "a cat"}],
        [{"from": "user", "value": "<ImageHere>"}, {"from": "assistant", "value": "two dogs playing on the grass"}],
    ]
    encoded = [model.llm.encode_conversation(c, model.num_query_token, model.max_txt_len) for c in conversations]
    batch = model.llm.collate(encoded)
    assert batch["input_ids"].shape[1] == max(len(e["input_ids"]) for e in encoded)  # not max_txt_len
    assert int((batch["input_ids"][0] == model.llm.image_token_id).sum()) == 2 * model.num_query_token
    loss = model({"image": images, "conversations": conversations})["loss"]
    assert torch.isfinite(loss)


def test_generate_and_left_padding(test_llm_plugin):
    model = build().eval()
    samples = {"image": CAPTIONS["image"], "prompt": ["<ImageHere> what is in the picture", "<ImageHere> describe"]}
    batched = model.generate(samples, max_new_tokens=5)
    assert len(batched) == 2 and all(isinstance(t, str) for t in batched)
    singles = [model.generate({"image": CAPTIONS["image"][i:i + 1], "prompt": [samples["prompt"][i]]}, max_new_tokens=5)[0]
               for i in range(2)]
    assert batched == singles  # left padding must not change the answers
    beams = model.generate({"image": CAPTIONS["image"]}, num_beams=2, max_length=4, min_length=1)
    assert len(beams) == 2


def test_chat_streams_and_keeps_history(test_llm_plugin):
    model = build().eval()
    pieces: list[str] = []
    response, history = model.chat("<ImageHere> what is in the picture", None, CAPTIONS["image"][0],
                                   on_text=pieces.append, max_new_tokens=6)
    assert history == [("<ImageHere> what is in the picture", response)]
    assert "".join(pieces).strip() == response
    response2, history2 = model.chat("describe this image briefly", history, CAPTIONS["image"][0], max_new_tokens=4)
    assert len(history2) == 2 and history2[1] == ("describe this image briefly", response2)
