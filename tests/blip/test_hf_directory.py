"""Hugging Face ``Salesforce/blip-*`` directories (``save_pretrained``'s layout) load by name: tiny
random ``BlipForConditionalGeneration`` / ``BlipForQuestionAnswering`` / ``BlipForImageTextRetrieval``
are saved, read through ``model.hf_pretrained`` and must compute what transformers' own classes do."""

from __future__ import annotations

import pytest
import torch
from transformers import BlipConfig, BlipForConditionalGeneration, BlipForImageTextRetrieval, BlipForQuestionAnswering

from tests.blip.conftest import build_tiny

TOL = dict(atol=1e-5, rtol=1e-5)
IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def hf_config(tokenizer) -> BlipConfig:
    """transformers' config with the tiny types' dims (tests/blip: vision 32-d, patch 8, text 32-d)."""
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=8,
                  image_size=32, layer_norm_eps=1e-6)
    text = dict(vocab_size=143, hidden_size=32, encoder_hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, sep_token_id=tokenizer.sep_token_id, label_smoothing=0.1)
    return BlipConfig(vision_config=vision, text_config=text, projection_dim=16, image_text_hidden_size=16)


def saved(cls, tmp_path, tokenizer):
    """A randomly initialised (biases and norms too) transformers model saved with ``save_pretrained``."""
    torch.manual_seed(0)
    model = cls(hf_config(tokenizer)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(tmp_path / cls.__name__)
    return model, tmp_path / cls.__name__


@pytest.fixture(scope="module")
def tokenizer():
    from mm_blip.tokenizer import build_tokenizer

    return build_tokenizer("tiny")


def ids_with(tokenizer, texts, first):
    tokens = tokenizer(texts, padding="longest", return_tensors="pt")
    tokens.input_ids[:, 0] = first
    return tokens


def test_caption_from_hf_directory(tmp_path, tokenizer):
    hf, folder = saved(BlipForConditionalGeneration, tmp_path, tokenizer)
    model = build_tiny("blip_caption", hf_pretrained=str(folder))
    assert set(model.weight_sources.files) == {str(folder / "model.safetensors")}
    texts = ["a picture of a dog", "a picture of two red squares"]
    tokens = ids_with(tokenizer, texts, tokenizer.bos_token_id)
    with torch.no_grad():
        expected = hf(pixel_values=IMAGES, input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).logits
        torch.testing.assert_close(model.caption_logits(IMAGES, texts), expected, **TOL)


def test_vqa_from_hf_directory(tmp_path, tokenizer):
    hf, folder = saved(BlipForQuestionAnswering, tmp_path, tokenizer)
    model = build_tiny("blip_vqa", hf_pretrained=str(folder))
    questions = ["what is on the left", "how many"]
    tokens = ids_with(tokenizer, questions, tokenizer.enc_token_id)
    with torch.no_grad():
        image_embeds = hf.vision_model(pixel_values=IMAGES).last_hidden_state
        expected = hf.text_encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                                   encoder_hidden_states=image_embeds).last_hidden_state
        states, _ = model.encode_questions({"image": IMAGES, "text_input": questions})
    torch.testing.assert_close(states, expected, **TOL)
    answers = ids_with(tokenizer, ["yes", "two"], tokenizer.bos_token_id)
    with torch.no_grad():  # one unpadded question: transformers' decoder ignores the question's mask
        expected = hf.text_decoder(input_ids=answers.input_ids[:1], encoder_hidden_states=expected[1:]).logits
        got = model.text_decoder(input_ids=answers.input_ids[:1], encoder_hidden_states=states[1:]).logits
    torch.testing.assert_close(got, expected, **TOL)


def test_itm_from_hf_directory(tmp_path, tokenizer):
    hf, folder = saved(BlipForImageTextRetrieval, tmp_path, tokenizer)
    model = build_tiny("blip_image_text_matching", hf_pretrained=str(folder))
    texts = ["a red circle", "two big blue squares"]
    samples = {"image": IMAGES, "text_input": texts}
    with torch.no_grad():
        itm = hf(input_ids=ids_with(tokenizer, texts, tokenizer.enc_token_id).input_ids, pixel_values=IMAGES,
                 attention_mask=ids_with(tokenizer, texts, 0).attention_mask, use_itm_head=True).itm_score
        tokens = tokenizer(texts, padding="longest", return_tensors="pt")
        itc = hf(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=IMAGES,
                 use_itm_head=False).itm_score
        torch.testing.assert_close(model(samples, match_head="itm"), itm, **TOL)
        torch.testing.assert_close(model(samples, match_head="itc"), itc, **TOL)


def test_hf_directory_without_the_decoder_names_it(tmp_path, tokenizer):
    from mm_core.errors import CheckpointError

    _, folder = saved(BlipForImageTextRetrieval, tmp_path, tokenizer)
    with pytest.raises(CheckpointError, match=r"text_decoder: \d+ tensors") as info:
        build_tiny("blip_vqa", hf_pretrained=str(folder))
    assert "model.allow_random_init" in info.value.hint


def test_an_unreachable_hub_id_is_named():
    from mm_core.errors import CheckpointError

    with pytest.raises(CheckpointError, match="model.hf_pretrained 'Salesforce/no-such-blip' is not a local directory"):
        build_tiny("blip_caption", hf_pretrained="Salesforce/no-such-blip")
