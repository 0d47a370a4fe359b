"""Helpers of the serve tests: `mmrun serve` subprocesses on free loopback ports, the
``char_chat`` test model (tests/serve/serve_testmodel), test images and requests.

(A module of its own, not conftest.py: test modules import it by name, and several test
folders have a conftest.py.)

Every server is started by a fixture with ``--port 0`` (the server binds, then prints the
port), talked to only on 127.0.0.1, and stopped (SIGINT, then kill) through its own process
handle when the fixture ends.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTMODEL_SRC = HERE / "serve_testmodel" / "src"
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 150
IMAGE_MARK = "<ImageHere>"

for _name, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                      "TOKENIZERS_PARALLELISM": "false", "DS_ACCELERATOR": "cpu"}.items():
    os.environ.setdefault(_name, _value)


# -- images ------------------------------------------------------------------------------------
def png_bytes(color: tuple[int, int, int], size: int = 16, stripe: tuple[int, int, int] | None = None) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), color)
    if stripe is not None:
        ImageDraw.Draw(image).rectangle([0, 0, size // 2, size], fill=stripe)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_message(text: str, *images: bytes | str) -> dict[str, Any]:
    """A user message: each image (PNG bytes or a URL) as an image_url part, then the text."""
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": data_url(i) if isinstance(i, bytes) else i}} for i in images]
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}


def decode_png(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


# -- servers -----------------------------------------------------------------------------------
@dataclass
class Server:
    """A running `mmrun serve` process."""

    process: subprocess.Popen
    url: str
    log_path: Path
    model: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, body: bytes | dict, path: str = "/v1/chat/completions", timeout: float = 60) -> tuple[int, Any]:
        """POST raw bytes (or a dict as JSON); returns (status, parsed JSON body)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def client(self, api_key: str = "unused", **kwargs: Any):
        """The official OpenAI client pointed at this server (no retries: a 429 must show)."""
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=60, **kwargs)

    def async_client(self, api_key: str = "unused", **kwargs: Any):
        """The official async OpenAI client pointed at this server (no retries)."""
        from openai import AsyncOpenAI

        return AsyncOpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=120, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def serve_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTMODEL_SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MM_PLUGIN_MODULES"] = "mm_serve_testmodel.hooks"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Launch:
    """A `mmrun serve` process that is starting (several start at once to save time)."""

    process: subprocess.Popen
    log_path: Path

    def wait(self) -> Server:
        """The server, once it prints where it listens and answers /health."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            match = re.search(r"mmrun serve: (\S+) on (http://\S+)", self.log_path.read_text(errors="replace"))
            if match:
                server = Server(self.process, match.group(2), self.log_path, match.group(1))
                try:
                    if server.get("/health")["status"] == "ok":
                        return server
                except OSError:
                    pass
            if self.process.poll() is not None:
                raise RuntimeError(f"mmrun serve exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            time.sleep(0.2)
        self.process.kill()
        raise RuntimeError(f"mmrun serve did not start within {START_TIMEOUT_S} s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        Server(self.process, "", self.log_path, "").stop()


def launch_server(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> Launch:
    """Start `mmrun serve ARGS --port 0` (default host) without waiting for it (``env``: extra variables)."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(BIN / "mmrun"), "serve", *args, "--port", "0", "--log-level", "warning"],
                                   stdout=log, stderr=subprocess.STDOUT, env={**serve_env(), **(env or {})}, cwd=HERE)
    return Launch(process, log_path)


def stop_all(launches: list[Launch]) -> None:
    for launch in launches:  # signal all first: they shut down side by side
        if launch.process.poll() is None:
            launch.process.send_signal(signal.SIGINT)
    for launch in launches:
        launch.stop()


# -- the char_chat model -----------------------------------------------------------------------
CHAR_CONFIG = "model:\n  arch: char_chat\n  model_type: tiny\n  init_seed: 0\n"
TRAINED_SEED = 7  # the checkpoint holds the weights of the model drawn from this seed


def char_model(seed: int):
    """A char_chat model drawn from ``seed``, in eval mode."""
    from omegaconf import OmegaConf

    from mm_core.config.loader import load_model_defaults
    from mm_core.registry import get_registry

    cfg = load_model_defaults("char_chat", "tiny").model
    cfg = OmegaConf.merge(cfg, {"init_seed": seed})
    return get_registry().resolve("models", "char_chat").from_config(cfg).eval()


@dataclass
class CharReference:
    """The checkpoint's model, called directly: what the server must answer."""

    model: Any
    processor: Any

    def answer(self, query: str, history: list[tuple[str, str]] = (), images: list[bytes] = (),
               max_new_tokens: int = 32) -> str:
        import torch

        pixels = torch.stack([self.processor(decode_png(i)) for i in images]) if images else None
        return self.model.chat(query, list(history), pixels, max_new_tokens=max_new_tokens)


#: limits of the main test server, small enough to hit with small payloads
MAX_BODY_MB = 1.0
MAX_IMAGE_BYTES = 64 * 1024
MAX_IMAGES = 2
MAX_TOKENS = 64


STEP_DELAY_S = 0.05
BATCH_STEP_DELAY_S = 0.02  # the batching server: one step of the whole batch
API_KEYS = ("sk-test-right-one", "sk-test-right-two")  # the auth server: the first by --api-key, the second by MM_API_KEYS


# -- the tiny MiniGPT4-Qwen ---------------------------------------------------------------------
QWEN_CONFIG = "model:\n  arch: minigpt4qwen\n  model_type: tiny\n"
