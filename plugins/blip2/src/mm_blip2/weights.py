"""Which weight files a BLIP-2 model reads, in which order, where they are found, and the
coverage check of the build (:class:`mm_core.weights.WeightSources`).

Order (the arch's origin's)::

    qformer_init     a local bert-base-uncased -> qformer, text branch       LAVIS init_Qformer (mm_blip2.bert_init)
    vit_pretrained   bare EVA keys (eva_vit_g.pth) -> visual_encoder        LAVIS create_eva_vit_g
    pretrained       with load_pretrained: the BLIP-2 checkpoint             load_from_pretrained
    finetuned        with load_finetuned: a trained model's file             load_checkpoint
    hf_pretrained    a Hugging Face Blip2* directory

LAVIS archs (``loading_order = "lavis"``: ``blip2_feature_extractor``, ``blip2_llm``) read
``finetuned`` *instead of* ``pretrained`` when ``load_finetuned`` is set (LAVIS'
``BaseModel.load_checkpoint_from_config``); ``minigpt4qwen`` (``"minigpt4qwen"``) reads both when both
flags are set, ``pretrained`` first, the later file overriding the earlier one key by key
(MiniGPT4-Qwen's). Key names go through the one table of :mod:`mm_blip2.checkpoints`.

Where a file is found: a URL is downloaded once into ``<cache root>/downloads`` (atomic; checked
against ``<key>_md5`` when given); a relative path is under the cache root, and when it is not
there and ``<key>_url`` is set, that URL is downloaded to it — MiniGPT4-Qwen's habit of reading
``ckpt/eva/eva_vit_g.pth`` and ``ckpt/blip2/blip2_pretrained_flant5xxl.pth`` under its cache root.

Coverage: once the files are read, every tensor is loaded from one of them, declared fresh by the
model (:meth:`~mm_blip2.models.blip2.Blip2Base.declare_weights`: ``llm_proj`` of a new composition,
LoRA adapters, an LLM built with ``random_init``), or the build stops naming the modules and the key
to set. A config that names no weight file at all (the ``tiny`` types) is random by design.
``model.allow_random_init`` (``true`` or a list of modules) opts out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from mm_core.base.model import LoadReport, config_value
from mm_core.errors import ConfigError
from mm_core.weights import WeightSources

#: What each weight key exists to fill (for the dry-run plan).
FILLS = {
    "qformer_init": "qformer (BERT's embeddings, self-attention, FFN, copied to *_query), lm_head",
    "vit_pretrained": "visual_encoder",
    "pretrained": "ln_vision, qformer, query_tokens (and whatever else the BLIP-2 checkpoint holds)",
    "finetuned": "the tensors it holds, overriding earlier files key by key",
    "hf_pretrained": "visual_encoder, ln_vision, qformer, query_tokens, projections",
}
_BLIP2 = "model.pretrained (a BLIP-2 checkpoint) with model.load_pretrained: true"
#: Module -> the key that fills it, for the coverage error's hint.
HINTS = {"visual_encoder": "model.vit_pretrained (EVA ViT-g, eva_vit_g.pth)", "ln_vision": _BLIP2, "qformer": _BLIP2,
         "query_tokens": _BLIP2, "text_embeddings": _BLIP2, "vision_proj": _BLIP2, "text_proj": _BLIP2,
         "temp": _BLIP2, "itm_head": _BLIP2, "lm_head": _BLIP2 + " (a Hugging Face Blip2ForImageTextRetrieval has no "
                                                              "LM head and no temp: list them in model.allow_random_init)",
         "llm": "model.llm.model (the LLM's weights)",
         "llm_proj": "model.finetuned with model.load_finetuned: true (a trained model.pth)"}


@dataclass(frozen=True)
class WeightFile:
    """One file to read: its config key and the location the config gives."""

    key: str
    location: str


def weight_files(cfg: DictConfig, order: str) -> list[WeightFile]:
    """The files ``cfg`` names, in load order (see the module docstring)."""
    files = []
    if config_value(cfg, "qformer_init", None):
        files.append(WeightFile("qformer_init", str(cfg.qformer_init)))
    if config_value(cfg, "vit_pretrained", None):
        files.append(WeightFile("vit_pretrained", str(cfg.vit_pretrained)))
    pretrained = bool(config_value(cfg, "load_pretrained", True)) and bool(config_value(cfg, "pretrained", None))
    finetuned = bool(config_value(cfg, "load_finetuned", False))
    if finetuned and not config_value(cfg, "finetuned", None):
        raise ConfigError("model.load_finetuned is true but model.finetuned names no file",
                          hint="set model.finetuned to the trained weights, or model.load_finetuned: false")
    if finetuned and order == "lavis":
        pretrained = False  # LAVIS: the finetuned model replaces the pretrained one
    if pretrained:
        files.append(WeightFile("pretrained", str(cfg.pretrained)))
    if finetuned:
        files.append(WeightFile("finetuned", str(cfg.finetuned)))
    if config_value(cfg, "hf_pretrained", None):
        files.append(WeightFile("hf_pretrained", str(cfg.hf_pretrained)))
    return files


def locate(cfg: DictConfig, key: str) -> str:
    """A local path for the file of config key ``key``, downloading it when the config says how."""
    from mm_core.download import download_to_cache, ensure_file, resolve_storage

    value, md5 = str(cfg[key]), config_value(cfg, f"{key}_md5", None)
    if "://" in value:
        return str(download_to_cache(value, md5))
    path = resolve_storage(value)
    url = config_value(cfg, f"{key}_url", None)
    if not path.exists() and url:
        ensure_file(str(url), path, md5)
    return str(path)


def plan(cfg: DictConfig, order: str) -> list[tuple[str, str]]:
    """(what it fills, where) per file, in load order, without reading or downloading anything."""
    from mm_core.download import cache_root, resolve_storage

    rows = []
    for file in weight_files(cfg, order):
        where = file.location
        if file.key not in ("hf_pretrained", "qformer_init") and "://" not in where:
            path = resolve_storage(where)
            url = config_value(cfg, f"{file.key}_url", None)
            state = "present" if path.exists() else (f"will download {url}" if url else "MISSING")
            where = f"{path} [{state}]"
        elif "://" in where:
            where = f"{where} [cached in {cache_root() / 'downloads'}]"
        rows.append((f"{FILLS[file.key]} ({file.key})", where))
    return rows


def load_weights(model: Any, cfg: DictConfig) -> list[LoadReport]:
    """Read the files ``cfg`` names into ``model`` in its arch's order, record where every tensor
    came from in ``model.weight_sources`` and stop when a part would silently stay random."""
    from mm_blip2 import checkpoints

    sources = WeightSources()
    model.weight_sources = sources
    model.declare_weights(sources, cfg)
    reports = []
    for file in weight_files(cfg, model.loading_order):
        if file.key == "qformer_init":
            from mm_blip2.bert_init import load_bert_init

            reports.append(load_bert_init(model, file.location, sources))
            continue
        if file.key == "hf_pretrained":
            report = checkpoints.load_hf_checkpoint(model, file.location)
        elif file.key == "vit_pretrained":
            report = checkpoints.load_eva_checkpoint(model, locate(cfg, file.key))
        else:
            report = checkpoints.load_lavis_checkpoint(model, locate(cfg, file.key),
                                                       partial=file.key == "finetuned")
        sources.loaded(report.loaded, report.path)
        reports.append(report)
    keys = list(model.state_dict())
    if not sources.files:
        sources.fresh([k for k in keys if k not in sources.sources], "random init (the config names no weight file)")
    arch = f"model {config_value(cfg, 'arch', type(model).__name__)}/{config_value(cfg, 'model_type', '?')}"
    sources.check(keys, config_value(cfg, "allow_random_init", None), HINTS, what=arch)
    return reports

