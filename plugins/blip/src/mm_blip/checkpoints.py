"""Loading LAVIS' and Hugging Face's BLIP checkpoints, and which files a BLIP model reads.

LAVIS' files (``model_base_capfilt_large.pth``, ``model_large_caption.pth``,
``model_base_vqa_capfilt_large.pth``, ``blip_coco_caption_base.pth``, ...) are ``{"model": state_dict}``
in LAVIS' names; :data:`KEY_TABLE` is the one definition of LAVIS -> mm names (mm's names are
transformers' ``Blip*`` ones; first matching pattern wins; ``N`` is a block index):

==========================================  ==============================================
LAVIS                                       mm / transformers
==========================================  ==============================================
``visual_encoder.cls_token``                ``vision_model.embeddings.class_embedding``
``visual_encoder.pos_embed``                ``vision_model.embeddings.position_embedding``
                                            (bicubic-resized to another image size, as LAVIS)
``visual_encoder.patch_embed.proj.*``       ``vision_model.embeddings.patch_embedding.*``
``visual_encoder.blocks.N.norm1.*``         ``vision_model.encoder.layers.N.layer_norm1.*``
``visual_encoder.blocks.N.attn.qkv.*``      ``vision_model.encoder.layers.N.self_attn.qkv.*``
``visual_encoder.blocks.N.attn.proj.*``     ``vision_model.encoder.layers.N.self_attn.projection.*``
``visual_encoder.blocks.N.norm2.*``         ``vision_model.encoder.layers.N.layer_norm2.*``
``visual_encoder.blocks.N.mlp.fc1/fc2.*``   ``vision_model.encoder.layers.N.mlp.fc1/fc2.*``
``visual_encoder.norm.*``                   ``vision_model.post_layernorm.*``
``text_encoder.*``                          ``text_encoder.*`` (same BERT names)
``text_decoder.*``                          ``text_decoder.*`` (``bert.*``, ``cls.*``)
``vision_proj.*``, ``text_proj.*``,         unchanged
``itm_head.*``, ``temp``
``visual_encoder_m.*``                      ``vision_model_m.*`` (as ``visual_encoder.*``)
``text_encoder_m.*``, ``vision_proj_m.*``,   unchanged (``blip_retrieval``'s momentum encoders)
``text_proj_m.*``
``image_queue``, ``text_queue``,             unchanged (``blip_retrieval``'s ITC queues)
``idx_queue``, ``queue_ptr``
``ptr_queue`` (BLIP's own name)             ``queue_ptr``
``text_decoder_m.*``                        ignored (no mm arch has a momentum decoder)
``*.embeddings.position_ids``               ignored (a constant transformers builds itself)
==========================================  ==============================================

A key whose first name is a part this model does not have (``text_decoder`` in a VQA-pretrained
file read by the feature extractor, ``itm_head`` read by the captioner, the momentum encoders and queues
read by any arch but ``blip_retrieval``) is ignored: BLIP's files
hold more than each arch uses, as LAVIS' non-strict loads assume. A Hugging Face ``Salesforce/blip-*``
directory (``model.safetensors`` as ``save_pretrained`` writes it) is already in mm's names.

Which files, in LAVIS' order (``BaseModel.load_checkpoint_from_config``): ``finetuned`` when
``load_finetuned`` is set, else ``pretrained`` when ``load_pretrained`` (default true) is set; then
``hf_pretrained``. URLs are downloaded once into ``<cache root>/downloads``. Afterwards every tensor
must have come from a file (``mm_core.weights.WeightSources``), else the build stops naming the
modules; ``model.allow_random_init`` opts out; a config naming no file (``tiny``) is random by design.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from mm_core.base.model import LoadReport, config_value
from mm_core.errors import CheckpointError, ConfigError
from mm_core.weights import WeightSources

log = logging.getLogger(__name__)

_V = r"vision_model\1."  # \1: LAVIS' "_m" of the momentum ViT (``visual_encoder_m``), or nothing
#: LAVIS key pattern -> mm key (``re.sub`` replacement); ``None``: ignored by design.
KEY_TABLE: list[tuple[str, str | None]] = [
    (r"^visual_encoder(_m)?\.cls_token$", _V + "embeddings.class_embedding"),
    (r"^visual_encoder(_m)?\.pos_embed$", _V + "embeddings.position_embedding"),
    (r"^visual_encoder(_m)?\.patch_embed\.proj\.", _V + "embeddings.patch_embedding."),
    (r"^visual_encoder(_m)?\.blocks\.(\d+)\.norm1\.", _V + r"encoder.layers.\2.layer_norm1."),
    (r"^visual_encoder(_m)?\.blocks\.(\d+)\.attn\.qkv\.", _V + r"encoder.layers.\2.self_attn.qkv."),
    (r"^visual_encoder(_m)?\.blocks\.(\d+)\.attn\.proj\.", _V + r"encoder.layers.\2.self_attn.projection."),
    (r"^visual_encoder(_m)?\.blocks\.(\d+)\.norm2\.", _V + r"encoder.layers.\2.layer_norm2."),
    (r"^visual_encoder(_m)?\.blocks\.(\d+)\.mlp\.", _V + r"encoder.layers.\2.mlp."),
    (r"^visual_encoder(_m)?\.norm\.", _V + "post_layernorm."),
    (r"^text_decoder_m\.", None),
    (r"^(ptr_queue|queue_ptr)$", "queue_ptr"),
    (r"\.embeddings\.position_ids$", None),
]
#: Parts of BLIP models (top-level names); a key under one the model lacks is ignored, not unexpected.
BLIP_PARTS = ("vision_model", "text_encoder", "text_decoder", "vision_proj", "text_proj", "itm_head", "temp",
              "vision_model_m", "text_encoder_m", "vision_proj_m", "text_proj_m", "image_queue", "text_queue",
              "idx_queue", "queue_ptr")
FILLS = {"pretrained": "the parts of the BLIP checkpoint this arch has (LAVIS' pretrained model)",
         "finetuned": "the parts of the fine-tuned checkpoint (instead of pretrained, as LAVIS)",
         "hf_pretrained": "a Hugging Face Salesforce/blip-* directory (save_pretrained layout)"}
_FILE = "model.finetuned with model.load_finetuned: true, or model.pretrained (a LAVIS BLIP checkpoint)"
HINTS = {part: _FILE for part in BLIP_PARTS}


@dataclass
class MappedState:
    """A state dict in this model's names plus the keys set aside by design."""

    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


