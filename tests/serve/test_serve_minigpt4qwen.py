"""`mmrun serve` of a tiny MiniGPT4-Qwen checkpoint (plugins blip2 + qwen_llm) with the openai client.

The checkpoint holds a random projection (the tiny type's only trainable tensors) in the
engine's checkpoint layout; the reference answers come from the tiny model built here with
those tensors copied in and its ``chat`` called directly, so the server's checkpoint loading,
message conversion, image handling and streaming are all checked against it.
"""

from __future__ import annotations

import pytest
from serve_support import IMAGE_MARK, Server, decode_png, image_message, png_bytes

NAME = "minigpt4qwen-tiny"
BLUE = png_bytes((30, 30, 220), size=40)


@pytest.fixture(scope="module")
def qwen(qwen_checkpoint: dict):
    """The checkpoint's model built here (while the server loads it), and its eval image processor."""
    import torch

    from mm_core.api import load_preprocess
    from mm_core.config.loader import load_config
    from mm_core.registry import get_registry

    loaded = load_config({"model": {"arch": "minigpt4qwen", "model_type": "tiny"}})
    model = get_registry().resolve("models", "minigpt4qwen").from_config(loaded.config.model).eval()
    assert sorted(model.trainable_state_dict()) == sorted(qwen_checkpoint["tensors"])
    with torch.no_grad():
        for name, tensor in qwen_checkpoint["tensors"].items():
            model.get_parameter(name).copy_(tensor)
    vis, _ = load_preprocess(loaded.config.preprocess)
    return model, vis["eval"]


@pytest.fixture(scope="module")
def qwen_server(launches: dict, qwen) -> Server:
    return launches["qwen"].wait()


def reference(qwen, query: str, history=(), images=(), max_new_tokens: int = 12) -> tuple[str, list[str]]:
    """The model's own answer and the pieces it streams."""
    import torch

    model, processor = qwen
    pixels = torch.stack([processor(decode_png(i)) for i in images]) if images else None
    pieces: list[str] = []
    result = model.chat(query, list(history), pixels, on_text=pieces.append, max_new_tokens=max_new_tokens,
                        do_sample=False)
    return (result[0] if isinstance(result, tuple) else result), pieces


def test_completion_with_image(qwen_server: Server, qwen):
    response = qwen_server.client().chat.completions.create(
        model=NAME, messages=[image_message("what shape is this?", BLUE)], max_tokens=12)
    expected, _ = reference(qwen, f"{IMAGE_MARK}\nwhat shape is this?", images=[BLUE])
    assert expected  # precondition: the tiny model says something
    assert response.choices[0].message.content == expected
    assert 0 < response.usage.completion_tokens <= 12
    # the text tokens of the question plus num_query_token (4) for the image
    tokenizer = qwen[0].llm.tokenizer
    question_tokens = len(tokenizer.encode("\nwhat shape is this?", add_special_tokens=False))
    assert response.usage.prompt_tokens == question_tokens + 4


def test_streamed_completion_with_image(qwen_server: Server, qwen):
    stream = qwen_server.client().chat.completions.create(
        model=NAME, messages=[image_message("what colour is it?", BLUE)], max_tokens=12, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    expected, expected_pieces = reference(qwen, f"{IMAGE_MARK}\nwhat colour is it?", images=[BLUE])
    assert pieces == expected_pieces and len(pieces) > 1
    assert "".join(pieces).strip() == expected


def test_two_turn_conversation(qwen_server: Server, qwen):
    client = qwen_server.client()
    first_turn = image_message("what is this?", BLUE)
    answer1 = client.chat.completions.create(model=NAME, messages=[first_turn], max_tokens=10).choices[0].message.content
    second = client.chat.completions.create(
        model=NAME, max_tokens=10,
        messages=[first_turn, {"role": "assistant", "content": answer1}, {"role": "user", "content": "is it large?"}])
    expected, _ = reference(qwen, "is it large?", [(f"{IMAGE_MARK}\nwhat is this?", answer1)], images=[BLUE],
                            max_new_tokens=10)
    assert second.choices[0].message.content == expected


def test_chat_batch_equals_chat_row_by_row(qwen):
    """The batched serving contract of blip2_llm: each row (own images or none, own max_new_tokens,
    own history) gets, token for token and piece for piece, what ``chat`` answers it alone (greedy);
    a row whose client left stops early without changing the others."""
    import torch

    model, processor = qwen
    red = png_bytes((220, 30, 30), size=40)
    rows = [(f"{IMAGE_MARK}\nwhat shape is this?", [], [BLUE], 12),
            ("hello there, who are you?", [], [], 16),
            ("is it large?", [(f"{IMAGE_MARK}\nwhat is this?", "a blue square")], [red], 7),
            (f"{IMAGE_MARK}\ndescribe it", [], [red], 14)]
    alone = [reference(qwen, q, h, images, n) for q, h, images, n in rows]
    assert len({text for text, _ in alone}) >= 3  # precondition: the rows differ, so a mix-up would show
    streamed: list[list[str]] = [[] for _ in rows]
    requests = [{"query": q, "history": h, "on_text": streamed[i].append, "stopped": lambda: False,
                 "images": torch.stack([processor(decode_png(b)) for b in images]) if images else None,
                 "generation": {"max_new_tokens": n, "do_sample": False}} for i, (q, h, images, n) in enumerate(rows)]
    assert model.chat_batch(requests) == [text for text, _ in alone]
    assert streamed == [pieces for _, pieces in alone]

    left: list[str] = []  # row 1's client leaves after its second piece
    streamed = [[] for _ in rows]
    requests[1]["on_text"] = left.append
    requests[1]["stopped"] = lambda: len(left) >= 2
    for i in (0, 2, 3):
        requests[i]["on_text"] = streamed[i].append
    answers = model.chat_batch(requests)
    assert [answers[i] for i in (0, 2, 3)] == [alone[i][0] for i in (0, 2, 3)]
    # stopped at the first step after its second piece (the streamer flushes what it holds at the end)
    assert len(left) >= 2 and alone[1][0].startswith(answers[1]) and len(answers[1]) < len(alone[1][0])
    assert "".join(alone[1][1]).startswith("".join(left))
