"""`examples/check_quickstart.py`, the demo's range check: floors, not digits (README, "Quickstart")."""

from __future__ import annotations

import json
import subprocess
import sys

from ..conftest import REPO

SCRIPT = REPO / "examples" / "check_quickstart.py"


def run_check(tmp_path, val_cider: float) -> subprocess.CompletedProcess:
    events = [{"type": "eval", "split": "val", "epoch": "init", "CIDEr": 0.0, "Bleu_4": 0.0},
              {"type": "train", "step": 1, "loss": 2.0},
              {"type": "eval", "split": "val", "epoch": 19, "CIDEr": val_cider, "Bleu_4": 0.65},
              {"type": "eval", "split": "test", "epoch": "best", "CIDEr": 2.87, "Bleu_4": 0.58}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in events))
    return subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)


def test_figures_of_another_cpu_pass_and_an_untrained_model_fails(tmp_path):
    for cider in (3.7015, 3.3478):  # this machine's README figure, and another machine's of the same kind
        ok = run_check(tmp_path, cider)
        assert ok.returncode == 0 and "in the expected range" in ok.stdout and f"val CIDEr {cider:.4f}" in ok.stdout
    low = run_check(tmp_path, 0.4)
    assert low.returncode == 1 and "BELOW the expected range" in low.stdout