@dataclass
class BlipLoadReport(LoadReport):
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = super().summary()
        return text + (f"; {len(self.ignored)} ignored (not used by this model)" if self.ignored else "")


def lavis_to_mm(key: str) -> str | None:
    """The mm name of a LAVIS key through :data:`KEY_TABLE` (``None``: ignored by design)."""
    for pattern, target in KEY_TABLE:
        if re.search(pattern, key):
            return None if target is None else re.sub(pattern, target, key)
    return key


def map_lavis_keys(state: dict[str, torch.Tensor], model: nn.Module) -> MappedState:
    """Translate a LAVIS (or mm / Hugging Face) state dict to ``model``'s names."""
    own_parts = {k.split(".")[0] for k in model.state_dict()}
    out = MappedState()
    for key, value in state.items():
        target = lavis_to_mm(key)
        if target is None or (target.split(".")[0] in BLIP_PARTS and target.split(".")[0] not in own_parts):
            out.ignored.append(key)
            continue
        out.state_dict[target] = value
    return out


def resize_pos_embed(pos_embed: torch.Tensor, num_patches: int) -> torch.Tensor:
    """LAVIS' ``interpolate_pos_embed``: the patch grid resized bicubically, the [CLS] position kept."""
    old = int(round((pos_embed.shape[1] - 1) ** 0.5))
    new = int(round(num_patches ** 0.5))
    log.info("interpolating the position embedding from %dx%d to %dx%d patches", old, old, new, new)
    grid = pos_embed[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    grid = torch.nn.functional.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return torch.cat([pos_embed[:, :1], grid.permute(0, 2, 3, 1).flatten(1, 2).to(pos_embed.dtype)], dim=1)


def load_mapped(model: nn.Module, mapped: MappedState, where: str) -> BlipLoadReport:
    """Load a translated state dict into ``model``; shapes must match (the position embedding is resized)."""
    own = model.state_dict()
    report = BlipLoadReport(where, ignored=list(mapped.ignored))
    usable = {}
    for key, value in mapped.state_dict.items():
        if key not in own:
            report.unexpected.append(key)
            continue
        if key.endswith("embeddings.position_embedding") and value.shape != own[key].shape:
            value = resize_pos_embed(value, own[key].shape[1] - 1)
        if value.shape != own[key].shape:
            raise CheckpointError(
                f"{where}: tensor '{key}' has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}",
                hint=f"model.queue_size must equal the file's queue length ({value.shape[-1]})" if key.endswith("_queue")
                else "the checkpoint is for other dimensions (model.vit_type / model.vision / model.text)")
        usable[key] = value.to(own[key].dtype)
    if not usable:
        raise CheckpointError(f"{where} fills no tensor of {type(model).__name__}: {report.summary()}",
                              hint="is it a checkpoint of another model (a BLIP-2 file, say)?")
    model.load_state_dict(usable, strict=False)
    loaded_ptrs = {own[k].data_ptr() for k in usable if own[k].numel()}
    tied = [k for k in own if k not in usable and own[k].numel() and own[k].data_ptr() in loaded_ptrs]
    report.loaded = sorted(usable) + sorted(tied)
    report.missing = sorted(k for k in own if k not in report.loaded)
    log.info(report.summary())
    return report


def read_checkpoint(path_or_url: str) -> tuple[dict[str, torch.Tensor], str]:
    """Tensors of a ``.pth`` / ``.safetensors`` file (``weights_only=True``; ``{"model": ...}`` unwrapped),
    or of a directory's ``model.safetensors`` (a Hugging Face ``save_pretrained`` one may be sharded)."""
    from mm_core.checkpoint_io import read_state_dict

    folder = Path(path_or_url).expanduser()
    if folder.is_dir() and (folder / "model.safetensors.index.json").is_file():
        return _read_hf_dir(folder), str(folder)
    return read_state_dict(path_or_url)  # a file, or a directory's model.safetensors


def _read_hf_dir(folder: Path) -> dict[str, torch.Tensor]:
    import json

    from safetensors.torch import load_file

    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(str(folder / shard)))
    return state


