"""Every model type of LAVIS' BLIP-2 LLM zoo loads from files laid out exactly as LAVIS ships them at its URLs:
``eva_vit_g.pth`` (bare EVA keys) and the type's ``pretrained`` / ``finetuned`` checkpoint (``{"model": ...}``,
LAVIS' key names, its projection as ``opt_proj`` / ``t5_proj`` / ``llm_proj``), placed where the URL downloads to.
The image tokens are then checked against an independent forward pass (tests/blip2/lavis_reference.py) —
with the instruction in the Q-Former for InstructBLIP. Tiny tensors; the LLM is mm-plugin-qwen-llm's tiny one."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import lavis_reference as ref
import pytest
import torch
from omegaconf import OmegaConf

from mm_core.config.loader import load_model_defaults
from mm_core.registry import get_registry

pytestmark = pytest.mark.slow

REF_DIMS = {
    "image_size": 28, "num_query_token": 4, "cross_attention_freq": 2, "vit_precision": "fp32",
    "vision": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 14, "mlp_ratio": 2.0},
    "qformer": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                "vocab_size": 142, "max_position_embeddings": 64},
}
#: arch -> (LAVIS' name of its projection, flat LLM key, tiny LLM of mm-plugin-qwen-llm)
ARCHS = {"blip2_opt": ("opt_proj", "opt_model", "tiny_opt"), "blip2_t5": ("t5_proj", "t5_model", "tiny_flan_t5"),
         "blip2_vicuna_instruct": ("llm_proj", "llm_model", "tiny_llama"),
         "blip2_t5_instruct": ("t5_proj", "t5_model", "tiny_flan_t5")}
TYPES = [("blip2_opt", t) for t in ("pretrain_opt2.7b", "pretrain_opt6.7b", "caption_coco_opt2.7b", "caption_coco_opt6.7b")] \
    + [("blip2_t5", t) for t in ("pretrain_flant5xl", "pretrain_flant5xxl", "caption_coco_flant5xl")] \
    + [("blip2_vicuna_instruct", t) for t in ("vicuna7b", "vicuna13b")] \
    + [("blip2_t5_instruct", t) for t in ("flant5xl", "flant5xxl")]


def downloaded(root: Path, url: str) -> Path:
    """Where mm keeps a file of ``url`` once downloaded (``<cache root>/downloads/<name>``)."""
    return root / "downloads" / Path(urlparse(url).path).name


def lavis_files(root: Path, arch: str, model_type: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Write the type's files at its URLs' download places; returns (the type's defaults, the state dict)."""
    defaults = load_model_defaults(arch, model_type).model
    assert str(defaults.pretrained).startswith("https://storage.googleapis.com/sfr-vision-language-research/LAVIS/")
    sd = ref.lavis_state_dict(seed=11)
    g = torch.Generator().manual_seed(5)
    proj = ARCHS[arch][0]
    sd[f"{proj}.weight"], sd[f"{proj}.bias"] = 0.2 * torch.randn(64, 32, generator=g), 0.1 * torch.randn(64, generator=g)
    for gone in [k for k in sd if k.startswith(("vision_proj", "text_proj", "itm_head", "Qformer.cls", "temp"))]:
        del sd[gone]  # LAVIS' stage-2 models have no stage-1 heads
    (root / "downloads").mkdir(parents=True, exist_ok=True)
    tower = {k[len("visual_encoder."):]: v for k, v in sd.items() if k.startswith("visual_encoder.")}
    torch.save(tower, downloaded(root, str(defaults.vit_pretrained)))
    frozen_tower_dropped = {k: v for k, v in sd.items() if not k.startswith("visual_encoder.")}
    torch.save({"model": frozen_tower_dropped}, downloaded(root, str(defaults.pretrained)))
    if defaults.load_finetuned:  # caption_coco_*: the tower was trained, so LAVIS' runner saved it
        torch.save({"model": sd, "optimizer": {}, "config": {}, "epoch": 4}, downloaded(root, str(defaults.finetuned)))
    return defaults, sd


@pytest.mark.parametrize("arch,model_type", TYPES)
def test_type_loads_lavis_files_from_its_urls(arch, model_type, tmp_path, monkeypatch):
    monkeypatch.setenv("MM_CACHE_ROOT", str(tmp_path))
    defaults, sd = lavis_files(tmp_path, arch, model_type)
    _, llm_key, asset = ARCHS[arch]
    cfg = OmegaConf.merge(defaults, REF_DIMS, {llm_key: f"mm_qwen_llm:assets/{asset}", "tokenizer": "tiny",
                                               "llm": {"random_init": True, "dtype": "float32"}})
    model = get_registry().resolve("models", arch).from_config(cfg).eval()
    files = {k: v for k, v in model.weight_sources.sources.items() if not k.startswith("llm.")}
    read = str(downloaded(tmp_path, str(defaults.finetuned if defaults.load_finetuned else defaults.pretrained)))
    assert files["llm_proj.weight"] == read and files["query_tokens"] == read
    assert all(not v.startswith("fresh") for v in files.values()), files
    proj = ARCHS[arch][0]
    torch.testing.assert_close(model.llm_proj.weight, sd[f"{proj}.weight"], atol=0, rtol=0)

    torch.manual_seed(0)
    image = torch.randn(2, 3, 28, 28)
    image_embeds = ref.vision(sd, image)
    instruct = getattr(model, "qformer_text_input", False)
    with torch.no_grad():
        if instruct:  # the instruction's tokens enter the Q-Former with the queries
            prompts = ["what is in the picture?", "a short caption"]
            tokens = model.qformer_tokenizer(prompts, padding="longest", return_tensors="pt")
            ours = model.encode_images(image, prompts)
            queries = ref.qformer(sd, image_embeds=image_embeds, input_ids=tokens.input_ids,
                                  text_mask=tokens.attention_mask)[:, :4]
        else:
            ours = model.encode_images(image)
            queries = ref.qformer(sd, image_embeds=image_embeds)
    expected = queries @ sd[f"{proj}.weight"].T + sd[f"{proj}.bias"]
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
