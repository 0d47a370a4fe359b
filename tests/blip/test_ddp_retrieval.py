"""``blip_retrieval`` under DistributedDataParallel: two gloo processes (one half of the batch each)
against one process on the whole batch, within 1e-6. LAVIS' ITC is per rank — each rank's features
against the momentum features of its own half and the shared queue — so the one-process reference
is that loss of each half, averaged (what DDP's gradient averaging trains); the queue gets every rank's
momentum features in rank order, i.e. the global batch's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mm_blip.models.momentum import momentum_update
from tests.blip import ddp_retrieval as ddp
from tests.blip.test_retrieval_training import reference_itc

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent


def one_process_reference() -> dict:
    step = ddp.build()
    model = step.model
    batch = ddp.global_batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    momentum_update(model, 0.995)
    input_ids, attention_mask = model.retrieval_tokenize(ddp.TEXTS)
    _, image_feat = model.retrieval_image_features(batch["image"])
    text_feat = model.retrieval_text_features(input_ids, attention_mask)
    image_feat_m, text_feat_m = model.momentum_features(batch["image"], input_ids, attention_mask)
    ids, temp = batch["image_id"], model.temp
    halves = [reference_itc(image_feat[s, 0], text_feat[s], image_feat_m[s], text_feat_m[s], before["image_queue"],
                            before["text_queue"], ids[s], before["idx_queue"], temp, ddp.ALPHA)
              for s in (slice(0, 2), slice(2, 4))]
    loss = torch.stack(halves).mean()
    loss.backward()
    whole = reference_itc(image_feat[:, 0], text_feat, image_feat_m, text_feat_m, before["image_queue"],
                          before["text_queue"], ids, before["idx_queue"], temp, ddp.ALPHA)
    return {"loss": float(loss.detach()), "whole_batch_loss": float(whole.detach()), "grads": ddp.gradients(step),
            "image_feat_m": image_feat_m, "text_feat_m": text_feat_m, "text_proj_m": model.text_proj_m.weight.detach(),
            "idx_queue": before["idx_queue"], "input_ids": input_ids}


def test_two_processes_equal_one_process_on_the_global_batch(tmp_path):
    expected = one_process_reference()
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(HERE / "ddp_retrieval.py"), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = torch.load(out, weights_only=True)

    assert float(got["loss"]) == pytest.approx(expected["loss"], abs=1e-6)
    assert abs(expected["whole_batch_loss"] - expected["loss"]) > 1e-3  # the per-rank form is what is matched
    assert set(got["grads"]) == set(expected["grads"])
    assert {"vision_proj.weight", "text_proj.weight", "temp", "text_encoder.embeddings.word_embeddings.weight",
            "vision_model.embeddings.patch_embedding.weight"} <= set(expected["grads"])
    for name, grad in expected["grads"].items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(got["grads"][name], grad, atol=1e-6, rtol=0, msg=name)
    columns = [2, 3, 4, 5]  # queue_ptr was 2: the gathered global batch, in rank order
    torch.testing.assert_close(got["image_queue"][:, columns], expected["image_feat_m"].t(), atol=1e-6, rtol=0)
    torch.testing.assert_close(got["text_queue"][:, columns], expected["text_feat_m"].t(), atol=1e-6, rtol=0)
    assert got["idx_queue"][0, columns].tolist() == ddp.IMAGE_IDS and int(got["queue_ptr"]) == 6
    assert got["idx_queue"][0, [0, 1, 6, 7]].tolist() == expected["idx_queue"][0, [0, 1, 6, 7]].tolist()
    torch.testing.assert_close(got["text_proj_m"], expected["text_proj_m"], atol=1e-12, rtol=0)
    check_negatives_from_every_rank(got["negatives"], expected["input_ids"])


def check_negatives_from_every_rank(negatives: torch.Tensor, input_ids: torch.Tensor) -> None:
    """Rank 0 (ids 7, 3) with ``negative_all_rank``: its negative texts come from the whole batch —
    rank 1's too — and never show the row's image."""
    rows = {tuple(r): i for i, r in enumerate(input_ids.tolist())}
    drawn = [rows[tuple(r)] for r in negatives.tolist()]  # every negative is a text of the global batch
    row_ids = [ddp.IMAGE_IDS[k % 2] for k in range(len(drawn))]  # rank 0's two rows, 20 draws
    assert len(drawn) == 40 and all(ddp.IMAGE_IDS[d] != i for d, i in zip(drawn, row_ids))
    counts = F.one_hot(torch.tensor(drawn), 4).sum(0)
    assert counts[2] + counts[3] > 0 and counts[0] + counts[1] > 0  # from rank 1's half and from its own
