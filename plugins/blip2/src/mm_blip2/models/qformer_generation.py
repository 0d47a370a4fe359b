"""Captioning with the Q-Former's decoder through transformers' ``generate`` (beam search, nucleus
sampling, length limits, repetition penalty), as LAVIS' ``Blip2Qformer.generate`` calls it.

:class:`QFormerCaptioner` presents ``Blip2Qformer.decoder_logits`` as a causal LM to ``GenerationMixin``;
the image features travel as a model kwarg (expanded per beam by ``generate``). No key/value cache:
each step runs the queries and the text so far (captions are short, at most ``max_length`` tokens).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput


class QFormerCaptioner(PreTrainedModel, GenerationMixin):
    """A view of a ``Blip2Qformer`` as a decoder-only LM for ``generate`` (it owns no weights)."""

    config_class = PretrainedConfig
    main_input_name = "input_ids"

    def __init__(self, model: Any):
        tokenizer = model.tokenizer
        config = PretrainedConfig(vocab_size=model.qformer.config.vocab_size, is_encoder_decoder=False,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.sep_token_id,
                                  pad_token_id=tokenizer.pad_token_id, use_cache=False)
        super().__init__(config)
        self._model = [model]  # a list keeps it out of this module's parameters

    @property
    def device(self) -> torch.device:
        return self._model[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self._model[0].query_tokens.dtype

    def forward(self, input_ids: torch.Tensor, image_embeds: torch.Tensor | None = None, **_: Any) -> CausalLMOutput:
        mask = torch.ones_like(input_ids)
        return CausalLMOutput(logits=self._model[0].decoder_logits(image_embeds, input_ids, mask))

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, image_embeds: torch.Tensor | None = None,
                                      **_: Any) -> dict[str, Any]:
        return {"input_ids": input_ids, "image_embeds": image_embeds}


def generate_captions(model: Any, image_embeds: torch.Tensor, use_nucleus_sampling: bool, num_beams: int,
                      max_length: int, min_length: int, top_p: float, repetition_penalty: float) -> torch.Tensor:
    """Token ids of one caption per image (LAVIS' arguments; sampling uses one beam, as LAVIS)."""
    tokenizer = model.tokenizer
    start = torch.full((image_embeds.shape[0], 1), tokenizer.bos_token_id, dtype=torch.long, device=image_embeds.device)
    captioner = QFormerCaptioner(model)
    search = {"do_sample": True, "top_p": top_p, "num_beams": 1} if use_nucleus_sampling else {"num_beams": num_beams}
    return captioner.generate(
        input_ids=start, image_embeds=image_embeds, max_length=max_length, min_length=min_length,
        repetition_penalty=repetition_penalty, eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, use_cache=False, **search,
    )
