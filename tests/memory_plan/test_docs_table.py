"""docs/distributed.md's memory-plan table is the plan's own output, and planning a Qwen-7B-sized
config builds nothing real: exact parameter counts from the dims alone, in seconds and little memory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..conftest import REPO, mm_env

sys.path.insert(0, str(REPO / "docs"))
import memory_plan_table  # noqa: E402

pytestmark = pytest.mark.slow  # builds Qwen-7B / 14B-sized models on the meta device (~20 s)


def test_the_distributed_docs_table_is_what_the_plan_computes():
    text = (REPO / "docs" / "distributed.md").read_text(encoding="utf-8")
    assert memory_plan_table.current_section(text) == memory_plan_table.render(), (
        "docs/distributed.md is out of date: run `python docs/memory_plan_table.py --write`")


def qwen1_parameters(h: int, layers: int, mlp: int, vocab: int) -> int:
    """Qwen-1's tensors: embedding and untied head, per block ln_1, c_attn (3h, bias), c_proj,
    ln_2, w1, w2, mlp.c_proj; ln_f."""
    block = h + (h * 3 * h + 3 * h) + h * h + h + 3 * h * mlp
    return 2 * vocab * h + layers * block + h


#: ``mmrun`` in-process, printing the process's own peak RSS at the end.
MMRUN_WITH_PEAK_RSS = ("import resource, sys; from mm_core.cli.main import main; code = main(sys.argv[1:]); "
                       "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")


def test_a_qwen7b_dry_run_counts_exactly_and_stays_small(tmp_path):
    llm = memory_plan_table.llm_dir("qwen7b_chat", tmp_path)
    config = {"model": {"arch": "minigpt4qwen", "model_type": "qwen7b_chat", "llm_model": str(llm),
                        "vit_pretrained": str(tmp_path / "no_such_eva.pth"), "vit_pretrained_url": None},
              "run": {"task": "image_text_pretrain", "batch_size_train": 4, "plan_gpu_memory_gib": 24}}
    path = tmp_path / "qwen7b.yaml"
    path.write_text(json.dumps(config))
    result = subprocess.run([sys.executable, "-c", MMRUN_WITH_PEAK_RSS, "--config", str(path), "--dry-run"],
                            env=mm_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    llm_line = next(line for line in result.stdout.splitlines() if line.strip().startswith("llm "))
    assert "7.72 B" in llm_line and "14.38 GiB" in llm_line  # bf16
    assert qwen1_parameters(4096, 32, 11008, 151936) == 7_721_324_544  # Qwen-7B's published 7.72 B
    assert "(built on the meta device: no weights read)" in result.stdout
    peak_mib = int(result.stdout.rsplit("peak_rss_kib ", 1)[1]) / 1024
    assert peak_mib < 2048, f"the dry run's peak RSS was {peak_mib:.0f} MiB (a real Qwen-7B needs 15 GiB)"
