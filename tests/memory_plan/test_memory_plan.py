"""mm-plugin-memory-plan: the plan's counts are the built model's, its bytes are what AdamW and
autograd allocate and what DeepSpeed's own estimators say, and a user sees it before a run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

import pytest
import torch
from omegaconf import OmegaConf

from mm_core.config.loader import load_model_defaults
from mm_core.registry import get_registry
from mm_memory_plan.model_facts import build_on_meta, read_facts
from mm_memory_plan.plan import GIB, Plan, PlanSettings
from mm_memory_plan.strategies import ddp, pipeline, stage_counts, zero

from ..conftest import REPO, mm_env

ALL_TRAINABLE = {"freeze_vit": False, "freeze_qformer": False, "freeze_queries": False, "freeze_llm": False}


def tiny_config(**overrides):
    return OmegaConf.merge(load_model_defaults("minigpt4qwen", "tiny").model, overrides)


def built(**overrides):
    cfg = tiny_config(**overrides)
    return get_registry().resolve("models", "minigpt4qwen").from_config(cfg), cfg


@pytest.mark.parametrize("overrides", [{}, ALL_TRAINABLE, {"get_lora": True}], ids=["default", "all-trainable", "lora"])
def test_counts_by_module_equal_the_built_tiny_model(overrides):
    model, cfg = built(**overrides)
    expected = defaultdict(lambda: [0, 0, 0])
    for name, param in model.named_parameters():
        row = expected[name.split(".")[0]]
        row[0] += param.numel()
        row[1] += param.numel() if param.requires_grad else 0
        row[2] += param.numel() * param.element_size()
    facts = read_facts(build_on_meta(cfg))
    assert {k: [c.params, c.trainable, c.bytes] for k, c in facts.modules.items()} == dict(expected)
    assert facts.total.params == sum(p.numel() for p in model.parameters())
    parts = [facts.pre, *facts.blocks, facts.post]
    assert sum(c.params for c in parts) == facts.total.params and len(facts.blocks) == 2  # tiny Qwen2: 2 layers


def test_meta_build_reads_no_weight_file_and_allocates_nothing(tmp_path):
    cfg = tiny_config(vit_pretrained=str(tmp_path / "missing_eva.pth"), pretrained=str(tmp_path / "missing.pth"),
                      load_pretrained=True, llm_random_init=False)
    model = build_on_meta(cfg)
    assert {p.device.type for p in model.parameters()} == {"meta"}


def one_step(model, lr=1e-3):
    """Gradient bytes after backward and AdamW state bytes after one step, as torch allocates them."""
    samples = {"image": torch.randn(2, 3, 32, 32), "text_input": ["a red square", "a blue circle on grass"]}
    model(samples)["loss"].backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr)
    optimizer.step()
    states = sum(v.nbytes for s in optimizer.state.values() for k, v in s.items() if k != "step")
    return sum(p.grad.nbytes for p in trainable), states


@pytest.mark.parametrize("overrides", [{}, ALL_TRAINABLE], ids=["default", "all-trainable"])
def test_ddp_gradient_and_optimizer_bytes_are_what_torch_allocates(overrides):
    model, cfg = built(**overrides)
    gradients, states = one_step(model)
    row = ddp(read_facts(build_on_meta(cfg)), world=1)
    assert (row.gradients, row.optimizer) == (gradients, states)
    assert row.weights == sum(p.nbytes for p in model.parameters())
    assert ddp(read_facts(model), world=4).gradients == 2 * gradients  # DDP's bucket copy beside .grad


@pytest.mark.parametrize("world", [1, 2, 8])
def test_zero_rows_equal_deepspeeds_estimators_when_everything_trains(world):
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.zero import stage3, stage_1_and_2

    model, _ = built(**ALL_TRAINABLE)
    facts = read_facts(model)
    total = stage_1_and_2.model_to_params(model)
    params, largest = stage3.model_to_params(model)
    assert facts.total.params == total == params and facts.largest_layer_params == largest
    cpu, gpu = stage_1_and_2.estimate_zero2_model_states_mem_needs(total, world, 1, cpu_offload=False)
    assert zero(2, facts, world).states == pytest.approx(gpu, rel=0.01)
    cpu, gpu = stage_1_and_2.estimate_zero2_model_states_mem_needs(total, world, 1, cpu_offload=True)
    offloaded = zero(2, facts, world, offload_optimizer=True)
    assert (offloaded.states, offloaded.cpu) == (pytest.approx(gpu, rel=0.01), pytest.approx(cpu, rel=0.01))
    for optimizer, params_too in ((False, False), (True, False), (True, True)):
        cpu, gpu, _ = stage3.estimate_zero3_model_states_mem_needs(total, largest, world, 1, cpu_offload=optimizer,
                                                                   cpu_offload_params=params_too)
        row = zero(3, facts, world, optimizer, params_too)
        assert row.states == pytest.approx(gpu, rel=0.01), row.name
        if optimizer:
            assert row.cpu == pytest.approx(cpu, rel=0.01), row.name


@pytest.mark.parametrize("world", [1, 8])
def test_frozen_parameters_hold_only_their_16_bit_weights(world):
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.zero import stage_1_and_2

    model, _ = built()
    facts = read_facts(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    _, gpu = stage_1_and_2.estimate_zero2_model_states_mem_needs(trainable, world, 1, cpu_offload=False)
    assert zero(2, facts, world).states == pytest.approx(gpu + 2 * frozen, rel=0.01)
    # ZeRO-1 keeps the 16-bit gradients whole; its fp32 gradient, master weight and moments are partitioned.
    assert zero(1, facts, world).states == 2 * (trainable + frozen) + 2 * trainable + int(4 * trainable / world) \
        + int(12 * trainable / world)


def test_pipeline_stages_split_the_decoder_blocks_evenly():
    facts = read_facts(build_on_meta(tiny_config()))
    one, two = facts.blocks
    first, last = stage_counts(facts, 2)
    assert first.params == facts.pre.params + one.params and last.params == two.params + facts.post.params
    # the largest stage by model states: 16-bit weights, 16-bit gradients, 16 bytes of ZeRO-1 states per trainable
    assert pipeline(facts, world=2, stages=2).states == max(2 * c.params + 18 * c.trainable for c in (first, last))
    assert pipeline(facts, world=4, stages=2).states == max(2 * c.params + 2 * c.trainable + 2 * c.trainable // 2
                                                           + 6 * c.trainable for c in (first, last))


@pytest.mark.slow  # a subprocess that builds and trains the tiny model (~8 s)
def test_activation_estimate_is_close_to_what_autograd_saves():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "memory_plan_check.py"), "tiny"],
                            env=mm_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    measured, plan = report["measured"], report["plan"]
    assert (plan["gradients"], plan["optimizer"]) == (measured["gradients"], measured["adamw_states"])
    assert plan["activations"] == pytest.approx(measured["saved_for_backward"], rel=0.15)


def settings(**run):
    return PlanSettings.from_config(OmegaConf.create({"model": tiny_config(), "run": run}))


def test_settings_follow_the_config_and_the_environment(monkeypatch):
    monkeypatch.setenv("MM_PLAN_GPU_MEMORY_GIB", "80")
    s = settings(runner="deepspeed_runner", batch_size_train=3, plan_world_size=8, deepspeed_config={
        "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}}, "bf16": {"enabled": True}})
    assert (s.world, s.batch, s.seq_len, s.zero_stage, s.offload_optimizer, s.offload_params) == (8, 3, 128, 3, True, False)
    assert s.mixed_precision and s.gpu_bytes == 80 * GIB and s.gpu_source == "MM_PLAN_GPU_MEMORY_GIB"
    assert settings(plan_gpu_memory_gib=24).gpu_bytes == 24 * GIB  # the config wins over the environment
    plan = Plan.build(read_facts(build_on_meta(tiny_config())), s)
    assert s.configured(plan.rows).name == "ZeRO-3 + offload optimizer"


def dry_run(tmp_path, **run):
    config = {"model": {"arch": "minigpt4qwen", "model_type": "tiny"},
              "run": {"task": "image_text_pretrain", "batch_size_train": 4, "output_dir": str(tmp_path / "out"), **run}}
    path = tmp_path / "plan.yaml"
    path.write_text(json.dumps(config))
    return subprocess.run([str(REPO / ".venv" / "bin" / "mmrun"), "--config", str(path), "--dry-run"],
                          env=mm_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_dry_run_prints_the_plan_and_warns_when_it_does_not_fit(tmp_path):
    fits = dry_run(tmp_path, plan_gpu_memory_gib=24)
    assert fits.returncode == 0, fits.stderr[-3000:]
    assert "memory plan: minigpt4qwen / tiny (built on the meta device" in fits.stdout
    assert "parameters: 191.65 K (191,648), trainable 2.11 K (2,112)" in fits.stdout
    assert all(f"    {name}" in fits.stdout for name in ("DDP", "ZeRO-1", "ZeRO-2", "ZeRO-3", "pipeline, 2 stages"))
    assert "WARNING" not in fits.stdout and "device memory: 24.00 GiB" in fits.stdout
    tight = dry_run(tmp_path, plan_gpu_memory_gib=0.001)
    assert tight.returncode == 0 and "WARNING: this run (runner_base, DDP) needs about" in tight.stdout
    bad = dry_run(tmp_path, plan_gpu_memory_gib="lots")
    assert bad.returncode == 2 and "run.plan_gpu_memory_gib" in bad.stderr
