"""Which model method answers a record, and how it is called, batched where the method is.

* ``generate(samples, ...)`` (captioning, prompts): ``{"image": (B, 3, H, W), "prompt": [...]}``;
  records without a prompt are one call with no ``prompt`` key, so the model uses its own.
* ``predict_answers(samples, ...)`` (VQA): ``{"image", "text_input": [questions]}``; the model puts
  each question through its template.
* ``chat(query, history, images, ...)``: one record at a time (chat is not batched); the query is
  the prompt (or question) with one image mark before it.

``--method auto`` picks, per record: a question -> ``predict_answers``, else ``chat``, else
``generate``; otherwise ``generate``, else ``chat``. The length limit is passed under the name
the method takes (``max_new_tokens``, LAVIS' ``max_len``, or ``max_length``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from mm_core.errors import ConfigError, MMError
from mm_serve.chat_model import IMAGE_MARK
from mm_serve.predict.loading import Item

METHODS = ("generate", "predict_answers", "chat")
DEFAULT_CHAT_PROMPT = "Describe this image briefly."


@dataclass(frozen=True)
class Settings:
    """Decoding settings of a run; greedy unless ``temperature`` > 0."""

    max_new_tokens: int = 30
    num_beams: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    prompt: str | None = None

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0

    def describe(self, method: str) -> dict[str, Any]:
        """What each output line records of how it was generated."""
        out: dict[str, Any] = {"method": method, "max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams,
                               "do_sample": self.do_sample}
        if self.do_sample:
            out.update(temperature=self.temperature, top_p=self.top_p)
        if self.repetition_penalty != 1.0:
            out["repetition_penalty"] = self.repetition_penalty
        return out

    def kwargs(self, function: Any) -> dict[str, Any]:
        """Keyword arguments of ``function`` (a bound model method) for these settings."""
        params = inspect.signature(function).parameters
        length = next((n for n in ("max_new_tokens", "max_len", "max_length") if n in params), "max_new_tokens")
        options: dict[str, Any] = {length: self.max_new_tokens, "num_beams": self.num_beams}
        if self.do_sample:
            options["use_nucleus_sampling" if "use_nucleus_sampling" in params else "do_sample"] = True
            options.update(temperature=self.temperature, top_p=self.top_p)
        if self.repetition_penalty != 1.0:
            options["repetition_penalty"] = self.repetition_penalty
        return options


def available_methods(model: Any) -> list[str]:
    """The methods of :data:`METHODS` that ``model`` has; a :class:`ConfigError` when none."""
    found = [m for m in METHODS if callable(getattr(model, m, None))]
    if not found:
        raise ConfigError(f"model {type(model).__name__} has none of {', '.join(METHODS)}, so mmrun predict cannot use it",
                          hint="a model answers through generate(samples), predict_answers(samples) or chat(...); "
                               "see docs/serving.md")
    return found


def choose_method(requested: str, methods: list[str], has_question: bool) -> str:
    """The method for one record (see the module doc); ``requested`` is ``--method``."""
    if requested != "auto":
        if requested not in methods:
            raise ConfigError(f"--method {requested}: the model has no {requested} method",
                              hint=f"it has {', '.join(methods)}; or use --method auto")
        return requested
    order = ("predict_answers", "chat", "generate") if has_question else ("generate", "chat", "predict_answers")
    return next(m for m in order if m in methods)


class Predictor:
    """Answers batches of :class:`Item` s with one model, returning output lines in item order."""

    def __init__(self, model: Any, settings: Settings, method: str = "auto") -> None:
        self.model = model
        self.settings = settings
        self.methods = available_methods(model)
        self.requested = method
        self.image_mark = str(getattr(model, "image_mark", IMAGE_MARK))
        self.collater: Any = None  # a dataset split's collater (set by the command for --split)
        if method != "auto":
            choose_method(method, self.methods, False)  # fail before loading any data

    def answer(self, items: list[Item]) -> list[dict[str, Any]]:
        """One line per item: errors as given, the rest answered in groups of one method call."""
        lines: dict[int, dict[str, Any]] = {}
        groups: dict[tuple[str, bool], list[int]] = {}
        for i, item in enumerate(items):
            if item.error is not None:
                lines[i] = self.line(item, error=item.error)
                continue
            method = choose_method(self.requested, self.methods, self._question(item) is not None)
            groups.setdefault((method, item.record.prompt is not None), []).append(i)
        for (method, _), indices in groups.items():
            group = [items[i] for i in indices]
            for i, line in zip(indices, self._answer_group(method, group)):
                lines[i] = line
        return [lines[i] for i in range(len(items))]

    def _answer_group(self, method: str, group: list[Item]) -> list[dict[str, Any]]:
        """The group in one call; when the model refuses the batch, each item alone, so only the
        items at fault carry an error."""
        try:
            return [self.line(it, method, out) for it, out in zip(group, self.call(method, group))]
        except MMError as exc:
            if len(group) == 1:
                return [self.line(group[0], method, error=str(exc))]
            return [line for it in group for line in self._answer_group(method, [it])]

    def call(self, method: str, group: list[Item]) -> list[str]:
        """The texts ``method`` gives for ``group`` (one per item)."""
        import torch

        function = getattr(self.model, method)
        kwargs = self.settings.kwargs(function)
        with torch.no_grad():
            if method == "chat":
                texts = [self._chat(function, item, kwargs) for item in group]
            else:
                texts = list(function(self._samples(method, group), **kwargs))
        if len(texts) != len(group):
            raise RuntimeError(f"{type(self.model).__name__}.{method} returned {len(texts)} texts for {len(group)} inputs")
        return [str(t).strip() for t in texts]

    def _samples(self, method: str, group: list[Item]) -> dict[str, Any]:
        if group[0].sample is not None:  # a dataset split: its own collater makes the batch
            samples = dict(self.collater([it.sample for it in group]))
            if self.settings.prompt is not None and method == "generate":
                samples["prompt"] = self.settings.prompt
            return samples
        samples: dict[str, Any] = {"image": self._pixels(group, method)}
        if method == "predict_answers":
            samples["text_input"] = [self._question(it) for it in group]
        elif group[0].record.prompt is not None:
            samples["prompt"] = [it.record.prompt for it in group]
        elif self.settings.prompt is not None:
            samples["prompt"] = [self.settings.prompt] * len(group)
        return samples

    def _chat(self, chat: Any, item: Item, kwargs: dict[str, Any]) -> str:
        record = item.record
        query = record.prompt or record.question or self.settings.prompt or DEFAULT_CHAT_PROMPT
        if self.image_mark not in query:
            query = f"{self.image_mark} {query}"
        pixels = self._pixels([item], "chat")
        result = chat(query, [], pixels, **kwargs)
        return result[0] if isinstance(result, tuple) else result

    def _pixels(self, group: list[Item], method: str) -> Any:
        import torch

        pixels = [it.pixels for it in group]
        if not all(isinstance(p, torch.Tensor) for p in pixels):
            if method == "chat":
                return pixels
            raise ConfigError(f"{method} needs image tensors, but the config's preprocess block names no eval "
                              "vis_processor", hint="set preprocess.vis_processor.eval (the model type's defaults "
                                                    "usually do)")
        stacked = torch.stack(pixels)
        device = getattr(self.model, "device", None)
        return stacked.to(device) if device is not None else stacked

    def _question(self, item: Item) -> str | None:
        if item.sample is not None:
            return item.sample.get("text_input")
        return item.record.question

    def line(self, item: Item, method: str | None = None, output: str | None = None,
             error: str | None = None) -> dict[str, Any]:
        """The output line of ``item``: id, image, prompt / question, output (or error), settings."""
        record = item.record
        line: dict[str, Any] = {"id": record.id, "image": record.image}
        sample = item.sample or {}
        if sample:
            line.update({k: _plain(sample[k]) for k in ("image_id", "question_id") if k in sample})
        question = self._question(item)
        line["prompt"] = record.prompt if record.prompt is not None else (None if question else self.settings.prompt)
        if question is not None:
            line["question"] = question
        if error is not None:
            line["error"] = error
        else:
            line["output"] = output
            line["generation"] = self.settings.describe(method or "")
        return line


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
