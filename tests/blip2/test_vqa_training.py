"""VQA with the BLIP-2 -> LLM compositions: the question is the user turn (through the model's
``prompt`` template), the answer the assistant turn; answering uses the same template. The
expected token ids and labels are written out here from the tokenizer and ChatML's layout, not
taken from the model's own encoder."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch

from mm_blip2.models.blip2_llm import answers_of
from mm_core.base.llm import IGNORE_INDEX
from mm_core.config.loader import load_model_defaults
from mm_core.registry import get_registry

from ..conftest import mm_env, run_mmrun

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "Question: {} Short answer:"
QUESTION, ANSWER = "what color is the circle?", "red"


def tiny_minigpt4qwen(**overrides):
    cfg = load_model_defaults("minigpt4qwen", "tiny").model
    cfg.prompt = TEMPLATE
    for key, value in overrides.items():
        cfg[key] = value
    return get_registry().resolve("models", "minigpt4qwen").from_config(cfg).eval()


def chatml_sample(tokenizer, num_query_token: int, answer: str | None):
    """Ids and labels of system / user (image + templated question) / assistant (answer) as
    ChatML writes them, with Qwen's finetuning labels (role headers and the non-assistant
    contents ignored; ``im_start``, ``im_end`` and the newline after it supervised)."""
    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    im_start, im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    image = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    nl = ids("\n")
    system = [im_start, *ids("system"), *nl, *ids("You are a helpful assistant."), im_end, *nl]
    user = [im_start, *ids("user"), *nl, *[image] * num_query_token, *ids("\n" + TEMPLATE.format(QUESTION)), im_end, *nl]
    closed = [[im_start, *[IGNORE_INDEX] * (len(block) - 2 - len(nl)), im_end, *nl] for block in (system, user)]
    header = [im_start, *ids("assistant"), *nl]
    if answer is None:
        return system + user + header, None
    assistant = [*header, *ids(answer), im_end, *nl]
    labels = closed[0] + closed[1] + [im_start, *[IGNORE_INDEX] * (len(header) - 1), *ids(answer), im_end, *nl]
    return system + user + assistant, labels


def llm_loss(model, image, input_ids, labels):
    """The LLM's own loss on the image tokens spliced into ``input_ids`` by hand."""
    ids = torch.tensor([input_ids])
    embeds = model.llm.model.get_input_embeddings()(ids)
    positions = (ids[0] == model.llm.image_token_id).nonzero().flatten()
    embeds[0, positions] = model.encode_images(image)[0]
    out = model.llm.model(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), labels=torch.tensor([labels]))
    return out.loss


