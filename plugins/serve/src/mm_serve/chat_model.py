"""The served model: built from a run config like a run builds it, and called through ``chat``.

A model opts in to serving by implementing (see ``docs/serving.md``)::

    chat(query: str, history: list[tuple[str, str]], images, on_text=None, **generation) -> str

``images`` is what the model type's eval ``vis_processor`` makes of the request's PIL images,
stacked to an (N, 3, H, W) tensor (the list of PIL images when the model type has no eval
vis_processor), or ``None`` without images. A tuple result (``(text, history)``, as
transformers' chat models return) is accepted too. Optional: ``system`` as a keyword of
``chat``; ``count_tokens(text) -> int``; ``count_prompt_tokens(query, history, num_images)``;
``max_images``; ``chat_batch(requests) -> list[str]`` with ``chat_batch_row_settings`` for
batched generation (docs/serving.md, "Batching").
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from mm_core.config.loader import LoadedConfig
from mm_core.errors import ConfigError
from mm_serve.conversation import ChatCall

log = logging.getLogger(__name__)

IMAGE_MARK = "<ImageHere>"  # == mm_core.base.llm.IMAGE_MARK, repeated so importing this module needs no torch


@dataclass
class Generation:
    """Decoding settings of one request, in the keyword names ``chat`` takes."""

    max_new_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None

    @property
    def do_sample(self) -> bool:
        # OpenAI's default temperature is 1 (sampling); a local server answers greedily unless asked
        return self.temperature is not None and self.temperature > 0

    def kwargs(self) -> dict[str, Any]:
        options: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            options["temperature"] = self.temperature
            if self.top_p is not None:
                options["top_p"] = self.top_p
        return options


@dataclass
class Reply:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def add_model_options(parser: Any, config_help: str, device: str | None = None) -> None:
    """The options every command that loads a model takes (``serve``, ``chat``, ``predict``): what
    :func:`mm_core.api.load_model_for_inference` reads. ``device=None``: CUDA when available."""
    parser.add_argument("--config", "--cfg-path", dest="config", required=True, help=config_help)
    parser.add_argument("--checkpoint", default=None,
                        help="mm checkpoint directory, 'checkpoints' folder / pointer file, or weights file")
    parser.add_argument("--options", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")
    parser.add_argument("--device", default=device,
                        help=f"cpu, cuda, cuda:1 ... (default: {device or 'cuda when available'})")


def require_chat(model: Any) -> Callable[..., Any]:
    """``model.chat``; a :class:`ConfigError` saying how to opt in when the model has none."""
    chat = getattr(model, "chat", None)
    if not callable(chat):
        raise ConfigError(
            f"model {type(model).__name__} has no chat method, so it cannot be served or chatted with",
            hint="a model opts in by implementing chat(query, history, images, on_text=None, **generation); "
                 "see docs/serving.md",
        )
    return chat


class ChatModel:
    """A model with ``chat`` plus its eval image processor, and the name clients ask for."""

    def __init__(self, model: Any, vis_processor: Callable[[Image.Image], Any] | None, name: str):
        chat = require_chat(model)
        self.model = model
        self.vis_processor = vis_processor
        self.name = name
        self.created = int(time.time())
        self.image_mark = str(getattr(model, "image_mark", IMAGE_MARK))
        self.max_images = getattr(model, "max_images", None)
        self._takes_system = "system" in inspect.signature(chat).parameters
        batch = getattr(model, "chat_batch", None)
        self._chat_batch = batch if callable(batch) else None
        self.row_settings = frozenset(getattr(model, "chat_batch_row_settings", ()))

    @property
    def batches(self) -> bool:
        """Whether the model generates for several requests in one call (``chat_batch``)."""
        return self._chat_batch is not None

    def batch_key(self, generation: Generation) -> Hashable | None:
        """Requests with equal keys may share one ``chat_batch`` call: the settings the model cannot
        vary per row must agree. ``None`` (run alone): no ``chat_batch``, or a seeded sampled request
        for a model without per-row seeds (its answer must not depend on its batch-mates)."""
        if self._chat_batch is None:
            return None
        if generation.do_sample and generation.seed is not None and "seed" not in self.row_settings:
            return None
        return tuple(sorted((k, v) for k, v in generation.kwargs().items() if k not in self.row_settings))

    @classmethod
    def from_config(cls, loaded: LoadedConfig, checkpoint: str | None = None, name: str | None = None,
                    device: str | None = None) -> ChatModel:
        """The model of ``loaded`` with ``checkpoint``, as :func:`mm_core.api.load_model_for_inference`
        loads it (``device`` ``None``: CUDA when available), and its eval vis_processor."""
        from mm_core.api import load_model_for_inference

        loaded_model = load_model_for_inference(loaded, checkpoint=checkpoint, device=device)
        return cls(loaded_model.model, loaded_model.vis_processor, name or loaded_model.name)

    # -- one request -------------------------------------------------------------------------
    def prepare_images(self, images: list[Image.Image]) -> Any:
        """The ``images`` argument of ``chat``: processed and stacked, or ``None``."""
        if not images:
            return None
        if self.vis_processor is None:
            return list(images)
        import torch

        tensors = [self.vis_processor(image) for image in images]
        if all(isinstance(t, torch.Tensor) for t in tensors):
            device = getattr(self.model, "device", None)
            stacked = torch.stack(tensors)
            return stacked.to(device) if device is not None else stacked
        return tensors

    def reply(self, call: ChatCall, images: list[Image.Image], generation: Generation,
              on_text: Callable[[str], None]) -> Reply:
        """Run ``chat`` for one request (on the generation thread), streaming through ``on_text``."""
        import torch

        query, history, kwargs = self._prompt(call, generation)
        streamed: list[str] = []
        with torch.no_grad():
            if generation.seed is not None:
                torch.manual_seed(generation.seed)
            result = self.model.chat(query, history, self.prepare_images(images),
                                     on_text=_recording(streamed, on_text), **kwargs)
        return self._reply(result, streamed, on_text, generation, query, history, len(images))

    def reply_batch(self, items: list[tuple[ChatCall, list[Image.Image], Generation]],
                    on_texts: list[Callable[[str], None]], stopped: list[Callable[[], bool]]) -> list[Reply]:
        """Run ``chat_batch`` for several requests in one call (on the generation thread), each
        streaming through its own ``on_text``; ``stopped[i]()`` says that request i's client left."""
        import torch

        requests, prompts, streamed = [], [], [[] for _ in items]
        for (call, images, generation), on_text, is_stopped, pieces in zip(items, on_texts, stopped, streamed):
            query, history, kwargs = self._prompt(call, generation)
            request = {"query": query, "history": history, "images": self.prepare_images(images),
                       "on_text": _recording(pieces, on_text), "stopped": is_stopped, "generation": kwargs}
            if "system" in kwargs:
                request["system"] = kwargs.pop("system")
            if generation.do_sample and generation.seed is not None:
                kwargs["seed"] = generation.seed  # batch_key lets this happen only with per-row seeds
            requests.append(request)
            prompts.append((query, history))
        with torch.no_grad():
            texts = list(self._chat_batch(requests))
        if len(texts) != len(items):
            raise RuntimeError(f"chat_batch returned {len(texts)} answers for {len(items)} requests")
        return [self._reply(text, pieces, on_text, item[2], query, history, len(item[1]))
                for text, pieces, on_text, item, (query, history) in zip(texts, streamed, on_texts, items, prompts)]

    def _prompt(self, call: ChatCall, generation: Generation) -> tuple[str, list[tuple[str, str]], dict[str, Any]]:
        """``query``, ``history`` and keyword arguments of ``chat``; the system text goes to ``system``
        when ``chat`` takes it, else before the first user turn."""
        query, history = call.query, list(call.history)
        kwargs = generation.kwargs()
        if call.system:
            if self._takes_system:
                kwargs["system"] = call.system
            elif history:
                history[0] = (f"{call.system}\n\n{history[0][0]}", history[0][1])
            else:
                query = f"{call.system}\n\n{query}"
        return query, history, kwargs

    def _reply(self, result: Any, streamed: list[str], on_text: Callable[[str], None], generation: Generation,
               query: str, history: list[tuple[str, str]], num_images: int) -> Reply:
        text = str(result[0] if isinstance(result, tuple) else result)
        sent = "".join(streamed)
        if text.startswith(sent) and len(text) > len(sent):  # a model that streams nothing (or not all)
            on_text(text[len(sent):])
        # re-tokenising the decoded text can count more tokens than were generated (e.g. bytes of a
        # partial character); no more than max_new_tokens were
        completion_tokens = min(self.count_tokens(text), generation.max_new_tokens)
        finish = "length" if completion_tokens >= generation.max_new_tokens else "stop"
        return Reply(text, finish, self.count_prompt_tokens(query, history, num_images), completion_tokens)

    # -- usage -------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """Tokens of ``text``: the model's ``count_tokens``, else its tokenizer (``model.tokenizer``
        or ``model.llm.tokenizer``), else whitespace-separated words."""
        counter = getattr(self.model, "count_tokens", None)
        if callable(counter):
            return int(counter(text))
        tokenizer = getattr(self.model, "tokenizer", None) or getattr(getattr(self.model, "llm", None), "tokenizer", None)
        if tokenizer is not None:
            return len(tokenizer.encode(text, add_special_tokens=False))
        return len(text.split())

    def count_prompt_tokens(self, query: str, history: list[tuple[str, str]], num_images: int) -> int:
        """The model's ``count_prompt_tokens``, else the conversation's text tokens plus
        ``num_query_token`` (or 1) per image; chat-template tokens are then not counted."""
        counter = getattr(self.model, "count_prompt_tokens", None)
        if callable(counter):
            return int(counter(query, history, num_images))
        texts = [t.replace(self.image_mark, "") for pair in history for t in pair] + [query.replace(self.image_mark, "")]
        per_image = int(getattr(self.model, "num_query_token", 1))
        return sum(self.count_tokens(t) for t in texts if t) + per_image * num_images


def _recording(pieces: list[str], on_text: Callable[[str], None]) -> Callable[[str], None]:
    """``on_text`` that also keeps what was streamed (to send what a model did not stream)."""
    def forward(piece: str) -> None:
        pieces.append(piece)
        on_text(piece)
    return forward
