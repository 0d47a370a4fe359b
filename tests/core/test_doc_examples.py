"""The code examples of docs/*.md and of mm_core's docstrings cannot drift from the API: every
Python example compiles and its imports resolve, every registration it returns is valid for its
kind, every YAML example parses into known top-level blocks, and ``>>>`` examples run (doctest)."""

from __future__ import annotations

import ast
import doctest
import importlib
import importlib.util
import pkgutil
import re
import textwrap
from pathlib import Path

import pytest
import yaml

import mm_core
from mm_core.config.schema import TOP_LEVEL_KEYS
from mm_core.hookspecs import REGISTRATION_HOOKS, hookimpl
from mm_core.plugins import PluginInfo
from mm_core.registry import make_registration

from ..conftest import REPO

DOCS = sorted((REPO / "docs").glob("*.md"))
MODULES = sorted(m.name for m in pkgutil.walk_packages(mm_core.__path__, "mm_core."))
HOOK_KINDS = {hook: kind for kind, hook in REGISTRATION_HOOKS.items()}


def doc_blocks(language: str) -> list[tuple[str, str]]:
    """(``doc:line``, code) of every fenced block of ``language`` in docs/*.md."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in re.finditer(rf"```{language}\n(.*?)```", text, flags=re.S):
            found.append((f"{doc.name}:{text[:match.start()].count(chr(10)) + 1}", match.group(1)))
    return found


def docstring_examples() -> list[tuple[str, str]]:
    """(``module.object``, code) of the literal blocks (``::``) in mm_core's docstrings."""
    found = []
    for name in MODULES:
        tree = ast.parse(Path(importlib.util.find_spec(name).origin).read_text(encoding="utf-8"))
        for node in [tree, *ast.walk(tree)]:
            if not isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)):
                continue
            doc = ast.get_docstring(node) or ""
            for block in re.findall(r"::\n\n((?:(?:    .*)?\n)+)", doc + "\n"):
                if "def " in block or "import " in block:
                    found.append((f"{name}.{getattr(node, 'name', '')}", textwrap.dedent(block)))
    return found


PYTHON = doc_blocks("python") + docstring_examples()


def check_imports(code: str, where: str) -> None:
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mm_core"):
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)
                       and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
            assert not missing, f"{where}: {node.module} has no {missing}"


def check_registrations(code: str, where: str) -> int:
    """Run the registration hooks the example defines; each value must be a valid registration."""
    namespace = {"hookimpl": hookimpl}
    exec(compile(code, where, "exec"), namespace)
    checked = 0
    for hook, kind in HOOK_KINDS.items():
        if callable(namespace.get(hook)):
            for name, value in namespace[hook]().items():
                make_registration(kind, name, value, PluginInfo("doc-example"))
                checked += 1
    return checked


def test_there_are_examples_to_check():
    assert len(PYTHON) > 20 and len(doc_blocks("yaml")) >= 5
    assert any(where.startswith("mm_core.hookspecs") for where, _ in PYTHON)


@pytest.mark.parametrize("where,code", PYTHON, ids=[w for w, _ in PYTHON])
def test_python_example_compiles_and_its_imports_exist(where, code):
    compile(code, where, "exec")
    check_imports(code, where)
    if "@hookimpl" in code and set(re.findall(r"^def (register_\w+)\(", code, flags=re.M)) & set(HOOK_KINDS):
        assert check_registrations(code, where) > 0


@pytest.mark.parametrize("where,code", doc_blocks("yaml"), ids=[w for w, _ in doc_blocks("yaml")])
def test_yaml_example_parses_into_known_blocks(where, code):
    data = yaml.safe_load(code)  # a config, or a fragment of another file (a list item, ...)
    assert data is not None, where
    if isinstance(data, dict) and set(data) & {"model", "datasets", "run"}:  # a run config
        assert set(data) <= set(TOP_LEVEL_KEYS), f"{where}: unknown top-level blocks {set(data) - set(TOP_LEVEL_KEYS)}"


@pytest.mark.parametrize("name", MODULES)
def test_doctests_of_public_modules_pass(name):
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert failures == 0


def test_a_drifted_example_fails():
    """The checks can fail: an unknown registration key and a missing import are caught."""
    with pytest.raises(Exception, match="unknown key 'model_typs'"):
        check_registrations("@hookimpl\ndef register_models():\n    return {'x': {'target': 'a:B', 'model_typs': {}}}",
                            "drift")
    with pytest.raises(AssertionError, match="has no"):
        check_imports("from mm_core.testing import check_everything", "drift")
