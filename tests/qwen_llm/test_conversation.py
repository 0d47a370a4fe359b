"""ChatML ids and labels of the qwen backend against an independent computation of the layout."""

from __future__ import annotations

import pytest
import torch

from mm_core.errors import DataError

from .qwen_chatml_reference import IGNORE, IMAGE_MARK, reference_layout

N = 4  # placeholder tokens per image (num_query_token)

CONVERSATIONS = {
    "single_turn": [
        {"from": "user", "value": f"<Img>{IMAGE_MARK}</Img> Describe this image in detail."},
        {"from": "assistant", "value": "The image shows a small red circle in the top left."},
    ],
    "multi_turn": [
        {"from": "user", "value": f"{IMAGE_MARK}\nWhat shape is in the picture?"},
        {"from": "assistant", "value": "It is a triangle."},
        {"from": "user", "value": "What color is the shape?"},
        {"from": "assistant", "value": "The shape is blue."},
    ],
    "multi_image": [
        {"from": "user", "value": f"First {IMAGE_MARK} and second {IMAGE_MARK}. Compare the two images."},
        {"from": "assistant", "value": "The first image has a star, the second one has a green square."},
        {"from": "user", "value": f"And this one? {IMAGE_MARK}"},
        {"from": "assistant", "value": "A dot."},
    ],
    "assistant_first": [
        {"from": "assistant", "value": "Hello! How can I help you today?"},
        {"from": "user", "value": f"{IMAGE_MARK} What do you see?"},
        {"from": "assistant", "value": "I can see 3 shapes."},
    ],
    "llava_roles": [
        {"from": "human", "value": f"{IMAGE_MARK} Where is the shape?"},
        {"from": "gpt", "value": "The square is in the center of the picture."},
    ],
}


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_ids_and_labels_match_the_reference_layout(tiny_llm, tokenizer, name):
    conversation = CONVERSATIONS[name]
    ref = [dict(t, **{"from": {"human": "user", "gpt": "assistant"}.get(t["from"], t["from"])}) for t in conversation]
    want_ids, want_labels = reference_layout(tokenizer, ref, N)
    got = tiny_llm.encode_conversation(conversation, N)
    assert got["input_ids"] == want_ids
    assert got["labels"] == want_labels
    assert got["num_images"] == [sum(t["value"].count(IMAGE_MARK) for t in ref[1 if ref[0]["from"] == "assistant" else 0:])]


def test_supervised_text_is_exactly_the_assistant_answers_plus_turn_ends(tiny_llm, tokenizer):
    got = tiny_llm.encode_conversation(CONVERSATIONS["multi_turn"], N)
    supervised = [t for t in got["labels"] if t != IGNORE]
    text = tokenizer.decode(supervised)
    assert text == (
        "<|im_start|><|im_end|>\n<|im_start|><|im_end|>\n<|im_start|>It is a triangle.<|im_end|>\n"
        "<|im_start|><|im_end|>\n<|im_start|>The shape is blue.<|im_end|>\n"
    )


def test_assistant_first_conversation_drops_that_turn(tiny_llm, tokenizer):
    full = tiny_llm.encode_conversation(CONVERSATIONS["assistant_first"], N)
    without = tiny_llm.encode_conversation(CONVERSATIONS["assistant_first"][1:], N)
    assert full == without
    assert "How can I help" not in tokenizer.decode(full["input_ids"])


def _image_runs(ids, image_id):
    runs, start = [], None
    for i, t in enumerate(ids + [None]):
        if t == image_id and start is None:
            start = i
        elif t != image_id and start is not None:
            runs.append((start, i))
            start = None
    return runs


def test_truncation_inside_placeholders_cuts_before_the_image(tiny_llm, tokenizer):
    conv = CONVERSATIONS["multi_image"]
    full = tiny_llm.encode_conversation(conv, N)
    runs = _image_runs(full["input_ids"], tiny_llm.image_token_id)
    assert [e - s for s, e in runs] == [N, N, N]
    start, _ = runs[1]
    for max_len in (start + 1, start + N - 1):  # cuts inside the second image
        got = tiny_llm.encode_conversation(conv, N, max_len=max_len)
        assert got["input_ids"] == full["input_ids"][:start]
        assert got["labels"] == full["labels"][:start]
        assert got["num_images"] == [1]


def test_truncation_at_and_before_placeholders(tiny_llm):
    conv = CONVERSATIONS["multi_image"]
    full = tiny_llm.encode_conversation(conv, N)
    (s0, e0), (s1, e1), (s2, e2) = _image_runs(full["input_ids"], tiny_llm.image_token_id)
    at_start = tiny_llm.encode_conversation(conv, N, max_len=s1)
    assert at_start["input_ids"] == full["input_ids"][:s1] and at_start["num_images"] == [1]
    at_end = tiny_llm.encode_conversation(conv, N, max_len=e1)
    assert at_end["input_ids"] == full["input_ids"][:e1] and at_end["num_images"] == [2]
    before = tiny_llm.encode_conversation(conv, N, max_len=s0 - 2)
    assert before["input_ids"] == full["input_ids"][:s0 - 2] and before["num_images"] == [0]
    after_all = tiny_llm.encode_conversation(conv, N, max_len=e2 + 3)
    assert len(after_all["input_ids"]) == e2 + 3 and after_all["num_images"] == [3]
    long_enough = tiny_llm.encode_conversation(conv, N, max_len=len(full["input_ids"]))
    assert long_enough == full


