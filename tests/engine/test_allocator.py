"""The glibc malloc thresholds a runner sets at start (``run.malloc_tuning``, ``MM_MALLOC_TUNING``),
observed from outside through glibc's own ``mallinfo2`` in fresh processes (malloc settings are
per process, so each case gets its own interpreter)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from ..toy_runs import make_config, toy_env

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt / mallinfo2 are glibc's")

# A 16 MiB block: glibc's defaults serve it with mmap (threshold 128 KiB, raised only after a larger
# mmapped block is freed) and unmap it on free; tuned, it comes from the heap and stays there.
PROBE = textwrap.dedent("""
    import ctypes, json
    FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Mallinfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def probe():
        before = libc.mallinfo2()
        block = libc.malloc(16 << 20)
        during = libc.mallinfo2()
        libc.free(block)
        after = libc.mallinfo2()
        return {"mmapped": during.hblkhd - before.hblkhd >= 16 << 20,
                "heap_kept_after_free": after.keepcost >= 16 << 20}
""")


def run_probe(body: str, **env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "MM_MALLOC_TUNING"} | env
    script = PROBE + textwrap.dedent(body)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_defaults_of_glibc_mmap_and_return_a_large_block():
    seen = run_probe("print(json.dumps(probe()))")
    assert seen == {"mmapped": True, "heap_kept_after_free": False}


def test_tuning_keeps_the_block_in_the_heap_and_is_applied_once():
    seen = run_probe("""
        from mm_core.engine.allocator import tune_malloc
        first, second = tune_malloc(), tune_malloc()
        tuned = probe()
        libc.mallopt(-1, 128 << 10)  # someone resets the trim threshold; a later runner leaves it be
        third = tune_malloc()
        print(json.dumps({"calls": [first, second, third], "tuned": tuned, "after_reset": probe()}))
    """)
    assert seen["calls"] == [True, False, False]
    assert seen["tuned"] == {"mmapped": False, "heap_kept_after_free": True}
    assert seen["after_reset"]["heap_kept_after_free"] is False  # trimmed again: not re-applied


@pytest.mark.parametrize("how", ["config", "env"])
def test_off_switch_leaves_glibc_defaults(how):
    call = "tune_malloc(False)" if how == "config" else "tune_malloc(True)"
    env = {"MM_MALLOC_TUNING": "0"} if how == "env" else {}
    seen = run_probe(f"""
        from mm_core.engine.allocator import tune_malloc
        applied = {call}
        print(json.dumps({{"applied": applied, **probe()}}))
    """, **env)
    assert seen == {"applied": False, "mmapped": True, "heap_kept_after_free": False}


@pytest.mark.slow
@pytest.mark.parametrize("tuning", [True, False])
def test_the_plain_runner_tunes_at_start_unless_the_run_turns_it_off(tmp_path, tuning):
    config = make_config(tmp_path, max_epoch=1, valid_splits=[], malloc_tuning=tuning)
    env = {k: v for k, v in toy_env().items() if k != "MM_MALLOC_TUNING"}
    seen = run_probe(f"""
        from mm_core.config.loader import load_config
        from mm_core.engine.run import run_config
        code = run_config(load_config({str(config)!r}, []))
        print(json.dumps({{"code": code, **probe()}}))
    """, **env)
    assert seen == {"code": 0, "mmapped": not tuning, "heap_kept_after_free": tuning}
