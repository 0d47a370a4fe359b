"""Annotations held compactly: two DataLoader workers do not grow with the samples they read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from mm_datasets_coco.caption_datasets import CaptionDataset

pytestmark = pytest.mark.slow  # real runs / several processes: `make test-fast` skips this module

N = 10_000


def _private_kb() -> int:
    """This process's private (unshared) memory: what copy-on-write makes grow."""
    fields = {}
    with open("/proc/self/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields["Private_Dirty"] + fields["Private_Clean"]


class _ListOfDicts(CaptionDataset):
    """The naive layout (one Python dict per record), to show the measurement can fail."""

    def _load_records(self, records):
        self._records = [dict(r) for r in records]

    def num_records(self):
        return len(self._records)

    def __getitem__(self, index):
        rec = self._records[index]
        return {"text_input": rec["caption"], "image": self.load_image(rec["image"], index)}


def _collate(samples):
    return (os.getpid(), _private_kb(), len(samples))


def _growth_per_worker(dataset) -> dict[int, int]:
    loader = DataLoader(dataset, batch_size=250, num_workers=2, collate_fn=_collate, multiprocessing_context="fork")
    first, last = {}, {}
    for pid, kb, _ in loader:
        first.setdefault(pid, kb)
        last[pid] = kb
    return {pid: last[pid] - first[pid] for pid in first}


def _measure(root: Path) -> dict[str, list[int]]:
    """Both layouts' growth per worker over ``root/train.json``, in this (fresh) process."""
    ann = root / "train.json"
    naive = _growth_per_worker(_ListOfDicts(vis_root=root / "images", ann_paths=[ann]))
    compact = _growth_per_worker(CaptionDataset(vis_root=root / "images", ann_paths=[ann]))
    return {"naive": list(naive.values()), "compact": list(compact.values())}


def test_worker_memory_does_not_grow_with_samples_read(tmp_path: Path):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    records = [{"image": "a.png", "caption": f"caption number {i}: " + "a long caption about shapes and colours " * 4, "image_id": f"img_{i}"}
               for i in range(N)]
    (tmp_path / "train.json").write_text(json.dumps(records))
    # measured in a fresh interpreter: forked workers copy whatever pages their allocations land on,
    # and the heap of a long test session (scattered free chunks) would add noise unrelated to the layout
    done = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    growth = json.loads(done.stdout.strip().splitlines()[-1])
    naive, compact = growth["naive"], growth["compact"]
    assert len(compact) == 2
    # the naive layout's workers copy the pages of the records they touch (~2.5 MB each here) ...
    assert min(naive) > 1_500, naive
    # ... the compact one's stay flat (~0.4 MB of allocator noise, whatever N is)
    assert max(compact) < 1_000, compact


if __name__ == "__main__":
    print(json.dumps(_measure(Path(sys.argv[1]))))
