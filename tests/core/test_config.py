"""Config merging (defaults < dataset defaults < file < --options) and validation errors."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mm_core.config.loader import load_config
from mm_core.errors import ConfigError

from ..conftest import mm_env, run_mmrun

RUN = """
model:
  arch: toy_regressor
  model_type: wide
  freeze_encoder: true
datasets:
  toy_regression:
    text_processor:
      train: {name: toy_scale, scale: 2.0}
run:
  task: base
  lr_sched: constant_lr
  init_lr: 0.01
  max_epoch: 2
  output_dir: ${env:MM_TEST_OUT,fallback_out}
"""


@pytest.fixture
def run_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(RUN)
    return path


def test_merge_order_defaults_then_dataset_defaults_then_file_then_options(toy_plugin, run_yaml):
    loaded = load_config(run_yaml, ["run.max_epoch=5", "datasets.toy_regression.text_processor.eval.scale=3"])
    cfg = loaded.config
    assert cfg.model.hidden == 32  # from the `wide` defaults
    assert cfg.model.in_dim == 4
    assert cfg.model.freeze_encoder is True  # file beats defaults
    assert cfg.datasets.toy_regression.data_type == "features"  # builder defaults
    assert cfg.datasets.toy_regression.text_processor.train.scale == 2.0  # file
    assert cfg.datasets.toy_regression.text_processor.eval == {"name": "toy_scale", "scale": 3}  # options
    assert cfg.run.max_epoch == 5  # options beat the file
    assert loaded.sources["model"][0].endswith("toy_regressor/wide.yaml")
    assert loaded.sources["run"] == [str(run_yaml), "--options"]


def test_model_type_on_the_command_line_selects_that_types_defaults(toy_plugin, run_yaml):
    cfg = load_config(run_yaml, ["model.model_type=tiny"]).config
    assert cfg.model.model_type == "tiny"
    assert cfg.model.hidden == 8
    assert cfg.model.freeze_encoder is True  # the user's own keys still win


def test_env_interpolation(toy_plugin, run_yaml, monkeypatch):
    monkeypatch.setenv("MM_TEST_OUT", "/somewhere/out")
    cfg = load_config(run_yaml).config
    assert cfg.run.output_dir == "/somewhere/out"
    monkeypatch.delenv("MM_TEST_OUT")
    assert load_config(run_yaml).config.run.output_dir == "fallback_out"


def test_config_loaded_hook_sees_the_merged_config(toy_plugin, run_yaml):
    from mm_core.hookspecs import hookimpl
    from mm_core.plugins import plugin_registered

    seen = []

    class Watcher:
        @hookimpl
        def config_loaded(self, config):
            seen.append(OmegaConf.to_container(config.model))

    with plugin_registered(Watcher(), name="watcher"):
        load_config(run_yaml)
    assert seen and seen[0]["hidden"] == 32


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["run.max_epoc=3"], "--options: unknown key 'run.max_epoch'"),
        (["run.max_epoch=abc"], "--options: run.max_epoch must be an integer, got str 'abc'"),
        (["model.hidden=wide"], "--options: model.hidden must be a number or null"),
        (["model.model_type=huge"], "model 'toy_regressor' has no model_type 'huge'"),
        (["datsets.x=1"], "--options: unknown top-level key 'datsets' (did you mean 'datasets'?)"),
    ],
)
def test_bad_values_name_the_source_and_key(toy_plugin, run_yaml, options, message):
    with pytest.raises(ConfigError) as err:
        load_config(run_yaml, options)
    assert message.replace("max_epoch'", "max_epoc'") in str(err.value) or message in str(err.value)


def test_unknown_run_key_in_the_file_names_the_file_and_suggests(toy_plugin, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(RUN.replace("max_epoch: 2", "max_epohc: 2"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "unknown key 'run.max_epohc' (did you mean 'max_epoch'?)" in str(err.value)


def test_missing_task_and_missing_arch_are_errors(toy_plugin, tmp_path):
    path = tmp_path / "notask.yaml"
    path.write_text("run:\n  max_epoch: 1\n")
    with pytest.raises(ConfigError, match="run.task is required"):
        load_config(path)
    path.write_text("model:\n  model_type: tiny\nrun:\n  task: base\n")
    with pytest.raises(ConfigError, match="model.arch is required"):
        load_config(path)


def test_cli_exit_code_2_for_bad_yaml_with_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("run:\n  task: base\n   bad_indent: 1\n")
    result = run_mmrun(["--config", str(path)], mm_env(toy=True))
    assert result.returncode == 2
    assert str(path) in result.stderr and "line 3" in result.stderr
    assert "Traceback" not in result.stderr
    debug = run_mmrun(["--config", str(path), "--debug"], mm_env(toy=True))
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_cli_exit_code_2_for_wrong_type_and_unknown_run_key(run_yaml):
    for option, fragment in (("run.init_lr=fast", "run.init_lr must be a number"),
                             ("run.warmup_step=3", "unknown key 'run.warmup_step'")):
        result = run_mmrun(["config", "--config", str(run_yaml), "--options", option], mm_env(toy=True))
        assert result.returncode == 2, result.stdout
        assert fragment in result.stderr


def test_mmrun_config_prints_merged_config_and_sources(run_yaml):
    result = run_mmrun(["config", "--config", str(run_yaml), "--options", "model.model_type=tiny"], mm_env(toy=True))
    assert result.returncode == 0, result.stderr
    assert "#   model: " in result.stdout and "toy_regressor/tiny.yaml < " + str(run_yaml) in result.stdout
    body = OmegaConf.create("\n".join(line for line in result.stdout.splitlines() if not line.startswith("#")))
    assert body.model.hidden == 8 and body.run.task == "base"


def test_dry_run_resolves_everything_and_builds_nothing(run_yaml, tmp_path):
    result = run_mmrun(["--config", str(run_yaml), "--dry-run"], mm_env(toy=True, MM_CACHE_ROOT=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "model: toy_regressor / wide" in result.stdout
    assert "toy/train.json [MISSING]" in result.stdout
    assert "dry run: nothing was built" in result.stdout


# -- bad input: files that are not configs, impossible counts, LAVIS keys mm does not run -------
NOT_A_MAPPING = {"empty.yaml": ("", "found nothing (the file is empty)"),
                 "comments.yaml": ("# nothing here\n", "found nothing (the file is empty)"),
                 "list.yaml": ("- model\n- run\n", "found a list"),
                 "scalar.yaml": ("hello\n", "found a str")}


@pytest.mark.parametrize("name", sorted(NOT_A_MAPPING))
def test_a_config_file_that_is_not_a_mapping_is_an_error_naming_it(tmp_path, name):
    text, found = NOT_A_MAPPING[name]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "must be a mapping at the top level" in str(err.value)
    assert found in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["config", "dry-run", "run"])
def test_empty_and_list_configs_exit_2_in_every_command(tmp_path, command):
    for name in ("empty.yaml", "list.yaml"):
        path = tmp_path / name
        path.write_text(NOT_A_MAPPING[name][0])
        args = {"config": ["config", "--config", str(path)], "dry-run": ["--config", str(path), "--dry-run"],
                "run": ["--config", str(path)]}[command]
        result = run_mmrun(args, mm_env(toy=True, MM_CACHE_ROOT=str(tmp_path)))
        assert result.returncode == 2, result.stdout + result.stderr
        assert str(path) in result.stderr and "Traceback" not in result.stderr


def test_an_empty_model_section_is_an_error(toy_plugin, tmp_path):
    path = tmp_path / "run.yaml"
    for model in ("model:\n", "model: []\n", "model: resnet\n"):
        path.write_text(model + "run:\n  task: base\n")
        with pytest.raises(ConfigError, match="the model section is empty or not a mapping") as err:
            load_config(path)
        assert str(path) in str(err.value)


def test_a_run_without_a_model_is_a_config_error(toy_plugin, tmp_path):
    from mm_core.registry import get_registry

    task = get_registry().resolve("tasks", "base").setup_task(None)
    with pytest.raises(ConfigError, match=r"no model \(model.arch\)"):
        task.build_model(OmegaConf.create({"run": {"task": "base"}}))


IMPOSSIBLE = ["max_epoch=-1", "max_epoch=0", "batch_size_train=0", "batch_size_eval=-2", "max_iters=-5",
              "iters_per_epoch=0", "iters_per_inner_epoch=0", "warmup_steps=-1", "num_workers=-1", "ckpt_iters=0",
              "accum_grad_iters=0", "log_freq=0", "num_threads=0"]


@pytest.mark.parametrize("option", IMPOSSIBLE)
def test_impossible_counts_are_errors_naming_the_key(toy_plugin, run_yaml, option):
    key = option.split("=")[0]
    with pytest.raises(ConfigError, match=rf"--options: run\.{key} must be >= [01], got"):
        load_config(run_yaml, [f"run.{option}"])


def test_max_epoch_0_is_fine_for_an_evaluation_only_run(toy_plugin, run_yaml):
    assert load_config(run_yaml, ["run.max_epoch=0", "run.evaluate=true"]).config.run.max_epoch == 0


# LAVIS / MiniGPT4-Qwen run keys: (values meaning what mm does, values asking for something else)
LAVIS_KEYS = {
    "optimizer": (["adamw", "AdamW"], ["sgd", "lamb"]),
    "dist_url": (["env://"], ["tcp://10.0.0.1:23456", "file:///tmp/rendezvous"]),
    "fsdp": ([False], [True]),
    "cpu_offload": ([False], [True]),
    "distributed": ([True, False], []),       # one process: either is what happens
    "use_dist_eval_sampler": ([True, False], []),
    "world_size": ([1, 4], []),               # the launcher's value wins, as in LAVIS (a warning when they differ)
    "rank": ([0], []),
    "gpu": ([0], []),
    "min_num_params": ([1e8], [-1]),
    "report_metric": ([True, False], []),
    "train_dataset_ratios": ([{"toy_regression": 1.0}], []),
}


@pytest.mark.parametrize("key", sorted(LAVIS_KEYS))
def test_each_lavis_run_key_is_accepted_when_it_means_what_mm_does_else_refused(toy_plugin, run_yaml, key):
    from mm_core.engine.settings import RunSettings

    accepted, refused = LAVIS_KEYS[key]
    for value in accepted:
        cfg = load_config(run_yaml, [f"run.{key}={value}"]).config
        assert getattr(RunSettings.from_config(cfg), key) == value
    for value in refused:
        with pytest.raises(ConfigError) as err:
            load_config(run_yaml, [f"run.{key}={value}"])
        assert f"run.{key}" in str(err.value) and (err.value.hint or "must be >=" in str(err.value))


@pytest.mark.parametrize("key", ["distributed"])
def test_single_process_keys_are_refused_under_a_multi_process_launch(toy_plugin, run_yaml, monkeypatch, key):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=rf"run\.{key}: False is not supported") as err:
        load_config(run_yaml, [f"run.{key}=false"])
    assert err.value.hint
    assert load_config(run_yaml, [f"run.{key}=true"])


def test_launcher_keys_that_differ_from_the_launch_are_warned_about(toy_plugin, run_yaml, monkeypatch, caplog):
    monkeypatch.setenv("WORLD_SIZE", "1")
    with caplog.at_level("WARNING"):
        load_config(run_yaml, ["run.world_size=3", "run.gpu=5"])
    assert "run.world_size: 3 in the config, 1 from the launcher" in caplog.text
    assert "run.gpu: 5 in the config, 0 from the launcher" in caplog.text


def test_published_minigpt4qwen_run_blocks_still_load(toy_plugin, tmp_path):
    """MiniGPT4-Qwen's published files set distributed/world_size/dist_url/fsdp: their run blocks pass."""
    import yaml

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    files = sorted((root / "qwen_llm" / "published").glob("*.yaml")) + sorted((root / "deepspeed" / "configs").glob("*.yaml"))
    assert len(files) >= 4
    from mm_core.engine.settings import RunSettings

    for file in files:
        run = yaml.safe_load(file.read_text())["run"]
        settings = RunSettings.from_config({"run": run})
        assert settings.distributed is True and settings.dist_url == "env://", file
