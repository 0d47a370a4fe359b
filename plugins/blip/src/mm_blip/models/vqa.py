"""``blip_vqa``: LAVIS' ``BlipVQA`` — a ViT, a question encoder that cross-attends to the image
(``BlipTextModel``, ``[ENC]`` first) and an answer decoder that cross-attends to the encoded question
(``BlipTextLMHeadModel``, ``[DEC]`` first): ``BlipForQuestionAnswering``'s parts.

Training reads ``image``, ``text_input`` (questions), and the flattened ``answer`` / ``weight`` /
``n_answers`` of the ``coco_vqa`` collater: each answer's label-smoothed (0.1) LM loss summed over its
tokens, weighted, summed and divided by the batch size (LAVIS). ``predict_answers`` generates
(beam search over the decoder; as in LAVIS the decoder then sees the question's padding positions
too) or ranks ``answer_list``: the ``num_ans_candidates`` answers whose first token is likeliest are
re-scored by their whole (label-smoothed) log-likelihood, the question's padding masked.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from mm_blip.models.base import BlipBase
from mm_core.errors import DataError

INFERENCE_METHODS = ("generate", "rank")


class BlipVQA(BlipBase):
    """Visual question answering (LAVIS' ``blip_vqa``). Options: ``max_txt_len`` (35), ``vit_type``,
    ``image_size``, ``med_config_path``, ``freeze_vit``."""

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        self.build_vision(cfg)
        self.build_text_encoder()
        self.build_text_decoder()

    def encode_questions(self, samples: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(question states over the image (B, L, H), the questions' attention mask (B, L))."""
        questions = samples["text_input"]
        questions = [questions] if isinstance(questions, str) else list(questions)
        tokens = self.tokenize(questions)
        image_embeds = self.encode_image(samples["image"])
        return self.image_grounded_text(image_embeds, tokens.input_ids, tokens.attention_mask), tokens.attention_mask

    def answer_tokens(self, answers: list[str]) -> tuple[Any, torch.Tensor]:
        tokens = self.tokenizer(list(answers), padding="longest", return_tensors="pt").to(self.device)
        tokens.input_ids[:, 0] = self.tokenizer.bos_token_id
        return tokens, tokens.input_ids.masked_fill(tokens.input_ids == self.tokenizer.pad_token_id, -100)

    def answer_losses(self, states: torch.Tensor, state_mask: torch.Tensor, tokens: Any,
                      labels: torch.Tensor) -> torch.Tensor:
        """Each answer's summed, label-smoothed LM loss given its question's states."""
        return self.text_decoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                                 encoder_hidden_states=states, encoder_attention_mask=state_mask,
                                 labels=labels, reduction="none").loss

    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        for key in ("answer", "weight", "n_answers"):
            if key not in samples:
                raise DataError(f"blip_vqa training needs samples['{key}'] (the coco_vqa collater's flattened answers)",
                                hint="train blip_vqa on a VQA dataset (coco_vqa) with run.task: vqa")
        states, mask = self.encode_questions(samples)
        n_answers = torch.as_tensor(samples["n_answers"], device=self.device)
        tokens, labels = self.answer_tokens(samples["answer"])
        losses = self.answer_losses(states.repeat_interleave(n_answers, dim=0), mask.repeat_interleave(n_answers, dim=0),
                                    tokens, labels)
        loss = (torch.as_tensor(samples["weight"], device=self.device) * losses).sum() / states.shape[0]
        return {"loss": loss}

    @torch.no_grad()
    def predict_answers(self, samples: dict[str, Any], num_beams: int = 3, inference_method: str | None = None,
                        max_len: int = 10, min_len: int = 1, num_ans_candidates: int = 128,
                        answer_list: list[str] | None = None, **kwargs: Any) -> list[str]:
        """LAVIS' arguments. ``inference_method`` defaults to ``"rank"`` when ``answer_list`` is given
        (LAVIS' default), else ``"generate"`` (what the ``vqa`` task asks for); ``prompt`` and other
        keywords are accepted and unused (BLIP's questions carry no template)."""
        method = inference_method or ("rank" if answer_list is not None else "generate")
        if method not in INFERENCE_METHODS:
            raise ValueError(f"inference_method must be one of {', '.join(INFERENCE_METHODS)}, not {method!r}")
        if method == "rank":
            if not answer_list:
                raise ValueError("inference_method='rank' needs answer_list (the candidate answers)")
            return self.rank_answers(samples, answer_list, num_ans_candidates)
        return self.generate_answers(samples, num_beams, max_len, min_len)

    def generate_answers(self, samples: dict[str, Any], num_beams: int = 3, max_length: int = 10,
                         min_length: int = 1) -> list[str]:
        states, _ = self.encode_questions(samples)
        # LAVIS lets the decoder attend to every question position here, padding included
        ones = torch.ones(states.shape[:-1], dtype=torch.long, device=states.device)
        bos = torch.full((states.shape[0], 1), self.tokenizer.bos_token_id, dtype=torch.long, device=states.device)
        ids = self.text_decoder.generate(
            input_ids=bos, attention_mask=torch.ones_like(bos), encoder_hidden_states=states,
            encoder_attention_mask=ones, max_length=max_length, min_length=min_length, num_beams=num_beams,
            do_sample=False, eos_token_id=self.tokenizer.sep_token_id, pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def rank_scores(self, samples: dict[str, Any], answer_list: list[str],
                    num_ans_candidates: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(candidate indices (Q, k), their log-likelihood scores (Q, k)) as LAVIS' ``_rank_answers``."""
        k = min(num_ans_candidates, len(answer_list))
        states, mask = self.encode_questions(samples)
        candidates, _ = self.answer_tokens(answer_list)
        start = candidates.input_ids[:1, :1].repeat(states.shape[0], 1)  # [DEC]
        first = self.text_decoder(input_ids=start, encoder_hidden_states=states, encoder_attention_mask=mask).logits
        first_probs = F.softmax(first[:, 0, :], dim=1).index_select(1, candidates.input_ids[:, 1])
        _, topk = first_probs.topk(k, dim=1)
        ids = candidates.input_ids[topk.reshape(-1)]
        atts = candidates.attention_mask[topk.reshape(-1)]
        labels = ids.masked_fill(ids == self.tokenizer.pad_token_id, -100)
        tokens = SimpleNamespace(input_ids=ids, attention_mask=atts)
        losses = self.answer_losses(states.repeat_interleave(k, dim=0), mask.repeat_interleave(k, dim=0), tokens, labels)
        return topk, -losses.view(states.shape[0], k)

    def rank_answers(self, samples: dict[str, Any], answer_list: list[str], num_ans_candidates: int = 128) -> list[str]:
        """The best of ``answer_list`` for each question (the ``vqa`` task's ``inference_method: rank``)."""
        topk, scores = self.rank_scores(samples, answer_list, num_ans_candidates)
        best = topk.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1)
        return [answer_list[int(i)] for i in best]
