"""In-process checks of the pieces `mmrun serve` is made of: message conversion, image limits,
the bounded queue (no server, no model)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from serve_support import data_url, png_bytes

from mm_serve.conversation import to_chat_call
from mm_serve.images import ImageLimits, load_image
from mm_serve.queue import GenerationQueue, QueueFull
from mm_serve.schemas import APIError, ChatCompletionRequest

MARK = "<ImageHere>"


def messages(*raw: dict) -> list:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": list(raw)}).messages


def part_image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def test_messages_become_query_history_and_ordered_images():
    call = to_chat_call(messages(
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": [{"type": "text", "text": "look"}, part_image("a"), part_image("b")]},
        {"role": "assistant", "content": "two cats"},
        {"role": "user", "content": "and"},
        {"role": "user", "content": [part_image("c"), {"type": "text", "text": f"this {MARK}?"}]},
    ), MARK)
    assert call.system == "be kind"
    assert call.history == [(f"look\n{MARK}\n{MARK}", "two cats")]
    assert call.query == f"and\n{MARK}\nthis ?"  # consecutive user messages joined; a typed mark removed
    assert [url for url, _ in call.image_urls] == ["a", "b", "c"]
    assert call.image_urls[2][1] == "messages[4].content[0].image_url"


@pytest.mark.parametrize("raw", [
    [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}],
    [{"role": "system", "content": "s"}],
    [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
])
def test_conversations_a_chat_model_cannot_take(raw: list):
    with pytest.raises(APIError) as caught:
        to_chat_call(messages(*raw), MARK)
    assert caught.value.status == 400 and caught.value.code == "invalid_conversation"


def test_data_url_image_is_decoded_to_rgb():
    image = load_image(data_url(png_bytes((10, 20, 30), size=5)), ImageLimits())
    assert image.mode == "RGB" and image.size == (5, 5) and image.getpixel((0, 0)) == (10, 20, 30)


def test_image_limits(tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.png").write_bytes(png_bytes((1, 2, 3)))
    (tmp_path / "secret.png").write_bytes(png_bytes((4, 5, 6)))
    limits = ImageLimits(max_bytes=10_000, max_pixels=32 * 32, roots=(root,))

    def status(url: str, lim: ImageLimits = limits) -> tuple[int, str]:
        try:
            load_image(url, lim)
        except APIError as exc:
            return exc.status, exc.code
        return 200, "ok"

    assert status(str(root / "a.png")) == (200, "ok")
    assert status(f"file://{root}/a.png") == (200, "ok")
    assert status("a.png") == (200, "ok")  # relative to the first root
    assert status("../secret.png") == (403, "path_not_allowed")
    assert status(str(tmp_path / "secret.png")) == (403, "path_not_allowed")
    assert status(str(root / "a.png"), ImageLimits()) == (400, "local_images_disabled")
    assert status(data_url(png_bytes((0, 0, 0), size=33))) == (413, "image_too_large")  # pixels
    assert status(data_url(b"x" * 20_000)) == (413, "image_too_large")  # bytes, refused before decoding
    assert status("data:text/plain;base64,aGk=") == (400, "invalid_image")
    assert status("data:image/png,rawtext") == (400, "invalid_image_url")
    assert status("https://127.0.0.1:9/a.png") == (400, "unsupported_image_url")


def test_queue_bounds_waiting_jobs_and_skips_cancelled_ones():
    async def scenario() -> list[str]:
        queue = GenerationQueue(max_waiting=1)
        queue.start()
        release = threading.Event()
        order: list[str] = []

        def work(name: str):
            def run(on_text):
                if name == "first":
                    release.wait(10)
                order.append(name)
                on_text(name)
                return name
            return run

        first = queue.submit(work("first"))
        second = queue.submit(work("second"))
        with pytest.raises(QueueFull):
            queue.submit(work("third"))
        queue.cancel(second)  # leaves the queue at once: room again
        fourth = queue.submit(work("fourth"))
        release.set()
        events = [await first.next_event(), await first.next_event(), await fourth.next_event(),
                  await fourth.next_event()]
        queue.stop()
        assert events == [("text", "first"), ("done", "first"), ("text", "fourth"), ("done", "fourth")]
        assert second.events.empty()
        return order

    assert asyncio.run(scenario()) == ["first", "fourth"]


class FailingChat:
    """A chat model that refuses some inputs and breaks on others (what real models do)."""

    def chat(self, query, history, images, on_text=None, **generation):
        if query == "refuse":
            from mm_core.errors import DataError

            raise DataError("this model does not take that", hint="ask something else")
        if query == "break mid-answer":
            on_text("half an ")
            raise RuntimeError("out of memory")
        on_text("fine")
        return "fine"


@pytest.fixture(scope="module")
def failing_server():
    import socket

    import uvicorn

    from mm_serve.app import create_app
    from mm_serve.chat_model import ChatModel

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(create_app(ChatModel(FailingChat(), None, "failing")), log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)


def test_model_errors_are_reported_and_the_server_goes_on(failing_server: str):
    import openai

    client = openai.OpenAI(base_url=failing_server + "/v1", api_key="unused", max_retries=0, timeout=30)

    def ask(text: str, **kwargs):
        return client.chat.completions.create(model="failing", messages=[{"role": "user", "content": text}], **kwargs)

    with pytest.raises(openai.BadRequestError, match="does not take that") as refused:
        ask("refuse")
    assert refused.value.body["code"] == "invalid_input"
    with pytest.raises(openai.InternalServerError):
        ask("break mid-answer")
    # streamed: the failure comes after the first piece, as an error event that the client raises
    pieces = []
    with pytest.raises(openai.APIError, match="out of memory"):
        for chunk in ask("break mid-answer", stream=True):
            pieces += [c.delta.content for c in chunk.choices if c.delta.content]
    assert pieces == ["half an "]
    assert ask("hello").choices[0].message.content == "fine"


def test_serving_a_model_without_chat_is_refused(toy_plugin, tmp_path: Path, capsys):
    from mm_core.cli.main import main

    config = tmp_path / "toy.yaml"
    config.write_text("model:\n  arch: toy_regressor\n  model_type: tiny\n")
    assert main(["serve", "--config", str(config), "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert "ToyRegressor has no chat method" in error and "docs/serving.md" in error
