"""Independent numerical reference for LAVIS' BLIP-2 LLM zoo: transformers' ``Blip2ForConditionalGeneration``
(OPT and Flan-T5 text configs) and ``InstructBlipForConditionalGeneration`` (LLaMA and Flan-T5), tiny and
random, saved with ``save_pretrained`` and read by mm's ``blip2_opt`` / ``blip2_t5`` / ``blip2_vicuna_instruct``
/ ``blip2_t5_instruct`` through ``hf_pretrained`` (language model included) give the same logits (<= 1e-5,
fp32), the same loss and the same greedy tokens. The reference inputs are built here by hand in Hugging
Face's layout (image placeholders before the BOS), not by mm."""

from __future__ import annotations

import json
from importlib.resources import files

import pytest
import torch
from omegaconf import OmegaConf
from transformers import (
    AutoTokenizer,
    Blip2Config,
    Blip2ForConditionalGeneration,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
)

from mm_core.config.loader import load_model_defaults
from mm_core.registry import get_registry

pytestmark = pytest.mark.slow

NUM_QUERY = 4
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
          "image_size": 28, "patch_size": 14, "layer_norm_eps": 1e-6, "qkv_bias": True}
QFORMER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
           "vocab_size": 142, "max_position_embeddings": 64, "cross_attention_frequency": 2, "encoder_hidden_size": 32}
#: arch -> (transformers class, its config class, tiny language model of mm-plugin-qwen-llm, LAVIS' flat key)
CASES = {
    "blip2_opt": (Blip2ForConditionalGeneration, Blip2Config, "tiny_opt", "opt_model"),
    "blip2_t5": (Blip2ForConditionalGeneration, Blip2Config, "tiny_flan_t5", "t5_model"),
    "blip2_vicuna_instruct": (InstructBlipForConditionalGeneration, InstructBlipConfig, "tiny_llama", "llm_model"),
    "blip2_t5_instruct": (InstructBlipForConditionalGeneration, InstructBlipConfig, "tiny_flan_t5", "t5_model"),
}
PROMPTS = ["a photo of", "Question: what colour is the big square? Short answer:"]


