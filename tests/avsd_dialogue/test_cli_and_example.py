"""End to end: `mmrun --config examples/avsd_tiny.yaml`, `mmrun make-avsd`, registration, the
tiny tokenizer's regeneration."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real runs / several processes: `make test-fast` skips this module

REPO = Path(__file__).resolve().parents[2]
MMRUN = Path(sys.executable).parent / "mmrun"
METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "agg_metrics")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def test_example_trains_and_evaluates_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [str(MMRUN), "--config", str(REPO / "examples" / "avsd_tiny.yaml"), "--options", f"run.output_dir={out}"],
        env=_env(MM_CACHE_ROOT=str(tmp_path / "cache")), capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "cache" / "avsd_tiny" / "annotations" / "train.json").is_file()  # generated sample data
    weights = json.loads((out / "weights.json").read_text())  # where each module's tensors came from
    assert weights["files"] == [] and {r["module"] for r in weights["modules"]} == {"gpt", "video_ff", "video_ff_out"}
    assert "weights:" in (out / "log.txt").read_text()
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["type"] == "train"]
    assert len(losses) >= 5 and losses[-1] < 0.6 * losses[0], losses
    assert all("loss_lm" in e and "loss_video" in e for e in events if e["type"] == "train")
    tests = [e for e in events if e["type"] == "eval" and e["split"] == "test"]
    assert tests, events[-3:]
    expected = METRICS if shutil.which("java") else tuple(m for m in METRICS if m != "METEOR")
    assert set(expected) <= set(tests[-1])
    assert tests[-1]["agg_metrics"] == tests[-1]["CIDEr"] + tests[-1]["Bleu_4"]
    answers = json.loads(next((out / "result").glob("test_epoch*[!s].json")).read_text())
    assert len(answers) == 3 and all(len(a["references"]) == 6 for a in answers)
    assert list((out / "result").glob("test_epoch*_metrics.json"))


def test_make_avsd_command_writes_sample_data(tmp_path: Path) -> None:
    proc = subprocess.run([str(MMRUN), "make-avsd", str(tmp_path / "avsd"), "--train-videos", "2"],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    dialogs = json.loads((tmp_path / "avsd" / "annotations" / "train.json").read_text())["dialogs"]
    assert len(dialogs) == 2
    for name in ("i3d_flow", "i3d_rgb", "vggish"):
        assert (tmp_path / "avsd" / "features" / name / f"{dialogs[0]['image_id']}.npy").is_file()
    assert "build_info.features.storage=" in proc.stdout


def test_names_are_listed_without_importing_torch() -> None:
    code = (
        "import sys; from mm_core.registry import get_registry; r = get_registry();"
        "assert 'gpt_dialogue' in r.names('models') and 'dialogue' in r.names('tasks');"
        "assert {'gpt_video_ft', 'gpt_dialogue'} <= set(r.names('processors'));"
        "assert r.get('datasets', 'avsd_dialogue').registration.data_type == 'features';"
        "assert 'make-avsd' in r.names('commands'); assert sorted(r.model_types('gpt_dialogue')) == ['base', 'tiny'];"
        "assert r.card('datasets', 'avsd_dialogue') and r.card('models', 'gpt_dialogue');"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_tiny_tokenizer_regenerates_byte_for_byte(tmp_path: Path) -> None:
    from mm_avsd_dialogue.tokenizer import TINY_VOCAB_SIZE, load_tokenizer, tiny_tokenizer_path, train_tiny_tokenizer

    fresh = train_tiny_tokenizer(tmp_path / "tokenizer.json")
    assert fresh.read_bytes() == tiny_tokenizer_path().read_bytes()
    tokenizer = load_tokenizer("tiny")
    assert len(tokenizer) == TINY_VOCAB_SIZE
    assert tokenizer.convert_tokens_to_ids(["<bos>", "<eos>", "<speaker1>", "<speaker2>", "<cap>", "<video>", "<pad>"]) == list(range(7))
