"""Annotations at scale: 600,000 Karpathy-format caption records (generated).

1. Load: wall time and peak RSS of building the ``coco_caption`` train dataset
   (:class:`mm_datasets_coco.caption_datasets.CaptionDataset`, annotations in numpy columns) vs
   plain ``json.load`` into a list of dicts. Each load runs in a fresh process that has already
   imported both sides' modules; the sides alternate, ``REPEATS`` times; medians. Peak RSS is the
   process' high-water mark minus its RSS just before loading.
2. One epoch reading every record (``dataset.record(i)``: image path, caption, image id) through
   a DataLoader with 2 workers, for the compact dataset and for the list of dicts. A forked
   worker shares the parent's pages until it writes to them; touching a Python object writes its
   reference count, so the page becomes the worker's own. Growth is the worker's private memory
   (``Private_Clean + Private_Dirty`` of ``/proc/self/smaps_rollup``) at the end of the epoch
   minus at its start, over its RSS at the start; the larger of the two workers is reported.

Targets (issue 10): load time <= 1.2x ``json.load``; worker RSS growth <= 10 %.

    python benchmarks/annotations.py           # or `make bench`
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RECORDS = int(os.environ.get("MM_BENCH_ANNOTATION_RECORDS", "600000"))
REPEATS = int(os.environ.get("MM_BENCH_ANNOTATION_REPEATS", "3"))
CAPTIONS_PER_IMAGE = 5
WORDS = ("a man woman dog cat sitting standing on the of with in next to table street field red blue "
         "large small two people riding bike horse playing ball grass water near building").split()


def write_karpathy_train(path: Path, n: int, seed: int = 0) -> None:
    """``n`` LAVIS Karpathy train records (one per caption, five captions per image)."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        image_number = 100000 + i // CAPTIONS_PER_IMAGE
        caption = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16)))
        records.append({"image": f"val2014/COCO_val2014_{image_number:012d}.jpg", "caption": caption,
                        "image_id": f"coco_{image_number}"})
    path.write_text(json.dumps(records))


# -- measured in child processes -------------------------------------------------------------
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _private_kb() -> int:
    values = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        parts = line.split()
        values[parts[0].rstrip(":")] = int(parts[1])
    return values["Private_Clean"] + values["Private_Dirty"]


def _load(side: str, path: str):
    if side == "json.load":
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    from mm_datasets_coco.caption_datasets import CaptionDataset

    return CaptionDataset(vis_root=Path(path).parent, ann_paths=[path])


class _Records:
    """What a training DataLoader reads of every sample's annotation, from either side."""

    def __init__(self, data) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> int:
        record = self.data.record(index) if hasattr(self.data, "record") else self.data[index]
        return len(record["image"]) + len(record["caption"]) + len(record["image_id"])


def _worker_memory(batch: list[int]) -> dict:
    import torch

    info = torch.utils.data.get_worker_info()
    return {"worker": info.id if info else -1, "private_kb": _private_kb(), "rss_kb": _status_kb("VmRSS"),
            "chars": sum(batch)}


def child(mode: str, side: str, path: str) -> dict:
    import time

    import torch  # noqa: F401  both sides start from the same imports

    from mm_datasets_coco.caption_datasets import CaptionDataset  # noqa: F401

    before = _status_kb("VmRSS")
    start = time.perf_counter()
    data = _load(side, path)
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "peak_mb": (_status_kb("VmHWM") - before) / 1024,
              "retained_mb": (_status_kb("VmRSS") - before) / 1024, "records": len(data)}
    if mode == "epoch":
        from torch.utils.data import DataLoader

        loader = DataLoader(_Records(data), batch_size=1000, num_workers=2, collate_fn=_worker_memory,
                            persistent_workers=False, prefetch_factor=1)
        first: dict[int, dict] = {}
        last: dict[int, dict] = {}
        chars = 0
        for report in loader:
            first.setdefault(report["worker"], report)
            last[report["worker"]] = report
            chars += report["chars"]
        growth = {w: (last[w]["private_kb"] - first[w]["private_kb"]) / first[w]["rss_kb"] for w in first}
        result.update(worker_growth=max(growth.values()), worker_rss_mb=max(r["rss_kb"] for r in first.values()) / 1024,
                      worker_private_growth_mb=max(last[w]["private_kb"] - first[w]["private_kb"] for w in first) / 1024,
                      chars=chars)
    return result


def _in_child(mode: str, side: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, side, str(path)], capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"annotations benchmark child ({mode}, {side}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> dict:
    sides = ("json.load", "coco_caption dataset")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "coco_karpathy_train.json"
        write_karpathy_train(path, RECORDS)
        size_mb = path.stat().st_size / 2**20
        loads: dict[str, list[dict]] = {side: [] for side in sides}
        for _ in range(REPEATS):
            for side in sides:  # alternate
                loads[side].append(_in_child("load", side, path))
        epochs = {side: _in_child("epoch", side, path) for side in sides}
    rows = []
    for side in sides:
        rows.append({
            "side": side,
            "load_s_median": round(statistics.median(r["seconds"] for r in loads[side]), 2),
            "load_runs_s": " ".join(f"{r['seconds']:.2f}" for r in loads[side]),
            "peak_rss_mb": round(statistics.median(r["peak_mb"] for r in loads[side])),
            "retained_rss_mb": round(statistics.median(r["retained_mb"] for r in loads[side])),
            "worker_rss_mb": round(epochs[side]["worker_rss_mb"]),
            "worker_private_growth_mb": round(epochs[side]["worker_private_growth_mb"]),
            "worker_growth_pct": round(100 * epochs[side]["worker_growth"], 1),
        })
    load_ratio = rows[1]["load_s_median"] / rows[0]["load_s_median"]
    growth = epochs[sides[1]]["worker_growth"]
    return {
        "benchmark": "annotations",
        "records": RECORDS, "file_mb": round(size_mb), "repeats": REPEATS,
        "load_ratio": round(load_ratio, 2), "load_target": "<= 1.2x json.load", "load_target_met": load_ratio <= 1.2,
        "worker_growth_pct": round(100 * growth, 1), "growth_target": "<= 10 %", "growth_target_met": growth <= 0.10,
        "rows": rows,
    }


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:5])))
    else:
        print(json.dumps(run(), indent=1))
