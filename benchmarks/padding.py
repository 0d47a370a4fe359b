"""Batching without padding waste: mm's length-grouped, dynamically padded batches vs MiniGPT4-Qwen's
pad-every-sample-to-``max_txt_len`` (512), training samples/s.

Samples are ChatML conversations with one image (32 placeholder tokens, as num_query_token) and
answers whose lengths follow a log-normal spread like instruction data (median ~60 tokens, a tail
to a few hundred), written as MiniGPT4-Qwen instruction records and read by the qwen plugin's
``InstructionDataset``; encoded with the qwen backend and truncated to ``max_txt_len`` = 512.
Each batch runs forward + backward through a small Qwen2 (random init) on embeddings that
require grad, as when only the projection trains. Sides, alternating, ``REPEATS`` times:

* ``group_by_length + dynamic``: the batches the engine's ``run.group_by_length`` sampler
  (:class:`mm_core.engine.data.LengthGroupedSampler`) forms from the dataset's
  ``sample_lengths()``, each padded to its longest sample;
* ``random + dynamic``: random batches padded to their longest sample (dynamic padding alone);
* ``random + pad to 512``: the same random batches, every sample padded to 512 (the baseline).

Every side sees every sample once; the token-weighted mean loss over all samples must agree
(``max_loss_diff``). Target (issue 10): >= 3x samples/s over the baseline.

    python benchmarks/padding.py            # or `make bench`
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

MAX_TXT_LEN = 512
NUM_QUERY_TOKEN = 32
BATCH = 8
BATCHES = int(os.environ.get("MM_BENCH_PADDING_BATCHES", "12"))
REPEATS = int(os.environ.get("MM_BENCH_PADDING_REPEATS", "2"))
WORDS = ("the red circle is on a white background and a small blue square sits in the top left corner of "
         "picture while green triangle shape color image describe detail large star line dot").split()


def build_llm():
    from transformers import AutoModelForCausalLM, Qwen2Config

    from mm_qwen_llm.qwen import QwenLLM, load_tokenizer
    from mm_qwen_llm.tiny import shipped_tiny_dir

    folder = str(shipped_tiny_dir())
    dims = json.loads((shipped_tiny_dir() / "config.json").read_text())
    dims.update(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                num_key_value_heads=4)
    config = Qwen2Config(**{k: v for k, v in dims.items() if k not in ("architectures", "model_type")})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.requires_grad_(False)
    return QwenLLM(model, load_tokenizer(folder, False)).train()


def records(n: int, seed: int = 0) -> list[dict]:
    """MiniGPT4-Qwen instruction records with a realistic spread of answer lengths."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 20)))
        answer_words = min(400, max(3, int(rng.lognormvariate(3.7, 0.8))))
        answer = " ".join(rng.choice(WORDS) for _ in range(answer_words))
        out.append({"image": f"{i}.jpg", "instruction": f"<Img><ImageHere></Img> {question}?", "output": answer + "."})
    return out


def train_pass(llm, encoded, batches, pad_to: int | None) -> tuple[float, float, int, int]:
    """Seconds, token-weighted mean loss, padded tokens and real tokens of one pass."""
    loss_sum, label_tokens, padded, real = 0.0, 0, 0, 0
    start = time.perf_counter()
    for indices in batches:
        batch = llm.collate([encoded[i] for i in indices], pad_to=pad_to)
        embeds = llm.embed_tokens(batch["input_ids"]).detach().requires_grad_(True)
        loss = llm(embeds, batch["attention_mask"], batch["labels"]).loss
        loss.backward()
        n = int((batch["labels"][:, 1:] != -100).sum())  # tokens the (shifted) loss averages over
        loss_sum += float(loss.detach()) * n
        label_tokens += n
        padded += batch["input_ids"].numel()
        real += int(batch["attention_mask"].sum())
    return time.perf_counter() - start, loss_sum / label_tokens, padded, real


def grouped_batches(dataset, seed: int) -> list[list[int]]:
    from mm_core.engine.data import LengthGroupedSampler

    sampler = LengthGroupedSampler(dataset, dataset.sample_lengths(), BATCH, num_replicas=1, rank=0, seed=seed)
    sampler.set_epoch(0)
    order = list(sampler)
    return [order[i:i + BATCH] for i in range(0, len(order), BATCH)]


def run() -> dict:
    from mm_qwen_llm.instruction_data import InstructionDataset

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    llm = build_llm()
    n = BATCH * BATCHES
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.json"
        path.write_text(json.dumps(records(n)))
        dataset = InstructionDataset(ann_paths=[path])
    encoded = [llm.encode_conversation(dataset.annotation[i]["conversations"], NUM_QUERY_TOKEN, MAX_TXT_LEN)
               for i in range(n)]
    lengths = sorted(len(s["input_ids"]) for s in encoded)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [order[i:i + BATCH] for i in range(0, n, BATCH)]
    sides = {
        "group_by_length + dynamic (mm)": (grouped_batches(dataset, 0), None),
        "random + dynamic": (random_batches, None),
        f"random + pad to {MAX_TXT_LEN} (MiniGPT4-Qwen)": (random_batches, MAX_TXT_LEN),
    }
    train_pass(llm, encoded, random_batches[:1], None)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in sides}
    stats: dict[str, tuple[float, int, int]] = {}
    for _ in range(REPEATS):
        for name, (batches, pad_to) in sides.items():  # alternate the sides
            seconds, loss, padded, real = train_pass(llm, encoded, batches, pad_to)
            times[name].append(seconds)
            stats[name] = (loss, padded, real)
    baseline = statistics.median(times[f"random + pad to {MAX_TXT_LEN} (MiniGPT4-Qwen)"])
    rows = []
    for name in sides:
        median = statistics.median(times[name])
        loss, padded, real = stats[name]
        rows.append({"batching": name, "samples_per_s": round(n / median, 2),
                     "tokens_per_step": round(padded / BATCHES), "real_tokens_per_step": round(real / BATCHES),
                     "speedup": round(baseline / median, 2), "loss": round(loss, 6)})
    losses = [stats[name][0] for name in sides]
    speedup = rows[0]["speedup"]
    return {
        "benchmark": "padding",
        "samples": n, "batch": BATCH, "repeats": REPEATS,
        "length_p10_p50_p90_max": [lengths[n // 10], lengths[n // 2], lengths[9 * n // 10], lengths[-1]],
        "max_loss_diff": float(f"{max(losses) - min(losses):.2e}"),
        "speedup": speedup, "target": ">= 3x", "target_met": speedup >= 3.0,
        "rows": rows,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
