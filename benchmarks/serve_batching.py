"""Server throughput: `mmrun serve` with batched generation on (the defaults) vs off
(``--max-batch-size 1``, one request per model call), the tiny MiniGPT4-Qwen on CPU.

Both servers run at once on loopback (``--port 0``, 127.0.0.1 only) and load the same model
(random init, same seed). Closed-loop load from the official ``openai`` async client: C clients
each send their next request as soon as the last one is answered, for C = 1, 8, 32; the sides
alternate level by level and get the same requests (an image and a question, ``max_tokens``
16, greedy). Reports completed requests/s, p50/p95 latency and the mean batch size the server
saw (its ``/health`` counters); the answers of the two sides must agree. Bounded: at most
REQUESTS_PER_LEVEL requests and LEVEL_TIMEOUT_S per level and side.
Target (issue 22): >= 3x requests/s at concurrency 32.

    python benchmarks/serve_batching.py         # or `make bench`
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
LEVELS = (1, 8, 32)
REQUESTS_PER_LEVEL = {1: 12, 8: 48, 32: 128}
LEVEL_TIMEOUT_S = 180
MAX_TOKENS = 16
CONFIG = "model:\n  arch: minigpt4qwen\n  model_type: tiny\n"
SIDES = {"batching off (--max-batch-size 1)": ["--max-batch-size", "1"], "batching on (defaults)": []}
QUESTIONS = ["what is in the picture?", "describe the image", "what colour is it?", "is it big?"]


def _png(i: int) -> str:
    from PIL import Image

    image = Image.new("RGB", (32, 32), ((40 * i) % 256, (90 * i) % 256, (150 + 30 * i) % 256))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _messages(i: int) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": _png(i % 7)}},
                                         {"type": "text", "text": QUESTIONS[i % len(QUESTIONS)]}]}]


def _start(args: list[str], config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        return subprocess.Popen([str(BIN / "mmrun"), "serve", "--config", str(config), "--device", "cpu",
                                 "--host", "127.0.0.1", "--port", "0", "--log-level", "warning", *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env)


def _url(process: subprocess.Popen, log: Path, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"mmrun serve: \S+ on (http://\S+)", log.read_text(errors="replace"))
        if found:
            return found.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"mmrun serve exited:\n{log.read_text()}")
        time.sleep(0.2)
    raise RuntimeError(f"mmrun serve did not start:\n{log.read_text()}")


def _health(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url + "/health", timeout=30) as response:
        return json.loads(response.read())["queue"]


async def _load(url: str, concurrency: int, count: int) -> tuple[float, list[float], dict[int, str]]:
    """Closed loop: ``concurrency`` clients, ``count`` requests in all; (seconds, latencies, answers)."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=LEVEL_TIMEOUT_S)
    latencies: list[float] = []
    answers: dict[int, str] = {}
    next_index = iter(range(count))
    deadline = time.monotonic() + LEVEL_TIMEOUT_S

    async def one_client() -> None:
        for i in next_index:
            if time.monotonic() > deadline:
                return
            start = time.perf_counter()
            reply = await client.chat.completions.create(model="minigpt4qwen-tiny", messages=_messages(i),
                                                         max_tokens=MAX_TOKENS)
            latencies.append(time.perf_counter() - start)
            answers[i] = reply.choices[0].message.content

    async with client:
        started = time.perf_counter()
        await asyncio.gather(*[one_client() for _ in range(concurrency)])
        return time.perf_counter() - started, latencies, answers


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _level(url: str, concurrency: int) -> tuple[dict, dict[int, str]]:
    before = _health(url)
    seconds, latencies, answers = asyncio.run(_load(url, concurrency, REQUESTS_PER_LEVEL[concurrency]))
    after = _health(url)
    calls = (after["served"] - before["served"]) - (after["batched"] - before["batched"]) + (
        after["batches"] - before["batches"])
    return {"concurrency": concurrency, "requests": len(latencies),
            "requests_per_s": round(len(latencies) / seconds, 2),
            "p50_latency_s": round(statistics.median(latencies), 3),
            "p95_latency_s": round(_percentile(latencies, 0.95), 3),
            "mean_batch": round((after["served"] - before["served"]) / max(calls, 1), 1)}, answers


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "minigpt4qwen_tiny.yaml"
        config.write_text(CONFIG)
        logs = {name: Path(tmp) / f"server{i}.log" for i, name in enumerate(SIDES)}
        processes = {name: _start(args, config, logs[name]) for name, args in SIDES.items()}
        try:
            urls = {name: _url(processes[name], logs[name]) for name in SIDES}
            asyncio.run(_load(urls[next(iter(SIDES))], 1, 2))  # warm both up
            asyncio.run(_load(urls[list(SIDES)[1]], 1, 2))
            rows, agree = [], True
            for concurrency in LEVELS:
                answers = []
                for name in SIDES:  # alternate, level by level
                    row, side_answers = _level(urls[name], concurrency)
                    rows.append({"side": name, **row})
                    answers.append(side_answers)
                agree &= all(answers[0][i] == answers[1][i] for i in answers[0].keys() & answers[1].keys())
        finally:
            for process in processes.values():
                process.send_signal(signal.SIGINT)
            for process in processes.values():
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
    by = {(r["side"], r["concurrency"]): r["requests_per_s"] for r in rows}
    off, on = SIDES
    for row in rows:
        row["speedup"] = round(by[(row["side"], row["concurrency"])] / by[(off, row["concurrency"])], 2)
    return {"benchmark": "serve_batching",
            "model": f"minigpt4qwen tiny on CPU, one torch thread per server, max_tokens {MAX_TOKENS}, greedy",
            "client": "openai AsyncOpenAI, closed loop, loopback",
            "same_answers": agree, "speedup_at_32": by[(on, 32)] and round(by[(on, 32)] / by[(off, 32)], 2),
            "rows": rows}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
