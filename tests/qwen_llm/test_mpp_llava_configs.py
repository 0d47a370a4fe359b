"""MPP-LLaVA's seven published pipeline configs (lavis/projects/pp_qwen7b_video/{pretrain,sft,
sft_wo_pretrain}.yaml and pp_qwen14b/{pretrain_pp,sft_pp,sft_video_pp,train_pp}.yaml) pass
``mmrun config`` and ``mmrun --dry-run``. The YAML is written here from their keys, values and nesting
as of MPP-LLaVA's main branch, commit c2d50f2 (not copied); upstream starts them with ``train_pipeline.py --cfg-path X --num-stages N``, mm with
``--options run.runner=deepspeed_pipe_runner run.num_stages=N`` (docs/distributed.md)."""

from __future__ import annotations

import copy
import os

import pytest
import yaml

PIPELINE = ["--options", "run.runner=deepspeed_pipe_runner", "run.num_stages=2"]


def _model(model_type: str, llm: str, max_txt_len: int, finetuned: str = "", freeze_llm: bool | None = None) -> dict:
    model = {"arch": "minigpt4qwen", "model_type": model_type, "load_finetuned": bool(finetuned),
             "load_pretrained": True, "pretrained": "ckpt/blip2/blip2_pretrained_flant5xxl.pth", "finetuned": finetuned,
             "vit_model": "eva_clip_g", "image_size": 224, "drop_path_rate": 0, "use_grad_checkpoint": True,
             "vit_precision": "fp16", "freeze_vit": True, "unfreeze_pos_embed": False, "num_query_token": 32,
             "qformer_text_input": False, "freeze_qformer": True, "freeze_queries": True, "freeze_proj": False,
             "llm_model": llm}
    if freeze_llm is not None:
        model["freeze_llm"] = freeze_llm
    model.update({"get_lora": False, "lora_alpha": 32, "lora_r": 8, "lora_dropout": 0.05, "max_txt_len": max_txt_len,
                  "enable_autocast": False})
    return model


def _datasets(names: list[str], max_words: int = 200) -> dict:
    return {name: {"vis_processor": {"train": {"name": "blip2_image_train", "image_size": 224}},
                   "text_processor": {"train": {"name": "base_instruction", "max_words": max_words}}}
            for name in names}


def _deepspeed(accumulation: int, micro: int, lr: float, stage: int, every: int = 10, decay: float = 0.0) -> dict:
    zero = {"stage": stage}
    if stage == 1:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    zero.update({"allgather_partitions": True, "allgather_bucket_size": 2e8, "overlap_comm": True,
                 "reduce_scatter": True, "reduce_bucket_size": 2e8, "contiguous_gradients": True})
    return {"gradient_accumulation_steps": accumulation, "train_micro_batch_size_per_gpu": micro,
            "gradient_clipping": 1.0, "steps_per_print": every, "wall_clock_breakdown": False, "dump_state": False,
            "fp16": {"enabled": False, "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
                     "hysteresis": 2, "min_loss_scale": 1},
            "bf16": {"enabled": True},
            "optimizer": {"type": "AdamW", "params": {"lr": lr, "betas": [0.9, 0.99], "eps": 1e-7,
                                                      "weight_decay": decay}},
            "zero_optimization": zero}


def _run(output_dir: str, max_epoch: int, log_freq: int, ds: dict, lr: float | None = None,
         warmup_ratio: float | None = None) -> dict:
    run = {"output_dir": output_dir, "task": "deepspeed_image_text_pretrain", "num_workers": 4, "seed": 42,
           "world_size": 1, "dist_url": "env://", "distributed": True, "max_epoch": max_epoch, "log_freq": log_freq}
    if lr is not None:
        run.update({"lr_sched": "linear_warmup_cosine_lr_step-wise", "warmup_lr": 0, "init_lr": lr, "min_lr": 0,
                    "warmup_ratio": warmup_ratio})
    run["deepspeed_config"] = ds
    return run


