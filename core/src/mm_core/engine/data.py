"""Data for the runners: the resumable train stream (plain, length-grouped or mixed by
``run.train_dataset_ratios``) and the evaluation loaders. Order, resume and mixing: docs/run_keys.md."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler

from mm_core.errors import ConfigError


class ConcatWithCollater(ConcatDataset):
    """Train splits of several datasets, concatenated (LAVIS); batches use the first
    dataset's ``collater`` (the datasets of one task share a sample layout)."""

    def collater(self, samples: list[Any]) -> Any:
        return collate_fn_of(self.datasets[0])(samples)


def collate_fn_of(dataset: Dataset) -> Any:
    """The dataset's ``collater``, else torch's ``default_collate``."""
    from torch.utils.data.dataloader import default_collate

    return getattr(dataset, "collater", None) or default_collate


def concat_train_splits(datasets: Mapping[str, Mapping[str, Dataset]], splits: list[str]) -> Dataset:
    """Every dataset's train splits, in config order, as one dataset."""
    parts = [ds[split] for ds in datasets.values() for split in splits if split in ds]
    if not parts:
        found = {name: sorted(ds) for name, ds in datasets.items()}
        raise ConfigError(f"no dataset has a train split named {splits}; splits found: {found}",
                          hint="set run.train_splits to the split names your datasets define")
    return parts[0] if len(parts) == 1 else ConcatWithCollater(parts)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (permutation seeded by ``seed + epoch``) that can start after the
    first ``skip`` samples of this rank's shard."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, drop_last: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


class LengthGroupedSampler(ResumableSampler):
    """Batches of samples of similar length (Hugging Face's megabatch scheme, DDP-aware and
    resumable: docs/run_keys.md), in a random order that is a pure function of ``(seed, epoch)``."""

    def __init__(self, dataset: Dataset, lengths: list[int], batch_size: int, num_replicas: int, rank: int,
                 seed: int, mega_batches: int = 50):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, seed=seed, drop_last=True)
        if len(lengths) != len(dataset):
            raise ConfigError(f"sample_lengths() returned {len(lengths)} lengths for {len(dataset)} samples",
                              hint="a dataset's sample_lengths() has one entry per sample, in index order")
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.batch_size = batch_size
        self.mega_batches = max(1, mega_batches)

    def epoch_indices(self) -> list[int]:
        """This rank's indices of the whole epoch (before ``skip``)."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        global_batch = self.batch_size * self.num_replicas
        order = torch.randperm(len(self.lengths), generator=generator)
        usable = len(order) // global_batch * global_batch
        batches = []
        mega = global_batch * self.mega_batches
        for start in range(0, usable, mega):
            chunk = order[start:min(start + mega, usable)]
            # stable sort: ties keep the random order
            chunk = chunk[torch.sort(self.lengths[chunk], descending=True, stable=True).indices]
            batches += list(chunk.split(global_batch))
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        return [int(i) for b in shuffled for i in batches[b][lo:hi]]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.skip:])

    def __len__(self) -> int:
        return max(0, len(self.lengths) // (self.batch_size * self.num_replicas) * self.batch_size - self.skip)


def sample_lengths_of(dataset: Dataset) -> list[int]:
    """Per-sample lengths from the dataset's ``sample_lengths()`` (concatenations: each part's)."""
    if isinstance(dataset, ConcatDataset):
        return [n for part in dataset.datasets for n in sample_lengths_of(part)]
    method = getattr(dataset, "sample_lengths", None)
    if method is None:
        raise ConfigError(f"run.group_by_length is set but the dataset {type(dataset).__name__} has no "
                          "sample_lengths() method",
                          hint="set run.group_by_length: false, or give the dataset a sample_lengths() returning one "
                          "(approximate) length per sample")
    return [int(n) for n in method()]


@dataclass
class StreamPosition:
    """Where the train stream is: the data epoch and batches already taken from it."""

    data_epoch: int = 0
    batch: int = 0


class TrainStream:
    """Endless full batches (``drop_last``, the same number per rank) of the training set, epoch
    after epoch, from a resumable position; ``group_by_length`` uses :class:`LengthGroupedSampler`."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, rank: int, world_size: int, num_workers: int = 0,
                 group_by_length: bool = False):
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.num_workers = num_workers
        if group_by_length:
            self.sampler: ResumableSampler = LengthGroupedSampler(dataset, sample_lengths_of(dataset), batch_size,
                                                                  world_size, rank, seed)
        else:
            self.sampler = ResumableSampler(dataset, world_size, rank, seed)
        self.batches_per_epoch = self.sampler.num_samples // batch_size
        if self.batches_per_epoch == 0:
            raise ConfigError(f"the training set has {len(dataset)} samples: not one full batch of "
                              f"{batch_size} per process on {world_size} process(es)",
                              hint="lower run.batch_size_train or add training data")
        self.position = StreamPosition()
        self._iterator: Iterator[Any] | None = None

    def _open(self) -> Iterator[Any]:
        self.sampler.set_epoch(self.position.data_epoch)
        self.sampler.skip = self.position.batch * self.batch_size
        generator = torch.Generator().manual_seed(_mix(self.seed, self.position.data_epoch, self.rank))
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=self.sampler,
                            num_workers=self.num_workers, collate_fn=collate_fn_of(self.dataset), drop_last=True,
                            generator=generator, persistent_workers=False, pin_memory=False)
        return iter(loader)

    def next(self) -> Any:
        """The next batch, moving to the next data epoch when this one is used up."""
        if self.position.batch >= self.batches_per_epoch:
            self.position = StreamPosition(self.position.data_epoch + 1, 0)
            self._iterator = None
        if self._iterator is None:
            self._iterator = self._open()
        batch = next(self._iterator)
        self.position.batch += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"data_epoch": self.position.data_epoch, "batch": self.position.batch}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.position = StreamPosition(int(state["data_epoch"]), int(state["batch"]))
        self._iterator = None