def hf_directory(arch: str, folder) -> tuple[torch.nn.Module, object, int]:
    """A random tiny transformers model of ``arch``'s kind saved (with the LM's tokenizer) in ``folder``."""
    cls, config_cls, asset, _ = CASES[arch]
    lm_dir = files("mm_qwen_llm") / "assets" / asset
    text_config = json.loads((lm_dir / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(lm_dir))
    image_token_index = len(tokenizer)  # where mm's backend adds its "<image>" placeholder
    text_config["vocab_size"] = image_token_index + 8
    text_config["initializer_range"] = 0.2  # a sensitive random LM: different images, different words
    qformer = {**QFORMER, "use_qformer_text_input": True} if cls is InstructBlipForConditionalGeneration else QFORMER
    config = config_cls(vision_config=VISION, qformer_config=qformer, text_config=text_config,
                        num_query_tokens=NUM_QUERY, image_token_index=image_token_index)
    torch.manual_seed(0)
    model = cls(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # no parameter left at its 0 / 1 default
        model.language_projection.weight.mul_(5)  # images weigh on the text, so they steer generation
        if text_config["model_type"] == "t5":
            model.language_model.lm_head.weight.mul_(0.1)  # T5's init (std 1) makes logits of ~30: keep fp32 noise small
    if text_config["model_type"] == "t5":  # Flan-T5's lm_head is its own tensor (transformers 5 ties T5 by default)
        lm = model.language_model
        if lm.lm_head.weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr():
            lm.lm_head.weight = torch.nn.Parameter(0.1 * torch.randn_like(lm.lm_head.weight))
            lm.config.tie_word_embeddings = False
            model.config.text_config.tie_word_embeddings = False
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer, image_token_index


def mm_model(arch: str, folder):
    cfg = load_model_defaults(arch, "tiny").model
    OmegaConf.update(cfg, "hf_pretrained", str(folder), force_add=True)
    OmegaConf.update(cfg, CASES[arch][3], None, force_add=True)  # the language model comes from the directory
    return get_registry().resolve("models", arch).from_config(cfg).eval()


def reference_inputs(tokenizer, image_token_index: int, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Hugging Face's layout: NUM_QUERY placeholders, then the text's own ids (with its BOS), right-padded."""
    rows = [[image_token_index] * NUM_QUERY + tokenizer(t)["input_ids"] for t in texts]
    longest = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.tensor([r + [pad] * (longest - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (longest - len(r)) for r in rows])
    return ids, mask


def mm_prompt_batch(model, texts: list[str], padding_side: str = "right") -> dict[str, torch.Tensor]:
    conversations = [model.with_image_mark([{"from": "user", "value": t}], True) for t in texts]
    return model.llm.collate([model.llm.encode_prompt(c, NUM_QUERY) for c in conversations], padding_side)


def qformer_inputs(model, texts: list[str]) -> dict[str, torch.Tensor]:
    if not getattr(model, "qformer_text_input", False):
        return {}
    tokens = model.qformer_tokenizer(texts, padding="longest", return_tensors="pt")
    return {"qformer_input_ids": tokens.input_ids, "qformer_attention_mask": tokens.attention_mask}


@pytest.mark.parametrize("arch", list(CASES))
def test_logits_and_loss_equal_transformers(arch, tmp_path):
    hf, tokenizer, image_index = hf_directory(arch, tmp_path / "hf")
    model = mm_model(arch, tmp_path / "hf")
    assert all(str(tmp_path / "hf") == v for k, v in model.weight_sources.sources.items()), \
        "every tensor comes from the Hugging Face directory"
    torch.manual_seed(1)
    image = torch.randn(2, 3, 28, 28)
    ids, mask = reference_inputs(tokenizer, image_index, PROMPTS)
    batch = mm_prompt_batch(model, PROMPTS)
    assert batch["input_ids"].tolist() == ids.tolist(), "mm lays the prompt out as Hugging Face does"
    answers = ["a big red square", "red"]
    seq2seq = hf.config.text_config.model_type == "t5"
    with torch.no_grad():
        embeds = model._embed(batch["input_ids"], model._image_tokens(image, 2, [[{"from": "user", "value": p}] for p in PROMPTS]))
        if seq2seq:
            labels = torch.nn.utils.rnn.pad_sequence([torch.tensor(tokenizer(a)["input_ids"]) for a in answers],
                                                     batch_first=True, padding_value=-100)
            ours = model.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=labels)
            theirs = hf(pixel_values=image, input_ids=ids, attention_mask=mask, labels=labels, **qformer_inputs(model, PROMPTS))
            torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-5, rtol=0)
        else:
            ours = model.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"])
            theirs = hf(pixel_values=image, input_ids=ids, attention_mask=mask, **qformer_inputs(model, PROMPTS))
    valid = mask.bool() if not seq2seq else torch.ones(ours.logits.shape[:2], dtype=torch.bool)
    assert ours.logits.shape == theirs.logits.shape
    torch.testing.assert_close(ours.logits[valid], theirs.logits[valid], atol=1e-5, rtol=0)
    assert (theirs.logits[0] - theirs.logits[1][: theirs.logits.shape[1]]).abs().max() > 1e-3  # images differ


@pytest.mark.parametrize("arch", list(CASES))
def test_greedy_generation_equals_transformers(arch, tmp_path):
    hf, tokenizer, image_index = hf_directory(arch, tmp_path / "hf")
    model = mm_model(arch, tmp_path / "hf")
    torch.manual_seed(2)
    image = torch.stack([torch.zeros(3, 28, 28), 3 * torch.randn(3, 28, 28)])
    prompt = PROMPTS[1]
    ids, mask = reference_inputs(tokenizer, image_index, [prompt, prompt])
    stops = [tokenizer.eos_token_id]
    if arch == "blip2_opt":  # BLIP-2 OPT ends captions with "\n" and stops there (LAVIS, HF's conversion)
        stops.append(tokenizer("\n", add_special_tokens=False)["input_ids"][0])
    with torch.no_grad():
        out = hf.generate(pixel_values=image, input_ids=ids, attention_mask=mask, max_new_tokens=12, min_new_tokens=1,
                          num_beams=1, do_sample=False, eos_token_id=stops, suppress_tokens=[image_index],
                          **qformer_inputs(model, [prompt, prompt]))
    new = out if hf.config.text_config.model_type == "t5" else out[:, ids.shape[1]:]
    expected = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    ours = model.generate({"image": image, "prompt": prompt}, num_beams=1, max_length=12, min_length=1,
                          repetition_penalty=1.0)
    assert ours == expected
    assert any(len(t) > 0 for t in expected) and expected[0] != expected[1]