def load_checkpoint_file(model: nn.Module, path_or_url: str) -> BlipLoadReport:
    """Load a LAVIS BLIP file or a Hugging Face BLIP directory into ``model``."""
    state, where = read_checkpoint(path_or_url)
    return load_mapped(model, map_lavis_keys(state, model), where)


# -- which files, coverage --------------------------------------------------------------------
def weight_files(cfg: DictConfig) -> list[tuple[str, str]]:
    """(config key, location) of the files ``cfg`` names, in LAVIS' order."""
    files = []
    if config_value(cfg, "load_finetuned", False):
        if not config_value(cfg, "finetuned", None):
            raise ConfigError("model.load_finetuned is true but model.finetuned names no file",
                              hint="set model.finetuned to the trained weights, or model.load_finetuned: false")
        files.append(("finetuned", str(cfg.finetuned)))
    elif config_value(cfg, "load_pretrained", True) and config_value(cfg, "pretrained", None):
        files.append(("pretrained", str(cfg.pretrained)))
    if config_value(cfg, "hf_pretrained", None):
        files.append(("hf_pretrained", str(cfg.hf_pretrained)))
    return files


def locate(location: str, md5: str | None = None) -> str:
    """A local path: URLs are downloaded once into the cache, relative paths are under the cache root."""
    from mm_core.download import download_to_cache, resolve_storage

    if "://" in location:
        return str(download_to_cache(location, md5))
    return str(resolve_storage(location))


def hf_directory(location: str) -> str:
    """A local Hugging Face directory, or a hub id (``Salesforce/blip-image-captioning-base``) fetched
    into (or found in) the Hugging Face cache."""
    if Path(location).expanduser().exists():
        return str(Path(location).expanduser())
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(location, allow_patterns=["*.safetensors", "*.json"])
    except Exception as exc:
        raise CheckpointError(f"model.hf_pretrained '{location}' is not a local directory and could not be fetched: "
                              f"{type(exc).__name__}: {exc}",
                              hint="download the model directory (config.json + *.safetensors) and give its path") from exc


def plan(cfg: DictConfig) -> list[tuple[str, str]]:
    """(what it fills, where) per file, without reading or downloading anything."""
    import urllib.parse

    from mm_core.download import cache_root, resolve_storage

    rows = []
    for key, where in weight_files(cfg):
        if key == "hf_pretrained":
            where = f"{where} [{'present' if Path(where).expanduser().is_dir() else 'Hugging Face hub id'}]"
        elif "://" in where:
            cached = cache_root() / "downloads" / Path(urllib.parse.urlparse(where).path).name
            where = f"{where} [{'present' if cached.is_file() else 'will download'}: {cached}]"
        else:
            path = resolve_storage(where)
            where = f"{path} [{'present' if path.exists() else 'MISSING'}]"
        rows.append((f"{FILLS[key]} ({key})", where))
    return rows


def load_weights(model: Any, cfg: DictConfig) -> list[BlipLoadReport]:
    """Read the files ``cfg`` names into ``model``, record where each tensor came from in
    ``model.weight_sources`` and stop when a part would silently stay random."""
    sources = WeightSources()
    model.weight_sources = sources
    model.declare_weights(sources, cfg)
    reports = []
    for key, location in weight_files(cfg):
        path = hf_directory(location) if key == "hf_pretrained" else locate(location, config_value(cfg, f"{key}_md5", None))
        report = load_checkpoint_file(model, path)
        sources.loaded(report.loaded, report.path)
        reports.append(report)
    keys = list(model.state_dict())
    if not sources.files:
        sources.fresh([k for k in keys if k not in sources.sources], "random init (the config names no weight file)")
    what = f"model {config_value(cfg, 'arch', type(model).__name__)}/{config_value(cfg, 'model_type', '?')}"
    sources.check(keys, config_value(cfg, "allow_random_init", None), HINTS, what=what)
    return reports
