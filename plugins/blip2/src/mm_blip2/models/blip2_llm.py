"""``blip2_llm``: BLIP-2 vision tower -> Q-Former -> Linear projection -> any registered LLM.

The language model comes from the registry's ``llms`` kind by name (``model.llm.name``; the
rest of ``model.llm`` is passed to the backend), and is used only through
:class:`mm_core.base.llm.BaseLLM`, so this module imports no LLM plugin. Each image becomes
``num_query_token`` projected Q-Former outputs that replace the backend's image placeholder
tokens (one block per :data:`~mm_core.base.llm.IMAGE_MARK`).

Samples: instruction style ``{"image", "conversations"}`` or caption style
``{"image", "text_input"}`` (turned into user ``prompt`` -> assistant caption). ``image`` is a
(B, 3, H, W) tensor (one image per sample) or a list of per-sample tensors ((3, H, W) or
(N, 3, H, W), several images per sample). Text is tokenised here, padded to the batch's longest.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from mm_blip2.models.blip2 import Blip2Base
from mm_blip2.models.feature_cache import FrozenFeatureCache
from mm_core.base.llm import IMAGE_MARK, BaseLLM, Conversation
from mm_core.base.model import config_value
from mm_core.errors import ConfigError, DataError
from mm_core.weights import WeightSources

DEFAULT_PROMPT = f"{IMAGE_MARK} Describe this image briefly."


class Blip2LLM(Blip2Base):
    """BLIP-2 -> LLM composition (MiniGPT-4 / MiniGPT4-Qwen style).

    Options beyond :class:`~mm_blip2.models.blip2.Blip2Base`'s: ``llm`` (``name`` + backend
    options), ``freeze_proj``, ``max_txt_len`` (token budget of one training sample),
    ``prompt`` (user turn of caption-style samples; a list is sampled from during training),
    ``cache_image_features`` (off by default; with the vision tower and Q-Former frozen and the
    eval transform, reuse their outputs for images seen before — see
    :mod:`mm_blip2.models.feature_cache`) and ``image_feature_cache_size`` (most images kept).
    Subclasses adapt other config layouts by overriding :meth:`llm_config`.
    """

    #: VQA user turn when ``prompt`` is no ``{}`` template; a LAVIS arch sets "Question: {} Short answer:".
    QUESTION_TEMPLATE = "{}"

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        self.llm = self.build_llm(self.llm_config(cfg))
        self.llm_proj = nn.Linear(self.qformer.config.hidden_size, self.llm.hidden_size)
        self.max_txt_len = int(config_value(cfg, "max_txt_len", 512))
        prompt = config_value(cfg, "prompt", DEFAULT_PROMPT)
        self.prompts = list(prompt) if isinstance(prompt, (list, tuple)) or OmegaConf.is_list(prompt) else [str(prompt)]
        self.apply_freezing(cfg)
        if config_value(cfg, "freeze_proj", False):
            self.freeze(self.llm_proj)
        self.feature_cache: FrozenFeatureCache | None = None
        if config_value(cfg, "cache_image_features", False):
            self.feature_cache = FrozenFeatureCache(int(config_value(cfg, "image_feature_cache_size", 100_000)))

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: DictConfig) -> Blip2LLM:
        """Build the model and load the weights the config names (see ``Blip2Base``)."""
        model = cls(cfg)
        model.load_weights_from_config(cfg)
        return model

    def llm_config(self, cfg: DictConfig) -> DictConfig:
        """The backend's config block (``model.llm``); subclasses may derive it from other keys."""
        block = OmegaConf.select(cfg, "llm")
        if block is None or not block.get("name"):
            raise ConfigError(
                "model.llm.name is missing: blip2_llm needs a language-model backend",
                hint="set model.llm.name to a registered LLM backend (`mmrun list llms`)",
            )
        return block

    @staticmethod
    def build_llm(llm_cfg: DictConfig) -> BaseLLM:
        """The registered backend ``llm_cfg.name`` built from its block."""
        from mm_core.registry import get_registry

        return get_registry().resolve("llms", str(llm_cfg.name)).from_config(llm_cfg)

    # -- weights (mm_blip2.weights) ---------------------------------------------------------
    @property
    def llm_state_prefix(self) -> str:
        """Where the backend's Hugging Face model sits in this model's state dict: MiniGPT4-Qwen's
        ``llm_model.*`` keys load there (``llm.model.`` for the ``qwen`` backend)."""
        for name, child in self.llm.named_children():
            if hasattr(child, "get_input_embeddings"):
                return f"llm.{name}."
        return "llm."

    def declare_weights(self, sources: WeightSources, cfg: DictConfig) -> None:
        """The LLM comes from its backend's own weights (``model.llm.model``) unless built with
        ``random_init`` or from no named file; ``llm_proj`` and LoRA adapters are new in this
        composition (fresh) until a ``finetuned`` file fills them."""
        llm_cfg = self.llm_config(cfg)
        source = llm_cfg.get("model") or llm_cfg.get("llm_model")
        llm_keys = [f"llm.{k}" for k in self.llm.state_dict()]
        unfilled = {f"llm.{k}" for k in self.llm.missing_keys}  # left to a later file, or to the coverage error
        if source and not llm_cfg.get("random_init", False):
            sources.loaded([k for k in llm_keys if "lora_" not in k and k not in unfilled],
                           f"{source} (LLM backend {llm_cfg.name})")
        else:
            sources.fresh(llm_keys, "LLM built with random_init" if source else f"LLM backend {llm_cfg.name}, no file")
        sources.fresh([k for k in llm_keys if "lora_" in k], "new LoRA adapters")
        sources.fresh([f"llm_proj.{k}" for k in self.llm_proj.state_dict()], "new projection of this composition")

    @classmethod
    def weights_plan(cls, cfg: DictConfig) -> list[tuple[str, str]]:
        llm_cfg = cls.llm_config(cls, cfg)  # reads only cfg and class attributes
        source = llm_cfg.get("model") or llm_cfg.get("llm_model")
        llm = "random init (random_init)" if llm_cfg.get("random_init", False) or not source else str(source)
        return [*super().weights_plan(cfg), (f"llm (backend {llm_cfg.name})", llm),
                ("llm_proj, LoRA adapters", "fresh (new in this composition) unless a file above holds them")]

    # -- images -----------------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor, instructions: list[str] | None = None) -> torch.Tensor:
        """(N, 3, H, W) -> (N, num_query_token, llm hidden): the LLM-space image tokens (``instructions``,
        one per image, are for an instruction-aware Q-Former: see :meth:`qformer_instructions`)."""
        images = images.to(self.device)
        cache = self.feature_cache
        if cache is not None and cache.usable([self.visual_encoder, self.ln_vision, self.qformer, self.query_tokens]):
            queries = cache.lookup(images, lambda subset: self.query_image(subset)[0])
        else:
            queries, _ = self.query_image(images)
        return self.llm_proj(queries)

    def qformer_instructions(self, conversations: list[Conversation] | None, counts: list[int]) -> list[str] | None:
        """Per image, the text its Q-Former pass reads with the queries (none here; InstructBLIP's instruction)."""
        return None

    def _image_tokens(self, image: Any, batch_size: int, conversations: list[Conversation] | None = None) -> list[torch.Tensor]:
        """Per sample, its images' LLM tokens flattened to (n_images * num_query_token, D)."""
        if image is None:
            return [self.llm_proj.weight.new_zeros(0, self.llm.hidden_size)] * batch_size
        if isinstance(image, torch.Tensor):
            per_sample = list(image.unsqueeze(1)) if image.dim() == 4 else [image]
        else:
            per_sample = [im.unsqueeze(0) if im.dim() == 3 else im for im in image]
        if len(per_sample) != batch_size:
            raise DataError(f"batch has {len(per_sample)} image entries for {batch_size} conversations")
        counts = [im.shape[0] for im in per_sample]
        instructions = self.qformer_instructions(conversations, counts)
        tokens = self.encode_images(torch.cat(per_sample), instructions) if sum(counts) else None
        out, start = [], 0
        for n in counts:
            out.append(tokens[start:start + n].flatten(0, 1) if n else self.llm_proj.weight.new_zeros(0, self.llm.hidden_size))
            start += n
        return out

    def _embed(self, input_ids: torch.Tensor, image_tokens: list[torch.Tensor]) -> torch.Tensor:
        """Token embeddings with every placeholder replaced, in order, by its image token."""
        embeds = self.llm.embed_tokens(input_ids)
        mask = input_ids == self.llm.image_token_id
        chosen = []
        for i, tokens in enumerate(image_tokens):
            used = int(mask[i].sum())
            if used > tokens.shape[0]:
                raise DataError(
                    f"sample {i}: its text has {used // self.num_query_token} image marks "
                    f"({IMAGE_MARK}) but only {tokens.shape[0] // self.num_query_token} images",
                    hint="give one image per mark (a list of (N, 3, H, W) tensors for several images)",
                )
            chosen.append(tokens[:used])  # truncation may have removed trailing images
        flat = torch.cat(chosen).to(embeds.dtype)
        return embeds.masked_scatter(mask.unsqueeze(-1), flat) if flat.numel() else embeds

    # -- conversations ----------------------------------------------------------------------
    def caption_conversation(self, caption: str | None) -> list[dict[str, str]]:
        """A caption-style sample as a conversation: user ``prompt`` -> assistant caption."""
        prompt = random.choice(self.prompts) if self.training else self.prompts[0]
        conversation = [{"from": "user", "value": prompt}]
        if caption is not None:
            conversation.append({"from": "assistant", "value": caption})
        return conversation

    def question_template(self) -> str:
        """The user turn of a VQA question: the model's ``prompt`` when it is a template (has
        ``{}``), else :attr:`QUESTION_TEMPLATE` (a caption prompt does not apply to questions)."""
        templates = [p for p in self.prompts if "{}" in p]
        return templates[0] if templates else self.QUESTION_TEMPLATE

    def question_conversation(self, question: str, answer: str | None) -> list[dict[str, str]]:
        """A VQA sample as a conversation: user question (through :meth:`question_template`) -> assistant answer."""
        conversation = [{"from": "user", "value": self.question_template().format(question)}]
        if answer is not None:
            conversation.append({"from": "assistant", "value": answer})
        return conversation

    def conversations_of(self, samples: dict[str, Any]) -> list[list[dict[str, str]]]:
        """Instruction samples as given; VQA samples (``text_input`` with an answer) as question ->
        answer; caption samples (``text_input`` only) as ``prompt`` -> caption."""
        if samples.get("conversations") is not None:
            return [list(c) for c in samples["conversations"]]
        if samples.get("text_input") is not None:
            texts = samples["text_input"]
            texts = [texts] if isinstance(texts, str) else list(texts)
            answers = answers_of(samples, len(texts))
            if answers is not None:
                return [self.question_conversation(q, a) for q, a in zip(texts, answers)]
            return [self.caption_conversation(t) for t in texts]
        raise DataError("samples need 'conversations' (instruction style) or 'text_input' (caption style)",
                        hint="check the dataset's collater output")

    @staticmethod
    def with_image_mark(conversation: Sequence[dict[str, str]], has_image: bool) -> list[dict[str, str]]:
        """The conversation, with an image mark put before the first user turn's text when
        images are given but no turn marks where they go."""
        conversation = [dict(turn) for turn in conversation]
        if has_image and not any(IMAGE_MARK in t["value"] for t in conversation):
            for turn in conversation:
                if turn["from"] == "user":
                    turn["value"] = f"{IMAGE_MARK}\n{turn['value']}"
                    break
        return conversation

    # -- training ---------------------------------------------------------------------------
    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Language-modelling loss of the assistant turns given the images."""
        conversations = self.conversations_of(samples)
        image = samples.get("image")
        conversations = [self.with_image_mark(c, image is not None) for c in conversations]
        encoded = [self.llm.encode_conversation(c, self.num_query_token, self.max_txt_len) for c in conversations]
        batch = {k: v.to(self.device) for k, v in self.llm.collate(encoded).items()}
        embeds = self._embed(batch["input_ids"], self._image_tokens(image, len(conversations), conversations))
        output = self.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"])
        return {"loss": output.loss}

    def pipeline_layers(self) -> dict[str, Any]:
        """MPP-LLaVA's split for the pipeline runner: see :mod:`mm_blip2.models.pipeline`."""
        from mm_blip2.models.pipeline import pipeline_layers

        return pipeline_layers(self)

    # -- inference --------------------------------------------------------------------------
    def _generate(self, conversations: list[Conversation], image: Any,
                  on_text: Callable[[str], None] | list[Callable[[str], None] | None] | None,
                  **generation: Any) -> list[str]:
        """``on_text``: one callback (a batch of one), or one per conversation (the backend streams each row)."""
        conversations = [self.with_image_mark(c, has) for c, has in zip(conversations, _has_images(image, len(conversations)))]
        prompts = [self.llm.encode_prompt(c, self.num_query_token) for c in conversations]
        batch = {k: v.to(self.device) for k, v in self.llm.collate(prompts, padding_side="left").items()}
        embeds = self._embed(batch["input_ids"], self._image_tokens(image, len(conversations), conversations))
        return self.llm.generate(embeds, batch["attention_mask"], on_text=on_text, **generation)

    @torch.no_grad()
    def generate(
        self,
        samples: dict[str, Any],
        use_nucleus_sampling: bool = False,
        num_beams: int = 1,
        max_new_tokens: int | None = None,
        max_length: int = 30,
        min_length: int = 1,
        top_p: float = 0.9,
        temperature: float = 1.0,
        repetition_penalty: float = 1.0,
        on_text: Callable[[str], None] | None = None,
        **generation: Any,
    ) -> list[str]:
        """One answer per sample. The prompt is the sample's conversation (a trailing assistant
        turn is dropped), else ``samples["prompt"]`` (str or list), else the model's ``prompt``.
        ``max_length`` counts new tokens as in LAVIS; ``max_new_tokens`` wins when given."""
        conversations = self._prompt_conversations(samples)
        options = dict(
            num_beams=num_beams, max_new_tokens=max_new_tokens or max_length, min_new_tokens=min_length,
            repetition_penalty=repetition_penalty, do_sample=use_nucleus_sampling or generation.pop("do_sample", False),
        )
        if options["do_sample"]:
            options.update(top_p=top_p, temperature=temperature)
        options.update(generation)
        return self._generate(conversations, samples.get("image"), on_text, **options)

    def _prompt_conversations(self, samples: dict[str, Any]) -> list[list[dict[str, str]]]:
        if samples.get("conversations") is not None:
            conversations = [list(c) for c in samples["conversations"]]
            return [c[:-1] if c and c[-1]["from"] == "assistant" else c for c in conversations]
        batch = _batch_size(samples)
        prompt = samples.get("prompt")
        if prompt is None:
            return [self.caption_conversation(None) for _ in range(batch)]
        prompts = [prompt] * batch if isinstance(prompt, str) else list(prompt)
        return [[{"from": "user", "value": p}] for p in prompts]

    @torch.no_grad()
    def predict_answers(self, samples: dict[str, Any], num_beams: int = 1, max_len: int = 10, min_len: int = 1,
                        prompt: str | None = None, **generation: Any) -> list[str]:
        """VQA: answer ``samples["text_input"]``, each question put in the user turn as in training
        (:meth:`question_conversation`); a ``prompt`` given here (``run.prompt``) replaces the template."""
        questions = samples["text_input"]
        questions = [questions] if isinstance(questions, str) else list(questions)
        if prompt:
            conversations = [[{"from": "user", "value": prompt.format(q)}] for q in questions]
        else:
            conversations = [self.question_conversation(q, None) for q in questions]
        return self._generate(conversations, samples.get("image"), None, num_beams=num_beams,
                              max_new_tokens=max_len, min_new_tokens=min_len, **generation)

    @torch.no_grad()
    def chat(
        self,
        query: str,
        history: list[tuple[str, str]] | None = None,
        images: torch.Tensor | None = None,
        on_text: Callable[[str], None] | None = None,
        **generation: Any,
    ) -> tuple[str, list[tuple[str, str]]]:
        """One chat turn: ``history`` holds earlier (query, response) pairs; ``images``
        ((N, 3, H, W) or (3, H, W)) fill the :data:`IMAGE_MARK` s of the whole conversation.
        Returns the response and the history extended with this turn."""
        history = list(history or [])
        image = None if images is None else [images if images.dim() == 4 else images.unsqueeze(0)]
        generation.setdefault("max_new_tokens", 256)
        response = self._generate([_chat_conversation(query, history)], image, on_text, **generation)[0]
        return response, history + [(query, response)]

    #: generation settings that may differ between the requests of one :meth:`chat_batch` call
    chat_batch_row_settings = ("max_new_tokens",)

    @torch.no_grad()
    def chat_batch(self, requests: Sequence[dict[str, Any]]) -> list[str]:
        """Several chat turns generated together (the serving contract of docs/serving.md): each request
        has ``query``, ``history``, ``images``, ``on_text``, ``stopped`` and ``generation``; the settings
        other than ``max_new_tokens`` are the same for all. A row stops at its own ``max_new_tokens``,
        or once its ``stopped()`` is true, so that its batch-mates' answers are what they are alone."""
        conversations = [_chat_conversation(r["query"], r.get("history") or []) for r in requests]
        images = [None if r.get("images") is None else (r["images"] if r["images"].dim() == 4 else r["images"][None])
                  for r in requests]
        given = [i for i in images if i is not None]
        image = [i if i is not None else given[0].new_zeros(0, *given[0].shape[1:]) for i in images] if given else None
        limits = [int(r["generation"].get("max_new_tokens", 256)) for r in requests]
        generation = {**requests[0]["generation"], "max_new_tokens": max(limits)}
        stops = _RowStops(limits, [r.get("stopped") for r in requests])
        generation["stopping_criteria"] = StoppingCriteriaList([stops, *generation.get("stopping_criteria", [])])
        return self._generate(conversations, image, [r.get("on_text") for r in requests], **generation)


