"""``mmrun predict``: inputs (folder, JSONL, CSV, dataset split), unreadable images, answers equal
to the model's own methods called one input at a time, resume after SIGKILL, torchrun sharding.

The models are real: the tiny MiniGPT4-Qwen (``generate`` / ``predict_answers``, batched) and the
serve tests' ``char_chat`` (``chat`` only).
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from serve_support import BIN, CHAR_CONFIG, png_bytes, serve_env

from mm_core.cli.main import main as mmrun

QWEN = "model:\n  arch: minigpt4qwen\n  model_type: tiny\n"
TOKENS = 6
PROMPTS = ["What is in the picture?", "Describe it.", None, "Tell me the colour of the big shape in one word please.",
           "Hi", None, "Which shape do you see here, and where is it?"]
QUESTIONS = ["what colour is it?", "how many shapes are there in this image?", "shape?"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight striped squares of different colours (sorted names img0..img7)."""
    root = tmp_path_factory.mktemp("predict_images")
    for i in range(8):
        color = (30 * i % 256, 255 - 25 * i, (90 + 50 * i) % 256)
        (root / f"img{i}.png").write_bytes(png_bytes(color, size=24, stripe=(255 - color[0], 20 * i, 128)))
    return root


@pytest.fixture(scope="module")
def qwen_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("predict_cfg") / "qwen.yaml"
    path.write_text(QWEN)
    return path


@pytest.fixture(scope="module")
def qwen():
    """The model ``mmrun predict`` loads for ``qwen_config``, loaded the same one way, as reference."""
    from mm_core.api import load_model_for_inference

    return load_model_for_inference(QWEN_DICT(), device="cpu")


def QWEN_DICT() -> dict:  # noqa: N802 - a constant's factory
    return {"model": {"arch": "minigpt4qwen", "model_type": "tiny"}}


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def predict(*args: str) -> int:
    return mmrun(["predict", "--max-new-tokens", str(TOKENS), "--num-workers", "0", "--no-progress-bar", *map(str, args)])


