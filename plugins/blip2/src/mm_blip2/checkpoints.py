"""Loading LAVIS, MiniGPT4-Qwen and Hugging Face BLIP-2 weights into the timm / transformers modules.

Files, as upstream writes them:

* ``eva_vit_g.pth`` (LAVIS / MiniGPT4-Qwen): bare EVA keys (``blocks.0.attn.qkv.weight``) ->
  ``visual_encoder.*`` (:func:`load_eva_checkpoint`); EVA-CLIP's head / final norm are dropped;
* a BLIP-2 checkpoint (``blip2_pretrained*.pth``), a LAVIS runner's ``checkpoint_*.pth`` and a
  MiniGPT4-Qwen runner's ``checkpoint_*.pth`` / ``model.pth``: ``{"model": state_dict, ...}`` (the
  runner's optimizer / scaler / config entries are not read); LAVIS' runner drops every tensor
  with ``requires_grad=False`` when it saves, so a checkpoint trained with a frozen tower has no
  ``visual_encoder.*``;
* MiniGPT4-Qwen's DeepSpeed converters: ``model.pth`` (``deepspeed2pth.py``: the whole module's
  state dict; ``pipe_proj2pth.py``: ``llm_proj.*`` only) and ``unfreeze_llm_model.pth``
  (``pipemodel2pth.py``: ``llm_proj.*`` + the LLM under ``llm_model.*``), plain state dicts.

:data:`KEY_TABLE` is the one definition of upstream -> mm names (first matching prefix wins):

* ``visual_encoder.*`` and ``ln_vision.*`` keep their names: LAVIS' EVA names (including the
  separate ``attn.q_bias`` / ``attn.v_bias``) already are timm ``Eva``'s;
* ``Qformer.bert.embeddings.LayerNorm`` -> ``qformer.layernorm``; ``Qformer.bert.encoder.*`` ->
  ``qformer.encoder.*`` with ``attention.self`` -> ``attention.attention`` (and the same for
  ``crossattention``); ``Qformer.bert.embeddings.position_ids`` is dropped;
* text-branch keys (``word_embeddings``, ``position_embeddings`` -> ``text_embeddings.*``;
  ``layer.N.intermediate`` / ``output`` without ``_query``) load only into models that use the
  text branch; ``Qformer.cls.*`` (the stage-1 LM head) -> ``lm_head.*`` (``blip2``; its decoder is tied
  to the word embeddings, as LAVIS saves it); ``vision_proj.*``, ``text_proj.*``, ``itm_head.*`` and
  ``temp`` keep their names; a model without one of these parts ignores it; the LLM projections of
  ``blip2_opt`` (``opt_proj``) and ``blip2_t5`` / ``blip2_t5_instruct`` (``t5_proj``) -> ``llm_proj.*``;
* ``llm_model.*`` (MiniGPT4-Qwen's LLM, with or without peft's ``base_model.model.``) -> the
  backend's Hugging Face model (``Blip2LLM.llm_state_prefix``, ``llm.model.`` for ``qwen``);
  ``llm_proj.*`` and ``query_tokens`` keep their names; mm's own names pass through;
* a ``query_tokens`` count that differs from the model's is dropped with a warning (as
  MiniGPT4-Qwen does); a ``pos_embed`` for another image size is interpolated (bicubic).

Every load ends with one log line: loaded / missing / unexpected / ignored / dropped; a file that
fills no tensor of the model is an error.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from mm_core.base.model import LoadReport
from mm_core.errors import CheckpointError

log = logging.getLogger(__name__)

#: Top-level modules a BLIP-2 checkpoint is expected to fill (the rest, e.g. the LLM, is not).
BLIP2_MODULES = ("visual_encoder.", "ln_vision.", "qformer.", "query_tokens", "text_embeddings.",
                 "vision_proj.", "text_proj.", "itm_head.", "lm_head.")

_TEXT_FFN = re.compile(r"^encoder\.layer\.\d+\.(intermediate|output)\.")
#: Stands for the LLM backend's prefix in this model's names (``Blip2LLM.llm_state_prefix``).
LLM = "<llm>"

#: Upstream (LAVIS / MiniGPT4-Qwen) key prefix -> mm prefix; ``None``: not used by mm's models.
KEY_TABLE: list[tuple[str, str | None]] = [
    ("Qformer.bert.embeddings.LayerNorm.", "qformer.layernorm."),
    ("Qformer.bert.embeddings.", "text_embeddings."),  # the text branch's word / position embeddings
    ("Qformer.bert.", "qformer."),  # with attention.self -> attention.attention; text FFN only with the text branch
    ("Qformer.cls.", "lm_head."),  # stage-1 LM head (BertOnlyMLMHead: predictions.transform / decoder / bias)
    ("opt_proj.", "llm_proj."),  # blip2_opt's projection into OPT
    ("t5_proj.", "llm_proj."),  # blip2_t5 / blip2_t5_instruct's into Flan-T5 (blip2_vicuna_instruct's is llm_proj)
    ("llm_model.", LLM),  # MiniGPT4-Qwen's LLM
]


@dataclass
class MappedState:
    """A state dict in this model's names plus what was set aside and why."""

    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)  # not used by this model (by design)
    dropped: list[str] = field(default_factory=list)  # would not fit (warned)


