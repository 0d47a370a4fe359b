"""Fixtures of the blip tests: the LAVIS reference fixture and tiny models built from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def lavis_state() -> dict[str, torch.Tensor]:
    """The tiny LAVIS BLIP checkpoint (every part, LAVIS' key names), in fp32 as LAVIS read it."""
    from safetensors.torch import load_file

    return {k: v.float() if v.is_floating_point() else v for k, v in
            load_file(str(FIXTURES / "blip_lavis_state_dict.safetensors")).items()}


@pytest.fixture(scope="session")
def lavis_outputs() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURES / "blip_lavis_outputs.safetensors"))


@pytest.fixture(scope="session")
def lavis_texts() -> dict:
    return json.loads((FIXTURES / "blip_lavis_texts.json").read_text())


@pytest.fixture(scope="session")
def lavis_file(lavis_state, tmp_path_factory) -> Path:
    """The state dict in the layout LAVIS ships its files: ``torch.save({"model": state_dict})``."""
    path = tmp_path_factory.mktemp("lavis") / "model_base_tiny.pth"
    torch.save({"model": lavis_state}, path)
    return path


def build_tiny(arch: str, **options):
    """``arch``'s tiny type with ``options`` over its model block (weights read as the config says)."""
    from mm_core.config.loader import load_model_defaults
    from mm_core.registry import get_registry

    cfg = OmegaConf.merge(load_model_defaults(arch, "tiny").model, OmegaConf.create(options))
    return get_registry().resolve("models", arch).from_config(cfg).eval()


@pytest.fixture(scope="session")
def from_lavis(lavis_file):
    """``from_lavis(arch)``: the tiny type of ``arch`` with the LAVIS file as its ``finetuned`` weights."""
    def build(arch: str):
        return build_tiny(arch, load_finetuned=True, finetuned=str(lavis_file))

    return build
