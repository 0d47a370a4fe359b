"""mm_core.testing's contract checks over every name mm's own plugins register (timm's test over
``list_models()``): the tests are parametrised over the real registry, so a newly registered name is
tested by being registered, and a name this module does not know how to exercise fails with what to
add to the tables below. Only tiny model types and generated sample data are used.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from mm_core.plugins import get_plugin_host
from mm_core.registry import KINDS, get_registry
from mm_core.testing import check_builder, check_model, check_processor, check_task

#: Every registered name of every kind, collected at import (listing imports no torch).
NAMES: dict[str, list[str]] = {kind: get_registry().names(kind) for kind in KINDS}
#: The kinds the tests below are parametrised over; a kind added to the registry must join them.
EXERCISED_KINDS = ("models", "processors", "datasets", "tasks", "runners", "lr_schedulers", "llms", "metrics",
                   "commands")
MMRUN = Path(sys.executable).parent / "mmrun"

#: arch -> (dataset builder, config type) whose generated data its ``tiny`` type trains on (as in
#: examples/*.yaml); the batch is two train samples read with the processors of the model type.
MODEL_DATA: dict[str, tuple[str, str]] = {
    "blip_caption": ("coco_caption", "shapes"),
    "blip_feature_extractor": ("coco_caption", "shapes"),
    "blip_image_text_matching": ("coco_caption", "shapes"),
    "blip_retrieval": ("coco_caption", "shapes"),
    "blip_vqa": ("coco_vqa", "shapes"),
    "blip2": ("coco_caption", "shapes"),
    "blip2_feature_extractor": ("coco_caption", "shapes"),
    "blip2_image_text_matching": ("coco_caption", "shapes"),
    "blip2_llm": ("coco_caption", "shapes"),
    "blip2_opt": ("coco_caption", "shapes"),
    "blip2_t5": ("coco_caption", "shapes"),
    "blip2_t5_instruct": ("coco_caption", "shapes"),
    "blip2_vicuna_instruct": ("coco_caption", "shapes"),
    "gpt_dialogue": ("avsd_dialogue", "tiny"),
    "minigpt4qwen": ("minigpt4_instruction", "shapes"),
}

#: dataset builder -> (config type with generated data, name of a builder whose generated data it
#: reads instead, or None). llava_instruction ships no sample type; it reads the generated
#: MiniGPT4-Qwen instruction sample, which is in a format it accepts.
BUILDER_DATA: dict[str, tuple[str, str | None]] = {
    "avsd_dialogue": ("tiny", None),
    "coco_caption": ("shapes", None),
    "coco_vqa": ("shapes", None),
    "gqa": ("shapes", None),
    "ok_vqa": ("shapes", None),
    "coco_retrieval": ("shapes", None),
    "flickr30k": ("shapes", None),
    "vg_caption": ("shapes", None),
    "minigpt4_instruction": ("shapes", None),
    "llava_instruction": ("default", "minigpt4_instruction"),
    "llava_pretrain": ("shapes", None),
    "llava_instruct_100k": ("default", "minigpt4_instruction"),
    "llava_instruct_156k": ("default", "minigpt4_instruction"),
    "videochatgpt_100k": ("shapes", None),
}


def missing_from_table(kind: str, name: str, table: str) -> str:
    return (f"{kind} '{name}' is registered but {table} in {Path(__file__).name} does not say how to exercise "
            f"it: add an entry for it there")


# -- generated data, once per module ----------------------------------------------------------
@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh cache root for this module (``MM_CACHE_ROOT``, restored after it): generated data
    and annotation caches land here."""
    root = tmp_path_factory.mktemp("mm-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MM_CACHE_ROOT", str(root))
        yield root


@pytest.fixture(scope="module")
def generated_splits(cache_root: Path) -> Callable[..., dict[str, Any]]:
    """``generated_splits(dataset, config_type, preprocess=None)``: the built splits, memoised;
    ``preprocess`` (a model type's ``preprocess`` block as YAML) replaces the dataset's processors."""

    @cache
    def build(dataset: str, config_type: str, preprocess: str | None = None) -> dict[str, Any]:
        from mm_core.config.loader import load_dataset_defaults

        block = load_dataset_defaults(dataset, config_type)
        if preprocess:
            block = OmegaConf.merge(block, OmegaConf.create(preprocess))
        return get_registry().resolve("datasets", dataset)(block, cache_dir=cache_root).build_datasets()

    return build


