"""Every LAVIS BLIP-2 LLM arch's ``tiny`` type trains a few steps on the shapes captions with a falling loss
(the real runner, the ``captioning`` task) and captions an image through ``load_model_and_preprocess`` +
``generate``, LAVIS' signatures included (``num_captions``, per-sample ``prompt``, ``predict_answers``)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from mm_core.api import load_model_and_preprocess
from mm_core.testing.runs import make_config, run_training

pytestmark = pytest.mark.slow  # real training runs

ARCHS = ["blip2_opt", "blip2_t5", "blip2_vicuna_instruct", "blip2_t5_instruct"]
SHAPES = {"type": "shapes", "build_info": {"generate": {"num_train": 24, "num_val": 4, "num_test": 4}},
          "vis_processor": {"train": {"name": "blip2_image_train", "image_size": 28}},
          "text_processor": {"train": {"name": "blip_caption"}}}


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_trains_with_a_falling_loss(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("MM_CACHE_ROOT", str(tmp_path / "cache"))
    # LAVIS freezes the LLM; a frozen *random* tiny LLM barely moves in a few steps, so this run trains it too
    loaded = make_config(arch, datasets={"coco_caption": SHAPES}, model_options={"llm": {"freeze": False}},
                         run={"task": "captioning", "init_lr": 3e-3, "max_epoch": 3, "batch_size_train": 4,
                              "log_freq": 1, "train_splits": ["train"], "valid_splits": [], "test_splits": [],
                              "progress_bar": False})
    result = run_training(loaded, tmp_path / "out")
    assert result.exit_code == 0
    losses = [e["loss"] for e in result.of_type("train") if "loss" in e]
    assert len(losses) >= 12, losses
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.8 * first, (arch, losses)


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_captions_an_image(arch, tmp_path):
    model, vis_processors, _ = load_model_and_preprocess(arch, "tiny", is_eval=True)
    image = Image.new("RGB", (48, 40), (200, 30, 30))
    batch = vis_processors["eval"](image).unsqueeze(0)
    assert batch.shape == (1, 3, 28, 28)
    captions = model.generate({"image": batch}, max_length=6)
    assert len(captions) == 1 and isinstance(captions[0], str)
    several = model.generate({"image": batch.repeat(2, 1, 1, 1), "prompt": ["a photo of", "what is it?"]},
                             num_beams=3, num_captions=3, max_length=6)
    assert len(several) == 6 and all(isinstance(c, str) for c in several)
    # LAVIS' VQA entry point: each question through the prompt template, answers by beam search
    answers = model.predict_answers({"image": batch.repeat(2, 1, 1, 1), "text_input": ["what colour?", "how many?"]},
                                    num_beams=2, max_len=4, prompt="Question: {} Short answer:")
    assert len(answers) == 2
    with pytest.raises(Exception, match="inference_method"):
        model.predict_answers({"image": batch, "text_input": ["what?"]}, inference_method="rank")


def test_instruction_enters_the_qformer():
    """InstructBLIP's image tokens depend on the instruction (the Q-Former reads it); BLIP-2's do not."""
    torch.manual_seed(0)
    image = torch.randn(1, 3, 28, 28)
    instruct, _, _ = load_model_and_preprocess("blip2_t5_instruct", "tiny", is_eval=True)
    with torch.no_grad():
        a = instruct.encode_images(image, ["what colour is the square?"])
        b = instruct.encode_images(image, ["describe the picture"])
    assert (a - b).abs().max() > 1e-4
    assert "text_embeddings.word_embeddings.weight" in instruct.state_dict()
    assert any(".intermediate." in k for k in instruct.state_dict() if k.startswith("qformer."))
    opt, _, _ = load_model_and_preprocess("blip2_opt", "tiny", is_eval=True)
    assert opt.qformer_instructions([[{"from": "user", "value": "x"}]], [1]) is None
    assert not any(k.startswith("text_embeddings.") for k in opt.state_dict())


@pytest.mark.parametrize("arch,dataset,task,split", [("blip2_t5", "coco_vqa", "vqa", "val"),
                                                     ("blip2_opt", "ok_vqa", "vqa", "test"),
                                                     ("blip2_t5_instruct", "gqa", "gqa", "val")])
def test_zero_shot_vqa_runs_with_lavis_run_keys(arch, dataset, task, split, tmp_path, monkeypatch):
    """LAVIS' zero-shot VQA run keys (max_len, min_len, num_beams, inference_method, prompt) drive
    predict_answers; the split's questions are all answered and scored."""
    monkeypatch.setenv("MM_CACHE_ROOT", str(tmp_path / "cache"))
    block = {**SHAPES, "vis_processor": {"eval": {"name": "blip_image_eval", "image_size": 28}},
             "text_processor": {"eval": {"name": "blip_question"}}}
    loaded = make_config(arch, datasets={dataset: block},
                         run={"task": task, "evaluate": True, "test_splits": [split], "batch_size_eval": 4,
                              "max_len": 4, "min_len": 1, "num_beams": 2, "inference_method": "generate",
                              "prompt": "Question: {} Short answer:", "progress_bar": False})
    result = run_training(loaded, tmp_path / "out")
    assert result.exit_code == 0
    scores = [e for e in result.of_type("eval") if e.get("split") == split]
    assert scores and scores[-1]["num_questions"] == 12.0 and 0.0 <= scores[-1]["agg_metrics"] <= 100.0


def test_a_caption_with_the_processor_prompt_is_supervised_once():
    """LAVIS' caption_coco_ft: the text processor prepends "a photo of " and the model masks its prompt, so
    "a photo of a red square" trains exactly as "a red square" after the prompt (not the prompt twice)."""
    model, _, _ = load_model_and_preprocess("blip2_opt", "tiny", is_eval=True)
    assert model.prompts == ["a photo of"]
    torch.manual_seed(0)
    image = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        prefixed = model({"image": image, "text_input": ["a photo of a red square"]})["loss"]
        bare = model({"image": image, "text_input": ["a red square"]})["loss"]
    torch.testing.assert_close(prefixed, bare, atol=0, rtol=0)
    ids = model.llm.encode_conversation(model.caption_conversation("a photo of a red square"), 4)
    answer = [i for i, label in zip(ids["input_ids"], ids["labels"]) if label != -100]
    assert model.llm.tokenizer.decode(answer) == " a red square\n"


def test_captioning_evaluation_runs_with_lavis_run_keys(tmp_path, monkeypatch):
    """The captioning task drives generate with LAVIS' run keys (InstructBLIP's eval file: max_len 80, min_len 10,
    num_beams 5, inference_method, length_penalty) and the model's own prompt; every test image gets a caption."""
    monkeypatch.setenv("MM_CACHE_ROOT", str(tmp_path / "cache"))
    block = {**SHAPES, "vis_processor": {"eval": {"name": "clip_image_eval", "image_size": 28}},
             "text_processor": {"eval": {"name": "blip_caption"}}}
    loaded = make_config("blip2_vicuna_instruct", datasets={"coco_caption": block},
                         run={"task": "captioning", "evaluate": True, "valid_splits": ["test"], "batch_size_eval": 2,
                              "max_len": 12, "min_len": 10, "num_beams": 2, "inference_method": "generate",
                              "length_penalty": 1.0, "meteor": False, "spice": False, "progress_bar": False})
    result = run_training(loaded, tmp_path / "out")
    assert result.exit_code == 0
    captions = list((tmp_path / "out" / "result").glob("test_*.json"))
    records = [r for path in captions if "scores" not in path.name for r in json.loads(path.read_text())]
    assert len(records) == 4 and all(r["caption"] for r in records)
