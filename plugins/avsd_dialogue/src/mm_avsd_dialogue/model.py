"""``gpt_dialogue``: GPT-2 conditioned on video features for video-grounded dialogue (AVSD).

The video features, projected by ``video_ff`` to GPT-2's width, are put in front of the dialogue
token embeddings. The loss is the language-model cross-entropy on the answer plus the mean squared
error of predicting each next video frame from the hidden state of the frame before it
(``video_ff_out`` maps back to the feature size), as in the LAVIS seed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from mm_avsd_dialogue.tokenizer import load_tokenizer, special_token_ids
from mm_core.base.llm import IGNORE_INDEX
from mm_core.base.model import BaseModel, config_value
from mm_core.errors import ConfigError, DataError


class GPTDialogue(BaseModel):
    """``GPT2LMHeadModel`` + ``video_ff`` Linear(len_video_ft -> n_embd) + ``video_ff_out``
    Linear(n_embd -> len_video_ft).

    Config keys: ``pretrained`` (hub id or directory of GPT-2 weights; null builds a randomly
    initialised GPT-2 from ``n_embd``/``n_layer``/``n_head``/``n_positions``), ``tokenizer``,
    ``len_tokenizer`` (size of the token embeddings, special tokens included) and
    ``len_video_ft`` (size of one concatenated video frame).
    """

    def __init__(self, gpt: nn.Module, tokenizer: Any, len_video_ft: int) -> None:
        super().__init__()
        self.gpt = gpt
        self.tokenizer = tokenizer
        self.len_video_ft = int(len_video_ft)
        n_embd = gpt.config.n_embd
        self.video_ff = nn.Linear(self.len_video_ft, n_embd)
        self.video_ff_out = nn.Linear(n_embd, self.len_video_ft)
        self.special = special_token_ids(tokenizer)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> GPTDialogue:
        from transformers import GPT2Config, GPT2LMHeadModel

        tokenizer = load_tokenizer(str(config_value(cfg, "tokenizer", "gpt2")))
        len_tokenizer = int(config_value(cfg, "len_tokenizer", len(tokenizer)))
        if len_tokenizer < len(tokenizer):
            raise ConfigError(
                f"model.len_tokenizer is {len_tokenizer} but the tokenizer '{cfg.get('tokenizer')}' has "
                f"{len(tokenizer)} tokens (special tokens included)",
                hint=f"set model.len_tokenizer: {len(tokenizer)}",
            )
        pretrained = config_value(cfg, "pretrained", None)
        missing: list[str] = []
        if pretrained:
            try:
                gpt, info = GPT2LMHeadModel.from_pretrained(str(pretrained), output_loading_info=True)
                missing = [f"gpt.{k}" for k in info["missing_keys"]]
            except OSError as exc:
                raise ConfigError(
                    f"model.pretrained: cannot load GPT-2 weights from '{pretrained}': {exc}",
                    hint="give a directory with GPT-2 weights, a hub id cached locally, or use model_type tiny",
                ) from exc
        else:
            gpt = GPT2LMHeadModel(GPT2Config(
                vocab_size=len_tokenizer,
                n_embd=int(config_value(cfg, "n_embd", 768)),
                n_layer=int(config_value(cfg, "n_layer", 12)),
                n_head=int(config_value(cfg, "n_head", 12)),
                n_positions=int(config_value(cfg, "n_positions", 1024)),
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            ))
        # room for the dialogue's special tokens (GPT-2 has 50257 tokens, the format adds 7)
        gpt.resize_token_embeddings(len_tokenizer)
        model = cls(gpt, tokenizer, len_video_ft=int(config_value(cfg, "len_video_ft", 4224)))
        model.check_weights(cfg, str(pretrained) if pretrained else None, missing)
        return model

    def check_weights(self, cfg: DictConfig, pretrained: str | None, missing: list[str]) -> None:
        """Record where each tensor came from (``self.weight_sources``): GPT-2 from ``pretrained``
        except what that file lacked; ``video_ff`` / ``video_ff_out`` are new (as in LAVIS). Without
        ``pretrained`` the model is random by design (``tiny``); with it, a GPT-2 tensor the file
        lacks stops the build (``model.allow_random_init`` opts out)."""
        from mm_core.weights import WeightSources

        keys = list(self.state_dict())
        sources = self.weight_sources = WeightSources()
        if not pretrained:
            sources.fresh(keys, "random init (the config names no weight file)")
            return
        gpt_keys = [k for k in keys if k.startswith("gpt.")]
        sources.loaded([k for k in gpt_keys if k not in set(missing)], pretrained)
        sources.fresh([k for k in keys if k.startswith("video_ff")], "new video projections (as in LAVIS)")
        sources.check(keys, config_value(cfg, "allow_random_init", None),
                      {"gpt": "model.pretrained to a complete GPT-2 (hub id or directory)"},
                      what=f"model gpt_dialogue/{config_value(cfg, 'model_type', '?')}")

    @classmethod
    def weights_plan(cls, cfg: DictConfig) -> list[tuple[str, str]]:
        pretrained = config_value(cfg, "pretrained", None)
        if not pretrained:
            return [("everything", "random init (the config names no weight file)")]
        return [("gpt (GPT-2)", f"{pretrained} (Hugging Face)"), ("video_ff, video_ff_out", "fresh (new, as in LAVIS)")]

    def map_checkpoint_keys(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """LAVIS' GPTDialogue *is* a GPT2LMHeadModel (``transformer.*``, ``lm_head.*``); here GPT-2
        is the ``gpt`` sub-module."""
        mapped = {}
        for key, value in state_dict.items():
            if key.startswith(("transformer.", "lm_head.")):
                key = f"gpt.{key}"
            mapped[key] = value
        return mapped

    # -- inputs ----------------------------------------------------------------------
    def _embed(self, samples: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings ``[video_ff(video) | wte(tokens)]`` and the attention mask."""
        video = samples["video_fts"].to(self.device, dtype=self.video_ff.weight.dtype)
        if video.shape[-1] != self.len_video_ft:
            raise DataError(
                f"video features have {video.shape[-1]} values per frame, model.len_video_ft is {self.len_video_ft}",
                hint="make len_video_ft the sum of the sizes of the processor's visual_ft and audio_ft",
            )
        tokens = samples["input_ids"].to(self.device)
        embeds = torch.cat([self.video_ff(video), self.gpt.transformer.wte(tokens)], dim=1)
        mask = samples["attention_mask"].to(self.device)
        limit = self.gpt.config.n_positions
        longest = int(mask.sum(dim=1).max())
        if longest > limit:
            raise DataError(f"a sample has {longest} video frames + tokens, more than GPT-2's {limit} positions",
                            hint="lower the text processor's max_turns or use fewer feature frames")
        return embeds, mask

    @staticmethod
    def position_ids(mask: torch.Tensor) -> torch.Tensor:
        """Positions counted over real entries only, so the padding between a short video and its
        text does not shift the text (the same positions ``generate`` derives from the mask)."""
        return (mask.long().cumsum(dim=-1) - 1).clamp(min=0)

    # -- training --------------------------------------------------------------------
    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        embeds, mask = self._embed(samples)
        types = samples["token_type_ids"].to(self.device)
        hidden = self.gpt.transformer(inputs_embeds=embeds, attention_mask=mask, token_type_ids=types,
                                      position_ids=self.position_ids(mask)).last_hidden_state
        loss_lm = self.lm_loss(self.gpt.lm_head(hidden), samples["labels"].to(self.device))
        video = samples["video_fts"].to(self.device, dtype=hidden.dtype)
        loss_video = self.video_loss(self.video_ff_out(hidden[:, : video.shape[1] - 1]), video,
                                     samples["video_lengths"].to(self.device))
        loss = loss_lm + loss_video
        return {"loss": loss, "loss_lm": loss_lm.detach(), "loss_video": loss_video.detach()}

    @staticmethod
    def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each position predicting the next label (``-100`` ignored)."""
        shifted = labels[:, 1:]
        if not bool((shifted != IGNORE_INDEX).any()):
            return logits.sum() * 0.0  # no answer tokens in this batch: a zero that keeps the graph
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), shifted.flatten(), ignore_index=IGNORE_INDEX)

    @staticmethod
    def video_loss(predicted: torch.Tensor, video: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """MSE between the prediction at frame t and frame t + 1, over each video's real frames."""
        target = video[:, 1:]
        valid = (torch.arange(target.shape[1], device=video.device)[None, :] + 1) < lengths[:, None]
        if not bool(valid.any()):
            return predicted.sum() * 0.0
        squared = ((predicted.float() - target.float()) ** 2) * valid[..., None]
        return squared.sum() / (valid.sum() * target.shape[-1])

    # -- generation ------------------------------------------------------------------
    @torch.no_grad()
    def generate_ids(self, samples: dict[str, Any], num_beams: int = 5, max_len: int = 20, min_len: int = 1,
                     **generation: Any) -> torch.Tensor:
        """Answer token ids (B, <= max_len) by beam search on video + caption + history + question.

        The prompt is every attended position not labelled as answer; it is moved to the right end
        of the row (padding first) because new tokens are appended there. ``max_len``/``min_len``
        count generated tokens (Hugging Face's ``max_new_tokens``/``min_new_tokens``).
        """
        embeds, mask = self._embed(samples)
        types = samples["token_type_ids"].to(self.device)
        prompt = mask.bool()
        if "labels" in samples:
            prompt &= samples["labels"].to(self.device) == IGNORE_INDEX
        order = torch.sort(prompt.long(), dim=1, stable=True).indices  # padding first, order kept
        answer_type = self.special["<speaker2>"]
        wte = self.gpt.transformer.wte
        # GPT-2 adds wte(token_type_ids) to the input; generate() repeats the last type for new
        # tokens. Folding each prompt position's own type in here and passing the answer's type
        # everywhere gives the prompt its real types and every generated token the answer's type.
        embeds = embeds + wte(types) - wte(torch.full_like(types, answer_type))
        embeds = torch.gather(embeds, 1, order[..., None].expand_as(embeds))
        prompt_mask = torch.gather(prompt.long(), 1, order)
        eos, pad = self.special["<eos>"], self.special["<pad>"]
        # an answer is plain text ended by <eos>: no other special token may be generated
        generation.setdefault("suppress_tokens", [i for t, i in self.special.items() if t != "<eos>"])
        return self.gpt.generate(
            inputs_embeds=embeds,
            attention_mask=prompt_mask,
            token_type_ids=torch.full_like(prompt_mask, answer_type),
            num_beams=int(num_beams),
            max_new_tokens=int(max_len),
            min_new_tokens=int(min_len),
            eos_token_id=eos,
            pad_token_id=pad,
            do_sample=False,
            **generation,
        )

    def generate(self, samples: dict[str, Any], num_beams: int = 5, max_len: int = 20, min_len: int = 1,
                 **generation: Any) -> list[str]:
        """Decoded answers, one per sample (see :meth:`generate_ids`)."""
        ids = self.generate_ids(samples, num_beams=num_beams, max_len=max_len, min_len=min_len, **generation)
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
