"""The generic Hugging Face backends ``hf_causal_lm`` (any ``AutoModelForCausalLM``: OPT, LLaMA /
Vicuna, GPT-2, Mistral, Qwen2 as a plain LM) and ``hf_seq2seq`` (``AutoModelForSeq2SeqLM``: T5 /
Flan-T5), in the prompt layouts of LAVIS' BLIP-2 family (:mod:`mm_qwen_llm.prompt_layout`).

Options of the ``model.llm`` block, besides :mod:`mm_qwen_llm.hf_backend`'s (``model``, ``dtype``,
``freeze``, LoRA, ``gradient_checkpointing``, ``random_init`` ...)::

    prompt_format: plain        # hf_causal_lm: plain (BLIP-2 OPT) | vicuna (InstructBLIP); hf_seq2seq: plain
    answer_suffix: null         # text after each answer; default "\\n" for plain (BLIP-2 OPT), "" otherwise
    stop_tokens: null           # generation also stops at these single tokens; default: answer_suffix's token
    max_answer_len: null        # cap on an answer's ids (LAVIS' max_output_txt_len)
    image_token: <image>        # the placeholder; added to the tokenizer as a special token if missing

The placeholder never reaches the language model: :meth:`embed_tokens` looks the pad embedding up
at its positions, which the composing model overwrites with image features, so a placeholder
added to the tokenizer needs no new embedding row (a Hugging Face BLIP-2 directory's ``<image>``
is used as it is).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from omegaconf import DictConfig

from mm_core.base.llm import IGNORE_INDEX, Conversation
from mm_core.errors import ConfigError
from mm_qwen_llm.conversation import special_token_id
from mm_qwen_llm.hf_backend import HFBackend, generation_settings
from mm_qwen_llm.prompt_layout import PromptLayout

log = logging.getLogger(__name__)

DEFAULT_IMAGE_TOKEN = "<image>"  # what Hugging Face's BLIP-2 / InstructBLIP processors add


class HFCausalLM(HFBackend):
    """Any ``AutoModelForCausalLM`` with a plain-prefix or InstructBLIP (``vicuna``) prompt layout."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, cfg: DictConfig | None = None) -> None:
        super().__init__(model, tokenizer)
        cfg = cfg if cfg is not None else DictConfig({})
        self.image_token, self.image_token_id = placeholder_token(tokenizer, cfg.get("image_token"))
        self.pad_token_id = ensure_pad_token(tokenizer)
        layout = self.layout_name(cfg)
        suffix = cfg.get("answer_suffix")
        suffix = ("\n" if layout == "plain" else "") if suffix is None else str(suffix)
        max_answer = cfg.get("max_answer_len")
        self.layout = PromptLayout(tokenizer, layout, self.image_token, self.image_token_id, suffix,
                                   int(max_answer) if max_answer is not None else None)
        stops = cfg.get("stop_tokens")
        self.stop_token_ids = stop_ids(tokenizer, [suffix] if stops is None else list(stops), explicit=stops is not None)

    @staticmethod
    def layout_name(cfg: DictConfig) -> str:
        return str(cfg.get("prompt_format") or "plain")

    @classmethod
    def from_config(cls, cfg: DictConfig | dict) -> HFCausalLM:
        """Build from the ``model.llm`` block (see the module docstring for the options)."""
        cfg, model, tokenizer, unfilled = cls.load_parts(cfg)
        llm = cls(model, tokenizer, cfg)
        llm.record_missing(unfilled)
        return llm

    # -- the contract ----------------------------------------------------------------------
    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings; placeholder positions get the pad embedding (the composing model
        replaces them), so a placeholder id beyond the embedding table is fine."""
        return super().embed_tokens(input_ids.masked_fill(input_ids == self.image_token_id, self.pad_token_id))

    def encode_conversation(self, conversation: Conversation, num_image_tokens: int,
                            max_len: int | None = None) -> dict[str, list[int]]:
        return self.layout.encode(conversation, num_image_tokens, max_len)

    def encode_prompt(self, conversation: Conversation, num_image_tokens: int) -> list[int]:
        return self.layout.encode_prompt(conversation, num_image_tokens)

    @torch.no_grad()
    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                 on_text: Callable[[str], None] | Sequence[Callable[[str], None] | None] | None = None,
                 **generation: Any) -> list[str]:
        """Generation stops at the tokenizer's EOS and at :attr:`stop_token_ids`; the placeholder is
        never generated. ``on_text``: a callback streaming a batch of one, or one per row."""
        settings = generation_settings(generation)
        vocab = self.model.get_output_embeddings().weight.shape[0]
        if self.image_token_id < vocab:
            settings.setdefault("suppress_tokens", [self.image_token_id])
        return self.generate_texts(inputs_embeds, attention_mask, on_text, settings,
                                   eos_token_id=self.stop_token_ids, pad_token_id=self.pad_token_id)


class HFSeq2SeqLM(HFCausalLM):
    """An encoder-decoder (``AutoModelForSeq2SeqLM``: T5 / Flan-T5): the image placeholders and the
    prompt are the encoder's input (``input_ids`` / ``inputs_embeds``), the answer is the decoder's
    target (``labels``, a sequence of its own length, padded by :meth:`collate` on its own)."""

    is_encoder_decoder = True
    auto_class = "AutoModelForSeq2SeqLM"
    lora_task_type = "SEQ_2_SEQ_LM"

    @staticmethod
    def layout_name(cfg: DictConfig) -> str:
        layout = str(cfg.get("prompt_format") or "plain")
        if layout != "plain":
            raise ConfigError(f"model.llm.prompt_format '{layout}': hf_seq2seq has only 'plain' "
                              "(prompt into the encoder, answer into the decoder)")
        return "seq2seq"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, cfg: DictConfig | None = None) -> None:
        cfg = cfg if cfg is not None else DictConfig({})
        if cfg.get("answer_suffix") is None:
            cfg = DictConfig({**cfg, "answer_suffix": ""})
        super().__init__(model, tokenizer, cfg)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None) -> Any:
        """With ``labels`` the decoder reads them shifted right (teacher forcing); without, the logits
        are the first decoder step's (from the decoder start token)."""
        if labels is not None:
            return super().forward(inputs_embeds, attention_mask, labels)
        start = torch.full((inputs_embeds.shape[0], 1), int(self.model.config.decoder_start_token_id),
                           dtype=torch.long, device=inputs_embeds.device)
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, decoder_input_ids=start,
                          return_dict=True)

    def collate(self, encoded: Sequence[dict[str, list[int]] | list[int]],
                padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Encoder ids padded to their longest (``padding_side``), labels to theirs, always on the right."""
        items = [e if isinstance(e, dict) else {"input_ids": list(e)} for e in encoded]
        batch = super().collate([{"input_ids": e["input_ids"]} for e in items], padding_side)
        if all("labels" in e for e in items):
            longest = max(len(e["labels"]) for e in items)
            batch["labels"] = torch.tensor([list(e["labels"]) + [IGNORE_INDEX] * (longest - len(e["labels"]))
                                            for e in items], dtype=torch.long)
        return batch


# -- tokens ----------------------------------------------------------------------------------
def placeholder_token(tokenizer: Any, configured: str | None) -> tuple[str, int]:
    """The image placeholder and its id: ``configured`` (default ``<image>``), added to the
    tokenizer as a special token when it is not one token of it."""
    token = configured or DEFAULT_IMAGE_TOKEN
    found = special_token_id(tokenizer, token)
    if found is None:
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(token, special=True, normalized=False)], special_tokens=True)
        found = special_token_id(tokenizer, token)
    if found is None:
        raise ConfigError(f"model.llm.image_token '{token}' cannot be made a single token of this tokenizer",
                          hint="choose a token string the tokenizer accepts as a special token")
    return token, found


def ensure_pad_token(tokenizer: Any) -> int:
    """The pad id: the tokenizer's, else its EOS (LLaMA, GPT-2 have none), else its UNK."""
    if tokenizer.pad_token_id is None:
        fallback = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
        if fallback is None:
            raise ConfigError("the LLM tokenizer has no pad, EOS or UNK token to pad batches with")
        tokenizer.pad_token = fallback
    return int(tokenizer.pad_token_id)


def stop_ids(tokenizer: Any, texts: Sequence[str], explicit: bool) -> list[int]:
    """The EOS id plus each text's token (BLIP-2 OPT stops at ``"\\n"``); a text of several tokens
    is an error when configured (``stop_tokens``) and skipped when it is the default."""
    ids = [int(tokenizer.eos_token_id)] if tokenizer.eos_token_id is not None else []
    for text in texts:
        if not text:
            continue
        # the text's ids after a word, as answers end (a sentencepiece "\n" alone gets a "▁" first)
        before = tokenizer("a", add_special_tokens=False)["input_ids"]
        tokens = tokenizer("a" + text, add_special_tokens=False)["input_ids"][len(before):]
        if len(tokens) == 1:
            ids.append(int(tokens[0]))
        elif explicit:
            raise ConfigError(f"model.llm.stop_tokens: {text!r} is {len(tokens)} tokens of this tokenizer, not one")
        else:
            log.info("answers end with %r, which is not one token: generation stops at EOS only", text)
    if not ids:
        raise ConfigError("the LLM tokenizer has no EOS token and no stop_tokens are configured",
                          hint="set model.llm.stop_tokens")
    return sorted(set(ids), key=ids.index)