class MixedTrainStream:
    """``run.train_dataset_ratios`` (LAVIS' ``MultiIterLoader``): each batch whole from one dataset,
    drawn by ratio as a function of ``(seed, step)``; resumable (docs/run_keys.md)."""

    def __init__(self, streams: dict[str, TrainStream], ratios: dict[str, float], seed: int):
        self.streams, self.names, self.seed, self.draws = streams, list(streams), seed, 0
        self.weights = [ratios[name] / sum(ratios.values()) for name in self.names]
        self.batches_per_epoch = sum(stream.batches_per_epoch for stream in streams.values())

    def next(self) -> Any:
        name = random.Random(_mix(self.seed, self.draws, 999_983)).choices(self.names, self.weights)[0]
        self.draws += 1
        return self.streams[name].next()

    def state_dict(self) -> dict[str, Any]:
        return {"draws": self.draws, "streams": {name: s.state_dict() for name, s in self.streams.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if set(state.get("streams", {})) != set(self.streams):
            raise ConfigError(f"the checkpoint's data position is for datasets {sorted(state.get('streams', {}))}, "
                              f"run.train_dataset_ratios names {sorted(self.streams)}",
                              hint="resume with the train_dataset_ratios the checkpoint was written with")
        self.draws = int(state["draws"])
        for name, stream in self.streams.items():
            stream.load_state_dict(state["streams"][name])


def build_train_stream(datasets: Mapping[str, Mapping[str, Dataset]], s: Any, rank: int,
                       world_size: int) -> TrainStream | MixedTrainStream:
    """The train stream of run settings ``s``: the train splits concatenated, or sampled by
    ``s.train_dataset_ratios`` (``{dataset name: ratio}``, every training dataset named once)."""
    def stream(parts: Mapping[str, Mapping[str, Dataset]]) -> TrainStream:
        return TrainStream(concat_train_splits(parts, s.train_splits), s.batch_size_train, s.seed, rank, world_size,
                           s.num_workers, s.group_by_length)

    ratios = s.train_dataset_ratios
    if not ratios:
        return stream(datasets)
    training = [name for name, splits in datasets.items() if any(split in splits for split in s.train_splits)]
    bad = {k: v for k, v in ratios.items() if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0}
    if set(ratios) != set(training) or bad:
        raise ConfigError(f"run.train_dataset_ratios {dict(ratios)} must give a positive ratio to each dataset with a "
                          f"train split, {training}, and to no other" + (f" (bad values: {bad})" if bad else ""),
                          hint="e.g. train_dataset_ratios: {" + ", ".join(f"{n}: 1.0" for n in training) + "}")
    return MixedTrainStream({name: stream({name: datasets[name]}) for name in training},
                            {k: float(v) for k, v in ratios.items()}, s.seed)


def eval_loader(dataset: Dataset, batch_size: int, rank: int, world_size: int, num_workers: int = 0) -> DataLoader:
    """A loader over this rank's shard of an evaluation split: indices ``rank, rank + world, ...`` in order,
    so every sample is evaluated exactly once across ranks (no padding duplicates, unlike ``DistributedSampler``)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=range(rank, len(dataset), world_size),
                      num_workers=num_workers, collate_fn=collate_fn_of(dataset), drop_last=False,
                      generator=torch.Generator().manual_seed(0))


def move_to_device(samples: Any, device: torch.device) -> Any:
    """Tensors in (nested) dicts, lists and tuples moved to ``device``; other values kept."""
    if isinstance(samples, torch.Tensor):
        return samples.to(device, non_blocking=True)
    if isinstance(samples, Mapping):
        return {k: move_to_device(v, device) for k, v in samples.items()}
    if isinstance(samples, (list, tuple)) and samples and any(isinstance(v, torch.Tensor) for v in samples):
        return type(samples)(move_to_device(v, device) for v in samples)
    return samples


def _mix(seed: int, epoch: int, rank: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 10_007 + int(rank)) % (2**63)
