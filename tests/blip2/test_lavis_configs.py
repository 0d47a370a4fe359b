"""LAVIS' published BLIP-2 / InstructBLIP project configs (lavis/projects/blip2/..., lavis/projects/instructblip/...)
pass `mmrun config` and `mmrun --dry-run` unchanged. Each config below is written here with the same keys,
values and nesting as LAVIS' file (the files themselves are not copied; comments are left out)."""

from __future__ import annotations

import pytest
import yaml

from ..conftest import mm_env, run_mmrun

pytestmark = pytest.mark.slow  # two mmrun processes per file

LAVIS_RUN = {"device": "cuda", "world_size": 1, "dist_url": "env://", "distributed": True}
BLIP2_PRETRAINED = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/blip2_pretrained.pth"
KARPATHY = "https://storage.googleapis.com/sfr-vision-language-research/datasets/coco_karpathy_{}.json"
KARPATHY_MD5 = {"train": "aa31ac474cf6250ebb81d18348a07ed8", "val": "b273847456ef5580e33713b1f7de52a0",
                "test": "3ff34b0ef2db02d01c37399f6a2a6cd1"}


def processors(vis: dict, text: dict) -> dict:
    return {"vis_processor": vis, "text_processor": text}


def eval_run(task: str, output_dir: str, **extra) -> dict:
    return {"task": task, "batch_size_train": 16, "batch_size_eval": 64, "num_workers": 4, "max_len": 10,
            "min_len": 1, "num_beams": 5, "inference_method": "generate", "prompt": "Question: {} Short answer:",
            "seed": 42, "output_dir": output_dir, "evaluate": True, "test_splits": ["val"], **LAVIS_RUN, **extra}


def vqa_eval(arch: str, model_type: str, dataset: str, task: str, output_dir: str, **more) -> dict:
    eval_proc = processors({"eval": {"name": "blip_image_eval", "image_size": 224}},
                           {"eval": {"name": "blip_question"}})
    block = {**more.pop("dataset_extra", {}), **eval_proc, **more.pop("dataset_after", {})}
    return {"model": {"arch": arch, "model_type": model_type, "use_grad_checkpoint": False, **more.pop("model", {})},
            "datasets": {dataset: block}, "run": eval_run(task, output_dir, **more.pop("run", {}))}


def caption_eval(model_type: str, output_dir: str) -> dict:
    return {
        "model": {"arch": "blip2_opt", "model_type": model_type, "use_grad_checkpoint": False},
        "datasets": {"coco_caption": processors({"eval": {"name": "blip_image_eval", "image_size": 364}},
                                                {"eval": {"name": "blip_caption"}})},
        "run": {"task": "captioning", "batch_size_train": 32, "batch_size_eval": 16, "num_workers": 4, "max_len": 30,
                "min_len": 8, "num_beams": 5, "seed": 42, "output_dir": output_dir, "evaluate": True,
                "test_splits": ["test"], **LAVIS_RUN},
    }


def instructblip_caption(arch: str, model_type: str, output_dir: str) -> dict:
    annotations = {split: {"url": KARPATHY.format(split), "md5": KARPATHY_MD5[split],
                           "storage": f"coco/annotations/coco_karpathy_{split}.json"} for split in ("train", "val", "test")}
    return {
        "model": {"arch": arch, "model_type": model_type, "load_pretrained": True, "prompt": "A short image caption."},
        "datasets": {"coco_caption": {
            "data_type": "images",
            **processors({"train": {"name": "clip_image_train", "image_size": 224},
                          "eval": {"name": "clip_image_eval", "image_size": 224}},
                         {"train": {"name": "blip_caption"}, "eval": {"name": "blip_caption"}}),
            "build_info": {"annotations": annotations, "images": {"storage": "/export/share/datasets/vision/coco/images"}},
        }},
        "run": {"task": "captioning", "lr_sched": "linear_warmup_cosine_lr", "init_lr": 1e-5, "min_lr": 0,
                "warmup_lr": 1e-8, "warmup_steps": 1000, "weight_decay": 0.05, "max_epoch": 1, "batch_size_train": 16,
                "batch_size_eval": 1, "num_workers": 8, "accum_grad_iters": 1, "max_len": 80, "min_len": 10,
                "num_beams": 5, "inference_method": "generate", "length_penalty": 1.0, "seed": 42,
                "output_dir": output_dir, "amp": True, "resume_ckpt_path": None, "evaluate": True,
                "valid_splits": ["test"], **LAVIS_RUN, "save_freq": -1, "val_freq": 1},
    }


def pretrain_stage2() -> dict:
    return {
        "model": {"arch": "blip2_opt", "model_type": "pretrain_opt2.7b", "load_pretrained": True,
                  "pretrained": BLIP2_PRETRAINED, "freeze_vit": True},
        "datasets": {
            "coco_caption": processors({"train": {"name": "blip2_image_train", "image_size": 224}},
                                       {"train": {"name": "blip_caption"}}),
            "vg_caption": processors({"train": {"name": "blip_image_train", "image_size": 224}},
                                     {"train": {"name": "blip_caption"}}),
        },
        "run": {"task": "image_text_pretrain", "lr_sched": "linear_warmup_cosine_lr", "init_lr": 1e-4, "min_lr": 1e-5,
                "warmup_lr": 1e-6, "weight_decay": 0.05, "max_epoch": 10, "batch_size_train": 64, "batch_size_eval": 64,
                "num_workers": 4, "warmup_steps": 2000, "seed": 42, "output_dir": "output/BLIP2/Pretrain_stage2",
                "amp": True, "resume_ckpt_path": None, "evaluate": False, "train_splits": ["train"], **LAVIS_RUN},
    }


