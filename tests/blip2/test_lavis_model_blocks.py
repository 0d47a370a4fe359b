"""The ``model:`` blocks of LAVIS' BLIP-2 stage-1 project files (blip2/train/pretrain_stage1.yaml,
train/retrieval_coco_ft.yaml, eval/ret_coco_eval.yaml, eval/ret_flickr_eval.yaml) merge over the
``blip2`` type defaults (LAVIS' blip2_pretrain.yaml / blip2_coco.yaml values) and plan the files LAVIS
reads, in its order; pretraining from scratch reads only the EVA tower, the rest declared fresh."""

from __future__ import annotations

import lavis_reference as ref
import pytest
import torch
from omegaconf import OmegaConf

from mm_core.config.loader import load_config, load_model_defaults
from mm_core.registry import get_registry

#: The model blocks as the four files write them (their keys and values only).
BLOCKS = {
    "pretrain_stage1": {"arch": "blip2", "model_type": "pretrain", "load_pretrained": False, "freeze_vit": True},
    "retrieval_coco_ft": {"arch": "blip2", "model_type": "coco", "load_pretrained": True, "load_finetuned": False,
                          "freeze_vit": False},
    "ret_coco_eval": {"arch": "blip2", "model_type": "coco", "use_grad_checkpoint": False},
    "ret_flickr_eval": {"arch": "blip2", "model_type": "coco", "use_grad_checkpoint": False},
}
PLANNED = {
    "pretrain_stage1": ["vit_pretrained"],
    "retrieval_coco_ft": ["vit_pretrained", "pretrained"],
    "ret_coco_eval": ["vit_pretrained", "finetuned"],
    "ret_flickr_eval": ["vit_pretrained", "finetuned"],
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_lavis_model_block_merges_and_plans_lavis_files(name):
    model = load_config({"model": BLOCKS[name]}).config.model
    lavis_defaults = {"pretrain": {"image_size": 224, "vit_precision": "fp16", "freeze_vit": True,
                                   "use_grad_checkpoint": False},
                      "coco": {"image_size": 364, "vit_precision": "fp32", "freeze_vit": False,
                               "use_grad_checkpoint": True}}[model.model_type]
    for key, value in {**lavis_defaults, **BLOCKS[name]}.items():
        assert model[key] == value, key
    assert model.num_query_token == 32 and model.drop_path_rate == 0
    plan = get_registry().resolve("models", "blip2").weights_plan(model)
    assert [row[0].rsplit("(", 1)[1].rstrip(")") for row in plan] == PLANNED[name]


def test_pretraining_from_scratch_declares_everything_but_the_tower_fresh(tmp_path):
    sd = ref.lavis_state_dict(seed=1)
    eva = {k[len("visual_encoder."):]: v for k, v in sd.items() if k.startswith("visual_encoder.")}
    torch.save(eva, tmp_path / "eva_vit_g.pth")
    cfg = load_model_defaults("blip2", "tiny").model
    OmegaConf.update(cfg, "vit_pretrained", str(tmp_path / "eva_vit_g.pth"), force_add=True)
    model = get_registry().resolve("models", "blip2").from_config(cfg)
    sources = model.weight_sources.sources
    assert all(v == str(tmp_path / "eva_vit_g.pth") for k, v in sources.items() if k.startswith("visual_encoder."))
    rest = {v for k, v in sources.items() if not k.startswith("visual_encoder.")}
    assert rest == {"fresh: random init (load_pretrained: false, stage-1 pretraining from scratch)"}
