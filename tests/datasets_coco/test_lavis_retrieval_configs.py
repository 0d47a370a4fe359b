"""LAVIS' BLIP-2 stage-1 and retrieval project files pass `mmrun config` and `mmrun --dry-run`
unchanged. The YAML below has the keys, values and nesting of salesforce/LAVIS'
lavis/projects/blip2/{train/pretrain_stage1, train/retrieval_coco_ft, eval/ret_coco_eval,
eval/ret_flickr_eval}.yaml (without their comments); every `run:` key is
one mm reads or refuses, since config validation rejects unknown keys."""

from __future__ import annotations

import os

import pytest

PRETRAIN_STAGE1 = """\
model:
  arch: blip2
  model_type: pretrain
  load_pretrained: False
  freeze_vit: True

datasets:
  coco_caption:
    vis_processor:
        train:
          name: "blip2_image_train"
          image_size: 224
    text_processor:
        train:
          name: "blip_caption"
  vg_caption:
    vis_processor:
        train:
          name: "blip_image_train"
          image_size: 224
    text_processor:
        train:
          name: "blip_caption"

run:
  task: image_text_pretrain
  lr_sched: "linear_warmup_cosine_lr"
  init_lr: 1e-4
  min_lr: 1e-5
  warmup_lr: 1e-6

  weight_decay: 0.05
  max_epoch: 10
  batch_size_train: 100
  batch_size_eval: 64
  num_workers: 4
  warmup_steps: 5000

  seed: 42
  output_dir: "output/BLIP2/Pretrain_stage1"

  amp: True
  resume_ckpt_path: null

  evaluate: False
  train_splits: ["train"]

  device: "cuda"
  world_size: 1
  dist_url: "env://"
  distributed: True
"""

RETRIEVAL_COCO_FT = """\
model:
  arch: blip2
  model_type: coco
  load_pretrained: True
  load_finetuned: False
  freeze_vit: False

datasets:
  coco_retrieval:
    vis_processor:
        train:
          name: "blip2_image_train"
          image_size: 364
        eval:
          name: "blip_image_eval"
          image_size: 364
    text_processor:
        train:
          name: "blip_caption"
        eval:
          name: "blip_caption"
    build_info:
        images:
            storage: '/export/share/datasets/vision/coco/images/'

run:
  task: retrieval
  lr_sched: "linear_warmup_cosine_lr"
  init_lr: 1e-5
  min_lr: 0
  warmup_lr: 1e-8
  warmup_steps: 1000
  weight_decay: 0.05
  max_epoch: 5
  batch_size_train: 14
  batch_size_eval: 16
  lr_layer_decay: 0.95
  num_workers: 4
  accum_grad_iters: 1

  seed: 42
  output_dir: "output/BLIP2/Retrieval_coco"

  amp: True
  resume_ckpt_path: null

  evaluate: False
  train_splits: ["train"]
  valid_splits: ["test"]
  k_test: 128

  device: "cuda"
  world_size: 1
  dist_url: "env://"
  distributed: True
  use_dist_eval_sampler: False
"""

RET_COCO_EVAL = """\
model:
  arch: blip2
  model_type: coco
  use_grad_checkpoint: False

datasets:
  coco_retrieval:
    vis_processor:
        train:
          name: "blip_image_train"
          image_size: 364
        eval:
          name: "blip_image_eval"
          image_size: 364
    text_processor:
        train:
          name: "blip_caption"
        eval:
          name: "blip_caption"
    build_info:
        images:
            storage: '/export/share/datasets/vision/coco/images/'
run:
  task: retrieval

  num_workers: 4
  batch_size_train: 16
  batch_size_eval: 32

  train_splits: ["train"]
  valid_splits: ["val"]
  test_splits: ["test"]

  device: "cuda"
  world_size: 1
  dist_url: "env://"
  distributed: True
  use_dist_eval_sampler: False

  k_test: 128

  seed: 42
  output_dir: "output/BLIP2/Retrieval_COCO"

  evaluate: True
"""

RET_FLICKR_EVAL = """\
model:
  arch: blip2
  model_type: coco
  use_grad_checkpoint: False

datasets:
  flickr30k:
    vis_processor:
        eval:
          name: "blip_image_eval"
          image_size: 364
    text_processor:
        eval:
          name: "blip_caption"

run:
  task: retrieval

  num_workers: 4
  batch_size_train: 16
  batch_size_eval: 32

  test_splits: ["test"]

  device: "cuda"
  world_size: 1
  dist_url: "env://"
  distributed: True
  use_dist_eval_sampler: False

  k_test: 128

  seed: 42
  output_dir: "output/BLIP2/Retrieval_Flickr30k"

  evaluate: True
"""

#: file -> (task, model type, datasets, lines the merged config shows)
EXPECTED = {
    "pretrain_stage1": (PRETRAIN_STAGE1, "image_text_pretrain", "pretrain", ["coco_caption", "vg_caption"],
                        ["warmup_steps: 5000", "lr_sched: linear_warmup_cosine_lr"]),
    "retrieval_coco_ft": (RETRIEVAL_COCO_FT, "retrieval", "coco", ["coco_retrieval"],
                          ["k_test: 128", "lr_layer_decay: 0.95", "use_dist_eval_sampler: false"]),
    "ret_coco_eval": (RET_COCO_EVAL, "retrieval", "coco", ["coco_retrieval"], ["k_test: 128", "evaluate: true"]),
    "ret_flickr_eval": (RET_FLICKR_EVAL, "retrieval", "coco", ["flickr30k"], ["k_test: 128", "evaluate: true"]),
}


@pytest.fixture
def mmrun_main(monkeypatch, tmp_path):
    """`mmrun` in this process with the installed plugins, offline, an empty cache root."""
    from mm_core.cli.main import main
    from mm_core.plugins import reset_plugin_host

    for key in [k for k in os.environ if k.startswith("MM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MM_CACHE_ROOT", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    reset_plugin_host()
    yield main
    reset_plugin_host()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_lavis_file_passes_config_and_dry_run(name, mmrun_main, tmp_path, capsys):
    text, task, model_type, datasets, shown = EXPECTED[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    assert mmrun_main(["config", "--config", str(path)]) == 0, capsys.readouterr().err
    merged = capsys.readouterr().out
    assert f"task: {task}" in merged and "arch: blip2" in merged and f"model_type: {model_type}" in merged
    assert all(line in merged for line in shown), merged
    assert mmrun_main(["--config", str(path), "--dry-run"]) == 0, capsys.readouterr().err
    plan = capsys.readouterr().out
    assert f"model: blip2 / {model_type}" in plan and f"task: {task}" in plan
    assert all(f"dataset: {d} (images)" in plan for d in datasets), plan
    assert "dry run: nothing was built" in plan


def test_a_misspelt_retrieval_run_key_is_refused(mmrun_main, tmp_path, capsys):
    path = tmp_path / "typo.yaml"
    path.write_text(RET_COCO_EVAL.replace("k_test: 128", "k_tset: 128"))
    assert mmrun_main(["config", "--config", str(path)]) == 2
    assert "run.k_tset" in capsys.readouterr().err
