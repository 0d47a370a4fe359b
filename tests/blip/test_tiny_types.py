"""Each BLIP arch's ``tiny`` type: built through ``load_model_and_preprocess`` (the seed's one-liners),
its processors applied to a picture, LAVIS' inference API answering, and a few training steps on the
generated shapes data with a falling loss."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageDraw

from mm_core.api import load_model_and_preprocess

ARCH_DATA = {"blip_caption": "coco_caption", "blip_vqa": "coco_vqa", "blip_feature_extractor": "coco_caption",
             "blip_retrieval": "coco_caption", "blip_image_text_matching": "coco_caption"}


def picture() -> Image.Image:
    image = Image.new("RGB", (48, 40), (240, 240, 240))
    ImageDraw.Draw(image).ellipse((4, 4, 30, 30), fill=(220, 30, 30))
    return image


def eval_image(vis) -> torch.Tensor:
    return vis["eval"](picture()).unsqueeze(0)


def test_caption_one_liner_generates():
    model, vis, txt = load_model_and_preprocess("blip_caption", "tiny", is_eval=True)
    assert model.prompt == "a picture of " and model.prompt_length == len(model.tokenizer("a picture of ").input_ids) - 1
    assert txt["train"]("A RED Circle") == "a picture of a red circle"
    samples = {"image": eval_image(vis).repeat(2, 1, 1, 1)}
    beams = model.generate(samples, num_beams=3, max_length=12, min_length=4)
    sampled = model.generate(samples, use_nucleus_sampling=True, num_captions=3, max_length=12)
    assert len(beams) == 2 and len(sampled) == 6 and all(isinstance(c, str) for c in beams + sampled)
    assert beams[0] == beams[1]  # the same picture, deterministic search


def test_generation_lengths_count_the_prompt():
    model, vis, _ = load_model_and_preprocess("blip_caption", "tiny", is_eval=True)
    embeds = model.encode_image(eval_image(vis))
    prompt_tokens = model.prompt_length  # [DEC] + the prompt's tokens, without [SEP]
    ids = model.generate_ids(embeds, False, 1, prompt_tokens + 3, prompt_tokens + 3, 0.9, 1.0)
    assert ids.shape[1] == prompt_tokens + 3
    assert model.generate_ids(embeds, False, 1, 500, 500, 0.9, 1.0).shape[1] == 64  # the decoder's positions
    # mm's captioning task passes run.max_len as max_new_tokens: tokens after the prompt
    samples = {"image": eval_image(vis)}
    assert model.generate(samples, num_beams=1, max_new_tokens=3, min_length=prompt_tokens + 3) == \
        [model.tokenizer.batch_decode(ids, skip_special_tokens=True)[0][len(model.prompt):]]
    assert ids[0, 0] == model.tokenizer.bos_token_id and model.tokenizer.sep_token_id not in ids[0, :prompt_tokens]


def test_vqa_one_liner_answers_by_generation_and_rank():
    model, vis, txt = load_model_and_preprocess("blip_vqa", "tiny", is_eval=True)
    samples = {"image": eval_image(vis).repeat(2, 1, 1, 1),
               "text_input": [txt["eval"]("What colour is it?"), txt["eval"]("how many circles are there")]}
    generated = model.predict_answers(samples, inference_method="generate", num_beams=2, max_len=6)
    answer_list = ["red", "blue", "two", "a big square"]
    ranked = model.predict_answers(samples, answer_list=answer_list, num_ans_candidates=3)  # LAVIS' default: rank
    assert len(generated) == 2 and set(ranked) <= set(answer_list)
    topk, scores = model.rank_scores(samples, answer_list, 3)
    assert topk.shape == scores.shape == (2, 3) and (scores < 0).all()
    with pytest.raises(ValueError, match="answer_list"):
        model.predict_answers(samples, inference_method="rank")


def test_feature_extractor_one_liner_modes():
    model, vis, txt = load_model_and_preprocess("blip_feature_extractor", "tiny", is_eval=True)
    samples = {"image": eval_image(vis), "text_input": [txt["eval"]("a red circle")]}
    image = model.extract_features(samples, mode="image")
    text = model.extract_features(samples, mode="text")
    both = model.extract_features(samples, mode="multimodal")
    assert image.image_embeds_proj.shape[-1] == text.text_embeds_proj.shape[-1] == 16
    assert torch.allclose(image.image_embeds_proj.norm(dim=-1), torch.ones(1))
    assert both.multimodal_embeds.shape[:2] == text.text_embeds.shape[:2]
    similarity = image.image_embeds_proj[:, 0] @ text.text_embeds_proj[:, 0].t()  # LAVIS' tutorial
    assert -1 <= similarity.item() <= 1
    with pytest.raises(ValueError, match="mode"):
        model.extract_features(samples, mode="both")


def test_image_text_matching_heads():
    model, vis, txt = load_model_and_preprocess("blip_image_text_matching", "tiny", is_eval=True)
    samples = {"image": eval_image(vis), "text_input": txt["eval"]("a red circle")}
    assert model(samples, match_head="itm").shape == (1, 2)
    assert model(samples, match_head="itc").shape == (1, 1)


@pytest.fixture(scope="module")
def shapes_batches(tmp_path_factory):
    """``batches(arch)``: four 4-sample batches of the shapes data read with ``arch``'s tiny processors."""
    from mm_core.config.loader import load_dataset_defaults, load_model_defaults
    from mm_core.registry import get_registry

    root = tmp_path_factory.mktemp("cache")

    def batches(arch: str):
        dataset = ARCH_DATA[arch]
        block = OmegaConf.merge(load_dataset_defaults(dataset, "shapes"),
                                {"vis_processor": None, "text_processor": None},
                                load_model_defaults(arch, "tiny").preprocess)
        train = get_registry().resolve("datasets", dataset)(block, cache_dir=root).build_datasets()["train"]
        return [train.collater([train[i * 17 + j * 5] for j in range(4)]) for i in range(4)]

    return batches


@pytest.mark.slow  # 80 steps each, ~15 s for the five archs
@pytest.mark.parametrize("arch", sorted(ARCH_DATA))
def test_tiny_type_trains_with_a_falling_loss(arch, shapes_batches):
    from mm_core.config.loader import load_model_defaults
    from mm_core.registry import get_registry

    torch.manual_seed(0)
    model = get_registry().resolve("models", arch).from_config(load_model_defaults(arch, "tiny").model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    batches = shapes_batches(arch)
    losses = []
    for step in range(80):
        loss = model(batches[step % len(batches)])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.7 * first, f"{arch}: loss {first:.3f} -> {last:.3f}"
    if arch == "blip_feature_extractor":  # contrastive only: it must beat chance over 4 pairs, not just reach it
        assert last < math.log(4) - 0.2, f"{arch}: ITC {last:.3f} vs chance {math.log(4):.3f}"
