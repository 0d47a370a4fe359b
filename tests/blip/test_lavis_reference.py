"""mm's BLIP models against LAVIS' own: the fixture (tests/blip/fixtures/README.md) holds a tiny BLIP
checkpoint in LAVIS' names and what LAVIS' BlipCaption, BlipVQA, BlipITM and BlipFeatureExtractor
computed from it; the checkpoint goes through mm's key table into transformers' BLIP classes and
every output must agree to 1e-5 (questions and captions of different lengths, so padding counts)."""

from __future__ import annotations

import pytest
import torch

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def caption(from_lavis):
    return from_lavis("blip_caption")


@pytest.fixture(scope="module")
def vqa(from_lavis):
    return from_lavis("blip_vqa")


def test_every_lavis_tensor_is_loaded_or_ignored_by_design(caption, vqa, from_lavis):
    for model in (caption, vqa, from_lavis("blip_image_text_matching"), from_lavis("blip_feature_extractor")):
        table = model.weight_sources.table(model.state_dict())
        assert {row["source"] for row in table} == {model.weight_sources.files[0]}, table


def test_caption_logits_and_loss(caption, lavis_outputs, lavis_texts):
    images = lavis_outputs["images"]
    tokens, labels = caption.decoder_inputs(lavis_texts["captions"])
    assert torch.equal(labels, lavis_outputs["caption_targets"])  # [DEC], prompt and padding as LAVIS
    with torch.no_grad():
        logits = caption.caption_logits(images, lavis_texts["captions"])
        loss = caption({"image": images, "text_input": lavis_texts["captions"]})["loss"]
    torch.testing.assert_close(logits, lavis_outputs["caption_logits"], **TOL)
    torch.testing.assert_close(loss, lavis_outputs["caption_loss"], **TOL)  # label smoothing 0.1


def test_caption_generation(caption, lavis_outputs, lavis_texts):
    images = lavis_outputs["images"]
    assert caption.generate({"image": images}, num_beams=3, max_length=20, min_length=5) == \
        lavis_texts["generated_captions_beam3_max20_min5"]
    assert caption.generate({"image": images}, num_beams=1, max_length=12, min_length=3) == \
        lavis_texts["generated_captions_greedy_max12_min3"]


def test_vqa_question_states_over_padded_questions(vqa, lavis_outputs, lavis_texts):
    samples = {"image": lavis_outputs["images"], "text_input": lavis_texts["questions"]}
    tokens = vqa.tokenize(lavis_texts["questions"])
    ids = tokens.input_ids.clone()
    ids[:, 0] = vqa.tokenizer.enc_token_id
    assert torch.equal(ids, lavis_outputs["vqa_question_ids"])
    assert (tokens.attention_mask == 0).any(), "the fixture's questions must be padded"
    with torch.no_grad():
        states, _ = vqa.encode_questions(samples)
    torch.testing.assert_close(states, lavis_outputs["vqa_question_states"], **TOL)


def test_vqa_rank_scores_and_answers(vqa, lavis_outputs, lavis_texts):
    samples = {"image": lavis_outputs["images"], "text_input": lavis_texts["questions"]}
    with torch.no_grad():
        states, mask = vqa.encode_questions(samples)
        start = torch.full((2, 1), vqa.tokenizer.bos_token_id)
        first = vqa.text_decoder(input_ids=start, encoder_hidden_states=states, encoder_attention_mask=mask).logits
        _, scores = vqa.rank_scores(samples, lavis_texts["answer_list"], 4)
    torch.testing.assert_close(first[:, 0], lavis_outputs["vqa_first_logits"], **TOL)
    # the decoder attends to padded questions: without masking the cross-attention this is off by ~1
    torch.testing.assert_close(scores, lavis_outputs["vqa_rank_scores"], **TOL)
    answers = vqa.predict_answers(samples, inference_method="rank", answer_list=lavis_texts["answer_list"],
                                  num_ans_candidates=4)
    assert answers == lavis_texts["ranked_answers_k4"]


def test_vqa_generated_answers_and_loss(vqa, lavis_outputs, lavis_texts):
    images = lavis_outputs["images"]
    samples = {"image": images, "text_input": lavis_texts["questions"]}
    assert vqa.predict_answers(samples, inference_method="generate", num_beams=3, max_len=10, min_len=1) == \
        lavis_texts["generated_answers_beam3_max10_min1"]
    train = {**samples, "answer": ["red", "a big square", "no"], "weight": torch.tensor([0.6, 0.4, 1.0]),
             "n_answers": torch.tensor([2, 1])}
    with torch.no_grad():
        torch.testing.assert_close(vqa(train)["loss"], lavis_outputs["vqa_loss"], **TOL)


def test_itm_and_itc_scores(from_lavis, lavis_outputs, lavis_texts):
    model = from_lavis("blip_image_text_matching")
    samples = {"image": lavis_outputs["images"], "text_input": lavis_texts["itm_texts"]}
    with torch.no_grad():
        torch.testing.assert_close(model(samples, match_head="itm"), lavis_outputs["itm_logits"], **TOL)
        torch.testing.assert_close(model(samples, match_head="itc"), lavis_outputs["itc_sim"], **TOL)


def test_feature_extractor_outputs(from_lavis, lavis_outputs, lavis_texts):
    model = from_lavis("blip_feature_extractor")
    samples = {"image": lavis_outputs["images"], "text_input": lavis_texts["itm_texts"]}
    for mode, key in (("image", "image_embeds_proj"), ("text", "text_embeds_proj"), ("multimodal", "multimodal_embeds")):
        out = getattr(model.extract_features(samples, mode=mode), key)
        torch.testing.assert_close(out, lavis_outputs[f"features_{key}"], **TOL)
