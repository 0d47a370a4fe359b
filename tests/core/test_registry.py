"""The registry: names from hooks, lazy targets, duplicates, unknown names, base-class checks."""

from __future__ import annotations

import pytest

from mm_core.errors import DuplicateNameError, PluginError, UnknownNameError
from mm_core.hookspecs import hookimpl
from mm_core.plugins import plugin_registered
from mm_core.registry import get_registry


class _Claims:
    """A plugin object claiming a model name."""

    def __init__(self, name: str, target: str):
        self.name, self.target = name, target

    @hookimpl
    def register_models(self):
        return {self.name: self.target}


def test_toy_names_are_registered_without_importing_targets(toy_plugin):
    import sys

    sys.modules.pop("mm_toy.model", None)
    registry = get_registry()
    assert "toy_regressor" in registry.names("models")
    assert registry.names("models", "toy_*") == ["toy_regressor"]
    assert registry.names("models", "blip*") == [n for n in registry.names("models") if n.startswith("blip")]
    assert list(registry.model_types("toy_regressor")) == ["tiny", "wide"]
    assert "mm_toy.model" not in sys.modules
    model_cls = registry.resolve("models", "toy_regressor")
    assert model_cls.__name__ == "ToyRegressor"
    entry = registry.get("models", "toy_regressor")
    assert entry.plugin.name == "mm_toy.hooks"


def test_two_plugins_claiming_one_name_is_an_error_naming_both(toy_plugin):
    with plugin_registered(_Claims("toy_regressor", "mm_toy.model:ToyRegressor"), name="copycat"):
        with pytest.raises(DuplicateNameError) as err:
            get_registry().get("models", "toy_regressor")
    assert "mm_toy.hooks" in str(err.value) and "copycat" in str(err.value)
    assert get_registry().get("models", "toy_regressor")  # fine again once the copy is gone


def test_unknown_name_lists_close_matches_and_providers(toy_plugin):
    with pytest.raises(UnknownNameError) as err:
        get_registry().get("models", "toy_regresor")
    message = str(err.value)
    assert "did you mean 'toy_regressor'" in message
    assert "mm_toy.hooks" in message  # the plugins providing models


def test_unknown_kind_suggests_the_kind():
    with pytest.raises(UnknownNameError, match="did you mean 'models'"):
        get_registry().names("modles")


def test_target_that_is_not_a_subclass_of_the_base_is_a_clear_error():
    with plugin_registered(_Claims("not_a_model", "collections:OrderedDict"), name="wrongbase"):
        with pytest.raises(PluginError, match="not a subclass of .*BaseModel"):
            get_registry().resolve("models", "not_a_model")


def test_target_that_fails_to_import_names_the_plugin():
    with plugin_registered(_Claims("ghost", "mm_no_such_module.models:Ghost"), name="ghostly"):
        with pytest.raises(PluginError, match="ghost.*ghostly.*ModuleNotFoundError"):
            get_registry().resolve("models", "ghost")


def test_builtin_runners_and_schedulers_are_registered_like_any_plugin():
    registry = get_registry()
    assert {"runner_base", "runner_iter"} <= set(registry.names("runners"))
    assert {"linear_warmup_cosine_lr", "linear_warmup_step_lr", "constant_lr"} <= set(
        registry.names("lr_schedulers"))
    assert registry.get("runners", "runner_base").plugin.name == "mm_core.builtin"
