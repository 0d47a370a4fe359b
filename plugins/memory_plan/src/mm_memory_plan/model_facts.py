"""What the plan needs to know of a model, read from a built one: parameters by top-level module
(count, trainable, bytes in their dtypes), DeepSpeed's "largest layer", and the causal LM's decoder
stack (dims, and the split of its blocks into pipeline stages).

For ``mmrun --dry-run`` the model is built on the meta device (:func:`build_on_meta`): tensors have
shapes and dtypes but no storage, and the architecture-only switches below make the model's own
``from_config`` read no weight file, so a Qwen-7B-sized config plans in seconds and a few hundred MB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: Keys of the model block that, where the config has them, name a weight file: emptied for the
#: meta build (mm's BLIP-2 family, docs/weights.md).
WEIGHT_FILE_KEYS = ("vit_pretrained", "pretrained", "finetuned", "hf_pretrained")
#: Switches set for the meta build: no checkpoint is loaded, the LLM is built from its config.json
#: with random init (``llm_random_init`` / ``model.llm.random_init``), and weights coverage allows it.
ARCHITECTURE_ONLY = {"load_pretrained": False, "load_finetuned": False, "allow_random_init": True}


def architecture_only(model_cfg: DictConfig) -> DictConfig:
    """A copy of the ``model`` block that builds the same architecture without reading weights."""
    cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
    for key in WEIGHT_FILE_KEYS:
        if key in cfg:
            cfg[key] = None
    cfg.merge_with(ARCHITECTURE_ONLY)
    if "llm_model" in cfg:
        cfg.llm_random_init = True
    if OmegaConf.select(cfg, "llm") is not None:
        cfg.llm.random_init = True
    return cfg


def build_on_meta(model_cfg: DictConfig) -> Any:
    """The config's model built on the meta device, from its architecture only."""
    import torch

    from mm_core.registry import get_registry

    model_cls = get_registry().resolve("models", str(model_cfg.arch))
    with torch.device("meta"):
        return model_cls.from_config(architecture_only(model_cfg))


@dataclass
class Count:
    """Parameters of a part of the model: numbers, and bytes in the dtypes they are stored in."""

    params: int = 0
    trainable: int = 0
    bytes: int = 0
    trainable_bytes: int = 0

    def add(self, numel: int, element_size: int, trainable: bool) -> None:
        self.params += numel
        self.bytes += numel * element_size
        if trainable:
            self.trainable += numel
            self.trainable_bytes += numel * element_size

    def __iadd__(self, other: Count) -> Count:
        for name in ("params", "trainable", "bytes", "trainable_bytes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


@dataclass
class LLMFacts:
    """The causal LM inside the model: its dims and whether backward runs through its weights."""

    path: str
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    layers: int
    trainable: bool
    element_size: int  # bytes per element of its weights (and of its activations without autocast)


@dataclass
class ModelFacts:
    """Counts by top-level module and by pipeline part: ``pre`` (everything before the decoder
    blocks: vision tower, Q-Former, projection, the LLM's input embeddings), one entry per
    decoder block, ``post`` (the LLM's final norm and LM head)."""

    modules: dict[str, Count]
    largest_layer_params: int
    llm: LLMFacts | None = None
    pre: Count = field(default_factory=Count)
    blocks: list[Count] = field(default_factory=list)
    post: Count = field(default_factory=Count)

    @property
    def total(self) -> Count:
        out = Count()
        for count in self.modules.values():
            out += count
        return out


def read_facts(model: Any) -> ModelFacts:
    """Counts of a built model (on any device, meta included); shared tensors are counted once."""
    lm_path, lm = find_causal_lm(model)
    blocks_path, blocks = decoder_blocks(lm) if lm is not None else ("", None)
    blocks_path = f"{lm_path}.{blocks_path}" if lm_path and blocks_path else blocks_path
    embed_names = _param_names(lm.get_input_embeddings(), lm_path) if lm is not None else set()
    facts = ModelFacts({}, largest_layer_params(model), blocks=[Count() for _ in range(len(blocks or []))])
    for name, param in model.named_parameters():
        numel, size, trainable = param.numel(), param.element_size(), param.requires_grad
        facts.modules.setdefault(name.split(".")[0], Count()).add(numel, size, trainable)
        _part(facts, name, lm_path, blocks_path, embed_names).add(numel, size, trainable)
    if lm is not None:
        facts.llm = llm_facts(lm, lm_path, len(blocks or []))
    return facts


def _part(facts: ModelFacts, name: str, lm_path: str, blocks_path: str, embed_names: set[str]) -> Count:
    if blocks_path and name.startswith(f"{blocks_path}."):
        return facts.blocks[int(name[len(blocks_path) + 1:].split(".")[0])]
    if lm_path and name.startswith(f"{lm_path}.") and name not in embed_names:
        return facts.post
    return facts.pre


def _param_names(module: Any, prefix: str) -> set[str]:
    return {f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters()} if module is not None else set()


def largest_layer_params(model: Any) -> int:
    """DeepSpeed's "largest layer": the most parameters one module holds directly (ZeRO-3 gathers
    one layer's 16-bit weights and gradients at a time)."""
    return max((sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()), default=0)


def find_causal_lm(model: Any) -> tuple[str, Any]:
    """(path, module) of the outermost Hugging Face model with an LM head, or ``("", None)``."""
    from transformers import PreTrainedModel

    for name, module in model.named_modules():
        if isinstance(module, PreTrainedModel) and module.get_output_embeddings() is not None \
                and getattr(module.config, "hidden_size", None):
            return name, module
    return "", None


def decoder_blocks(lm: Any) -> tuple[str, Any]:
    """(path inside ``lm``, ModuleList) of the LM's decoder blocks: its ModuleList with the most parameters."""
    from torch import nn

    lists = [(n, m) for n, m in lm.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        return "", None
    return max(lists, key=lambda item: sum(p.numel() for p in item[1].parameters()))


def llm_facts(lm: Any, path: str, layers: int) -> LLMFacts:
    config = lm.config
    heads = int(config.num_attention_heads)
    intermediate = int(getattr(config, "intermediate_size", 4 * config.hidden_size))
    if getattr(config, "model_type", "") == "qwen":  # Qwen-1's w1 / w2 are half its intermediate_size
        intermediate //= 2
    params = list(lm.parameters())
    return LLMFacts(path, int(config.hidden_size), heads, int(getattr(config, "num_key_value_heads", None) or heads),
                    intermediate, int(config.vocab_size), layers, any(p.requires_grad for p in params),
                    params[0].element_size() if params else 4)
