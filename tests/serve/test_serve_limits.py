"""Concurrency, the bounded queue, disconnects and bad input against `mmrun serve`."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from serve_support import (
    IMAGE_MARK,
    MAX_IMAGE_BYTES,
    MAX_IMAGES,
    MAX_TOKENS,
    STEP_DELAY_S,
    Server,
    data_url,
    image_message,
    png_bytes,
)

MODEL = "char_chat-tiny"
COLOURS = [(30, 30, 220), (220, 30, 30), (30, 200, 60), (200, 200, 30)]


def good_request() -> dict[str, Any]:
    return {"model": MODEL, "messages": [image_message("what colour is it?", png_bytes(COLOURS[0]))], "max_tokens": 8}


# -- concurrency ---------------------------------------------------------------------------------
def test_eight_simultaneous_requests_equal_one_at_a_time(char_server: Server, char_reference):
    requests = []
    for i in range(8):
        image = png_bytes(COLOURS[i % 4], stripe=(250, 250, 250) if i >= 4 else None)
        question = ["describe the image", "what is in the picture?", "hello there", "is it big?"][i % 4]
        requests.append((question, image, i % 2 == 1))  # every other one streamed

    def ask(question: str, image: bytes, stream: bool) -> str:
        client = char_server.client()
        kwargs = dict(model=MODEL, messages=[image_message(question, image)], max_tokens=24)
        if not stream:
            return client.chat.completions.create(**kwargs).choices[0].message.content
        return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kwargs)
                       if c.choices)

    one_at_a_time = [ask(*r) for r in requests]
    barrier = threading.Barrier(8, timeout=30)

    def ask_together(request: tuple[str, bytes, bool]) -> str:
        barrier.wait()
        return ask(*request)

    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask_together, requests, timeout=120))
    assert together == one_at_a_time
    expected = [char_reference.answer(f"{IMAGE_MARK}\n{q}", images=[img], max_new_tokens=24) for q, img, _ in requests]
    assert one_at_a_time == expected
    assert len(set(expected)) >= 6  # the requests really differ, so a mix-up would show


# -- bad input -----------------------------------------------------------------------------------
def _noise_png(min_bytes: int) -> bytes:
    from PIL import Image

    side = 64
    while True:
        image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
        from io import BytesIO

        buffer = BytesIO()
        image.save(buffer, "PNG")
        if len(buffer.getvalue()) > min_bytes:
            return buffer.getvalue()
        side *= 2


def _with_image(url: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [image_message("what is it?", url)], "max_tokens": 4}


def bad_requests(image_root: Path) -> dict[str, tuple[bytes | dict, int, str]]:
    """name -> (body, expected status, expected error code)."""
    outside = image_root.parent / "outside.png"
    three = {"model": MODEL, "messages": [image_message("compare", *[png_bytes(c) for c in COLOURS[:MAX_IMAGES + 1]])]}
    return {
        "malformed JSON": (b'{"model": "char_chat-tiny", "messages": [', 400, "invalid_json"),
        "not an object": (b"[1, 2]", 400, "invalid_json"),
        "missing messages": ({"model": MODEL}, 400, "invalid_request"),
        "unknown role": ({"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]}, 400, "invalid_request"),
        "unknown model": ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404, "model_not_found"),
        "ends with assistant": ({"model": MODEL, "messages": [{"role": "user", "content": "hi"},
                                                              {"role": "assistant", "content": "yo"}]},
                                400, "invalid_conversation"),
        "max_tokens over the limit": ({**good_request(), "max_tokens": MAX_TOKENS + 1}, 400, "max_tokens_too_large"),
        "oversized body": (json.dumps({**good_request(), "pad": "x" * (1024 * 1024)}).encode(), 413,
                           "request_too_large"),
        "oversized image": (_with_image(data_url(_noise_png(MAX_IMAGE_BYTES))), 413, "image_too_large"),
        "undecodable image": (_with_image(data_url(b"these bytes are not an image" * 10)), 400, "invalid_image"),
        "not base64": (_with_image("data:image/png;base64,@@@not-base64@@@"), 400, "invalid_image"),
        "truncated png": (_with_image(data_url(png_bytes((1, 2, 3))[:60])), 400, "invalid_image"),
        "path outside the root": (_with_image(str(outside)), 403, "path_not_allowed"),
        "symlink out of the root": (_with_image(str(image_root / "escape.png")), 403, "path_not_allowed"),
        "dot-dot out of the root": (_with_image(f"file://{image_root}/../outside.png"), 403, "path_not_allowed"),
        "missing file in the root": (_with_image(str(image_root / "nope.png")), 400, "image_not_found"),
        "remote URL": (_with_image("http://127.0.0.1:9/cat.png"), 400, "unsupported_image_url"),
        "too many images": (three, 400, "too_many_images"),
        "image in an assistant turn": ({"model": MODEL, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": data_url(png_bytes((0, 0, 0)))}}]},
            {"role": "user", "content": "and?"}]}, 400, "invalid_conversation"),
    }


BAD_NAMES = list(bad_requests(Path("/x/images")))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_input_gets_its_4xx_and_the_server_keeps_serving(char_server: Server, image_root: Path, name: str):
    body, status, code = bad_requests(image_root)[name]
    got_status, got = char_server.post(body)
    assert got_status == status, got
    assert set(got["error"]) == {"message", "type", "param", "code"}
    assert got["error"]["code"] == code
    assert got["error"]["message"]
    ok_status, ok = char_server.post(good_request())
    assert ok_status == 200 and ok["choices"][0]["message"]["content"] is not None


def test_openai_client_raises_the_matching_errors(char_server: Server, image_root: Path):
    import openai

    client = char_server.client()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model=MODEL, messages=[image_message("x", str(image_root.parent / "outside.png"))])
    with pytest.raises(openai.BadRequestError, match="cannot be decoded"):
        client.chat.completions.create(model=MODEL, messages=[image_message("x", data_url(b"garbage" * 20))])


# -- the queue -----------------------------------------------------------------------------------
class RawStream:
    """A streamed completion read event by event over a plain connection (so the test can drop it)."""

    def __init__(self, server: Server, body: dict[str, Any]):
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.connection.request("POST", "/v1/chat/completions", json.dumps({**body, "stream": True}),
                                {"Content-Type": "application/json"})

    def first_content(self) -> str:
        response = self.connection.getresponse()
        assert response.status == 200
        while True:
            line = response.readline().decode()
            if line.startswith("data: ") and '"content": "' in line and '"content": ""' not in line:
                return json.loads(line[6:])["choices"][0]["delta"]["content"]

    def close(self) -> None:
        self.connection.sock.close() if self.connection.sock else None
        self.connection.close()


def _wait_for(server: Server, predicate, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        queue = server.get("/health")["queue"]
        if predicate(queue) or time.monotonic() > deadline:
            return queue
        time.sleep(0.05)


def test_full_queue_answers_429_and_disconnects_free_slots(slow_server: Server, char_reference):
    import openai

    long_prompt = {"model": MODEL, "messages": [image_message("tell me a story", png_bytes(COLOURS[0]))],
                   "max_tokens": 300}
    expected_long = char_reference.answer(f"{IMAGE_MARK}\ntell me a story", images=[png_bytes(COLOURS[0])],
                                          max_new_tokens=300)
    assert len(expected_long) == 300  # precondition: without the disconnect it would run 300 * STEP_DELAY_S = 15 s
    client = slow_server.client()

    running = RawStream(slow_server, long_prompt)
    assert running.first_content() == expected_long[0]
    waiting = RawStream(slow_server, long_prompt)  # takes the one waiting place
    assert _wait_for(slow_server, lambda q: q["waiting"] == 1)["waiting"] == 1
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert caught.value.status_code == 429 and caught.value.body["code"] == "queue_full"

    waiting.close()  # a waiting client leaves: its place frees at once
    assert _wait_for(slow_server, lambda q: q["waiting"] == 0)["waiting"] == 0
    short = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    with ThreadPoolExecutor(1) as pool:
        queued = pool.submit(slow_server.post, short)  # accepted again: waits behind the long one
        assert _wait_for(slow_server, lambda q: q["waiting"] == 1)["waiting"] == 1
        started = time.monotonic()
        running.close()  # the running client leaves mid-stream: generation stops, the slot frees
        status, body = queued.result(timeout=30)
        elapsed = time.monotonic() - started
    assert status == 200 and body["choices"][0]["message"]["content"] is not None
    assert elapsed < 0.5 * 300 * STEP_DELAY_S, f"the queued request waited {elapsed:.1f} s"
    queue = _wait_for(slow_server, lambda q: q["running"] == 0 and q["waiting"] == 0)
    assert queue["running"] == 0 and queue["waiting"] == 0 and queue["cancelled"] == 2