def _chat_conversation(query: str, history: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    conversation: list[dict[str, str]] = []
    for user, assistant in history:
        conversation += [{"from": "user", "value": user}, {"from": "assistant", "value": assistant}]
    return [*conversation, {"from": "user", "value": query}]


def _has_images(image: Any, batch_size: int) -> list[bool]:
    """Per sample, whether it comes with images (a list entry may be an empty (0, 3, H, W) tensor)."""
    if image is None:
        return [False] * batch_size
    if isinstance(image, torch.Tensor):
        return [True] * batch_size
    return [im.numel() > 0 for im in image] + [True] * (batch_size - len(image))


class _RowStops(StoppingCriteria):
    """A Hugging Face stopping criterion: row i is done after ``limits[i]`` new tokens or once
    ``stopped[i]()`` (its client left); the others go on."""

    def __init__(self, limits: list[int], stopped: list[Callable[[], bool] | None]):
        self.limits = torch.tensor(limits)
        self.stopped = stopped
        self.start: int | None = None

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        if self.start is None:  # first call: one new token is in input_ids
            self.start = input_ids.shape[1] - 1
        done = (input_ids.shape[1] - self.start) >= self.limits
        done |= torch.tensor([bool(s and s()) for s in self.stopped])
        return done.to(input_ids.device)


def answers_of(samples: dict[str, Any], batch_size: int) -> list[str] | None:
    """Each VQA sample's training answer: ``text_output``, else one of its ``answers`` drawn by
    ``weights`` (per-sample lists, or LAVIS' flat ``answer`` / ``weight`` / ``n_answers``) with
    Python's ``random``, which the run seeds and its checkpoints capture; ``None`` for captions."""
    if samples.get("text_output") is not None:
        out = samples["text_output"]
        return [out] if isinstance(out, str) else [str(a) for a in out]
    answers, weights = samples.get("answers"), samples.get("weights")
    if answers is None and samples.get("answer") is not None and samples.get("n_answers") is not None:
        flat, flat_w, answers, weights = list(samples["answer"]), samples.get("weight"), [], []
        flat_w = [1.0] * len(flat) if flat_w is None else [float(w) for w in flat_w]
        start = 0
        for n in [int(n) for n in samples["n_answers"]]:
            answers.append(flat[start:start + n])
            weights.append(flat_w[start:start + n])
            start += n
    if answers is None:
        return None
    if len(answers) != batch_size:
        raise DataError(f"batch has {len(answers)} answer lists for {batch_size} questions")
    if any(len(a) == 0 for a in answers):
        raise DataError("a training question has no answer", hint="every VQA training sample needs an answer")
    weights = weights if weights is not None else [None] * batch_size
    return [random.choices(list(a), weights=None if w is None else [float(x) for x in w])[0] for a, w in zip(answers, weights)]


def _batch_size(samples: dict[str, Any]) -> int:
    image = samples.get("image")
    if isinstance(image, torch.Tensor):
        return int(image.shape[0]) if image.dim() == 4 else 1
    if isinstance(image, (list, tuple)):
        return len(image)
    return 1