def model_batch(arch: str, generated_splits: Callable[..., dict[str, Any]]) -> Any:
    """Two train samples (far apart, so of different images) of the data ``arch``'s tiny type
    trains on, collated."""
    from mm_core.config.loader import load_model_defaults

    dataset, config_type = MODEL_DATA[arch]
    preprocess = load_model_defaults(arch, "tiny").get("preprocess")
    train = generated_splits(dataset, config_type, OmegaConf.to_yaml(preprocess) if preprocess else None)["train"]
    return train.collater([train[0], train[len(train) // 2]])


# -- the registry as a whole ------------------------------------------------------------------
def test_every_kind_is_exercised_by_this_module():
    assert set(KINDS) == set(EXERCISED_KINDS), "a new registry kind needs a parametrised test here"


def test_every_plugin_loads_and_no_name_is_claimed_twice():
    assert [(p.label, p.error) for p in get_plugin_host().failed()] == []
    assert get_registry().conflicts() == {}
    assert all(NAMES[kind] for kind in KINDS), {kind: names for kind, names in NAMES.items() if not names}


def test_the_tables_name_only_registered_names():
    tables = {"models": MODEL_DATA, "processors": PROCESSOR_ITEMS, "datasets": BUILDER_DATA, "metrics": METRIC_CHECKS,
              "llms": LLM_OPTIONS}
    stale = {kind: sorted(set(table) - set(NAMES[kind])) for kind, table in tables.items()}
    assert stale == {kind: [] for kind in tables}, "remove (or rename) the entries of names no plugin registers"


# -- models -----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", NAMES["models"])
def test_model_builds_its_tiny_type_and_trains(arch, generated_splits):
    assert arch in MODEL_DATA, missing_from_table("model", arch, "MODEL_DATA")
    types = get_registry().model_types(arch)
    assert "tiny" in types, f"model '{arch}' has no tiny type (it has {sorted(types)}): tests and CI need one"
    check_model(arch, model_batch(arch, generated_splits), "tiny")


# -- processors -------------------------------------------------------------------------------
def image_item(_splits: Callable[..., dict[str, Any]]) -> Any:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (40, 30), (240, 240, 240))
    ImageDraw.Draw(image).ellipse((5, 5, 25, 25), fill=(220, 30, 30))
    return image


def image_size_is(size: int) -> Callable[[Any], bool]:
    def expect(output: Any) -> bool:
        return tuple(output.shape) == (3, size, size) and output.is_floating_point()

    return expect


def video_item(splits: Callable[..., dict[str, Any]]) -> tuple[Path, str]:
    """(feature root, video id) of the first generated AVSD training video."""
    train = splits("avsd_dialogue", "tiny")["train"]
    return train.vis_root, train.annotation[0]["image_id"]


def expect_video_features(output: Any) -> bool:
    frames = output["video_fts"].shape[0]
    return (frames > 0 and tuple(output["video_fts"].shape) == (frames, 2048 + 2048 + 128)  # i3d_flow, i3d_rgb, vggish
            and tuple(output["token_type_ids"].shape) == (frames,))


DIALOGUE = {"caption": "a man walks", "summary": "", "dialog": [{"question": "is it day", "answer": "yes"}],
            "question": "what does he do", "answer": "he walks"}


def expect_dialogue_encoding(output: Any) -> bool:
    """Labels are the answer's tokens and its ``<eos>``, at the end of the sequence; ignored elsewhere."""
    from mm_core.base.llm import IGNORE_INDEX

    ids, types, labels = output["input_ids"], output["token_type_ids"], output["labels"]
    answered = labels[labels != IGNORE_INDEX]
    return (ids.shape == types.shape == labels.shape and answered.numel() >= 2
            and answered.tolist() == ids[-answered.numel():].tolist())


#: processor -> (item factory given ``generated_splits``, config options, whether the output is right).
PROCESSOR_ITEMS: dict[str, tuple[Callable[..., Any], dict[str, Any], Callable[[Any], bool]]] = {
    "base_instruction": (lambda _: "  <ImageHere>  what   colour is the big circle?  ", {"max_words": 4},
                         lambda out: out == "<ImageHere> what colour is the"),
    "blip_caption": (lambda _: "A RED circle, on the left!", {"prompt": "a picture of ", "max_words": 3},
                     lambda out: out == "a picture of a red circle,"),
    "blip_question": (lambda _: "What colour is the big circle??", {"max_words": 4},
                      lambda out: out == "what colour is the"),
    "blip_image_train": (image_item, {"image_size": 28}, image_size_is(28)),
    "blip_image_eval": (image_item, {"image_size": 28}, image_size_is(28)),
    "blip2_image_train": (image_item, {"image_size": 32}, image_size_is(32)),
    "blip2_image_eval": (image_item, {"image_size": 32}, image_size_is(32)),
    "clip_image_train": (image_item, {"image_size": 28}, image_size_is(28)),
    "clip_image_eval": (image_item, {"image_size": 28}, image_size_is(28)),
    "gpt_dialogue": (lambda _: DIALOGUE, {"tokenizer": "tiny", "max_turns": 1}, expect_dialogue_encoding),
    "gpt_video_ft": (video_item, {"visual_ft": ["i3d_flow", "i3d_rgb"], "audio_ft": ["vggish"], "tokenizer": "tiny"},
                     expect_video_features),
}


@pytest.mark.parametrize("name", NAMES["processors"])
def test_processor_processes_an_item_and_pickles(name, generated_splits):
    assert name in PROCESSOR_ITEMS, missing_from_table("processor", name, "PROCESSOR_ITEMS")
    make_item, options, expect = PROCESSOR_ITEMS[name]
    output = check_processor(name, make_item(generated_splits), options)
    assert expect(output), f"processor '{name}' returned {output!r}"


# -- dataset builders -------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES["datasets"])
def test_builder_builds_every_split_of_its_generated_data(name, cache_root):
    from mm_core.config.loader import load_dataset_defaults

    assert name in BUILDER_DATA, missing_from_table("dataset builder", name, "BUILDER_DATA")
    config_type, data_of = BUILDER_DATA[name]
    override = {}
    if data_of is not None:
        build_info = load_dataset_defaults(data_of, BUILDER_DATA[data_of][0]).build_info
        override = {"build_info": OmegaConf.to_container(build_info)}
    splits = check_builder(name, cache_root, override, config_type=config_type)
    configured = OmegaConf.merge(load_dataset_defaults(name, config_type), override).build_info.annotations
    assert set(splits) == set(configured) and "train" in splits


# -- tasks, backends, engine parts ------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES["tasks"])
def test_task_sets_up(name):
    check_task(name)


#: LLM backend -> its tiny, offline ``model.llm`` options (random weights) for the contract check.
LLM_OPTIONS: dict[str, dict[str, Any]] = {
    "qwen": {"model": "mm_qwen_llm:assets/tiny_qwen2", "random_init": True},
    "hf_causal_lm": {"model": "mm_qwen_llm:assets/tiny_opt", "random_init": True},
    "hf_seq2seq": {"model": "mm_qwen_llm:assets/tiny_flan_t5", "random_init": True},
}


@pytest.mark.parametrize("name", NAMES["llms"])
def test_llm_backend_passes_the_contract(name):
    from mm_core.base.llm import BaseLLM
    from mm_core.testing import check_llm_backend

    assert issubclass(get_registry().resolve("llms", name), BaseLLM)
    assert name in LLM_OPTIONS, missing_from_table("LLM backend", name, "LLM_OPTIONS")
    assert isinstance(check_llm_backend(name, LLM_OPTIONS[name]), BaseLLM)


@pytest.mark.parametrize("name", NAMES["runners"])
def test_runner_resolves_to_a_runner(name):
    from mm_core.engine.runner import Runner

    assert issubclass(get_registry().resolve("runners", name), Runner)


@pytest.mark.parametrize("name", NAMES["lr_schedulers"])
def test_lr_scheduler_resolves_to_a_scheduler(name):
    from mm_core.engine.schedulers import LRScheduler

    assert issubclass(get_registry().resolve("lr_schedulers", name), LRScheduler)


# -- metrics ----------------------------------------------------------------------------------
REFERENCES = {"1": ["a red circle on the left"], "2": ["two blue squares"]}


def check_caption_scores(score: Callable[..., Any]) -> None:
    """Predictions equal to their single reference: BLEU and ROUGE-L are 1; CIDEr-D is 10 times the
    share of n = 1..4 for which the caption has n-grams (6 words: 10; 3 words, no 4-gram: 7.5)."""
    same = score({k: v[0] for k, v in REFERENCES.items()}, REFERENCES, spice=False, meteor=False)
    assert all(same.metrics[f"Bleu_{n}"] == pytest.approx(1.0) for n in range(1, 5)), same.metrics
    assert same.metrics["ROUGE_L"] == pytest.approx(1.0)
    assert same.per_sample["CIDEr"] == pytest.approx({"1": 10.0, "2": 7.5})
    assert same.metrics["CIDEr"] == pytest.approx(8.75)
    wrong = score({"1": "a green triangle", "2": "two blue squares"}, REFERENCES, spice=False, meteor=False)
    assert wrong.per_sample["CIDEr"]["1"] < 10.0 and wrong.per_sample["CIDEr"]["2"] == pytest.approx(7.5)
    assert wrong.metrics["Bleu_1"] < same.metrics["Bleu_1"]


#: metric -> a check of its scores on a two-sample example.
METRIC_CHECKS: dict[str, Callable[[Callable[..., Any]], None]] = {"coco_caption": check_caption_scores}


@pytest.mark.parametrize("name", NAMES["metrics"])
def test_metric_scores_a_two_sample_example(name):
    assert name in METRIC_CHECKS, missing_from_table("metric", name, "METRIC_CHECKS")
    METRIC_CHECKS[name](get_registry().resolve("metrics", name))


# -- commands ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES["commands"])
def test_command_prints_its_usage(name):
    done = subprocess.run([str(MMRUN), name, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: mmrun {name} "), done.stdout[:300]


def test_mmrun_help_lists_every_command():
    done = subprocess.run([str(MMRUN), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ") and line.split()}
    assert set(NAMES["commands"]) <= listed, done.stdout
