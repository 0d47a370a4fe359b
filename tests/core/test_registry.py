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


class _Registers:
    """A plugin object registering models with the given values."""

    def __init__(self, values: dict):
        self.values = values

    @hookimpl
    def register_models(self):
        return self.values


def test_an_unknown_registration_key_fails_the_plugin_naming_plugin_name_and_key(toy_plugin):
    values = {"typo_model": {"target": "mm_toy.model:ToyRegressor", "default_modle_type": "tiny"}}
    with plugin_registered(_Registers(values), name="typo-plugin") as info:
        registry = get_registry()
        assert "typo_model" not in registry.names("models")
        assert info.status == "failed"
        assert "plugin 'typo-plugin' registers model 'typo_model' with unknown key 'default_modle_type'" in info.error
        assert "did you mean 'default_model_type'" in info.error
        with pytest.raises(UnknownNameError, match="typo-plugin"):
            registry.get("models", "typo_model")


def test_registration_metadata_is_a_typed_record(toy_plugin):
    values = {"typed_model": {"target": "mm_toy.model:ToyRegressor", "default_model_type": "tiny",
                              "description": "a toy"}}
    with plugin_registered(_Registers(values), name="typed-plugin"):
        registration = get_registry().get("models", "typed_model").registration
    assert (registration.target, registration.default_model_type, registration.description) == (
        "mm_toy.model:ToyRegressor", "tiny", "a toy")
    assert registration.run_keys == {} and registration.help is None


def test_a_renamed_name_still_resolves_with_a_warning_and_is_not_listed(toy_plugin):
    with plugin_registered(_Registers({"toy_regressor_v0": {"renamed_to": "toy_regressor"}}), name="renames"):
        registry = get_registry()
        assert "toy_regressor_v0" not in registry.names("models")
        with pytest.warns(FutureWarning, match="'toy_regressor_v0' is deprecated: plugin 'renames' renamed it "
                                               "to 'toy_regressor'"):
            assert registry.resolve("models", "toy_regressor_v0").__name__ == "ToyRegressor"
        with pytest.warns(FutureWarning):
            assert list(registry.model_types("toy_regressor_v0")) == ["tiny", "wide"]
