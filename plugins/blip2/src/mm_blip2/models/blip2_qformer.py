"""``blip2`` and ``blip2_image_text_matching``: BLIP-2's first stage (LAVIS' ``Blip2Qformer`` / ``Blip2ITM``).

The Q-Former (transformers' ``Blip2QFormerModel``) runs in three modes over one set of weights:

* unimodal: the queries attend to the image (ITC image side); the text alone (ITC text side, [CLS]);
* multimodal: queries and text attend to each other, the queries to the image (ITM, ``itm_head``
  on the queries' outputs, averaged over queries);
* decoder: ``[DEC]`` + text, each token seeing every query and the tokens before it (ITG; the LM head
  ``lm_head``, transformers' ``BertOnlyMLMHead``, LAVIS' ``Qformer.cls``, its decoder tied to the word
  embeddings as in LAVIS). Queries see only queries in that pass, so their states are what LAVIS'
  cached query pass holds.

The losses and the gathering across ranks are :mod:`mm_blip2.models.stage1_losses`. The four
``retrieval_*`` methods are the retrieval task's model contract (LAVIS' ``compute_sim_matrix``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from transformers.models.bert.modeling_bert import BertOnlyMLMHead

from mm_blip2.models.feature_extractor import Blip2FeatureExtractor
from mm_blip2.models.stage1_losses import (
    decoder_attention_mask,
    gather_no_grad,
    gather_with_grad,
    hard_negative_weights,
    lm_inputs,
    lm_loss,
)
from mm_core.base.model import config_value
from mm_core.weights import WeightSources

MATCH_HEADS = ("itm", "itc")


class Blip2Qformer(Blip2FeatureExtractor):
    """BLIP-2 stage 1: ITC + ITM + ITG on the vision tower and Q-Former, ``generate`` captions.

    Options beyond ``blip2_feature_extractor``'s: ``qformer_init``, a local ``bert-base-uncased``
    directory the Q-Former starts from (LAVIS' ``init_Qformer``: :mod:`mm_blip2.bert_init`; unset, it
    starts random). ``load_pretrained: false`` without another BLIP-2 file means pretraining from
    scratch (LAVIS' ``pretrain_stage1.yaml``): every part but the tower and what ``qformer_init``
    fills starts random, as declared in the weights table.
    """

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        qcfg = self.qformer.config
        self.itm_head = nn.Linear(qcfg.hidden_size, 2)
        self.lm_head = BertOnlyMLMHead(qcfg)
        self.lm_head.apply(self.qformer._init_weights)
        nn.init.zeros_(self.lm_head.predictions.bias)
        # LAVIS' BertLMHeadModel ties the decoder to the word embeddings and its bias to ``predictions.bias``
        self.lm_head.predictions.decoder.weight = self.text_embeddings.word_embeddings.weight
        self.lm_head.predictions.decoder.bias = self.lm_head.predictions.bias

    def declare_weights(self, sources: WeightSources, cfg: DictConfig) -> None:
        """Stage-1 pretraining from scratch (``load_pretrained: false``, no finetuned / HF file) starts
        everything but the tower from random, on purpose (LAVIS then reads only ``eva_vit_g.pth``)."""
        from_scratch = not config_value(cfg, "load_pretrained", True) and not config_value(cfg, "load_finetuned", False) \
            and not config_value(cfg, "hf_pretrained", None)
        if from_scratch and (config_value(cfg, "vit_pretrained", None) or config_value(cfg, "qformer_init", None)):
            keys = [k for k in self.state_dict() if not k.startswith("visual_encoder.")]
            sources.fresh(keys, "random init (load_pretrained: false, stage-1 pretraining from scratch)")

    # -- the retrieval contract (LAVIS' compute_sim_matrix) --------------------------------------
    def retrieval_tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, padded to ``max_txt_len``."""
        tokens = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_txt_len,
                                return_tensors="pt").to(self.device)
        return tokens.input_ids, tokens.attention_mask

    def retrieval_image_features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the tower's features after ``ln_vision``, for ITM; the queries' normalised projections)."""
        query_out, image_embeds = self.query_image(image.to(self.device))
        return image_embeds, F.normalize(self.vision_proj(query_out), dim=-1)

    def retrieval_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The normalised projection of the text's [CLS] output: (B, embed_dim)."""
        return F.normalize(self.text_proj(self.text_hidden(input_ids, attention_mask)[:, 0]), dim=-1)

    def retrieval_itm_scores(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                             attention_mask: torch.Tensor) -> torch.Tensor:
        """LAVIS' ``compute_itm``: the "match" logit averaged over queries, one per (image, text) row."""
        return self.itm_logits(image_embeds, input_ids, attention_mask)[:, 1]

    def itm_logits(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor) -> torch.Tensor:
        """(no match, match) logits of each pair: ``itm_head`` on the multimodal queries, mean over queries."""
        return self.itm_head(self.multimodal_queries(image_embeds, input_ids, attention_mask)).mean(dim=1)

    def decoder_logits(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor) -> torch.Tensor:
        """LM logits of every text position of the decoder pass (queries + causal text): (B, T, vocab)."""
        num_query = self.query_tokens.shape[1]
        queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        embeds = self.text_embeddings(input_ids=input_ids, query_embeds=queries)
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        output = self.qformer(query_embeds=embeds, query_length=num_query,
                              attention_mask=decoder_attention_mask(num_query, attention_mask, embeds.dtype),
                              encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts)
        return self.lm_head(output.last_hidden_state[:, num_query:])

    # -- training ---------------------------------------------------------------------------------
    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``loss = loss_itc + loss_itm + loss_lm`` over ``image``, ``text_input`` (and ``image_id``)."""
        image_embeds, image_feats = self.retrieval_image_features(samples["image"])
        input_ids, attention_mask = self.retrieval_tokenize(samples["text_input"])
        text_feat = self.retrieval_text_features(input_ids, attention_mask)
        loss_itc, sim_i2t, sim_t2i, image_ids, ids_all = self.contrastive(image_feats, text_feat, samples)
        loss_itm = self.matching_loss(image_embeds, input_ids, attention_mask, (sim_i2t, sim_t2i), (image_ids, ids_all))
        decoder_ids, labels = lm_inputs(input_ids, self.tokenizer.bos_token_id, self.tokenizer.pad_token_id)
        loss_lm = lm_loss(self.decoder_logits(image_embeds, decoder_ids, attention_mask), labels)
        return {"loss": loss_itc + loss_itm + loss_lm, "loss_itc": loss_itc.detach(),
                "loss_itm": loss_itm.detach(), "loss_lm": loss_lm.detach()}

    def matching_loss(self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      sims: tuple[torch.Tensor, torch.Tensor], ids: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """ITM over (positive pairs, image + hard negative text... ) as LAVIS orders them: texts
        [pos, pos, neg], images [pos, neg, pos], labels [1] * bs + [0] * 2 bs."""
        sim_i2t, sim_t2i = sims
        image_ids, ids_all = ids
        negative_images, negative_texts = self.sample_negatives(sim_i2t, sim_t2i, image_ids, ids_all)
        text_ids_world, text_mask_world = gather_no_grad(input_ids), gather_no_grad(attention_mask)
        image_embeds_world = gather_with_grad(image_embeds)
        texts = torch.cat([input_ids, input_ids, text_ids_world[negative_texts]])
        masks = torch.cat([attention_mask, attention_mask, text_mask_world[negative_texts]])
        images = torch.cat([image_embeds, image_embeds_world[negative_images], image_embeds])
        bs = input_ids.shape[0]
        labels = torch.cat([torch.ones(bs, dtype=torch.long), torch.zeros(2 * bs, dtype=torch.long)]).to(self.device)
        return F.cross_entropy(self.itm_logits(images, texts, masks), labels)

    @staticmethod
    def sample_negatives(sim_i2t: torch.Tensor, sim_t2i: torch.Tensor, image_ids: torch.Tensor,
                         ids_all: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices into the gathered batch: a hard negative image per text, a hard negative text per image."""
        negative_images = torch.multinomial(hard_negative_weights(sim_t2i, image_ids, ids_all), 1).squeeze(1)
        negative_texts = torch.multinomial(hard_negative_weights(sim_i2t, image_ids, ids_all), 1).squeeze(1)
        return negative_images, negative_texts

    # -- captioning (LAVIS' Blip2Qformer.generate) ------------------------------------------------
    @torch.no_grad()
    def generate(self, samples: dict[str, Any], use_nucleus_sampling: bool = False, num_beams: int = 3,
                 max_length: int = 30, min_length: int = 10, top_p: float = 0.9,
                 repetition_penalty: float = 1.0) -> list[str]:
        """Captions of ``samples["image"]`` from the Q-Former's decoder: beam search (``num_beams``) or
        nucleus sampling (``top_p``), starting from ``[DEC]``, ending at ``[SEP]`` (transformers' generate)."""
        from mm_blip2.models.qformer_generation import generate_captions

        image_embeds = self.encode_image(samples["image"].to(self.device)).float()
        ids = generate_captions(self, image_embeds, use_nucleus_sampling=use_nucleus_sampling, num_beams=num_beams,
                                max_length=max_length, min_length=min_length, top_p=top_p,
                                repetition_penalty=repetition_penalty)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)


class Blip2ImageTextMatching(Blip2Qformer):
    """LAVIS' ``blip2_image_text_matching``: ``model(samples, match_head="itm")`` gives (no match, match)
    logits per image-text pair, ``match_head="itc"`` the pairs' cosine similarity (max over queries).
    Without ``match_head``, ``forward`` is ``blip2``'s training step (the runner's contract)."""

    def forward(self, samples: dict[str, Any], match_head: str | None = None) -> Any:
        if match_head is None:
            return super().forward(samples)
        if match_head not in MATCH_HEADS:
            raise ValueError(f"match_head must be one of {', '.join(MATCH_HEADS)}, not {match_head!r}")
        texts = [samples["text_input"]] if isinstance(samples["text_input"], str) else list(samples["text_input"])
        tokens = self.tokenize(texts)
        image_embeds, image_feats = self.retrieval_image_features(samples["image"])
        if match_head == "itm":
            return self.itm_logits(image_embeds, tokens.input_ids, tokens.attention_mask)
        text_feat = self.retrieval_text_features(tokens.input_ids, tokens.attention_mask)
        return torch.einsum("iqd,id->iq", image_feats, text_feat).max(dim=1, keepdim=True).values
