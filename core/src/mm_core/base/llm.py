"""BaseLLM: the contract of a language-model backend that multimodal models compose by name
(``model.llm.name``), documented in docs/llm_backend.md."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

#: Where an image goes in a conversation turn (MiniGPT-4's mark).
IMAGE_MARK = "<ImageHere>"

#: Label of positions that are not supervised (PyTorch's cross-entropy ``ignore_index``).
IGNORE_INDEX = -100

Conversation = Sequence[dict[str, str]]


class BaseLLM(nn.Module):
    """A causal language model with its tokenizer and conversation format. Only trainable
    parameters end up in mm checkpoints, so a frozen backend is rebuilt from its own source
    (``from_config``) when a checkpoint is loaded. Every backend sets these in ``__init__``:"""

    tokenizer: Any  # a Hugging Face tokenizer (decode, pad_token_id, ...)
    hidden_size: int  # width of the input embeddings (the composing model projects to it)
    image_token: str  # the special placeholder token that images replace, and its id
    image_token_id: int
    missing_keys: tuple[str, ...] = ()  # keys of state_dict() its weight files did not fill (weights coverage)
    is_encoder_decoder: bool = False  # True: input_ids feed the encoder, labels are the decoder's own target (T5)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> BaseLLM:
        """Build the backend from the ``model.llm`` block (``name`` plus backend options)."""
        raise NotImplementedError

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings of ``input_ids`` (B, T) -> (B, T, hidden_size)."""
        raise NotImplementedError

    def encode_conversation(self, conversation: Conversation, num_image_tokens: int,
                            max_len: int | None = None) -> dict[str, list[int]]:
        """Ids and labels of one training conversation (template, image marks, labels, truncation: docs/llm_backend.md)."""
        raise NotImplementedError

    def encode_prompt(self, conversation: Conversation, num_image_tokens: int) -> list[int]:
        """Token ids of a conversation ending with a user turn, followed by the assistant
        header, ready for generation (same template and image expansion as training)."""
        raise NotImplementedError

    def collate(self, encoded: Sequence[dict[str, list[int]] | list[int]],
                padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Pad encoded samples to the batch's longest (right for training, left for generation; docs/llm_backend.md)."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
        items = [e if isinstance(e, dict) else {"input_ids": list(e)} for e in encoded]
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            raise ValueError(f"{type(self).__name__}: the tokenizer has no pad_token_id")
        longest = max(len(e["input_ids"]) for e in items)
        with_labels = all("labels" in e for e in items)

        def pad(values: list[int], fill: int) -> list[int]:
            filler = [fill] * (longest - len(values))
            return filler + list(values) if padding_side == "left" else list(values) + filler

        batch = {
            "input_ids": torch.tensor([pad(e["input_ids"], pad_id) for e in items], dtype=torch.long),
            "attention_mask": torch.tensor([pad([1] * len(e["input_ids"]), 0) for e in items], dtype=torch.long),
        }
        if with_labels:
            batch["labels"] = torch.tensor([pad(e["labels"], IGNORE_INDEX) for e in items], dtype=torch.long)
        return batch

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
        """The language model on embeddings; returns an object with ``loss`` (mean over the
        supervised tokens, ``None`` without labels) and ``logits``."""
        raise NotImplementedError

    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                 on_text: Callable[[str], None] | None = None, **generation: Any) -> list[str]:
        """Decoded new texts of (left-padded) embeddings, Hugging Face generation names (docs/llm_backend.md)."""
        raise NotImplementedError
