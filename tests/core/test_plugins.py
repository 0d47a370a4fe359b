"""Plugin discovery through real entry points: installed distributions, broken plugins,
misspelled hooks, incompatible API versions, the autoload switches and in-code registration."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mm_core.plugins import PluginHost, plugin_registered

from ..conftest import TOY_PROJECT, mm_env, run_mmrun

pytestmark = pytest.mark.timeout(300)
#: the tests that use ``site`` pip-install plugin distributions: `make test-fast` skips them
slow = pytest.mark.slow


def pip_install_target(project: Path, target: Path) -> None:
    """Build and install a plugin project as a real distribution into ``target``."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(project)],
        check=True, capture_output=True, text=True,
    )


def write_project(root: Path, dist: str, package: str, hooks_source: str, version: str = "1.2.3") -> Path:
    """A minimal plugin project with one hook module."""
    (root / "src" / package).mkdir(parents=True)
    (root / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{dist}"
        version = "{version}"
        [project.entry-points."mm.plugins"]
        {package} = "{package}.hooks"
        [tool.setuptools.packages.find]
        where = ["src"]
    """))
    (root / "src" / package / "__init__.py").write_text("")
    (root / "src" / package / "hooks.py").write_text(textwrap.dedent(hooks_source))
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A directory holding the toy plugin and a broken plugin, pip-installed as distributions."""
    work = tmp_path_factory.mktemp("plugins")
    target = work / "site"
    toy = shutil.copytree(TOY_PROJECT, work / "toy", ignore=shutil.ignore_patterns("*.egg-info", "build"))
    pip_install_target(toy, target)
    broken = write_project(work / "broken", "mm-plugin-broken", "mm_broken", """
        raise ImportError("libfoo.so: cannot open shared object file")
    """, version="0.9.1")
    pip_install_target(broken, target)
    typo = write_project(work / "typo", "mm-plugin-typo", "mm_typo", """
        from mm_core.hookspecs import hookimpl

        @hookimpl
        def register_modles():
            return {"typo_model": "mm_typo.model:M"}
    """, version="0.0.2")
    pip_install_target(typo, target)
    future = write_project(work / "future", "mm-plugin-future", "mm_future", """
        from mm_core.hookspecs import hookimpl

        MM_API_VERSION = "3.1"

        @hookimpl
        def register_models():
            return {"future_model": "mm_future.model:M"}
    """, version="3.0.0")
    pip_install_target(future, target)
    return target


@slow
def test_installed_plugin_is_discovered_listed_and_builds_a_model(site, tmp_path):
    env = mm_env([site])
    listed = run_mmrun(["list", "models"], env)
    assert listed.returncode == 0, listed.stderr
    assert "toy_regressor  [tiny, wide]" in listed.stdout
    plugins = run_mmrun(["plugins"], env)
    assert "mm-plugin-toy 0.3.0  [ok]" in plugins.stdout
    assert "models: toy_regressor" in plugins.stdout
    code = ("from mm_core.api import load_model; m = load_model('toy_regressor', 'wide'); "
            "print(type(m).__name__, m.head.in_features)")
    built = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert built.stdout.split() == ["ToyRegressor", "32"], built.stderr


@slow
def test_broken_plugin_is_reported_and_others_keep_working(site):
    env = mm_env([site])
    plugins = run_mmrun(["plugins"], env)
    assert plugins.returncode == 0
    assert "mm-plugin-broken 0.9.1  [failed]" in plugins.stdout
    assert "ImportError: libfoo.so: cannot open shared object file" in plugins.stdout
    listed = run_mmrun(["list", "models"], env)
    assert "toy_regressor" in listed.stdout
    assert "plugin 'mm-plugin-broken 0.9.1' failed to load" in listed.stdout


@slow
def test_installed_plugins_with_a_typo_or_another_api_are_reported(site):
    plugins = run_mmrun(["plugins", "-v"], mm_env([site]))
    assert plugins.returncode == 0
    assert "mm-plugin-typo 0.0.2  [failed]" in plugins.stdout
    assert "register_modles" in plugins.stdout and "did you mean 'register_models'" in plugins.stdout
    assert "mm-plugin-future 3.0.0  [incompatible]" in plugins.stdout
    assert "mm hook API 3.1, this mm-core provides 2.0" in plugins.stdout
    listed = run_mmrun(["list", "models"], mm_env([site]))
    assert "typo_model" not in listed.stdout and "future_model" not in listed.stdout
    assert "toy_regressor" in listed.stdout


@slow
def test_a_name_from_a_broken_plugin_fails_with_that_plugins_error(site, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model:\n  arch: broken_model\nrun:\n  task: base\n")
    result = run_mmrun(["config", "--config", str(config)], mm_env([site]))
    assert result.returncode == 2
    assert "unknown model 'broken_model'" in result.stderr
    assert "mm-plugin-broken 0.9.1" in result.stderr and "libfoo.so" in result.stderr
    assert "Traceback" not in result.stderr


@slow
def test_listing_plugins_and_config_do_not_import_torch(site, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: {arch: toy_regressor, model_type: wide}\nrun: {task: base, max_epoch: 2}\n")
    code = ("import sys; from mm_core.cli.main import main; main(['list']); main(['plugins', '-v']); "
            f"main(['--help']); assert main(['config', '--config', r'{config}']) == 0; "
            "print('TORCH', 'torch' in sys.modules, 'numpy' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], env=mm_env([site]), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "TORCH False False" in result.stdout


@slow
def test_autoload_can_be_disabled_and_limited(site):
    off = run_mmrun(["plugins"], mm_env([site], MM_DISABLE_PLUGIN_AUTOLOAD="1"))
    assert "mm-plugin-toy" not in off.stdout and "mm_core.builtin" in off.stdout
    only = run_mmrun(["plugins"], mm_env([site], MM_PLUGINS="toy"))
    assert "mm-plugin-toy" in only.stdout and "mm-plugin-broken" not in only.stdout
    by_dist = run_mmrun(["list", "models"], mm_env([site], MM_PLUGINS="mm-plugin-toy"))
    assert "toy_regressor" in by_dist.stdout


class _Misspelled:
    from mm_core.hookspecs import hookimpl

    @hookimpl
    def regster_models(self):
        return {"x": "y:Z"}


class _FutureApi:
    MM_API_VERSION = "3.0"

    from mm_core.hookspecs import hookimpl

    @hookimpl
    def register_models(self):
        return {"future_model": "future.models:M"}


def test_misspelled_hook_implementation_is_reported_not_registered():
    host = PluginHost()
    info = host.register(_Misspelled(), name="typo")
    assert info.status == "failed"
    assert "regster_models" in info.error and "did you mean 'register_models'" in info.error
    assert host.pm.get_plugin("typo") is None


def test_incompatible_api_version_is_reported_and_not_loaded():
    host = PluginHost()
    info = host.register(_FutureApi(), name="future")
    assert info.status == "incompatible"
    assert "3.0" in info.error and "2.0" in info.error
    assert host.pm.get_plugin("future") is None


def test_plugins_registered_in_code_can_be_removed(toy_plugin):
    from mm_core.registry import get_registry

    class Extra:
        from mm_core.hookspecs import hookimpl

        @hookimpl
        def register_processors(self):
            return {"extra_proc": "mm_toy.data:ScaleProcessor"}

    with plugin_registered(Extra(), name="extra"):
        assert "extra_proc" in get_registry().names("processors")
    assert "extra_proc" not in get_registry().names("processors")


@slow
def test_plugin_module_named_in_the_environment_and_installed_loads_once(site):
    result = run_mmrun(["plugins"], mm_env([site], MM_PLUGIN_MODULES="mm_toy.hooks"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("models: toy_regressor") == 1


def test_plugin_registered_uses_a_plugin_that_is_already_loaded_as_it_is():
    import mm_core.builtin
    from mm_core.plugins import get_plugin_host, plugin_registered

    with plugin_registered(mm_core.builtin, name="again") as info:
        assert info.name == "mm_core.builtin" and info.ok
    assert get_plugin_host().pm.get_name(mm_core.builtin) == "mm_core.builtin"  # still registered
