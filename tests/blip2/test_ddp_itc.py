"""ITC negatives gathered across ranks: two gloo processes (DistributedDataParallel, one half of the
batch each) give the loss and gradients of one process on the whole batch, within 1e-6."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ddp_itc
import pytest
import torch

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent


def test_two_processes_equal_one_process_on_the_global_batch(tmp_path):
    module = ddp_itc.build()
    expected_loss = ddp_itc.step(module, ddp_itc.global_batch())
    expected = ddp_itc.gradients(module)

    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(HERE / "ddp_itc.py"), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = torch.load(out, weights_only=True)

    assert float(got["loss"]) == pytest.approx(expected_loss, abs=1e-6)
    assert set(got["grads"]) == set(expected)
    assert {"qformer.encoder.layer.0.crossattention.attention.query.weight", "text_proj.weight", "vision_proj.weight",
            "query_tokens", "temp", "text_embeddings.word_embeddings.weight"} <= set(expected)
    for name, grad in expected.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(got["grads"][name], grad, atol=1e-6, rtol=0, msg=name)


def test_in_batch_negatives_only_would_give_other_gradients():
    """The check above can fail: two halves trained with their own negatives only (no gathering)
    average to other gradients than the whole batch's."""
    module = ddp_itc.build()
    ddp_itc.step(module, ddp_itc.global_batch())
    whole = ddp_itc.gradients(module)
    halves = {}
    for part in (slice(0, 2), slice(2, 4)):
        module.model.zero_grad()
        batch = ddp_itc.global_batch()
        ddp_itc.step(module, {"image": batch["image"][part], "text_input": ddp_itc.TEXTS[part],
                              "image_id": batch["image_id"][part]})
        for name, grad in ddp_itc.gradients(module).items():
            halves[name] = halves.get(name, 0) + grad / 2
    assert (halves["text_proj.weight"] - whole["text_proj.weight"]).abs().max() > 1e-4
