"""``run.group_by_length``: batches of similar length, deterministic per (seed, epoch), every
sample once per epoch across ranks, exact resume, and the same loss as padding every sample."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.data import Dataset

from mm_core.engine.data import LengthGroupedSampler, ResumableSampler, TrainStream
from mm_core.errors import ConfigError


class Sized(Dataset):
    """Sample ``i`` is ``i``; its length is ``lengths[i]``."""

    def __init__(self, lengths: list[int]):
        self.lengths = lengths

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> int:
        return index

    def sample_lengths(self) -> list[int]:
        return list(self.lengths)


def spread(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [min(500, max(10, int(rng.lognormvariate(4.2, 0.8)))) for _ in range(n)]


def rank_orders(lengths: list[int], batch: int, world: int, seed: int, epoch: int) -> list[list[int]]:
    orders = []
    for rank in range(world):
        sampler = LengthGroupedSampler(Sized(lengths), lengths, batch, world, rank, seed)
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    return orders


@pytest.mark.parametrize("world", [1, 3])
def test_every_sample_at_most_once_and_all_full_batches_each_epoch(world):
    lengths = spread(203)
    batch = 4
    full = len(lengths) // (batch * world) * batch  # per rank, incomplete global batches dropped
    for epoch in range(3):
        orders = rank_orders(lengths, batch, world, seed=7, epoch=epoch)
        assert [len(o) for o in orders] == [full] * world
        flat = [i for o in orders for i in o]
        assert len(set(flat)) == len(flat) == full * world
        # the engine's batch count per rank is what the sampler yields
        sampler = LengthGroupedSampler(Sized(lengths), lengths, batch, world, 0, 7)
        assert len(sampler) == full and sampler.num_samples // batch == full // batch


def test_order_is_a_function_of_seed_and_epoch():
    lengths = spread(120)
    first = rank_orders(lengths, 4, 2, seed=1, epoch=0)
    assert rank_orders(lengths, 4, 2, seed=1, epoch=0) == first
    assert rank_orders(lengths, 4, 2, seed=1, epoch=1) != first
    assert rank_orders(lengths, 4, 2, seed=2, epoch=0) != first


def test_batches_hold_similar_lengths_on_every_rank_of_a_step():
    lengths = spread(800)
    batch, world = 8, 2
    grouped = rank_orders(lengths, batch, world, seed=0, epoch=0)
    plain = []
    for rank in range(world):
        sampler = ResumableSampler(Sized(lengths), world, rank, 0)
        sampler.set_epoch(0)
        plain.append(list(sampler))

    def padded_tokens(orders: list[list[int]]) -> int:
        # DDP: every rank of a step waits for the longest batch of that step
        steps = len(orders[0]) // batch
        total = 0
        for s in range(steps):
            longest = max(lengths[i] for o in orders for i in o[s * batch:(s + 1) * batch])
            total += longest * batch * world
        return total

    real = sum(lengths[i] for o in grouped for i in o)
    assert padded_tokens(grouped) < 1.25 * real  # little padding left
    assert padded_tokens(plain) > 2.0 * real  # what random batches waste on this spread


def test_resumed_stream_continues_with_the_same_batches():
    dataset = Sized(spread(50))
    uninterrupted = TrainStream(dataset, 4, seed=3, rank=0, world_size=1, group_by_length=True)
    expected = [uninterrupted.next() for _ in range(30)]  # crosses two epoch boundaries (12 batches each)
    stream = TrainStream(dataset, 4, seed=3, rank=0, world_size=1, group_by_length=True)
    got = [stream.next() for _ in range(17)]
    resumed = TrainStream(dataset, 4, seed=3, rank=0, world_size=1, group_by_length=True)
    resumed.load_state_dict(stream.state_dict())
    got += [resumed.next() for _ in range(13)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert uninterrupted.batches_per_epoch == 12


def test_a_dataset_without_lengths_is_a_config_error():
    class Plain(Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, index: int) -> int:
            return index

    with pytest.raises(ConfigError, match="sample_lengths"):
        TrainStream(Plain(), 2, seed=0, rank=0, world_size=1, group_by_length=True)


def test_loss_over_the_same_samples_equals_padding_every_sample_to_max_len(tmp_path):
    """Grouped, dynamically padded batches give the token-weighted loss that random batches
    padded to 512 give (the tiny Qwen through the qwen backend)."""
    pytest.importorskip("mm_qwen_llm")
    import json

    from mm_qwen_llm.instruction_data import InstructionDataset
    from mm_qwen_llm.qwen import QwenLLM

    rng = random.Random(0)
    words = "a red circle on white ground with blue square and green line".split()
    records = [{"image": f"{i}.jpg", "instruction": "<Img><ImageHere></Img> Describe it.",
                "output": " ".join(rng.choice(words) for _ in range(rng.randint(2, 120)))} for i in range(24)]
    (tmp_path / "a.json").write_text(json.dumps(records))
    dataset = InstructionDataset(ann_paths=[tmp_path / "a.json"])
    llm = QwenLLM.from_config({"model": "mm_qwen_llm:assets/tiny_qwen2", "random_init": True}).eval()
    encoded = [llm.encode_conversation(a["conversations"], 4, 512) for a in dataset.annotation]

    def weighted_loss(batches: list[list[int]], pad_to: int | None) -> float:
        total, count = 0.0, 0
        with torch.no_grad():
            for indices in batches:
                b = llm.collate([encoded[i] for i in indices], pad_to=pad_to)
                loss = llm(llm.embed_tokens(b["input_ids"]), b["attention_mask"], b["labels"]).loss
                n = int((b["labels"][:, 1:] != -100).sum())
                total, count = total + float(loss) * n, count + n
        return total / count

    sampler = LengthGroupedSampler(dataset, dataset.sample_lengths(), 4, 1, 0, seed=0)
    order = list(sampler)
    grouped = [order[i:i + 4] for i in range(0, len(order), 4)]
    assert sorted(order) == list(range(24))
    padded = [list(range(i, i + 4)) for i in range(0, 24, 4)]

    def spread_within_batches(batches: list[list[int]]) -> int:
        sizes = [[len(encoded[i]["input_ids"]) for i in b] for b in batches]
        return sum(max(s) - min(s) for s in sizes)

    # the text-only length estimate does group by real token length
    assert spread_within_batches(grouped) < 0.4 * spread_within_batches(padded)
    assert weighted_loss(grouped, None) == pytest.approx(weighted_loss(padded, 512), abs=1e-5)
