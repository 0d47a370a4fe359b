"""``blip2_feature_extractor``: BLIP-2's Q-Former features for images, texts and image-text pairs.

As LAVIS' ``Blip2Qformer.extract_features``: ``mode="image"`` gives the queries' outputs
(``image_embeds``) and their normalised projections (``image_embeds_proj``); ``"text"`` the
text branch's outputs and the normalised projection of every token (``text_embeds_proj``, the
[CLS] one at index 0); ``"multimodal"`` the queries' outputs when queries and text attend to
each other and to the image (``multimodal_embeds``). :meth:`similarity` turns image and text
features into an image x text matrix (max over queries of the cosine similarities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

from mm_blip2.models.blip2 import Blip2Base
from mm_blip2.models.stage1_losses import check_equal_batches, image_ids_tensor, itc_loss
from mm_blip2.text_tokenizer import build_text_tokenizer
from mm_core.base.model import config_value
from mm_core.errors import DataError

MODES = ("image", "text", "multimodal")
#: BLIP's clamp of the learnable ITC temperature (applied before every loss computation).
TEMPERATURE_MIN, TEMPERATURE_MAX = 0.001, 0.5


@dataclass
class BlipOutputFeatures:
    """Features returned by :meth:`Blip2FeatureExtractor.extract_features` (``None`` when not computed)."""

    image_embeds: torch.Tensor | None = None
    image_embeds_proj: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    text_embeds_proj: torch.Tensor | None = None
    multimodal_embeds: torch.Tensor | None = None

    def __getitem__(self, key: str) -> torch.Tensor | None:  # LAVIS users index features like a dict
        return getattr(self, key)


class Blip2FeatureExtractor(Blip2Base):
    """BLIP-2 stage-1 model: vision tower, Q-Former with its text branch, ITC projections.

    Extra options: ``embed_dim`` (ITC projection size, 256), ``max_txt_len`` (32),
    ``tokenizer`` (``bert-base-uncased`` or ``tiny``). ``forward`` returns LAVIS' stage-1 image-text
    contrastive loss (:mod:`mm_blip2.models.stage1_losses`); the ``blip2`` arch adds ITM and ITG.
    """

    qformer_text_input = True

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        qcfg = self.qformer.config
        self.text_embeddings = Blip2TextEmbeddings(qcfg)
        self.text_embeddings.apply(self.qformer._init_weights)
        embed_dim = int(config_value(cfg, "embed_dim", 256))
        self.vision_proj = nn.Linear(qcfg.hidden_size, embed_dim)
        self.text_proj = nn.Linear(qcfg.hidden_size, embed_dim)
        self.temp = nn.Parameter(0.07 * torch.ones([]))
        self.max_txt_len = int(config_value(cfg, "max_txt_len", 32))
        self.tokenizer = build_text_tokenizer(str(config_value(cfg, "tokenizer", "bert-base-uncased")))
        self.apply_freezing(cfg)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Blip2FeatureExtractor:
        model = cls(cfg)
        model.load_weights_from_config(cfg)
        return model

    # -- features --------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> Any:
        return self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_txt_len,
                              return_tensors="pt").to(self.device)

    def _text_features(self, tokens: Any) -> torch.Tensor:
        return self.text_hidden(tokens.input_ids, tokens.attention_mask)

    def text_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The text branch alone (no queries, no image): (B, T, hidden)."""
        embeds = self.text_embeddings(input_ids=input_ids)
        return self.qformer(query_embeds=embeds, query_length=0, attention_mask=attention_mask).last_hidden_state

    @torch.no_grad()
    def extract_features(self, samples: dict[str, Any], mode: str = "multimodal") -> BlipOutputFeatures:
        """Features of ``samples["image"]`` (B, 3, H, W) and/or ``samples["text_input"]`` (list of str)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        image, texts = samples.get("image"), samples.get("text_input")
        if mode in ("image", "multimodal") and image is None:
            raise DataError(f"extract_features(mode='{mode}') needs samples['image']")
        if mode in ("text", "multimodal") and texts is None:
            raise DataError(f"extract_features(mode='{mode}') needs samples['text_input']")
        if isinstance(texts, str):
            texts = [texts]
        out = BlipOutputFeatures()
        if mode == "image":
            out.image_embeds, _ = self.query_image(image.to(self.device))
            out.image_embeds_proj = F.normalize(self.vision_proj(out.image_embeds), dim=-1)
        elif mode == "text":
            out.text_embeds = self._text_features(self.tokenize(list(texts)))
            out.text_embeds_proj = F.normalize(self.text_proj(out.text_embeds), dim=-1)
        else:
            out.multimodal_embeds = self._multimodal_features(image.to(self.device), list(texts))
        return out

    def _multimodal_features(self, image: torch.Tensor, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenize(texts)
        return self.multimodal_queries(self.encode_image(image).float(), tokens.input_ids, tokens.attention_mask)

    def multimodal_queries(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                           attention_mask: torch.Tensor) -> torch.Tensor:
        """Queries' outputs when queries and text attend to each other and the queries to the image
        (``image_embeds``: the tower's features after ``ln_vision``): (B, Nq, hidden)."""
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        embeds = self.text_embeddings(input_ids=input_ids, query_embeds=queries)
        query_atts = torch.ones(queries.shape[:-1], dtype=torch.long, device=image_embeds.device)
        output = self.qformer(
            query_embeds=embeds, query_length=queries.shape[1],
            attention_mask=torch.cat([query_atts, attention_mask], dim=1),
            encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts,
        )
        return output.last_hidden_state[:, : queries.shape[1]]

    @staticmethod
    def similarity(image_features: BlipOutputFeatures, text_features: BlipOutputFeatures) -> torch.Tensor:
        """Image x text cosine similarity: for each pair, the best-matching query against the
        text's [CLS] projection (LAVIS' ``image_embeds_proj @ text_embeds_proj[:, 0].T``, max)."""
        image_proj, text_proj = image_features.image_embeds_proj, text_features.text_embeds_proj
        if image_proj is None or text_proj is None:
            raise ValueError("similarity needs features from mode='image' and mode='text'")
        per_query = torch.einsum("iqd,td->iqt", image_proj, text_proj[:, 0])
        return per_query.max(dim=1).values

    # -- training (ITC) ---------------------------------------------------------------------
    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """LAVIS' stage-1 image-text contrastive loss over ``samples["image"]`` / ``samples["text_input"]``
        (``samples["image_id"]``, when given, makes pairs of one image positives of each other)."""
        image_feats, _ = self.query_image(samples["image"].to(self.device))
        image_proj = F.normalize(self.vision_proj(image_feats), dim=-1)
        text_proj = F.normalize(self.text_proj(self._text_features(self.tokenize(list(samples["text_input"])))[:, 0]), dim=-1)
        loss = self.contrastive(image_proj, text_proj, samples)[0]
        return {"loss": loss, "loss_itc": loss.detach()}

    def contrastive(self, image_feats: torch.Tensor, text_feat: torch.Tensor,
                    samples: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:func:`~mm_blip2.models.stage1_losses.itc_loss` over every rank's batch, after clamping the
        temperature to [0.001, 0.5]; returns (loss, sim_i2t, sim_t2i, this rank's image ids, all ids)."""
        with torch.no_grad():
            self.temp.clamp_(TEMPERATURE_MIN, TEMPERATURE_MAX)
        check_equal_batches(image_feats.shape[0], image_feats.device)
        image_ids = image_ids_tensor(samples.get("image_id"), image_feats.shape[0], image_feats.device)
        loss, sim_i2t, sim_t2i, ids_all = itc_loss(image_feats, text_feat, self.temp, image_ids)
        return loss, sim_i2t, sim_t2i, image_ids, ids_all
