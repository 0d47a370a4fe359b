"""``minigpt4qwen``: BLIP-2 -> Qwen, the blip2 plugin's composition with the ``qwen`` backend.

The backend is reached by name through the registry, like every :class:`Blip2LLM` backend, so
this module imports no LLM plugin: ``qwen`` comes from mm-plugin-qwen-llm when it is installed.

It accepts MiniGPT4-Qwen's published ``model`` section unchanged: the flat LLM keys
(``llm_model``, ``freeze_llm``, ``get_lora``, ``lora_r``, ``lora_alpha``, ``lora_dropout``,
``llm_device_map``, ...) become the ``model.llm`` block of
:class:`~mm_blip2.models.blip2_llm.Blip2LLM`; an explicit ``model.llm`` block, when given, wins
key by key. Everything else (vision tower, Q-Former, freezing, weights, generation, ``chat``)
is Blip2LLM's.

Flat key -> ``model.llm`` key::

    llm_model -> model              freeze_llm -> freeze        get_lora -> lora
    lora_r / lora_alpha / lora_dropout / lora_target_modules (same names)
    llm_device_map -> device_map    llm_dtype -> dtype          llm_trust_remote_code -> trust_remote_code
    llm_gradient_checkpointing -> gradient_checkpointing (default: use_grad_checkpoint)
    llm_random_init -> random_init  init_seed -> init_seed      llm_image_token -> image_token
    system_message -> system_message
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mm_blip2.models.blip2_llm import Blip2LLM
from mm_core.base.llm import IMAGE_MARK
from mm_core.base.model import config_value
from mm_core.errors import DataError

#: The LLM backend MiniGPT4-Qwen's flat keys configure (mm_blip2.hooks declares who provides it).
QWEN_BACKEND = "qwen"

#: flat MiniGPT4-Qwen key -> key of the ``qwen`` backend's block.
FLAT_LLM_KEYS = {
    "llm_model": "model",
    "freeze_llm": "freeze",
    "get_lora": "lora",
    "lora_r": "lora_r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "lora_target_modules": "lora_target_modules",
    "llm_device_map": "device_map",
    "llm_dtype": "dtype",
    "llm_trust_remote_code": "trust_remote_code",
    "llm_gradient_checkpointing": "gradient_checkpointing",
    "llm_random_init": "random_init",
    "init_seed": "init_seed",
    "llm_image_token": "image_token",
    "system_message": "system_message",
}


class MiniGPT4Qwen(Blip2LLM):
    """MiniGPT4-Qwen: EVA ViT-g + Q-Former (frozen by default) -> trainable projection -> Qwen chat.

    Model types: ``qwen7b_chat`` and ``qwen14b_chat`` (MiniGPT4-Qwen's defaults, Qwen-1: needs
    ``llm_trust_remote_code: true``), ``qwen2_5_7b_instruct``, and ``tiny`` (offline, random
    init: a tiny Qwen2 with the tokenizer trained by this package).
    """

    #: MiniGPT4-Qwen's ``load_checkpoint_from_config``: ``pretrained`` then ``finetuned`` when both are set.
    loading_order = "minigpt4qwen"

    @classmethod
    def from_config(cls, cfg: DictConfig) -> MiniGPT4Qwen:
        """Build and load weights; with ``init_seed`` set, every randomly initialised part is
        drawn from that seed, so a rebuilt model plus its checkpoint (trainable tensors only)
        is the trained model again."""
        seed = config_value(cfg, "init_seed", None)
        if seed is None:
            return super().from_config(cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return super().from_config(cfg)

    def llm_config(self, cfg: DictConfig) -> DictConfig:
        """The ``qwen`` backend block from MiniGPT4-Qwen's flat keys (``model.llm`` wins)."""
        flat: dict[str, Any] = {"name": QWEN_BACKEND}
        for key, llm_key in FLAT_LLM_KEYS.items():
            value = config_value(cfg, key, None)
            if value is not None:
                flat[llm_key] = value
        if "gradient_checkpointing" not in flat and config_value(cfg, "use_grad_checkpoint", False):
            flat["gradient_checkpointing"] = True
        explicit = config_value(cfg, "llm", {})
        return OmegaConf.merge(OmegaConf.create(flat), explicit)

    def forward(self, samples: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Blip2LLM's loss, after checking that each sample has one image per image mark."""
        check_image_marks(self.conversations_of(samples), samples.get("image"), samples.get("instance_id"))
        return super().forward(samples)


def check_image_marks(conversations: list[list[dict[str, str]]], image: Any, ids: Any = None) -> None:
    """Raise a :class:`DataError` naming the sample whose image marks and images differ in number
    (a lone image without a mark is fine: the model puts it before the first question)."""
    counts = images_per_sample(image, len(conversations))
    for index, (conversation, count) in enumerate(zip(conversations, counts)):
        marks = sum(t["value"].count(IMAGE_MARK) for t in conversation if t.get("from") in ("user", "human"))
        if marks != count and not (marks == 0 and count == 1):
            name = ids[index] if ids is not None and index < len(ids) else index
            raise DataError(
                f"sample {name}: {marks} image mark(s) ({IMAGE_MARK}) but {count} image(s)",
                hint="each image needs one mark in the user turns, and each mark one image",
            )


def images_per_sample(image: Any, batch_size: int) -> list[int]:
    """Number of images of each sample in Blip2LLM's batch layouts."""
    if image is None:
        return [0] * batch_size
    if isinstance(image, torch.Tensor):
        return [1] * batch_size if image.dim() == 4 else [1]
    return [int(im.shape[0]) if im.dim() == 4 else 1 for im in image]
