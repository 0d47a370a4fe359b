"""The architecture's rules, checked on the source: the core is a small host, mm-core never imports
a plugin, no plugin imports another plugin's package, and no function grows past 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE_SRC = REPO / "core" / "src"
PLUGIN_PACKAGES = {p.name: p for p in REPO.glob("plugins/*/src/mm_*") if (p / "__init__.py").is_file()}
CORE_LINE_BUDGET = 5000
LONGEST_FUNCTION = 60


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports (``import a.b`` and ``from a.b import c``; not relative)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_plugins_are_the_distributions_the_design_names():
    assert {"mm_blip_processors", "mm_blip", "mm_blip2", "mm_qwen_llm", "mm_datasets_coco", "mm_avsd_dialogue",
            "mm_serve", "mm_report", "mm_deepspeed", "mm_caption_metrics", "mm_tensorboard",
            "mm_memory_plan"} <= set(PLUGIN_PACKAGES)


def test_the_core_stays_within_its_line_budget():
    lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in python_files(CORE_SRC))
    assert lines <= CORE_LINE_BUDGET, f"core/src has {lines} lines of Python, over the {CORE_LINE_BUDGET} budget"


def test_the_core_imports_no_plugin():
    offenders = {str(p.relative_to(REPO)): sorted(imported_packages(p) & set(PLUGIN_PACKAGES))
                 for p in python_files(CORE_SRC)}
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("package", sorted(PLUGIN_PACKAGES))
def test_a_plugin_imports_no_other_plugin(package):
    others = set(PLUGIN_PACKAGES) - {package}
    offenders = {str(p.relative_to(REPO)): sorted(imported_packages(p) & others)
                 for p in python_files(PLUGIN_PACKAGES[package])}
    assert {k: v for k, v in offenders.items() if v} == {}, "reach other plugins by name through the registry"


@pytest.mark.parametrize("package", sorted(PLUGIN_PACKAGES))
def test_a_plugin_depends_on_no_other_plugin_distribution(package):
    pyproject = PLUGIN_PACKAGES[package].parents[1] / "pyproject.toml"
    import tomllib

    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    assert [d for d in dependencies if d.startswith("mm-plugin-")] == []


def long_functions(root: Path) -> list[str]:
    found = []
    for path in python_files(root):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > LONGEST_FUNCTION:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    return found


@pytest.mark.parametrize("root", ["core", "plugins"])
def test_no_function_is_longer_than_60_lines(root):
    assert long_functions(REPO / root) == []


def test_mms_own_features_come_and_go_with_their_plugins():
    """Serving, reports and DeepSpeed are plugins: without them loaded, their commands and runner are
    simply not there (as after `pip uninstall`), and the rest keeps working."""
    from ..conftest import mm_env, run_mmrun

    everything = run_mmrun(["--help"], mm_env())
    assert all(f"  {c} " in everything.stdout for c in ("serve", "chat", "predict", "report", "consolidate-deepspeed"))
    core_only = mm_env(MM_PLUGINS="blip2")
    bare = run_mmrun(["--help"], core_only)
    assert bare.returncode == 0
    assert not any(f"  {c} " in bare.stdout for c in ("serve", "chat", "predict", "report", "consolidate-deepspeed"))
    assert "  list " in bare.stdout and "  new-plugin " in bare.stdout
    serve = run_mmrun(["serve", "--config", "x.yaml"], core_only)
    assert serve.returncode == 2 and "unknown command 'serve'" in serve.stderr
    runners = run_mmrun(["list", "runners"], core_only).stdout
    assert "runner_base" in runners and "deepspeed_runner" not in runners