VIDEO_SFT = ["llava_instruct_156k", "videochatgpt_100k"]
INSTRUCTION = ["minigpt4_instruction", "llava_instruction"]
FINETUNED_7B = "/root/autodl-tmp/MiniGPT4Qwen/lavis/output/pp_7b_video/pretrain/global_step2181/model.pth"
FINETUNED_14B = "/root/MiniGPT4Qwen/lavis/output/pp_14b/pretrain/global_step2181/model.pth"
CONFIGS = {
    "pp_qwen7b_video/pretrain": {
        "model": _model("qwen7b_chat", "ckpt/Qwen7B-chat", 512), "datasets": _datasets(["llava_pretrain"]),
        "run": _run("lavis/output/pp_7b_video/pretrain/", 1, 10, _deepspeed(8, 8, 1e-3, 0), 1e-3, 0.03)},
    "pp_qwen7b_video/sft": {
        "model": _model("qwen7b_chat", "ckpt/Qwen7B-chat", 1536, FINETUNED_7B, freeze_llm=False),
        "datasets": _datasets(VIDEO_SFT),
        "run": _run("lavis/output/pp_7b_video/sft_video/", 1, 10, _deepspeed(128, 1, 2e-5, 0), 2e-5, 0.1)},
    "pp_qwen7b_video/sft_wo_pretrain": {
        "model": _model("qwen7b_chat", "ckpt/Qwen7B-chat", 1536, freeze_llm=False), "datasets": _datasets(VIDEO_SFT),
        "run": _run("lavis/output/pp_7b_video/sft_video_wo-pretrain/", 1, 10, _deepspeed(128, 1, 2e-5, 0), 2e-5, 0.1)},
    "pp_qwen14b/pretrain_pp": {
        "model": _model("qwen14b_chat", "ckpt/Qwen-14B-Chat", 256), "datasets": _datasets(["llava_pretrain"]),
        "run": _run("lavis/output/pp_14b/pretrain/", 1, 10, _deepspeed(256, 1, 1e-3, 0), 1e-3, 0.03)},
    "pp_qwen14b/sft_pp": {
        "model": _model("qwen14b_chat", "ckpt/Qwen-14B-Chat", 512, FINETUNED_14B, freeze_llm=False),
        "datasets": _datasets(INSTRUCTION),
        "run": _run("lavis/output/pp_14b/sft/", 1, 10, _deepspeed(128, 1, 2e-5, 1), 2e-5, 0.1)},
    "pp_qwen14b/sft_video_pp": {
        "model": _model("qwen14b_chat", "ckpt/Qwen-14B-Chat", 1536, FINETUNED_14B, freeze_llm=False),
        "datasets": _datasets(VIDEO_SFT),
        "run": _run("lavis/output/pp_14b/sft_video/", 1, 10, _deepspeed(128, 1, 2e-5, 1), 2e-5, 0.1)},
    "pp_qwen14b/train_pp": {
        "model": _model("qwen14b_chat", "ckpt/Qwen-14B-Chat", 256), "datasets": _datasets(INSTRUCTION, 100),
        "run": _run("lavis/output/pp_14b/", 20, 50, _deepspeed(128, 1, 1e-4, 0, every=128, decay=0.05))},
}


@pytest.fixture
def mmrun(monkeypatch, tmp_path, capsys):
    """``mmrun ARGS`` in this process with the installed plugins; returns (exit code, stdout, stderr)."""
    from mm_core.cli.main import main
    from mm_core.plugins import reset_plugin_host

    for key in [k for k in os.environ if k.startswith("MM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MM_CACHE_ROOT", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)

    def call(args: list[str]) -> tuple[int, str, str]:
        reset_plugin_host()
        try:
            code = main(args)
        finally:
            reset_plugin_host()
        out, err = capsys.readouterr()
        return code, out, err

    return call


FAST = "pp_qwen7b_video/sft"  # video + LLaVA data, ZeRO-0 pipeline; the others run in the slow tier


@pytest.mark.parametrize("name", [n if n == FAST else pytest.param(n, marks=pytest.mark.slow) for n in sorted(CONFIGS)])
def test_published_pipeline_config_passes_config_and_dry_run(name, mmrun, tmp_path):
    path = tmp_path / (name.replace("/", "_") + ".yaml")
    path.write_text(yaml.safe_dump(copy.deepcopy(CONFIGS[name]), sort_keys=False))
    code, out, err = mmrun(["config", "--config", str(path), *PIPELINE])
    assert code == 0, err
    merged = yaml.safe_load(out[out.index("model:"):]) if out.startswith("#") else yaml.safe_load(out)
    run = CONFIGS[name]["run"]
    assert merged["run"]["deepspeed_config"] == run["deepspeed_config"]
    assert merged["run"].get("warmup_ratio") == run.get("warmup_ratio")
    assert set(CONFIGS[name]["datasets"]) <= set(merged["datasets"])
    code, out, err = mmrun(["--config", str(path), "--dry-run", *PIPELINE])
    assert code == 0, err
    assert "runner: deepspeed_pipe_runner" in out and "task: deepspeed_image_text_pretrain" in out
    for dataset in CONFIGS[name]["datasets"]:
        assert f"dataset: {dataset} " in out, dataset
    if "lr_sched" in run:
        assert "lr schedule: linear_warmup_cosine_lr_step-wise" in out


def test_without_the_pipeline_runner_the_deepspeed_block_is_refused_with_the_key(mmrun, tmp_path):
    """What a user sees when the launch options are forgotten: the key path, exit code 2."""
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(CONFIGS["pp_qwen7b_video/sft"], sort_keys=False))
    code, _, err = mmrun(["--config", str(path), "--dry-run"])
    assert code == 2 and "run.deepspeed_config" in err
