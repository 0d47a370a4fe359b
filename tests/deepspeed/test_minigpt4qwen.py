"""The tiny MiniGPT4-Qwen (BLIP-2 tower + Q-Former -> projection -> Qwen with LoRA) under the
DeepSpeed runner, ZeRO-2 bf16: LoRA adapters survive resume and consolidation, and the
consolidated checkpoint chats."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepspeed", reason="DeepSpeed is optional: DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed")

from .conftest import REPO, checkpoint_dir, load_weights, train_losses

pytestmark = pytest.mark.slow  # real runs / several processes: `make test-fast` skips this module

pytest.importorskip("mm_qwen_llm", reason="needs mm-plugin-qwen-llm")

EXAMPLE = REPO / "examples" / "minigpt4qwen_tiny.yaml"
LORA = ["model.freeze_llm=true", "model.get_lora=true"]
DEEPSPEED = ["run.runner=deepspeed_runner", "run.deepspeed_config.zero_optimization.stage=2",
             "run.deepspeed_config.bf16.enabled=true", "run.max_epoch=1", "run.ckpt_iters=3",
             "run.valid_splits=[]", "run.log_freq=1"]


@pytest.fixture(scope="module")
def qwen_run(tmp_path_factory):
    """``run(output_dir, *options)`` in this process with the installed plugins (data rendered
    once under a temporary cache root)."""
    cache = tmp_path_factory.mktemp("qwen_cache")
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("MM_")]:
        del os.environ[key]
    os.environ.update({"MM_CACHE_ROOT": str(cache), "DS_ACCELERATOR": "cpu"})
    from mm_core.config.loader import load_config
    from mm_core.engine.run import run_config
    from mm_core.plugins import reset_plugin_host

    def run(out: Path, *options: str) -> Path:
        reset_plugin_host()
        assert run_config(load_config(str(EXAMPLE), [*LORA, *DEEPSPEED, f"run.output_dir={out}", *options])) == 0
        return out

    yield run
    reset_plugin_host()
    os.environ.clear()
    os.environ.update(saved)


def test_lora_survives_resume_and_consolidation_and_chats(tmp_path, qwen_run):
    reference = qwen_run(tmp_path / "ref")
    weights = load_weights(checkpoint_dir(reference))
    adapters = {k for k in weights if ".lora_A." in k or ".lora_B." in k}
    assert set(weights) - adapters == {"llm_proj.weight", "llm_proj.bias"} and len(adapters) == 8
    assert all(v.dtype == torch.float32 for v in weights.values())

    # resume from the reference's step-3 checkpoint in a new folder: same adapters at the end
    resumed = qwen_run(tmp_path / "resumed", f"run.resume_ckpt_path={reference / 'checkpoints' / 'step_0000003'}")
    assert checkpoint_dir(resumed).name == checkpoint_dir(reference).name
    got = load_weights(checkpoint_dir(resumed))
    for key in weights:
        assert torch.equal(got[key], weights[key]), key
    assert train_losses(resumed) == train_losses(reference)[3:]

    # the consolidated checkpoint is what the plain model loads for chat (strict for trainable tensors)
    from mm_core.api import load_model_for_inference

    model = load_model_for_inference(str(EXAMPLE), LORA, str(checkpoint_dir(reference))).model
    state = model.state_dict()
    for key, value in weights.items():
        assert torch.equal(state[key].float(), value), key
    answer, history = model.chat("What shape is in the picture?", [], max_new_tokens=4)
    assert isinstance(answer, str) and len(history) == 1

    # and `mmrun chat` answers from it in a subprocess (scripted from stdin)
    import subprocess
    import sys

    script = "What shape is in the picture?\n/quit\n"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mmrun"), "chat", "--config", str(EXAMPLE), "--checkpoint",
         str(checkpoint_dir(reference)), "--max-new-tokens", "4", "--options", *LORA],
        input=script, capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert [line for line in done.stdout.splitlines() if line.startswith("Assistant:")], done.stdout
