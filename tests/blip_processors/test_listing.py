"""The processors are this plugin's names, listed without torch; without the plugin, the BLIP and BLIP-2
models' ``needs`` turn an unknown processor into the registry's "pip install" hint."""

from __future__ import annotations

import os
import subprocess
import sys

NAMES = ["blip2_image_eval", "blip2_image_train", "blip_caption", "blip_image_eval", "blip_image_train",
         "blip_question"]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", **env))


def test_listing_names_their_plugin_and_imports_no_torch():
    result = run_python(
        "import sys\n"
        "from mm_core.registry import get_registry\n"
        "r = get_registry()\n"
        f"print(sorted({{r.get('processors', n).plugin.dist for n in {NAMES!r}}}))\n"
        "print('torch' in sys.modules, 'torchvision' in sys.modules, 'PIL' in sys.modules)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["['mm-plugin-blip-processors']", "False False False"]


def test_without_the_plugin_a_blip2_config_gets_the_install_hint():
    result = run_python(
        "from mm_core.registry import get_registry\n"
        "from mm_core.errors import UnknownNameError\n"
        "try:\n"
        "    get_registry().get('processors', 'blip_image_train')\n"
        "except UnknownNameError as exc:\n"
        "    print(exc, '|', exc.hint)\n", MM_PLUGINS="blip2,qwen_llm")
    assert result.returncode == 0, result.stderr
    assert "unknown processor 'blip_image_train'" in result.stdout
    assert "pip install mm-plugin-blip-processors" in result.stdout
