"""``blip_retrieval`` and ``blip_image_text_matching``: LAVIS' ``BlipRetrieval`` / ``BlipITM`` — the
ViT, the text encoder, the ITC projections and the ITM head (``BlipForImageTextRetrieval``'s parts).

``blip_retrieval`` trains as LAVIS' ``BlipRetrieval``: ``loss = loss_itc + loss_itm`` where the ITC
term is :func:`~mm_blip.models.contrastive.itc_with_queue` — this rank's features against the
momentum encoders' features of its batch and the queue (:mod:`mm_blip.models.momentum`), targets
softened by the momentum similarities with weight ``alpha`` (ramped up as LAVIS does) — and ITM runs
over the positive pairs, one hard negative image per text and one text per image, drawn from this
rank's batch or, with ``negative_all_rank``, from every rank's. ``blip_image_text_matching`` (no
momentum parts, as LAVIS' ``BlipITM``) trains with the in-batch ITC loss instead. The four
``retrieval_*`` methods are the ``retrieval`` task's model contract (LAVIS' ``compute_sim_matrix``:
ITC for the candidates, ITM to re-rank the ``k_test`` best).
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from mm_blip.models.base import BlipBase
from mm_blip.models.contrastive import hard_negatives, itc_loss, itc_with_queue, negative_weights
from mm_blip.models.gather import distributed, gather_no_grad, gather_with_grad
from mm_blip.models.momentum import (
    MOMENTUM_PARTS,
    QUEUE_BUFFERS,
    build_momentum_copies,
    copy_params,
    enqueue,
    momentum_update,
    register_queues,
)
from mm_core.base.model import config_value
from mm_core.errors import DataError
from mm_core.weights import WeightSources

MATCH_HEADS = ("itm", "itc")
#: What LAVIS' runner adds to each training batch; ``alpha`` ramps over their first two epochs.
RAMPUP_KEYS = ("epoch", "iters", "num_iters_per_epoch")


def image_id_tensor(samples: dict[str, Any], device: torch.device) -> torch.Tensor:
    """``samples["image_id"]`` as a LongTensor (string ids hashed with crc32 so they can be gathered)."""
    ids = samples.get("image_id")
    if ids is None:
        raise DataError("blip_retrieval trains on samples['image_id'] (captions of one image are positives, "
                        "in the batch and in the queue), and the batch has none",
                        hint="use a caption/retrieval dataset whose samples carry image_id (coco_caption's do)")
    if isinstance(ids, torch.Tensor):
        return ids.to(device=device, dtype=torch.long).view(-1)
    values = [int(v) if isinstance(v, int) or str(v).lstrip("-").isdigit() else zlib.crc32(str(v).encode())
              for v in ids]
    return torch.tensor(values, dtype=torch.long, device=device)


class BlipContrastiveMatching(BlipBase):
    """The parts and scores ``blip_retrieval`` and ``blip_image_text_matching`` share; ``forward`` is
    the in-batch ITC + ITM training step."""

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        self.max_txt_len = int(config_value(cfg, "max_txt_len", 35))
        self.build_vision(cfg)
        self.build_text_encoder()
        self.build_projections(cfg, itm_head=True)

    # -- the retrieval contract ----------------------------------------------------------------------
    def retrieval_tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenize(texts, padding="max_length")
        return tokens.input_ids, tokens.attention_mask

    def retrieval_image_features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ViT tokens, the normalised [CLS] ITC feature as one "query": (B, 1, embed_dim))."""
        image_embeds = self.encode_image(image)
        return image_embeds, F.normalize(self.vision_proj(image_embeds[:, 0]), dim=-1).unsqueeze(1)

    def retrieval_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(self.text_only(input_ids, attention_mask)[:, 0]), dim=-1)

    def retrieval_itm_scores(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                             attention_mask: torch.Tensor) -> torch.Tensor:
        """The "match" logit of each (image, text) row (LAVIS' compute_sim_matrix)."""
        return self.itm_logits(image_embeds, input_ids, attention_mask)[:, 1]

    def itm_logits(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor) -> torch.Tensor:
        """(no match, match) logits: ``itm_head`` on the ``[ENC]`` output over the image."""
        return self.itm_head(self.image_grounded_text(image_embeds, input_ids, attention_mask)[:, 0])

    def itm_loss(self, images: torch.Tensor, texts: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the pairs (the first third positives, the rest hard negatives)."""
        batch = texts.shape[0] // 3
        labels = torch.cat([torch.ones(batch, dtype=torch.long), torch.zeros(2 * batch, dtype=torch.long)])
        return F.cross_entropy(self.itm_logits(images, texts, masks), labels.to(self.device))

    # -- training -----------------------------------------------------------------------------------
    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        image_embeds, image_feat = self.retrieval_image_features(samples["image"])
        image_feat = image_feat[:, 0]
        input_ids, attention_mask = self.retrieval_tokenize(list(samples["text_input"]))
        text_feat = self.retrieval_text_features(input_ids, attention_mask)
        image_ids = samples.get("image_id")
        loss_itc = itc_loss(image_feat, text_feat, self.temp, image_ids)
        negative_images, negative_texts = hard_negatives(image_feat, text_feat, self.temp, image_ids)
        images = torch.cat([image_embeds, image_embeds[negative_images], image_embeds])
        texts = torch.cat([input_ids, input_ids, input_ids[negative_texts]])
        masks = torch.cat([attention_mask, attention_mask, attention_mask[negative_texts]])
        loss_itm = self.itm_loss(images, texts, masks)
        return {"loss": loss_itc + loss_itm, "loss_itc": loss_itc.detach(), "loss_itm": loss_itm.detach()}


class BlipRetrieval(BlipContrastiveMatching):
    """Image-text retrieval (LAVIS' ``blip_retrieval``). Options: ``embed_dim`` (256), ``max_txt_len``
    (35), ``vit_type``, ``image_size``, ``med_config_path``, ``freeze_vit``, and LAVIS' training keys
    ``queue_size`` (57600), ``alpha`` (0.4), ``momentum`` (0.995), ``negative_all_rank`` (false).
    ``alpha`` ramps as LAVIS' ``_rampup_factor`` from the batch's ``epoch`` / ``iters`` /
    ``num_iters_per_epoch`` (mm's runners add them to every training batch, as LAVIS' does); without them over
    ``alpha_rampup_iters`` training steps counted by the model (0, the default: no ramp)."""

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        self.alpha = float(config_value(cfg, "alpha", 0.4))
        self.momentum = float(config_value(cfg, "momentum", 0.995))
        self.negative_all_rank = bool(config_value(cfg, "negative_all_rank", False))
        self.alpha_rampup_iters = int(config_value(cfg, "alpha_rampup_iters", 0))
        self.queue_size = int(config_value(cfg, "queue_size", 57600))
        build_momentum_copies(self)
        register_queues(self, self.vision_proj.out_features, self.queue_size)
        self.register_buffer("distill_step", torch.zeros(1, dtype=torch.long))

    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """LAVIS' training step. The momentum update, the enqueue and the step count happen in
        training mode only: an evaluation forward reads the queues and leaves them as they were."""
        image_ids = image_id_tensor(samples, self.device)
        alpha = self.distillation_alpha(samples)
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
        image_embeds, image_feat = self.retrieval_image_features(samples["image"])
        image_feat = image_feat[:, 0]
        input_ids, attention_mask = self.retrieval_tokenize(list(samples["text_input"]))
        text_feat = self.retrieval_text_features(input_ids, attention_mask)
        loss_itc = self.momentum_itc(samples["image"], input_ids, attention_mask, image_feat, text_feat, image_ids,
                                     alpha)
        pairs = self.itm_pairs(image_embeds, image_feat, text_feat, input_ids, attention_mask, image_ids)
        loss_itm = self.itm_loss(*pairs)
        if self.training:
            self.distill_step += 1
        return {"loss": loss_itc + loss_itm, "loss_itc": loss_itc.detach(), "loss_itm": loss_itm.detach()}

    def distillation_alpha(self, samples: dict[str, Any]) -> float:
        """``alpha`` x LAVIS' ramp ``min(1, (epoch * n + iters) / (2 n))`` (n iterations per epoch)."""
        if all(key in samples for key in RAMPUP_KEYS):
            per_epoch = int(samples["num_iters_per_epoch"])
            done = int(samples["epoch"]) * per_epoch + int(samples["iters"])
            return self.alpha * min(1.0, done / (2 * per_epoch))
        if self.alpha_rampup_iters > 0:
            return self.alpha * min(1.0, int(self.distill_step) / self.alpha_rampup_iters)
        return self.alpha

    def momentum_features(self, image: torch.Tensor, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The momentum encoders' normalised [CLS] features of the images and texts (no gradient)."""
        with torch.no_grad():
            pixels = image.to(self.device, next(self.vision_model_m.parameters()).dtype)
            image_embeds = self.vision_model_m(pixel_values=pixels, interpolate_pos_encoding=False).last_hidden_state
            text = self.text_encoder_m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return (F.normalize(self.vision_proj_m(image_embeds[:, 0]), dim=-1),
                    F.normalize(self.text_proj_m(text[:, 0]), dim=-1))

    def momentum_itc(self, image: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     image_feat: torch.Tensor, text_feat: torch.Tensor, image_ids: torch.Tensor,
                     alpha: float) -> torch.Tensor:
        """Momentum update (training), momentum features, the queue ITC loss, then the enqueue (training)."""
        if self.training:
            momentum_update(self, self.momentum)
        image_feat_m, text_feat_m = self.momentum_features(image, input_ids, attention_mask)
        loss = itc_with_queue(image_feat, text_feat, image_feat_m, text_feat_m, self.image_queue, self.text_queue,
                              image_ids, self.idx_queue, self.temp, alpha)
        if self.training:
            enqueue(self, image_feat_m, text_feat_m, image_ids)
        return loss

    def itm_pairs(self, image_embeds: torch.Tensor, image_feat: torch.Tensor, text_feat: torch.Tensor,
                  input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  image_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images, texts, masks) of the ITM pairs: the positives, (text, hard negative image), (hard
        negative text, image); negatives from every rank's batch with ``negative_all_rank``."""
        world = self.negative_all_rank and distributed()
        gather = gather_no_grad if world else (lambda tensor: tensor)
        with torch.no_grad():
            same = image_ids.view(-1, 1) == gather(image_ids).view(1, -1)
            weights_i2t = negative_weights(image_feat, gather(text_feat), self.temp, same)
            weights_t2i = negative_weights(text_feat, gather(image_feat), self.temp, same)
        image_embeds_world = gather_with_grad(image_embeds) if world else image_embeds
        negative_images = torch.multinomial(weights_t2i, 1).squeeze(1)
        negative_texts = torch.multinomial(weights_i2t, 1).squeeze(1)
        images = torch.cat([image_embeds, image_embeds_world[negative_images], image_embeds])
        texts = torch.cat([input_ids, input_ids, gather(input_ids)[negative_texts]])
        masks = torch.cat([attention_mask, attention_mask, gather(attention_mask)[negative_texts]])
        return images, texts, masks

    # -- weights and checkpoints ------------------------------------------------------------------
    def momentum_state_keys(self) -> list[str]:
        parts = (*MOMENTUM_PARTS.values(), *QUEUE_BUFFERS, "distill_step")
        return [key for key in self.state_dict() if key.split(".")[0] in parts]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable parameters plus the momentum encoders, queues and step count, so a resumed
        run continues LAVIS' training exactly (LAVIS' checkpoints hold them too)."""
        state = self.state_dict()
        return {**super().trainable_state_dict(), **{key: state[key].detach() for key in self.momentum_state_keys()}}

    def declare_weights(self, sources: WeightSources, cfg: DictConfig) -> None:
        """The momentum copies and queues come from the file when it holds them (LAVIS' retrieval and
        pretraining files do); otherwise the copies are copied from the loaded model and the queues
        start as LAVIS' do."""
        super().declare_weights(sources, cfg)
        keys = self.momentum_state_keys()
        for online, copy in MOMENTUM_PARTS.items():
            sources.fresh([k for k in keys if k.startswith(f"{copy}.")], f"a copy of {online} (LAVIS' copy_params)")
        sources.fresh([k for k in keys if k in QUEUE_BUFFERS], "LAVIS' initial queues (random unit features, ids -100)")
        sources.fresh(["distill_step"], "0 (mm's count of training steps, for alpha_rampup_iters)")

    def load_weights_from_config(self, cfg: DictConfig) -> list:
        """LAVIS' order of files; then every momentum copy no file filled is copied from its loaded
        part, and ``queue_ptr`` goes back to 0 as LAVIS' ``from_config`` does after loading."""
        reports = super().load_weights_from_config(cfg)
        fresh = {k for k, source in self.weight_sources.sources.items() if str(source).startswith("fresh")}
        for online, copy in MOMENTUM_PARTS.items():
            if all(f"{copy}.{name}" in fresh for name, _ in getattr(self, copy).named_parameters()):
                copy_params(self, {online: copy})
        self.queue_ptr.zero_()
        return reports


class BlipImageTextMatching(BlipContrastiveMatching):
    """LAVIS' ``blip_image_text_matching``: ``model(samples, match_head="itm")`` gives (no match, match)
    logits per image-text pair, ``match_head="itc"`` the image x text cosine similarities of [CLS]
    features. Without ``match_head``, ``forward`` is the in-batch ITC + ITM training step."""

    def forward(self, samples: dict[str, Any], match_head: str | None = None) -> Any:
        if match_head is None:
            return super().forward(samples)
        if match_head not in MATCH_HEADS:
            raise ValueError(f"match_head must be one of {', '.join(MATCH_HEADS)}, not {match_head!r}")
        texts = samples["text_input"]
        tokens = self.tokenize([texts] if isinstance(texts, str) else list(texts))
        image_embeds, image_feat = self.retrieval_image_features(samples["image"])
        if match_head == "itm":
            return self.itm_logits(image_embeds, tokens.input_ids, tokens.attention_mask)
        return image_feat[:, 0] @ self.retrieval_text_features(tokens.input_ids, tokens.attention_mask).t()