def caption_coco_ft() -> dict:
    return {
        "model": {"arch": "blip2_opt", "model_type": "caption_coco_opt2.7b", "load_finetuned": False,
                  "use_grad_checkpoint": True, "freeze_vit": False},
        "datasets": {"coco_caption": processors(
            {"train": {"name": "blip2_image_train", "image_size": 364}, "eval": {"name": "blip_image_eval", "image_size": 364}},
            {"train": {"name": "blip_caption", "prompt": "a photo of "}, "eval": {"name": "blip_caption"}})},
        "run": {"task": "captioning", "lr_sched": "linear_warmup_cosine_lr", "init_lr": 1e-5, "min_lr": 0,
                "warmup_lr": 1e-8, "warmup_steps": 1000, "weight_decay": 0.05, "max_epoch": 5, "batch_size_train": 16,
                "batch_size_eval": 8, "num_workers": 4, "accum_grad_iters": 1, "max_len": 30, "min_len": 8,
                "num_beams": 5, "seed": 42, "output_dir": "output/BLIP2/Caption_coco", "amp": True,
                "resume_ckpt_path": None, "evaluate": False, "train_splits": ["train"], "valid_splits": ["val"],
                "test_splits": ["test"], **LAVIS_RUN},
    }


#: LAVIS file -> (config, the arch / type and the datasets the dry-run plan must name)
CONFIGS = {
    "blip2/train/pretrain_stage2.yaml": (pretrain_stage2(), "blip2_opt / pretrain_opt2.7b", ["coco_caption", "vg_caption"]),
    "blip2/train/caption_coco_ft.yaml": (caption_coco_ft(), "blip2_opt / caption_coco_opt2.7b", ["coco_caption"]),
    "blip2/eval/caption_coco_opt2.7b_eval.yaml": (caption_eval("caption_coco_opt2.7b", "output/BLIP2/Caption_coco_opt2.7b"),
                                                  "blip2_opt / caption_coco_opt2.7b", ["coco_caption"]),
    "blip2/eval/caption_coco_opt6.7b_eval.yaml": (caption_eval("caption_coco_opt6.7b", "output/BLIP2/Caption_coco_opt6.7b"),
                                                  "blip2_opt / caption_coco_opt6.7b", ["coco_caption"]),
    "blip2/eval/vqav2_zeroshot_flant5xl_eval.yaml": (
        vqa_eval("blip2_t5", "pretrain_flant5xl", "coco_vqa", "vqa", "output/BLIP2/VQA", dataset_extra={"type": "eval"}),
        "blip2_t5 / pretrain_flant5xl", ["coco_vqa"]),
    "blip2/eval/vqav2_zeroshot_opt_eval.yaml": (
        vqa_eval("blip2_opt", "pretrain_opt2.7b", "coco_vqa", "vqa", "output/BLIP2/VQA", dataset_extra={"type": "eval"}),
        "blip2_opt / pretrain_opt2.7b", ["coco_vqa"]),
    "blip2/eval/okvqa_zeroshot_flant5xl_eval.yaml": (
        vqa_eval("blip2_t5", "pretrain_flant5xl", "ok_vqa", "vqa", "output/BLIP2/OKVQA", model={"apply_lemmatizer": True},
                 run={"test_splits": ["test"]}), "blip2_t5 / pretrain_flant5xl", ["ok_vqa"]),
    "blip2/eval/gqa_zeroshot_flant5xl_eval.yaml": (
        vqa_eval("blip2_t5", "pretrain_flant5xl", "gqa", "gqa", "output/BLIP2/GQA", dataset_extra={"type": "balanced_testdev"},
                 dataset_after={"build_info": {"images": {"storage": "/export/share/datasets/vision/GQA/images/"}}}),
        "blip2_t5 / pretrain_flant5xl", ["gqa"]),
    "instructblip/caption_coco_vicuna7b_eval_test.yaml": (
        instructblip_caption("blip2_vicuna_instruct", "vicuna7b", "output/instructblip/coco_captioning_vicuna7b_test/"),
        "blip2_vicuna_instruct / vicuna7b", ["coco_caption"]),
    "instructblip/caption_coco_flant5xl_eval_test.yaml": (
        instructblip_caption("blip2_t5_instruct", "flant5xl", "output/instructblip/coco_captioning_flant5xl_test/"),
        "blip2_t5_instruct / flant5xl", ["coco_caption"]),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_lavis_project_config_is_accepted_unchanged(name, tmp_path):
    config, model, datasets = CONFIGS[name]
    path = tmp_path / name.replace("/", "_")
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = mm_env(MM_CACHE_ROOT=str(tmp_path / "cache"))
    merged = run_mmrun(["config", "--config", str(path)], env)
    assert merged.returncode == 0, merged.stderr
    arch, model_type = model.split(" / ")
    assert f"arch: {arch}" in merged.stdout and f"model_type: {model_type}" in merged.stdout
    plan = run_mmrun(["--config", str(path), "--dry-run"], env)
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr
    assert f"model: {model}" in plan.stdout
    for dataset in datasets:
        assert f"dataset: {dataset}" in plan.stdout