@dataclass
class Blip2LoadReport(LoadReport):
    """:class:`~mm_core.base.model.LoadReport` plus ignored and dropped keys."""

    ignored: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = super().summary()
        if self.ignored:
            text += f"; {len(self.ignored)} ignored (not used by this model)"
        if self.dropped:
            text += f"; {len(self.dropped)} dropped: {', '.join(self.dropped[:5])}"
        return text


# -- key translation ------------------------------------------------------------------------
def _qformer_key(rest: str) -> str:
    return rest.replace("attention.self.", "attention.attention.")


def upstream_to_mm(key: str, model: nn.Module) -> str | None:
    """The mm name of an upstream key through :data:`KEY_TABLE` (``None``: set aside by design)."""
    for prefix, target in KEY_TABLE:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if target is None:
            return None
        if target == LLM:
            llm_prefix = getattr(model, "llm_state_prefix", None)
            return None if llm_prefix is None else llm_prefix + rest
        if target == "qformer.":
            if _TEXT_FFN.match(rest) and not getattr(model, "qformer_text_input", False):
                return None
            rest = _qformer_key(rest)
        return target + rest
    return key


def map_lavis_keys(state: dict[str, torch.Tensor], model: nn.Module) -> MappedState:
    """Translate a LAVIS / MiniGPT4-Qwen state dict to ``model``'s names (see the module docstring)."""
    own = model.state_dict()
    out = MappedState()
    for key, value in state.items():
        if key == "Qformer.bert.embeddings.position_ids":
            continue  # a constant buffer transformers builds itself
        target = upstream_to_mm(key, model)
        if target is None or (target not in own and _is_optional(target)):
            out.ignored.append(key)
            continue
        out.state_dict[target] = value
    _fit_query_tokens(out, model)
    return out


