"""Annotations at scale: 600,000 Karpathy-format caption records (generated).

1. Load: wall time and peak RSS of building the ``coco_caption`` train dataset
   (:class:`mm_datasets_coco.caption_datasets.CaptionDataset`, annotations in numpy columns) vs
   plain ``json.load`` into a list of dicts. The dataset is measured twice: *cold* (the first
   load: parse the JSON, build the columns, write the column cache into an empty cache root) and
   *cached* (a later load of the same unchanged file: the columns are memory-mapped from
   ``<cache root>/annotation_cache``). Each load runs in a fresh process that has already
   imported both sides' modules; the sides alternate, ``REPEATS`` times; medians. Peak RSS is the
   process' high-water mark minus its RSS just before loading.
2. One epoch reading every record (``dataset.record(i)``: image path, caption, image id) through
   a DataLoader with 2 workers, for the compact dataset and for the list of dicts. A forked
   worker shares the parent's pages until it writes to them; touching a Python object writes its
   reference count, so the page becomes the worker's own. Growth is the worker's private memory
   (``Private_Clean + Private_Dirty`` of ``/proc/self/smaps_rollup``) at the end of the epoch
   minus at its start, over its RSS at the start; the larger of the two workers is reported.

Targets (issue 10): load time <= 1.2x ``json.load``; worker RSS growth <= 10 %. The load ratio
is reported for the cold and the cached load separately; ``load_target_met`` says which meet it.

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

    # cold / cached differ only in what the cache root (MM_CACHE_ROOT, set by the parent) holds
    return CaptionDataset(vis_root=Path(path).parent, ann_paths=[path], annotation_cache=True)


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


COLD, CACHED = "coco_caption dataset, cold (first load)", "coco_caption dataset, cached (mmap)"


def _in_child(mode: str, side: str, path: Path, cache_root: Path) -> dict:
    if side == COLD:  # an empty cache root: the load parses the JSON and writes the cache
        cache_root = Path(tempfile.mkdtemp(dir=cache_root.parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MM_CACHE_ROOT": str(cache_root)}
    out = subprocess.run([sys.executable, __file__, "--child", mode, side, str(path)], capture_output=True,
                         text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"annotations benchmark child ({mode}, {side}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> dict:
    sides = ("json.load", COLD, CACHED)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "coco_karpathy_train.json"
        write_karpathy_train(path, RECORDS)
        size_mb = path.stat().st_size / 2**20
        cache_root = Path(tmp) / "cache"
        _in_child("load", COLD.replace("cold", "warm-up"), path, cache_root)  # fills the CACHED side's cache
        loads: dict[str, list[dict]] = {side: [] for side in sides}
        for _ in range(REPEATS):
            for side in sides:  # alternate
                loads[side].append(_in_child("load", side, path, cache_root))
        epochs = {side: _in_child("epoch", side, path, cache_root) for side in sides}
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
    json_s = statistics.median(r["seconds"] for r in loads[sides[0]])
    cold_ratio = statistics.median(r["seconds"] for r in loads[COLD]) / json_s
    cached_ratio = statistics.median(r["seconds"] for r in loads[CACHED]) / json_s
    for row in rows:
        row["load_ratio"] = round(statistics.median(r["seconds"] for r in loads[row["side"]]) / json_s, 3)
    growth = max(epochs[COLD]["worker_growth"], epochs[CACHED]["worker_growth"])
    return {
        "benchmark": "annotations",
        "records": RECORDS, "file_mb": round(size_mb), "repeats": REPEATS,
        "load_ratio_cold": round(cold_ratio, 2), "load_ratio_cached": round(cached_ratio, 3),
        "load_target": "<= 1.2x json.load",
        # honest: the cold (first) load and the cached load are judged separately
        "load_target_met": {"cold": cold_ratio <= 1.2, "cached": cached_ratio <= 1.2},
        "load_ratio": round(cached_ratio, 3),  # the figure the summary table quotes: see load_target_met
        "worker_growth_pct": round(100 * growth, 1), "growth_target": "<= 10 %", "growth_target_met": growth <= 0.10,
        "rows": rows,
    }


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:5])))
    else:
        print(json.dumps(run(), indent=1))