def test_folder_answers_equal_generate_one_by_one(images: Path, qwen_config: Path, qwen, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """A folder, batch 3 (so batches of 3, 3, 2) with one DataLoader worker: every output is what
    ``model.generate`` gives that image alone (greedy), token for token."""
    import torch

    from mm_serve.images import open_image

    out = tmp_path / "preds.jsonl"
    assert predict("--config", qwen_config, "--inputs", images, "--output", out, "--batch-size", 3,
                   "--num-workers", 1) == 0
    lines = read(out)
    assert [line["id"] for line in lines] == [f"img{i}.png" for i in range(8)]
    tokenizer = qwen.model.llm.tokenizer
    for line in lines:
        pixels = qwen.vis_processor(open_image(line["image"])).unsqueeze(0)
        with torch.no_grad():
            alone = qwen.model.generate({"image": pixels}, max_new_tokens=TOKENS, num_beams=1)[0]
        assert tokenizer.encode(line["output"]) == tokenizer.encode(alone), line["id"]
        assert line["generation"] == {"method": "generate", "max_new_tokens": TOKENS, "num_beams": 1, "do_sample": False}
        assert line["prompt"] is None and Path(line["image"]).parent == images
    assert "8 inputs: 8 predicted, 0 skipped" in capsys.readouterr().err


def test_jsonl_prompts_and_questions_equal_one_by_one(images: Path, qwen_config: Path, qwen, tmp_path: Path) -> None:
    """Records with prompts of different lengths (left padding in a batch), none (the model's
    own prompt) and questions (predict_answers): each equals its own call alone."""
    import torch

    from mm_serve.images import open_image

    records = [{"id": f"p{i}", "image": f"img{i}.png", **({"prompt": p} if p else {})} for i, p in enumerate(PROMPTS)]
    records += [{"id": 100 + i, "image": str(images / f"img{i}.png"), "question": q} for i, q in enumerate(QUESTIONS)]
    source = tmp_path / "records.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "preds.jsonl"
    assert predict("--config", qwen_config, "--inputs", source, "--image-root", images, "--output", out,
                   "--batch-size", 4) == 0
    lines = read(out)
    assert [line["id"] for line in lines] == [r["id"] for r in records]
    outputs = set()
    for record, line in zip(records, lines):
        pixels = qwen.vis_processor(open_image(str(images / Path(record["image"]).name))).unsqueeze(0)
        with torch.no_grad():
            if "question" in record:
                alone = qwen.model.predict_answers({"image": pixels, "text_input": [record["question"]]},
                                                   max_len=TOKENS, num_beams=1)[0]
                assert line["generation"]["method"] == "predict_answers" and line["question"] == record["question"]
            else:
                samples = {"image": pixels, **({"prompt": [record["prompt"]]} if "prompt" in record else {})}
                alone = qwen.model.generate(samples, max_new_tokens=TOKENS, num_beams=1)[0]
                assert line["prompt"] == record.get("prompt")
        assert line["output"] == alone.strip(), record["id"]
        outputs.add(line["output"])
    assert len(outputs) >= 3, "prompts should change the tiny model's answers"


def test_csv_records_and_unreadable_images(images: Path, tmp_path: Path, char_plugin: None,
                                           capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CSV whose rows point at a good image, a missing file, bytes that are no image, a truncated
    PNG and a decompression bomb (Pillow's DecompressionBombError is no OSError): one line each,
    the bad ones with an error, the run goes on and the summary counts them."""
    from PIL import Image

    config = tmp_path / "char.yaml"
    config.write_text(CHAR_CONFIG)
    (tmp_path / "garbage.png").write_bytes(b"this is not an image")
    (tmp_path / "truncated.png").write_bytes(png_bytes((1, 2, 3), size=16, stripe=(9, 8, 7))[:60])
    (tmp_path / "bomb.png").write_bytes(png_bytes((9, 9, 9), size=64))  # 4,096 pixels > 2 x the limit below
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    rows = [("a", images / "img0.png", "what is it?"), ("b", tmp_path / "missing.png", ""),
            ("c", tmp_path / "garbage.png", "and this?"), ("d", tmp_path / "truncated.png", ""),
            ("e", tmp_path / "bomb.png", ""), ("f", images / "img1.png", "")]
    source = tmp_path / "records.csv"
    with open(source, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "image", "prompt"])
        writer.writerows(rows)
    out = tmp_path / "preds.jsonl"
    assert predict("--config", config, "--inputs", source, "--output", out, "--batch-size", 4) == 0
    lines = {line["id"]: line for line in read(out)}
    assert list(lines) == ["a", "b", "c", "d", "e", "f"]
    assert "FileNotFoundError" in lines["b"]["error"]
    assert "UnidentifiedImageError" in lines["c"]["error"]
    assert "OSError" in lines["d"]["error"] and "DecompressionBombError" in lines["e"]["error"]
    for good in ("a", "f"):
        assert "error" not in lines[good] and lines[good]["generation"]["method"] == "chat"
    assert lines["a"]["prompt"] == "what is it?" and lines["f"]["prompt"] is None
    err = capsys.readouterr().err
    assert "6 inputs: 2 predicted, 0 skipped" in err and "4 errors" in err
    assert sum("error" in line for line in lines.values()) == 4


def test_csv_summary_counts_errors(images: Path, tmp_path: Path, char_plugin: None, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "char.yaml"
    config.write_text(CHAR_CONFIG)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 broken")
    source = tmp_path / "records.csv"
    source.write_text(f"image,question\n{images / 'img2.png'},what?\n{tmp_path / 'bad.jpg'},why?\n")
    out = tmp_path / "preds.jsonl"
    assert predict("--config", config, "--inputs", source, "--output", out) == 0
    err = capsys.readouterr().err
    assert "2 inputs: 1 predicted, 0 skipped" in err and "1 errors" in err
    lines = read(out)
    assert [line["id"] for line in lines] == [0, 1] and lines[0]["question"] == "what?"
    assert lines[0]["generation"]["method"] == "chat"  # char_chat has no predict_answers


def test_split_input_equals_predict_answers(tmp_path: Path, qwen) -> None:
    """``--split test`` of the config's coco_vqa (shapes): ids are the split's indices, each answer
    equals predict_answers on that sample alone, through the dataset's own collater."""
    import torch

    config = tmp_path / "vqa.yaml"
    config.write_text(QWEN + f"""
datasets:
  coco_vqa:
    type: shapes
    build_info:
      generate: {{num_train: 4, num_val: 2, num_test: 5}}
    vis_processor:
      eval: {{name: blip2_image_eval, image_size: 32}}
run:
  task: vqa
env:
  cache_root: {tmp_path}
""")
    out = tmp_path / "preds.jsonl"
    assert predict("--config", config, "--split", "test", "--output", out, "--batch-size", 2) == 0
    lines = read(out)
    from mm_core.config.loader import load_config
    from mm_serve.predict.cli import split_dataset

    dataset = split_dataset(load_config(str(config)).config, "test", None)
    assert [line["id"] for line in lines] == list(range(len(dataset))) and len(dataset) >= 5
    for line in lines:
        sample = dataset[line["id"]]
        with torch.no_grad():
            alone = qwen.model.predict_answers(dataset.collater([sample]), max_len=TOKENS, num_beams=1)[0]
        assert line["output"] == alone.strip()
        assert line["question"] == sample["text_input"] and line["question_id"] == sample["question_id"]
        assert Path(line["image"]).is_file()


def test_bad_inputs_are_config_errors(tmp_path: Path, qwen_config: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "preds.jsonl"
    assert predict("--config", qwen_config, "--inputs", tmp_path / "nowhere", "--output", out) == 2
    assert "no such file or folder" in capsys.readouterr().err
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": 1, "image": "a.png"}\n{"id": "1", "image": "b.png"}\n')
    assert predict("--config", qwen_config, "--inputs", dup, "--output", out) == 2
    assert "records 0 and 1 have the same id" in capsys.readouterr().err
    assert predict("--config", qwen_config, "--inputs", dup, "--output", out, "--batch-size", 0) == 2
    assert not out.exists()


# -- subprocesses: SIGKILL + resume, torchrun ---------------------------------------------------
def char_records(tmp_path: Path, images: Path, count: int) -> Path:
    source = tmp_path / "records.jsonl"
    words = ["red?", "what is it", "colour", "describe", "hello there", "shape?"]
    source.write_text("".join(json.dumps({"id": f"r{i:02d}", "image": str(images / f"img{i % 8}.png"),
                                          "prompt": words[i % len(words)]}) + "\n" for i in range(count)))
    return source


def predict_process(args: list[str], log: Path, torchrun: int = 0) -> subprocess.Popen:
    launcher = ([str(BIN / "torchrun"), f"--nproc-per-node={torchrun}", "--standalone", "-m", "mm_serve.predict"]
                if torchrun else [str(BIN / "mmrun"), "predict"])
    with open(log, "wb") as file:
        return subprocess.Popen([*launcher, *args], stdout=file, stderr=subprocess.STDOUT, env=serve_env())


def finish(process: subprocess.Popen, log: Path, timeout: float = 240) -> int:
    """The exit code of ``process``; killed (with its log shown) when it runs past ``timeout``."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)
        raise AssertionError(f"mmrun predict ran past {timeout} s:\n{log.read_text()}") from None


@pytest.mark.slow
def test_resume_after_sigkill_gives_each_id_once(images: Path, tmp_path: Path, char_plugin: None) -> None:
    """Kill a real run mid-way (SIGKILL), leave a half-written last line as a kill mid-write would,
    rerun: every id exactly once, answers equal an uninterrupted run's, nothing done twice."""
    source = char_records(tmp_path, images, 24)
    config = tmp_path / "char.yaml"
    config.write_text(CHAR_CONFIG)
    out = tmp_path / "preds.jsonl"
    common = ["--config", str(config), "--inputs", str(source), "--batch-size", "2", "--num-workers", "1",
              "--max-new-tokens", "12"]
    process = predict_process([*common, "--output", str(out), "--options", "model.step_delay=0.02"], tmp_path / "1.log")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 6):
        assert process.poll() is None, (tmp_path / "1.log").read_text()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    first = read(out)
    assert 6 <= len(first) < 24, "the kill should land mid-run"
    with open(out, "a") as file:
        file.write('{"id": "r23", "image": "x", "outp')  # a half-written line
    second = predict_process([*common, "--output", str(out)], tmp_path / "2.log")
    assert finish(second, tmp_path / "2.log") == 0, (tmp_path / "2.log").read_text()
    log = (tmp_path / "2.log").read_text()
    assert f"24 inputs: {24 - len(first)} predicted, {len(first)} skipped" in log
    lines = read(out)
    assert [line["id"] for line in lines] == [f"r{i:02d}" for i in range(24)]
    fresh = tmp_path / "fresh.jsonl"
    assert finish(predict_process([*common, "--output", str(fresh)], tmp_path / "3.log"), tmp_path / "3.log") == 0
    assert lines == read(fresh)
    assert lines[: len(first)] == first


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(images: Path, qwen_config: Path, tmp_path: Path) -> None:
    """2 ranks (gloo, CPU) shard the inputs, rank 0 merges in input order: the file equals the
    1-process file byte for byte (batched generate on both sides, batches made differently)."""
    records = [{"id": f"x{i}", "image": str(images / f"img{i % 8}.png"), **({"prompt": p} if p else {})}
               for i, p in enumerate(PROMPTS * 2)]
    source = tmp_path / "records.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    common = ["--config", str(qwen_config), "--inputs", str(source), "--batch-size", "3", "--num-workers", "0",
              "--max-new-tokens", str(TOKENS), "--device", "cpu"]
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    first = predict_process([*common, "--output", str(one)], tmp_path / "one.log")
    second = predict_process([*common, "--output", str(two)], tmp_path / "two.log", torchrun=2)
    assert finish(first, tmp_path / "one.log") == 0, (tmp_path / "one.log").read_text()
    if finish(second, tmp_path / "two.log") != 0:
        raise AssertionError((tmp_path / "two.log").read_text())
    assert "on 2 processes" in (tmp_path / "two.log").read_text()
    assert two.read_text() == one.read_text()
    assert [line["id"] for line in read(two)] == [r["id"] for r in records]
    assert not list(tmp_path.glob("two.jsonl.part-*"))



def test_predict_is_the_serve_plugins_command(capsys: pytest.CaptureFixture) -> None:
    from mm_core.registry import get_registry

    assert get_registry().get("commands", "predict").target == "mm_serve.predict.cli:main"
    with pytest.raises(SystemExit) as exit_info:
        mmrun(["predict", "--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert all(option in usage for option in ("--inputs", "--split", "--batch-size", "--num-workers", "--output"))


@pytest.mark.slow
def test_avsd_split_answers_equal_gpt_dialogue_generate(tmp_path: Path) -> None:
    """The AVSD GPT-2 dialogue model (video features, LAVIS' ``max_len``) through ``--split val``:
    each answer equals ``model.generate`` on that sample alone, with the dataset's collater."""
    import torch

    from mm_core.api import load_model_for_inference
    from mm_core.config.loader import load_config
    from mm_serve.predict.cli import split_dataset

    config = Path(__file__).resolve().parents[2] / "examples" / "avsd_tiny.yaml"
    options = [f"env.cache_root={tmp_path}"]
    model = load_model_for_inference(str(config), options, device="cpu").model
    weights = tmp_path / "weights.pth"  # the tiny type is random init: both sides load these weights
    torch.save(model.state_dict(), weights)
    out = tmp_path / "preds.jsonl"
    assert predict("--config", config, "--options", *options, "--checkpoint", weights, "--split", "val",
                   "--output", out, "--batch-size", 2) == 0
    lines = read(out)
    dataset = split_dataset(load_config(str(config), options).config, "val", None)
    assert [line["id"] for line in lines] == list(range(len(dataset))) and len(dataset) >= 2
    for line in lines:
        with torch.no_grad():
            alone = model.generate(dataset.collater([dataset[line["id"]]]), num_beams=1, max_len=TOKENS)[0]
        assert line["output"] == alone.strip() and line["generation"]["method"] == "generate"