def map_hf_keys(state: dict[str, torch.Tensor], model: nn.Module) -> MappedState:
    """Translate a Hugging Face ``Blip2*`` state dict (vision model, Q-Former, projections)."""
    rules = [
        (r"^vision_model\.embeddings\.class_embedding$", "visual_encoder.cls_token"),
        (r"^vision_model\.embeddings\.position_embedding$", "visual_encoder.pos_embed"),
        (r"^vision_model\.embeddings\.patch_embedding\.", "visual_encoder.patch_embed.proj."),
        (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.", r"visual_encoder.blocks.\1.norm1."),
        (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.", r"visual_encoder.blocks.\1.norm2."),
        (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\.", r"visual_encoder.blocks.\1.attn.proj."),
        (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.", r"visual_encoder.blocks.\1.attn."),
        (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"visual_encoder.blocks.\1.mlp."),
        (r"^vision_model\.post_layernorm\.", "ln_vision."),
        (r"^embeddings\.", "text_embeddings."),
        (r"^vision_projection\.", "vision_proj."),
        (r"^text_projection\.", "text_proj."),
        (r"^language_projection\.", "llm_proj."),
        (r"^qformer\.embeddings\.layernorm\.", "qformer.layernorm."),  # InstructBLIP's Q-Former embeddings
        (r"^qformer\.embeddings\.(word|position)_embeddings\.", r"text_embeddings.\1_embeddings."),
    ]
    llm_prefix = getattr(model, "llm_state_prefix", None)
    own = model.state_dict()
    out = MappedState()
    for key, value in state.items():
        fused = re.match(r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.bias$", key)
        if fused:
            # transformers fuses [q_bias, k_bias, v_bias]; timm/LAVIS keep q and v only. A key bias
            # shifts every score of a query equally, so softmax ignores it: dropping it is exact.
            q_bias, _, v_bias = value.chunk(3)
            out.state_dict[f"visual_encoder.blocks.{fused.group(1)}.attn.q_bias"] = q_bias
            out.state_dict[f"visual_encoder.blocks.{fused.group(1)}.attn.v_bias"] = v_bias
            continue
        target = key
        for pattern, replacement in rules:
            if re.match(pattern, key):
                target = re.sub(pattern, replacement, key)
                break
        if key.startswith("language_model.") and llm_prefix is not None:
            out.state_dict[llm_prefix + key[len("language_model."):]] = value  # the composition's LLM backend
            continue
        if key.startswith("language_model.") or (target not in own and _is_optional(target)) \
                or (target in own and target.startswith("llm_proj.") and own[target].shape != value.shape):
            out.ignored.append(key)
            continue
        out.state_dict[target] = value
    _fit_query_tokens(out, model)
    return out


def _is_optional(target: str) -> bool:
    """Keys a model may legitimately lack: the text branch, ITC/ITM heads, projections."""
    return target.startswith(("text_embeddings.", "vision_proj.", "text_proj.", "llm_proj.", "itm_head.", "lm_head.")) \
        or target == "temp" or bool(re.match(r"^qformer\.encoder\.layer\.\d+\.(intermediate|output)\.", target))


def _fit_query_tokens(out: MappedState, model: nn.Module) -> None:
    tokens = out.state_dict.get("query_tokens")
    own = getattr(model, "query_tokens", None)
    if tokens is not None and own is not None and tokens.shape != own.shape:
        log.warning("checkpoint has %d query tokens, the model %d: keeping the model's (freshly initialised)",
                    tokens.shape[1], own.shape[1])
        out.dropped.append("query_tokens")
        del out.state_dict["query_tokens"]


# -- loading --------------------------------------------------------------------------------
def load_mapped(model: nn.Module, mapped: MappedState, where: str,
                expected: tuple[str, ...] = BLIP2_MODULES) -> Blip2LoadReport:
    """Load a translated state dict; ``missing`` lists keys under ``expected`` prefixes the
    checkpoint did not provide."""
    own = model.state_dict()
    report = Blip2LoadReport(where, ignored=list(mapped.ignored), dropped=list(mapped.dropped))
    usable = {}
    peft_names = {_without_peft(k): k for k in own}
    for key, value in mapped.state_dict.items():
        key = key if key in own else peft_names.get(_without_peft(key), key)
        if key not in own:
            report.unexpected.append(key)
            continue
        if key == "visual_encoder.pos_embed" and value.shape != own[key].shape:
            value = _resample_pos_embed(value, model)
        if value.shape != own[key].shape:
            raise CheckpointError(
                f"{where}: tensor '{key}' has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}",
                hint="the checkpoint is for other dimensions (model.vision / model.qformer / num_query_token)",
            )
        usable[key] = value.to(own[key].dtype)
    if not usable and mapped.state_dict:
        raise CheckpointError(f"{where} fills no tensor of {type(model).__name__}: {report.summary()}",
                              hint="is it a checkpoint of another model (or of this one with other dimensions)?")
    model.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable) + _tied_to(own, usable)
    report.missing = sorted(k for k in own if k.startswith(expected) and k not in usable)
    log.info(report.summary())
    return report


def _tied_to(own: dict[str, torch.Tensor], usable: dict[str, torch.Tensor]) -> list[str]:
    """Names of tensors tied to a loaded one (``blip2``'s LM decoder shares the word embeddings)."""
    loaded = {own[k].data_ptr() for k in usable if own[k].numel()}
    return sorted(k for k in own if k not in usable and own[k].numel() and own[k].data_ptr() in loaded)


def _without_peft(key: str) -> str:
    """A name as it is without peft's LoRA wrapping (``base_model.model.`` prefix, ``.base_layer``), so
    an LLM saved without adapters loads into one built with them, and the other way round."""
    return key.replace("base_model.model.", "").replace(".base_layer.", ".")


def _resample_pos_embed(pos_embed: torch.Tensor, model: nn.Module) -> torch.Tensor:
    grid = model.visual_encoder.patch_embed.grid_size
    old = int(round((pos_embed.shape[1] - 1) ** 0.5))
    log.info("interpolating pos_embed from %dx%d to %dx%d patches", old, old, *grid)
    return resample_abs_pos_embed(pos_embed.float(), new_size=list(grid), old_size=[old, old],
                                  num_prefix_tokens=1, interpolation="bicubic", antialias=False)


def read_checkpoint(path_or_url: str) -> tuple[dict[str, torch.Tensor], str]:
    """Tensors of a checkpoint (``weights_only=True``); relative paths are under the cache root."""
    from mm_core.checkpoint_io import read_state_dict
    from mm_core.download import resolve_storage

    if "://" not in path_or_url:
        path_or_url = str(resolve_storage(path_or_url))
    return read_state_dict(path_or_url)


def load_lavis_checkpoint(model: nn.Module, path_or_url: str, partial: bool = False) -> Blip2LoadReport:
    """Load a LAVIS / MiniGPT4-Qwen checkpoint (``{"model": state_dict}`` or a plain state dict)
    into ``model``; ``partial`` files (a trained stage's tensors) report no missing keys."""
    state, where = read_checkpoint(path_or_url)
    return load_lavis_state_dict(model, state, where, partial)


def load_lavis_state_dict(model: nn.Module, state: dict[str, torch.Tensor], where: str = "state dict",
                          partial: bool = False) -> Blip2LoadReport:
    """Load an in-memory LAVIS / MiniGPT4-Qwen-layout state dict into ``model``."""
    return load_mapped(model, map_lavis_keys(state, model), where, expected=() if partial else BLIP2_MODULES)


def load_eva_checkpoint(model: nn.Module, path_or_url: str) -> Blip2LoadReport:
    """Load LAVIS' ``eva_vit_g.pth`` (bare EVA keys) into ``model.visual_encoder``."""
    state, where = read_checkpoint(path_or_url)
    own = model.visual_encoder.state_dict()
    mapped = MappedState()
    for key, value in state.items():
        if key in own or key == "pos_embed":
            mapped.state_dict["visual_encoder." + key] = value
        else:  # EVA-CLIP's head/norm: LAVIS drops them too
            mapped.ignored.append(key)
    return load_mapped(model, mapped, where, expected=("visual_encoder.",))


def load_hf_checkpoint(model: nn.Module, path_or_id: str) -> Blip2LoadReport:
    """Load a Hugging Face ``Blip2*`` checkpoint from a local directory (or the hub when reachable)."""
    folder = Path(path_or_id).expanduser()
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(path_or_id, allow_patterns=["*.safetensors", "*.json"]))
        except Exception as exc:
            raise CheckpointError(
                f"hf_pretrained '{path_or_id}' is not a local directory and could not be fetched: {exc}",
                hint="download the model directory (config.json + *.safetensors) and give its path",
            ) from exc
    state = _read_safetensors_dir(folder)
    from mm_blip2.hf_composite import vision_layer_norm_eps

    eps = vision_layer_norm_eps(str(folder))
    if eps is not None and hasattr(model, "ln_vision"):
        # Hugging Face's tower uses one eps for its blocks and post_layernorm (LAVIS: 1e-6 and 1e-5): follow the directory
        for module in [model.ln_vision, *model.visual_encoder.modules()]:
            if isinstance(module, nn.LayerNorm):
                module.eps = eps
    expected = BLIP2_MODULES + ((llm_prefix,) if (llm_prefix := getattr(model, "llm_state_prefix", None)) else ())
    return load_mapped(model, map_hf_keys(state, model), str(folder), expected=expected)


def _read_safetensors_dir(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    else:
        raise CheckpointError(f"{folder} holds no model.safetensors or model.safetensors.index.json",
                              hint="save the Hugging Face model with safe_serialization=True")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(str(folder / shard)))
    return state
