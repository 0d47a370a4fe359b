"""Unknown names in a config name the file and key path (issue 21), and `mmrun info` shows a card
for every kind."""

from __future__ import annotations

import pytest

from mm_core.cli.main import main
from mm_core.config.loader import load_config
from mm_core.errors import UnknownNameError

BASE = """model: {arch: blip2_llm, model_type: tiny}
datasets:
  coco_caption:
    type: shapes
    vis_processor: {train: {name: blip2_image_train}}
run: {task: captioning, runner: runner_base, lr_sched: constant_lr}
"""


@pytest.mark.parametrize("wrong,key,message", [
    ("arch: blip2_llm", "model.arch", "unknown model 'blip2_lml'"),
    ("coco_caption:", "datasets.coco_captoin", "unknown dataset builder 'coco_captoin'"),
    ("name: blip2_image_train", "datasets.coco_caption.vis_processor.train.name", "unknown processor"),
    ("task: captioning", "run.task", "unknown task 'captionin'"),
    ("runner: runner_base", "run.runner", "unknown runner 'runner_bsae'"),
    ("lr_sched: constant_lr", "run.lr_sched", "unknown lr scheduler 'constant_rl'"),
])
def test_an_unknown_name_names_the_file_and_key_path(tmp_path, wrong, key, message):
    typo = {"arch: blip2_llm": "arch: blip2_lml", "coco_caption:": "coco_captoin:",
            "name: blip2_image_train": "name: blip2_image_trian", "task: captioning": "task: captionin",
            "runner: runner_base": "runner: runner_bsae", "lr_sched: constant_lr": "lr_sched: constant_rl"}[wrong]
    config = tmp_path / "run.yaml"
    config.write_text(BASE.replace(wrong, typo))
    with pytest.raises(UnknownNameError) as raised:
        load_config(str(config))
    assert str(raised.value).startswith(f"{config}: {key}: {message}"), str(raised.value)
    assert "did you mean" in str(raised.value)


def test_a_name_given_in_options_names_options(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(BASE)
    with pytest.raises(UnknownNameError, match=r"^--options: run.task: unknown task 'vqq'"):
        load_config(str(config), ["run.task=vqq"])


def test_an_unknown_run_key_names_the_file_and_the_key(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(BASE.replace("runner: runner_base", "runner: runner_base, max_epochs: 3"))
    with pytest.raises(Exception, match=rf"^{config}: unknown key 'run.max_epochs' \(did you mean 'max_epoch'"):
        load_config(str(config))


@pytest.mark.parametrize("name,shown", [
    ("captioning", ["(task) from mm-plugin-datasets-coco", "| eval | `text_references` |", "run keys: num_beams (int)"]),
    ("vqa", ["`question_id`"]), ("dialogue", ["`references`"]), ("image_text_pretrain", ["`conversations`"]),
    ("base", ["mm-core's default task"]),
    ("qwen", ["(llm) from mm-plugin-qwen-llm", "options: model (str|null)", "# qwen"]),
    ("runner_base", ["(runner) from", "(no card: mm_core may ship configs/runners/runner_base/card.md)"]),
])
def test_info_shows_a_card_for_every_kind(capsys, name, shown):
    assert main(["info", name]) == 0
    out = capsys.readouterr().out
    assert all(text in out for text in shown), out


def test_mm_register_uses_an_installed_plugin_as_it_is(mm_register):
    import mm_blip2.hooks
    from mm_core.plugins import get_plugin_host

    before = get_plugin_host().pm.get_name(mm_blip2.hooks)
    info = mm_register(mm_blip2.hooks)
    assert before is not None and info.name == before and info.ok
