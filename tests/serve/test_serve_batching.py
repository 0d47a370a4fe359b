"""Batched generation in `mmrun serve`: requests that arrive while the model is busy share one
``chat_batch`` call, and each answer is what the request gets alone (the char_chat test model
keeps every row's own settings; greedy answers token for token, seeded sampling too)."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from serve_support import IMAGE_MARK, Server, image_message, png_bytes

MODEL = "char_chat-tiny"
COLOURS = [(30, 30, 220), (220, 30, 30), (30, 200, 60), (200, 200, 30)]
QUESTIONS = ["describe the image", "what is in the picture?", "hello there", "is it big?"]


def _health(server: Server) -> dict[str, int]:
    return server.get("/health")["queue"]


def _requests() -> list[dict[str, Any]]:
    """Six different requests: images or none, own max_tokens, one sampled with a seed."""
    out = []
    for i in range(6):
        text = QUESTIONS[i % 4] + (" please" if i >= 4 else "")
        message = image_message(text, png_bytes(COLOURS[i % 4])) if i % 3 else {"role": "user", "content": text}
        out.append({"model": MODEL, "messages": [message], "max_tokens": 10 + 7 * i})
    out[5].update(temperature=0.8, top_p=0.9, seed=11)
    return out


def _content(server: Server, body: dict[str, Any]) -> str:
    status, reply = server.post(body)
    assert status == 200, reply
    return reply["choices"][0]["message"]["content"]


@pytest.mark.slow
def test_batched_answers_equal_the_same_requests_served_alone(batch_server: Server, char_reference):
    import torch

    requests = _requests()
    before = _health(batch_server)
    alone = [_content(batch_server, r) for r in requests]  # one after the other: each a batch of one
    after_alone = _health(batch_server)
    assert after_alone["batches"] == before["batches"]  # precondition: these ran alone
    barrier = threading.Barrier(len(requests), timeout=30)

    def together(body: dict[str, Any]) -> str:
        barrier.wait()
        return _content(batch_server, body)

    with ThreadPoolExecutor(len(requests)) as pool:
        batched = list(pool.map(together, requests, timeout=120))
    stats = _health(batch_server)
    assert stats["batches"] > after_alone["batches"] and stats["largest_batch"] >= 4, stats
    assert batched == alone
    # and both are the model's own answers, called directly
    model = char_reference.model
    for body, answer in zip(requests[:5], alone):
        content = body["messages"][0]["content"]
        if isinstance(content, str):
            assert answer == char_reference.answer(content, max_new_tokens=body["max_tokens"])
        else:
            image = png_bytes(COLOURS[requests.index(body) % 4])
            assert answer == char_reference.answer(f"{IMAGE_MARK}\n{content[-1]['text']}", images=[image],
                                                   max_new_tokens=body["max_tokens"])
    torch.manual_seed(11)
    sampled = model.chat(f"{IMAGE_MARK}\n{QUESTIONS[1]} please",
                         images=torch.stack([char_reference.processor(_png(COLOURS[1]))]),
                         max_new_tokens=requests[5]["max_tokens"], do_sample=True, temperature=0.8, top_p=0.9)
    assert alone[5] == sampled
    assert len(set(alone)) == len(alone)  # the requests really differ, so a mix-up would show


def _png(colour):
    from serve_support import decode_png

    return decode_png(png_bytes(colour))


class Stream:
    """A streamed completion read event by event over a plain connection (so it can be dropped)."""

    def __init__(self, server: Server, body: dict[str, Any]):
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        self.connection.request("POST", "/v1/chat/completions", json.dumps({**body, "stream": True}),
                                {"Content-Type": "application/json"})
        self.response = None
        self.text = ""

    def read_content(self, until_done: bool) -> str:
        """The streamed text, after the first piece (or up to ``[DONE]``)."""
        if self.response is None:
            self.response = self.connection.getresponse()
            assert self.response.status == 200
        while True:
            line = self.response.readline().decode()
            if line.startswith("data: [DONE]") or not line:
                return self.text
            if line.startswith("data: "):
                event = json.loads(line[6:])
                assert "error" not in event, event
                piece = event["choices"][0]["delta"].get("content") if event["choices"] else None
                self.text += piece or ""
                if piece and not until_done:
                    return self.text

    def close(self) -> None:
        if self.connection.sock:
            self.connection.sock.close()
        self.connection.close()


@pytest.mark.slow
def test_a_client_leaving_mid_stream_does_not_disturb_its_batch_mates(batch_server: Server, char_reference):
    questions = ["describe the image", "say something long", "write a poem", "good morning"]
    bodies = [{"model": MODEL, "messages": [{"role": "user", "content": q}], "max_tokens": 60} for q in questions]
    expected = [char_reference.answer(q, max_new_tokens=60) for q in questions]
    assert min(len(e) for e in expected) >= 40  # precondition: long enough (0.8 s) to leave in the middle
    before = _health(batch_server)
    streams = [Stream(batch_server, b) for b in bodies]
    firsts = [s.read_content(until_done=False) for s in streams]
    assert firsts == [e[:len(f)] for e, f in zip(expected, firsts)]
    assert _health(batch_server)["running"] == len(bodies)  # all four in one batch
    streams[1].close()  # one client leaves; the others read to the end
    rest = [s.read_content(until_done=True) for i, s in enumerate(streams) if i != 1]
    assert rest == [e for i, e in enumerate(expected) if i != 1]
    deadline = time.monotonic() + 10
    while _health(batch_server)["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = _health(batch_server)
    assert stats["cancelled"] == before["cancelled"] + 1 and stats["running"] == 0
    assert stats["served"] == before["served"] + 3


@pytest.mark.slow
def test_64_concurrent_openai_async_requests_all_succeed(char_server: Server, char_reference):
    """The default limits (no --max-queue, --max-batch-size) take a burst of 64 without a 429."""
    questions = [f"{QUESTIONS[i % 4]} {'abcdefgh'[i % 8]}" for i in range(64)]
    expected = {q: char_reference.answer(q, max_new_tokens=16) for q in set(questions)}

    async def burst() -> list[str]:
        client = char_server.async_client()
        async with client:
            calls = [client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": q}],
                                                    max_tokens=16) for q in questions]
            replies = await asyncio.gather(*calls)
        return [r.choices[0].message.content for r in replies]

    before = _health(char_server)
    answers = asyncio.run(burst())
    assert answers == [expected[q] for q in questions]
    stats = _health(char_server)
    assert stats["served"] == before["served"] + 64
    assert stats["batches"] > before["batches"]  # served in batches, not one at a time


# -- the queue alone (no server, no model) ------------------------------------------------------
def test_queue_batches_jobs_with_equal_keys_and_runs_the_rest_alone():
    calls: list[list[str]] = []

    def run_batch(jobs, on_texts):
        names = [job.payload for job in jobs]
        calls.append(names)
        if "bad" in names:
            raise ValueError("bad row")
        for name, on_text in zip(names, on_texts):
            on_text(name)
        return [name.upper() for name in names]

    def alone(name: str):
        def work(on_text):
            calls.append([name])
            if name == "bad":
                raise ValueError("bad row")
            return name.upper()
        return work

    async def scenario() -> dict[str, list]:
        from mm_serve.queue import GenerationQueue

        queue = GenerationQueue(max_waiting=10, run_batch=run_batch, max_batch_size=3, batch_wait_s=0.0)
        release = threading.Event()
        blocker = queue.submit(lambda on_text: release.wait(10))
        queue.start()
        while not queue.stats()["running"]:
            await asyncio.sleep(0.01)
        jobs = {name: queue.submit(alone(name), key, name)
                for name, key in [("a1", "A"), ("b1", "B"), ("a2", "A"), ("solo", None), ("a3", "A"),
                                  ("a4", "A"), ("bad", "B"), ("b2", "B")]}
        release.set()
        events = {}
        for name, job in jobs.items():
            events[name] = [await job.next_event()]
            while events[name][-1][0] == "text":
                events[name].append(await job.next_event())
        await blocker.next_event()
        queue.stop()
        return events

    events = asyncio.run(scenario())
    assert calls[:2] == [["a1", "a2", "a3"], ["b1", "bad", "b2"]]  # oldest first, equal keys, at most 3
    assert calls[2:5] == [["b1"], ["bad"], ["b2"]]  # the failed batch, one at a time: only "bad" fails
    assert calls[5:] == [["solo"], ["a4"]]
    assert events["a2"] == [("text", "a2"), ("done", "A2")]
    assert events["b1"] == [("done", "B1")] and events["b2"] == [("done", "B2")]
    assert events["bad"][0][0] == "error" and str(events["bad"][0][1]) == "bad row"
    assert events["solo"] == [("done", "SOLO")]
