"""Helpers of the report tests: a real tiny captioning run with ``mmrun``, ``mmrun report`` in a
subprocess, and an HTML reader built on the standard library's parser."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
SHAPES = {"seed": 3, "num_train": 24, "num_val": 8, "num_test": 4, "image_size": 32, "captions_per_train_image": 2}
MAX_EPOCH = 3


def env(cache_root: Path, **extra: str) -> dict[str, str]:
    """Offline, one thread, the coco plugin (installed) plus this folder's test model."""
    out = dict(os.environ)
    out.update({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1", "MM_CACHE_ROOT": str(cache_root),
                "PYTHONPATH": os.pathsep.join([str(HERE), out.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                "MM_PLUGIN_MODULES": "report_testkit.hooks"})
    out.update(extra)
    return out


def mmrun(args: list[str], environ: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mmrun"), *args], env=environ, capture_output=True, text=True, timeout=timeout)


def caption_run_config(folder: Path, output_dir: Path) -> Path:
    """A captioning run of ``report_captioner`` on generated shapes, storage relative to the cache
    root (as the shipped configs have it), so that moving the data can be simulated."""
    config = {
        "model": {"arch": "report_captioner", "model_type": "tiny"},
        "datasets": {"coco_caption": {"type": "shapes", "build_info": {"generate": {**SHAPES, "root": "shapes"}}}},
        "run": {"task": "captioning", "runner": "runner_base", "max_epoch": MAX_EPOCH, "batch_size_train": 8,
                "batch_size_eval": 4, "init_lr": 0.05, "lr_sched": "linear_warmup_cosine_lr", "warmup_steps": 2,
                "min_lr": 0.001, "num_workers": 0, "seed": 1, "num_beams": 1, "max_len": 8, "meteor": False,
                "spice": False, "valid_splits": ["val"], "test_splits": ["test"], "log_freq": 1,
                "output_dir": str(output_dir), "progress_bar": False, "device": "cpu"},
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def squares_run_config(folder: Path, output_dir: Path) -> Path:
    """A run of the test plugin's own dataset and task (``report_squares``, ``report_describe``):
    nothing of it is COCO's, so its report shows what the task saved and nothing else."""
    config = {
        "model": {"arch": "report_captioner", "model_type": "tiny"},
        "datasets": {"report_squares": {}},
        "run": {"task": "report_describe", "runner": "runner_base", "max_epoch": 1, "batch_size_train": 6,
                "batch_size_eval": 4, "init_lr": 0.05, "lr_sched": "constant_lr", "num_workers": 0, "seed": 1,
                "valid_splits": ["val"], "log_freq": 1, "output_dir": str(output_dir), "progress_bar": False,
                "device": "cpu"},
    }
    path = folder / "squares.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


class Page(HTMLParser):
    """Tags, attributes, text and gallery cards of a report page."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.texts: list[str] = []
        self.cards: list[dict] = []
        self._card: dict | None = None
        self._depth = 0
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append((tag, attributes))
        if self._card is not None:
            self._depth += tag == "div"
            if tag == "img":
                self._card["img"] = attributes.get("src")
        elif tag == "div" and attributes.get("class") == "card":
            self._card, self._depth = {"id": attributes.get("data-id"), "img": None, "text": []}, 1

    def handle_endtag(self, tag):
        if self._card is not None and tag == "div":
            self._depth -= 1
            if self._depth == 0:
                self._card["text"] = " ".join(self._card["text"])
                self.cards.append(self._card)
                self._card = None

    def handle_data(self, data):
        self.texts.append(data)
        if self._card is not None and data.strip():
            self._card["text"].append(data.strip())

    @property
    def text(self) -> str:
        return " ".join(self.texts)

    def attribute_values(self) -> list[str]:
        return [v for _, attrs in self.tags for v in attrs.values()]


def decode_data_url(url: str):
    """A ``data:image/...;base64,`` URL as a Pillow image."""
    from PIL import Image

    header, payload = url.split(",", 1)
    assert header.startswith("data:image/") and header.endswith(";base64"), header
    return Image.open(io.BytesIO(base64.b64decode(payload)))
