"""The official `openai` client against `mmrun serve` of a char_chat checkpoint.

Reference answers come from the checkpoint's model called directly (serve_support.CharReference):
the server must give exactly what the model's own ``chat`` gives for the same conversation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_support import IMAGE_MARK, MAX_TOKENS, Server, image_message, png_bytes

BLUE = png_bytes((30, 30, 220))
STRIPED = png_bytes((30, 30, 220), stripe=(250, 250, 0))


def test_models_health_and_loopback_bind(char_server: Server):
    client = char_server.client()
    assert [m.id for m in client.models.list()] == ["char_chat-tiny"]
    health = char_server.get("/health")
    assert health["status"] == "ok" and health["model"] == "char_chat-tiny"
    # started without --host: listening on 127.0.0.1 only (checked in the kernel's socket table)
    assert char_server.url.startswith("http://127.0.0.1:")
    table = Path("/proc/net/tcp")
    if table.exists():
        listening = [line.split()[1] for line in table.read_text().splitlines()[1:] if line.split()[3] == "0A"]
        assert f"0100007F:{char_server.port:04X}" in listening
        assert f"00000000:{char_server.port:04X}" not in listening


def test_completion_with_image(char_server: Server, char_reference):
    client = char_server.client()
    response = client.chat.completions.create(
        model="char_chat-tiny", messages=[image_message("what colour is it?", BLUE)], max_tokens=24)
    expected = char_reference.answer(f"{IMAGE_MARK}\nwhat colour is it?", images=[BLUE], max_new_tokens=24)
    assert len(expected) == 24  # precondition: the answer runs to the limit
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == expected
    assert choice.finish_reason == "length"
    # char_chat has one token per character; the image counts as one token
    assert response.usage.completion_tokens == 24
    assert response.usage.prompt_tokens == len("\nwhat colour is it?") + 1
    assert response.usage.total_tokens == response.usage.prompt_tokens + 24
    # the image reaches the model: another image, another answer
    other = client.chat.completions.create(
        model="char_chat-tiny", messages=[image_message("what colour is it?", STRIPED)], max_tokens=24)
    assert other.choices[0].message.content != expected


def test_checkpoint_is_what_is_served(char_server: Server, char_plugin, char_reference):
    from mm_serve_testmodel.model import CharImageProcessor
    from serve_support import CharReference, char_model

    query = f"{IMAGE_MARK}\nand what shape?"
    served = char_server.client().chat.completions.create(
        model="char_chat-tiny", messages=[image_message("and what shape?", BLUE)], max_tokens=24)
    # exactly the checkpoint's model's greedy answer, which an untrained model's is not
    trained = char_reference.answer(query, images=[BLUE], max_new_tokens=24)
    untrained = CharReference(char_model(0), CharImageProcessor(8)).answer(query, images=[BLUE], max_new_tokens=24)
    assert trained != untrained
    assert served.choices[0].message.content == trained


def test_streamed_completion_with_image(char_server: Server, char_reference):
    client = char_server.client()
    stream = client.chat.completions.create(
        model="char_chat-tiny", messages=[image_message("describe the image", BLUE)], max_tokens=20,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    expected = char_reference.answer(f"{IMAGE_MARK}\ndescribe the image", images=[BLUE], max_new_tokens=20)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == expected
    assert len(pieces) == len(expected)  # one event per generated token
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].usage.completion_tokens == 20 and not chunks[-1].choices
    assert len({c.id for c in chunks}) == 1


def test_two_turn_conversation(char_server: Server, char_reference):
    client = char_server.client()
    first_turn = image_message("what is in the picture?", BLUE)
    first = client.chat.completions.create(model="char_chat-tiny", messages=[first_turn], max_tokens=16)
    answer1 = first.choices[0].message.content
    messages = [
        {"role": "system", "content": "you are brief."},
        first_turn,
        {"role": "assistant", "content": answer1},
        {"role": "user", "content": "and what shape?"},
    ]
    second = client.chat.completions.create(model="char_chat-tiny", messages=messages, max_tokens=16)
    # the system text goes before the first user turn (char_chat's chat takes no `system`)
    history = [(f"you are brief.\n\n{IMAGE_MARK}\nwhat is in the picture?", answer1)]
    expected = char_reference.answer("and what shape?", history, images=[BLUE], max_new_tokens=16)
    assert answer1 == char_reference.answer(f"{IMAGE_MARK}\nwhat is in the picture?", images=[BLUE], max_new_tokens=16)
    assert second.choices[0].message.content == expected
    # the history matters: the same question alone is answered differently
    alone = client.chat.completions.create(
        model="char_chat-tiny", messages=[{"role": "user", "content": "and what shape?"}], max_tokens=16)
    assert alone.choices[0].message.content != expected


def test_image_from_allowed_root(char_server: Server, image_root: Path):
    client = char_server.client()
    by_path = client.chat.completions.create(
        model="char_chat-tiny", messages=[image_message("what colour is it?", f"file://{image_root / 'blue.png'}")],
        max_tokens=12)
    relative = client.chat.completions.create(
        model="char_chat-tiny", messages=[image_message("what colour is it?", "blue.png")], max_tokens=12)
    inline = client.chat.completions.create(
        model="char_chat-tiny", messages=[image_message("what colour is it?", (image_root / "blue.png").read_bytes())],
        max_tokens=12)
    assert by_path.choices[0].message.content == relative.choices[0].message.content
    assert by_path.choices[0].message.content == inline.choices[0].message.content


def test_sampling_follows_the_seed(char_server: Server):
    client = char_server.client()

    def sample(seed: int) -> str:
        response = client.chat.completions.create(
            model="char_chat-tiny", messages=[{"role": "user", "content": "tell me a story"}], max_tokens=MAX_TOKENS,
            temperature=1.5, top_p=1.0, seed=seed)
        return response.choices[0].message.content

    assert sample(1) == sample(1)
    assert len({sample(1), sample(2), sample(3)}) > 1


@pytest.mark.parametrize("stream", [False, True])
def test_refusals_come_before_the_stream(char_server: Server, stream: bool):
    """A refused request is an HTTP 4xx with OpenAI's error body in both modes (the client
    raises the matching exception), not an event in an already started stream."""
    from openai import BadRequestError

    client = char_server.client()
    with pytest.raises(BadRequestError) as caught:
        client.chat.completions.create(
            model="char_chat-tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=MAX_TOKENS + 1,
            stream=stream)
    assert caught.value.status_code == 400
    assert caught.value.body["code"] == "max_tokens_too_large"
