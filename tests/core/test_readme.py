"""The README's config example is a valid config (merged and validated by `mmrun config`)."""

from __future__ import annotations

import re

from ..conftest import REPO, mm_env, run_mmrun


def test_readme_config_example_is_valid(tmp_path):
    text = (REPO / "README.md").read_text()
    block = re.search(r"```yaml\n(# examples/quickstart.yaml, shortened.*?)```", text, flags=re.S).group(1)
    config = tmp_path / "run.yaml"
    config.write_text(block)
    result = run_mmrun(["config", "--config", str(config)], mm_env(MM_CACHE_ROOT=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "arch: minigpt4qwen" in result.stdout and "task: captioning" in result.stdout
