"""``blip_caption``: LAVIS' ``BlipCaption`` — a ViT and an image-grounded BERT decoder
(transformers' ``BlipVisionModel`` + ``BlipTextLMHeadModel``, ``BlipForConditionalGeneration``'s parts).

Training reads ``image`` and ``text_input`` (captions with the prompt already in front: the
``blip_caption`` processor adds LAVIS' ``"a picture of "``); the decoder input starts with ``[DEC]``
instead of ``[CLS]`` and the prompt's tokens are not scored (LAVIS' ``prompt_length``); the loss is
cross-entropy with label smoothing 0.1. ``generate`` decodes from ``[DEC] a picture of`` (without the
prompt's trailing ``[SEP]``); ``max_length`` / ``min_length`` count the prompt's tokens, as in LAVIS.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig

from mm_blip.models.base import BlipBase
from mm_core.base.model import config_value

log = logging.getLogger(__name__)
#: LAVIS' ``generate_from_encoder`` samples with this repetition penalty whatever the caller passes.
NUCLEUS_REPETITION_PENALTY = 1.1


class BlipCaption(BlipBase):
    """Image captioning (LAVIS' ``blip_caption``). Options: ``prompt`` ("a picture of "),
    ``max_txt_len`` (40), ``vit_type``, ``image_size``, ``med_config_path``, ``freeze_vit``."""

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        self.max_txt_len = int(config_value(cfg, "max_txt_len", 40))
        self.build_vision(cfg)
        self.build_text_decoder()
        self.prompt = str(config_value(cfg, "prompt", ""))
        self.prompt_length = len(self.tokenizer(self.prompt).input_ids) - 1

    def decoder_inputs(self, texts: list[str]) -> tuple[Any, torch.Tensor]:
        """Tokens with ``[DEC]`` first, and the labels: padding and the prompt set to -100."""
        tokens = self.tokenize(texts)
        tokens.input_ids[:, 0] = self.tokenizer.bos_token_id
        labels = tokens.input_ids.masked_fill(tokens.input_ids == self.tokenizer.pad_token_id, -100)
        labels[:, :self.prompt_length] = -100
        return tokens, labels

    def caption_logits(self, image: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Decoder logits of every position (B, T, vocab) for captions ``texts`` (prompt included)."""
        image_embeds = self.encode_image(image)
        tokens, _ = self.decoder_inputs(texts)
        return self.text_decoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                                 encoder_hidden_states=image_embeds).logits

    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``loss = loss_lm``: the label-smoothed LM loss of the captions after the prompt."""
        image_embeds = self.encode_image(samples["image"])
        tokens, labels = self.decoder_inputs(list(samples["text_input"]))
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        out = self.text_decoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                                encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts, labels=labels)
        return {"loss": out.loss, "loss_lm": out.loss.detach()}

    @torch.no_grad()
    def generate(self, samples: dict[str, Any], use_nucleus_sampling: bool = False, num_beams: int = 3,
                 max_length: int = 30, min_length: int = 10, top_p: float = 0.9, repetition_penalty: float = 1.0,
                 num_captions: int = 1, max_new_tokens: int | None = None, length_penalty: float = 1.0,
                 **kwargs: Any) -> list[str]:
        """Captions of ``samples["image"]`` (LAVIS' arguments): ``num_captions`` per image, in image
        order; beam search, or nucleus sampling (``top_p``, top-k 50, repetition penalty 1.1 as LAVIS).
        ``max_new_tokens`` (what mm's captioning task passes for ``run.max_len``), when given, replaces
        ``max_length`` by the prompt's length plus that many tokens."""
        image_embeds = self.encode_image(samples["image"]).repeat_interleave(num_captions, dim=0)
        if max_new_tokens is not None:
            max_length = self.prompt_length + int(max_new_tokens)
        ids = self.generate_ids(image_embeds, use_nucleus_sampling, num_beams, max_length, min_length, top_p,
                                repetition_penalty, length_penalty)
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [text[len(self.prompt):] for text in texts]

    def generate_ids(self, image_embeds: torch.Tensor, use_nucleus_sampling: bool, num_beams: int, max_length: int,
                     min_length: int, top_p: float, repetition_penalty: float,
                     length_penalty: float = 1.0) -> torch.Tensor:
        """Token ids (prompt included) from transformers' ``generate`` over the decoder; ``max_length`` is
        capped at the decoder's position embeddings (``model.text.max_position_embeddings``)."""
        limit = self.text_decoder.config.max_position_embeddings
        if max_length > limit:
            log.warning("max_length %d exceeds the decoder's %d positions: generating up to %d tokens",
                        max_length, limit, limit)
            max_length = limit
        prompt = self.tokenizer([self.prompt] * image_embeds.shape[0], return_tensors="pt").to(self.device)
        input_ids = prompt.input_ids[:, :-1].clone()  # without the prompt's [SEP]
        input_ids[:, 0] = self.tokenizer.bos_token_id
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        search = ({"do_sample": True, "top_p": top_p, "top_k": 50, "num_beams": 1,
                   "repetition_penalty": NUCLEUS_REPETITION_PENALTY} if use_nucleus_sampling
                  else {"do_sample": False, "num_beams": num_beams, "repetition_penalty": repetition_penalty,
                        "length_penalty": length_penalty})
        return self.text_decoder.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_atts, max_length=max_length, min_length=min_length,
            eos_token_id=self.tokenizer.sep_token_id, pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id, **search)
