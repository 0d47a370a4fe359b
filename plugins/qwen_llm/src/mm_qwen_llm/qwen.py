"""The ``qwen`` LLM backend: a Qwen chat model, its tokenizer, ChatML and the image placeholder.

Options of the ``model.llm`` block (all but ``model`` optional; the loading, dtype, freezing, LoRA and
gradient-checkpointing ones are :mod:`mm_qwen_llm.hf_backend`'s, shared with ``hf_causal_lm`` and
``hf_seq2seq``)::

    name: qwen
    model: Qwen/Qwen2.5-7B-Instruct   # hub id, local directory, or "package:path" package data
    trust_remote_code: false          # Qwen-1 (Qwen-7B/14B-Chat) needs true
    dtype: float32                    # float32 | bfloat16 | float16 | auto
    device_map: null                  # e.g. auto / cuda:0 (accelerate); null keeps one device
    gradient_checkpointing: false
    random_init: false                # build from config.json with random weights (tiny tests)
    init_seed: 0                      # seed of that random init, so a rebuild is identical
    freeze: true                      # freeze_llm
    lora: false                       # get_lora (peft)
    lora_r: 8
    lora_alpha: 32
    lora_dropout: 0.05
    lora_target_modules: null         # default per architecture, see LORA_TARGETS
    image_token: null                 # default per tokenizer, see IMAGE_TOKEN_CANDIDATES
    system_message: You are a helpful assistant.

The image placeholder must be a single special token of the tokenizer, so that placeholder
positions are unambiguous: ``<|image_pad|>`` where it exists (Qwen2-VL, Qwen2.5, Qwen3 and the
tiny tokenizer), ``<|extra_0|>`` for Qwen-1 (as MiniGPT4-Qwen). Padding uses ``<|endoftext|>``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from omegaconf import DictConfig

from mm_core.base.llm import Conversation
from mm_core.errors import ConfigError
from mm_qwen_llm.conversation import DEFAULT_SYSTEM_MESSAGE, ChatMLEncoder, special_token_id
from mm_qwen_llm.hf_backend import (  # noqa: F401  (re-exported: the loading API's historical home)
    DTYPES,
    LORA_TARGETS,
    HFBackend,
    add_lora,
    enable_gradient_checkpointing,
    generation_settings,
    load_hf_model,
    load_tokenizer,
    lora_targets,
    resolve_llm_path,
)

log = logging.getLogger(__name__)

#: Placeholder tokens tried in order when ``image_token`` is not set.
IMAGE_TOKEN_CANDIDATES = ("<|image_pad|>", "<|extra_0|>")
END_OF_TEXT = "<|endoftext|>"


class QwenLLM(HFBackend):
    """A Qwen causal LM (optionally with LoRA adapters) behind the :class:`BaseLLM` contract."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, image_token: str | None = None,
                 system_message: str = DEFAULT_SYSTEM_MESSAGE) -> None:
        super().__init__(model, tokenizer)
        self.image_token, self.image_token_id = choose_image_token(tokenizer, image_token)
        self.pad_token_id = end_of_text_id(tokenizer)
        _set_pad_token(tokenizer, self.pad_token_id)
        self.encoder = ChatMLEncoder(tokenizer, self.image_token_id, self.pad_token_id, system_message)
        self.stop_token_ids = [self.encoder.im_end, self.pad_token_id]

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: DictConfig | dict) -> QwenLLM:
        """Build from the ``model.llm`` block (see the module docstring for the options)."""
        cfg, model, tokenizer, unfilled = cls.load_parts(cfg)
        llm = cls(model, tokenizer, cfg.get("image_token"), str(cfg.get("system_message") or DEFAULT_SYSTEM_MESSAGE))
        llm.record_missing(unfilled)
        return llm

    # -- the contract ----------------------------------------------------------------------
    def encode_conversation(self, conversation: Conversation, num_image_tokens: int,
                            max_len: int | None = None, sample: str | None = None) -> dict[str, list[int]]:
        """Ids, labels and ``num_images`` (images whose placeholders survived truncation)."""
        return self.encoder.encode(conversation, num_image_tokens, max_len, sample).as_dict()

    def encode_prompt(self, conversation: Conversation, num_image_tokens: int) -> list[int]:
        return self.encoder.encode_prompt(conversation, num_image_tokens)

    def collate(self, encoded: Sequence[dict[str, list[int]]], padding_side: str | None = None,
                pad_to: int | None = None) -> dict[str, torch.Tensor]:
        return self.encoder.collate(encoded, padding_side, pad_to)

    @torch.no_grad()
    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                 on_text: Callable[[str], None] | Sequence[Callable[[str], None] | None] | None = None,
                 **generation: Any) -> list[str]:
        """``on_text``: a callback streaming a batch of one, or a list with one callback (or ``None``) per row."""
        settings = generation_settings(generation)
        # An answer never opens a new turn nor contains an image slot (Qwen's own chat stops
        # at <|im_start|>, which would end a weakly trained model's answer before it starts).
        settings.setdefault("suppress_tokens", [self.encoder.im_start, self.image_token_id])
        return self.generate_texts(inputs_embeds, attention_mask, on_text, settings,
                                   eos_token_id=self.stop_token_ids, pad_token_id=self.pad_token_id)


# -- tokens ----------------------------------------------------------------------------------
def choose_image_token(tokenizer: Any, configured: str | None = None) -> tuple[str, int]:
    """The image placeholder token and its id (configured, or the first known candidate)."""
    candidates = [configured] if configured else list(IMAGE_TOKEN_CANDIDATES)
    for token in candidates:
        found = special_token_id(tokenizer, token)
        if found is not None:
            return token, found
    raise ConfigError(
        f"the tokenizer has none of {', '.join(candidates)} as a single token, so images have no placeholder",
        hint="set model.llm.image_token to a special token of this tokenizer that text never contains",
    )


def end_of_text_id(tokenizer: Any) -> int:
    """Qwen pads with ``<|endoftext|>`` (Qwen-1's tokenizer calls it ``eod_id``)."""
    found = special_token_id(tokenizer, END_OF_TEXT)
    if found is None:
        found = getattr(tokenizer, "eod_id", None)
    if found is None:
        raise ConfigError(f"the tokenizer has no '{END_OF_TEXT}' token to pad with")
    return int(found)


def _set_pad_token(tokenizer: Any, pad_id: int) -> None:
    if getattr(tokenizer, "pad_token_id", None) == pad_id:
        return
    try:
        tokenizer.pad_token = END_OF_TEXT
    except (AttributeError, ValueError, NotImplementedError):  # Qwen-1's tokenizer refuses; we pad by id anyway
        pass
