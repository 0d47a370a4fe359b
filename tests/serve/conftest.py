"""Fixtures of the serve tests (helpers in serve_support.py): the servers, checkpoints, images.

Every server is started by a fixture with ``--port 0`` (the server binds, then prints the
port), talked to only on 127.0.0.1, and stopped (SIGINT, then kill) through its own process
handle when the fixture ends.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_support import (
    API_KEYS,
    BATCH_STEP_DELAY_S,
    CHAR_CONFIG,
    MAX_BODY_MB,
    MAX_IMAGE_BYTES,
    MAX_IMAGES,
    MAX_TOKENS,
    QWEN_CONFIG,
    STEP_DELAY_S,
    TESTMODEL_SRC,
    TRAINED_SEED,
    CharReference,
    Launch,
    Server,
    char_model,
    launch_server,
    png_bytes,
    stop_all,
)


@pytest.fixture(scope="session")
def serve_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="session")
def image_root(serve_dir: Path) -> Path:
    """An allow-listed image folder with a red and a blue square; an outside file; a symlink out."""
    root = serve_dir / "images"
    root.mkdir()
    (root / "red.png").write_bytes(png_bytes((220, 30, 30)))
    (root / "blue.png").write_bytes(png_bytes((30, 30, 220)))
    (serve_dir / "outside.png").write_bytes(png_bytes((30, 220, 30)))
    (root / "escape.png").symlink_to(serve_dir / "outside.png")
    return root


@pytest.fixture(scope="session")
def char_plugin() -> Iterator[None]:
    """The char_chat test plugin registered in this process (for reference answers)."""
    sys.path.insert(0, str(TESTMODEL_SRC))
    import mm_serve_testmodel.hooks

    from mm_core.plugins import register_plugin, unregister_plugin

    info = register_plugin(mm_serve_testmodel.hooks, name="mm_serve_testmodel.hooks")
    assert info.ok, info.error
    yield
    unregister_plugin(info.name)
    sys.path.remove(str(TESTMODEL_SRC))


@pytest.fixture(scope="session")
def char_checkpoint(serve_dir: Path, char_plugin: None) -> Path:
    """An mm checkpoint folder (engine layout) of the seed-7 char_chat; serve it as ``<folder>/latest``."""
    from mm_core.engine.checkpoint import CheckpointStore

    model = char_model(TRAINED_SEED)
    store = CheckpointStore(serve_dir / "checkpoints")
    store.write("step_1", model.trainable_state_dict(), {}, CHAR_CONFIG, {"step": 1})
    return store.root


@pytest.fixture(scope="session")
def char_reference(char_plugin: None) -> CharReference:
    from mm_serve_testmodel.model import CharImageProcessor

    return CharReference(char_model(TRAINED_SEED), CharImageProcessor(8))


@pytest.fixture(scope="session")
def char_config(serve_dir: Path) -> Path:
    path = serve_dir / "char_chat.yaml"
    path.write_text(CHAR_CONFIG)
    return path


@pytest.fixture(scope="session")
def qwen_checkpoint(serve_dir: Path) -> dict:
    """A "trained" projection (the tiny type's only trainable tensors), written in the engine's
    checkpoint layout without building the model, so the server can start loading at once."""
    import json
    from importlib import resources

    import torch

    from mm_core.config.loader import load_model_defaults
    from mm_core.engine.checkpoint import CheckpointStore

    defaults = load_model_defaults("minigpt4qwen", "tiny").model
    llm_config = json.loads((resources.files("mm_qwen_llm") / "assets" / "tiny_qwen2" / "config.json").read_text())
    generator = torch.Generator().manual_seed(3)
    shape = (llm_config["hidden_size"], defaults.qformer.hidden_size)
    tensors = {"llm_proj.weight": 0.3 * torch.randn(shape, generator=generator),
               "llm_proj.bias": 0.1 * torch.randn(shape[0], generator=generator)}
    store = CheckpointStore(serve_dir / "qwen_checkpoints")
    return {"path": store.write("step_1", tensors, {}, QWEN_CONFIG, {"step": 1}), "tensors": tensors}


# -- the servers --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def launches(char_config: Path, char_checkpoint: Path, qwen_checkpoint: dict, image_root: Path,
             serve_dir: Path) -> Iterator[dict[str, Launch]]:
    """Every server of the folder, started together so that their start-ups overlap the tests.

    ``char``: the seed-0 char_chat config plus the seed-7 checkpoint, default host and queue,
    limits small enough to reach with small payloads. ``slow``: the same model generating one
    character per STEP_DELAY_S, with room for one waiting request. ``qwen``: the tiny
    MiniGPT4-Qwen with its checkpoint."""
    checkpoint = ["--config", str(char_config), "--checkpoint", str(char_checkpoint / "latest")]
    qwen_config = serve_dir / "minigpt4qwen.yaml"
    qwen_config.write_text(QWEN_CONFIG)
    started = {
        "char": launch_server([
            *checkpoint, "--max-body-mb", str(MAX_BODY_MB), "--max-image-mb", str(MAX_IMAGE_BYTES / 2**20),
            "--max-images", str(MAX_IMAGES), "--image-root", str(image_root), "--max-tokens", str(MAX_TOKENS),
            "--default-max-tokens", "32"], serve_dir / "char_server.log"),
        "slow": launch_server([
            *checkpoint, "--options", f"model.step_delay={STEP_DELAY_S}", "--max-queue", "1", "--max-tokens", "400"],
            serve_dir / "slow_server.log"),
        "qwen": launch_server(["--config", str(qwen_config), "--checkpoint", str(qwen_checkpoint["path"]),
                               "--device", "cpu"], serve_dir / "qwen_server.log"),
    }
    yield started
    stop_all(list(started.values()))


@pytest.fixture(scope="session")
def extra_launches(char_config: Path, char_checkpoint: Path, serve_dir: Path) -> Iterator[dict[str, Launch]]:
    """Servers only some modules use, started when first asked for. ``batch``: char_chat taking
    BATCH_STEP_DELAY_S per step of a batch of up to 8, a batch waiting 300 ms for more requests (so
    that requests sent together are batched however the machine is loaded). ``auth``: char_chat
    needing one of API_KEYS, given once by --api-key and once by MM_API_KEYS (a key file)."""
    checkpoint = ["--config", str(char_config), "--checkpoint", str(char_checkpoint / "latest")]
    key_file = serve_dir / "api_keys.txt"
    key_file.write_text(f"# keys of the auth test server\n{API_KEYS[1]}\n")
    started = {
        "batch": launch_server([*checkpoint, "--options", f"model.step_delay={BATCH_STEP_DELAY_S}", "--max-tokens", "400",
                                "--max-batch-size", "8", "--batch-wait-ms", "300"], serve_dir / "batch_server.log"),
        "auth": launch_server([*checkpoint, "--api-key", API_KEYS[0]], serve_dir / "auth_server.log",
                              env={"MM_API_KEYS": str(key_file)}),
    }
    yield started
    stop_all(list(started.values()))


@pytest.fixture(scope="session")
def batch_server(extra_launches: dict) -> Server:
    return extra_launches["batch"].wait()


@pytest.fixture(scope="session")
def auth_server(extra_launches: dict) -> Server:
    return extra_launches["auth"].wait()


@pytest.fixture(scope="session")
def char_server(launches: dict) -> Server:
    return launches["char"].wait()


@pytest.fixture(scope="session")
def slow_server(launches: dict) -> Server:
    return launches["slow"].wait()