def test_the_supervised_tokens_of_a_vqa_sample_are_the_answer_and_the_turn_end():
    torch.manual_seed(0)
    model = tiny_minigpt4qwen()
    tokenizer = model.llm.tokenizer
    image = torch.randn(1, 3, 32, 32)
    batch = {"image": image, "text_input": [QUESTION], "text_output": [ANSWER],
             "answer": [ANSWER, "red."], "weight": torch.tensor([0.8, 0.2]), "n_answers": torch.tensor([2])}
    input_ids, labels = chatml_sample(tokenizer, model.num_query_token, ANSWER)
    # what is supervised beyond ChatML's structure tokens is exactly the answer and its turn end
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    nl = tokenizer("\n", add_special_tokens=False)["input_ids"]
    structure = {tokenizer.convert_tokens_to_ids("<|im_start|>"), im_end, *nl}
    answer_ids = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    supervised = [t for t in labels if t != IGNORE_INDEX]
    assert [t for t in supervised if t not in structure] == answer_ids
    assert supervised[-len(answer_ids) - 1 - len(nl):] == [*answer_ids, im_end, *nl]

    with torch.no_grad():
        loss = model(batch)["loss"]
        expected = llm_loss(model, image, input_ids, labels)
        # the old bug: the question as the assistant's target gives another loss
        wrong_ids, wrong_labels = chatml_sample(tokenizer, model.num_query_token, QUESTION)
        wrong = llm_loss(model, image, wrong_ids, wrong_labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(loss.item() - wrong.item()) > 1e-3


def test_answering_uses_the_training_template():
    torch.manual_seed(0)
    model = tiny_minigpt4qwen()
    image = torch.randn(1, 3, 32, 32)
    prompt_ids, _ = chatml_sample(model.llm.tokenizer, model.num_query_token, None)
    with torch.no_grad():
        answer = model.predict_answers({"image": image, "text_input": [QUESTION]}, max_len=4, min_len=1)
        ids = torch.tensor([prompt_ids])
        embeds = model.llm.model.get_input_embeddings()(ids)
        embeds[0, (ids[0] == model.llm.image_token_id).nonzero().flatten()] = model.encode_images(image)[0]
        out = model.llm.model.generate(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                                       min_new_tokens=1, do_sample=False, num_beams=1,
                                       eos_token_id=model.llm.stop_token_ids, pad_token_id=model.llm.pad_token_id,
                                       suppress_tokens=[model.llm.encoder.im_start, model.llm.image_token_id])
    assert answer == [model.llm.tokenizer.decode(out[0], skip_special_tokens=True).strip()]


def test_a_caption_prompt_is_not_a_question_template():
    model = tiny_minigpt4qwen(prompt="Describe the image briefly.")
    assert model.question_conversation(QUESTION, ANSWER) == [
        {"from": "user", "value": QUESTION}, {"from": "assistant", "value": ANSWER}]
    # caption samples (no answer) still use the prompt
    assert model.conversations_of({"text_input": ["a red circle"]})[0][0]["value"] == "Describe the image briefly."


def test_answers_without_text_output_are_drawn_by_weight_and_seeded():
    per_sample = {"text_input": ["q1", "q2"], "answers": [["red", "pink"], ["2"]], "weights": [[0.75, 0.25], [1.0]]}
    flat = {"text_input": ["q1", "q2"], "answer": ["red", "pink", "2"], "weight": torch.tensor([0.75, 0.25, 1.0]),
            "n_answers": torch.tensor([2, 1])}
    for samples in (per_sample, flat):
        random.seed(3)
        draws = [answers_of(samples, 2) for _ in range(4000)]
        assert all(d[1] == "2" for d in draws)
        share = sum(d[0] == "red" for d in draws) / len(draws)
        assert 0.72 < share < 0.78, share
        random.seed(3)
        assert [answers_of(samples, 2) for _ in range(50)] == draws[:50]  # the run's seed fixes the draws
    assert answers_of({"text_input": ["q"], "text_output": ["blue"], "answers": [["red"]]}, 1) == ["blue"]
    assert answers_of({"text_input": ["a caption"]}, 1) is None


@pytest.mark.slow
def test_the_vqa_example_learns_to_answer(tmp_path):
    """examples/vqa_tiny.yaml shortened to 20 epochs (900 steps, about a minute): the val
    accuracy starts at 0 and at least doubles to 30 or more; the before/after table is printed."""
    out = tmp_path / "out"
    run = run_mmrun(["--config", str(ROOT / "examples" / "vqa_tiny.yaml"), "--options", "run.max_epoch=20",
                     "run.val_freq=20", "run.ckpt_freq=20", "run.test_splits=[]", "run.progress_bar=false",
                     f"run.output_dir={out}"], env=mm_env(MM_CACHE_ROOT=str(tmp_path / "cache")), timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["type"] == "eval" and e["split"] == "val"]
    assert [e["epoch"] for e in evals] == ["init", 19]
    before, after = evals[0]["acc"], evals[-1]["acc"]
    assert after >= max(2 * before, 30.0), (before, after)
    row = re.search(r"^\s+acc\s+(\S+) ->\s+(\S+)$", run.stdout, re.MULTILINE)
    assert row and [float(v) for v in row.groups()] == [round(before, 4), round(after, 4)]
    # the answers are the model's words for the shapes, not the questions said back
    answers = json.loads((out / "result" / "val_epoch19.json").read_text())
    assert not any(a["answer"].startswith(("what", "how")) for a in answers)