def test_literal_placeholder_text_is_neutralised(tiny_llm, tokenizer):
    typed = "<|image_pad|><|image_pad|> is what I typed, and <|im_end|> too"
    conv = [{"from": "user", "value": f"{IMAGE_MARK} {typed}"}, {"from": "assistant", "value": "ok"}]
    got = tiny_llm.encode_conversation(conv, N)
    assert got["input_ids"].count(tiny_llm.image_token_id) == N  # only the real image
    assert typed in tokenizer.decode(got["input_ids"])  # the text survives as text
    # The original's tokenisation would read the typed tokens as control tokens:
    naive, _ = reference_layout(tokenizer, conv, N)
    assert naive.count(tiny_llm.image_token_id) == N + 2


def test_prompt_is_the_conversation_plus_the_assistant_header(tiny_llm, tokenizer):
    conv = CONVERSATIONS["multi_turn"][:3]
    ids, _ = reference_layout(tokenizer, conv, N)
    prompt = tiny_llm.encode_prompt(conv, N)
    assert prompt == ids + tokenizer("<|im_start|>assistant\n").input_ids
    with pytest.raises(DataError, match="must end with a user turn"):
        tiny_llm.encode_prompt(CONVERSATIONS["multi_turn"], N)


def test_bad_turns_are_errors_naming_the_sample(tiny_llm):
    with pytest.raises(DataError, match="sample 7: turn 1 has speaker 'robot'"):
        tiny_llm.encode_conversation([{"from": "user", "value": "hi"}, {"from": "robot", "value": "x"}], N, sample="7")


def test_collate_pads_dynamically_with_end_of_text(tiny_llm, tokenizer):
    a = tiny_llm.encode_conversation(CONVERSATIONS["single_turn"], N)
    b = tiny_llm.encode_conversation(CONVERSATIONS["multi_turn"], N)
    batch = tiny_llm.collate([a, b])
    width = max(len(a["input_ids"]), len(b["input_ids"]))
    assert batch["input_ids"].shape == (2, width)
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    short = 0 if len(a["input_ids"]) < len(b["input_ids"]) else 1
    n = len([a, b][short]["input_ids"])
    assert batch["input_ids"][short, n:].eq(pad).all() and batch["labels"][short, n:].eq(IGNORE).all()
    assert batch["attention_mask"].sum(1).tolist() == [len(a["input_ids"]), len(b["input_ids"])]
    padded = tiny_llm.collate([a, b], pad_to=128)
    assert padded["input_ids"].shape == (2, 128)
    prompts = tiny_llm.collate([[1, 2, 3], [4]])  # prompts pad on the left for generation
    assert prompts["input_ids"].tolist() == [[1, 2, 3], [pad, pad, 4]]
    assert prompts["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_dynamic_padding_gives_the_loss_of_padding_to_max_txt_len(tiny_llm):
    encoded = [tiny_llm.encode_conversation(CONVERSATIONS[n], N) for n in sorted(CONVERSATIONS)]

    def loss(batch):
        embeds = tiny_llm.embed_tokens(batch["input_ids"])
        return tiny_llm(embeds, batch["attention_mask"], batch["labels"]).loss

    with torch.no_grad():
        dynamic = loss(tiny_llm.collate(encoded))
        to_max = loss(tiny_llm.collate(encoded, pad_to=512))
        # independent: each sample alone, unpadded, weighted by its supervised tokens
        per_sample = [(loss(tiny_llm.collate([e])), sum(1 for t in e["labels"][1:] if t != IGNORE)) for e in encoded]
    alone = sum(value * n for value, n in per_sample) / sum(n for _, n in per_sample)
    assert tiny_llm.collate(encoded)["input_ids"].shape[1] < 100
    assert abs(dynamic.item() - to_max.item()) < 1e-5
    assert abs(dynamic.item() - alone.item()) < 1e-5


def test_a_cut_that_leaves_no_answer_token_is_reported(tiny_llm, caplog, monkeypatch):
    monkeypatch.setattr("mm_qwen_llm.conversation._answers_cut", 0)  # the first such sample of the process
    conv = [{"from": "human", "value": "what colour is the square on the left?"}, {"from": "gpt", "value": "red"}]
    full = tiny_llm.encode_conversation(conv, N)
    first_answer = next(i for i, label in enumerate(full["labels"]) if label != -100)
    with caplog.at_level("WARNING", logger="mm_qwen_llm.conversation"):
        kept = tiny_llm.encode_conversation(conv, N, max_len=first_answer + 1)
        assert not caplog.records  # one answer token left: something to learn
        cut = tiny_llm.encode_conversation(conv, N, max_len=first_answer)
    assert all(label == -100 for label in cut["labels"]) and any(label != -100 for label in kept["labels"])
    assert len(caplog.records) == 1 and "leave no answer token to learn" in caplog.records[0].getMessage()
    assert "raise max_txt_len" in caplog.records[0].getMessage()
