"""docs/plugins.md stays true: its hook reference matches the specs, and its walk-through
plugin installs, lists and passes its own tests."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from ..conftest import REPO, mm_env, run_mmrun
from .test_plugins import pip_install_target

DOC = REPO / "docs" / "plugins.md"
sys.path.insert(0, str(REPO / "docs"))
import hook_reference  # noqa: E402


def test_hook_reference_matches_the_docstrings():
    text = DOC.read_text()
    assert hook_reference.current_section(text) == hook_reference.render(), (
        "docs/plugins.md is out of date: run `python docs/hook_reference.py --write`")


@pytest.mark.parametrize("name", hook_reference.spec_names())
def test_every_hook_has_a_reference_entry(name):
    assert f"### `{name}(" in DOC.read_text()


def walkthrough_files(heading: str = "## Walk-through: a model plugin") -> dict[str, str]:
    """Code blocks of a walk-through (the section under ``heading``) whose first line is `# file: PATH`."""
    files = {}
    section = DOC.read_text().split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```[a-z]*\n(.*?)```", section, flags=re.S):
        first, _, rest = block.partition("\n")
        if first.startswith("# file: "):
            files[first[len("# file: "):].strip()] = rest
    return files


def write_files(project, files: dict[str, str]) -> None:
    """Write ``relative path -> text`` under ``project``."""
    for relative, text in files.items():
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_text(text)


@pytest.mark.slow  # pip-installs the plugin and runs its tests
def test_walkthrough_plugin_installs_lists_and_passes_its_tests(tmp_path):
    project = tmp_path / "mm-plugin-patchmlp"
    files = walkthrough_files()
    assert {"pyproject.toml", "src/mm_patchmlp/hooks.py", "tests/test_patchmlp.py"} <= set(files)
    write_files(project, files)
    site = tmp_path / "site"
    pip_install_target(project, site)
    env = mm_env([site])
    listed = run_mmrun(["list", "models"], env)
    assert "patch_mlp  [tiny]" in listed.stdout, listed.stdout + listed.stderr
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project / "tests")],
                           env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "1 passed" in tests.stdout
