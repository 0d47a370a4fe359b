"""Start-up: wall time of `mmrun --help`, `mmrun list`, `mmrun plugins` vs `python -c "import torch"`.

Both sides run in the same invocation, alternating, several repetitions; reports medians, the
ratio to the torch import and how many modules each command imports.
Target (issue 10): each command <= 0.35 s median and <= 1/5 of the torch import.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
COMMANDS = {
    "mmrun --help": [str(BIN / "mmrun"), "--help"],
    "mmrun list": [str(BIN / "mmrun"), "list"],
    "mmrun plugins": [str(BIN / "mmrun"), "plugins"],
    "import torch": [sys.executable, "-c", "import torch"],
}
COUNT_MODULES = (
    "import sys; from mm_core.cli.main import main; import io, contextlib\n"
    "with contextlib.redirect_stdout(io.StringIO()): main({args})\n"
    "print(len(sys.modules), 'torch' in sys.modules)"
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    return env


def time_once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=_env())
    return time.perf_counter() - start


def modules_imported(args: list[str]) -> tuple[int, bool]:
    out = subprocess.run([sys.executable, "-c", COUNT_MODULES.format(args=args)], capture_output=True,
                         text=True, check=True, env=_env()).stdout.split()
    return int(out[0]), out[1] == "True"


def run(repetitions: int = 7) -> dict:
    for argv in COMMANDS.values():  # warm the file cache once
        time_once(argv)
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(repetitions):
        for name, argv in COMMANDS.items():  # alternate the sides
            samples[name].append(time_once(argv))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    torch_time = medians["import torch"]
    rows = []
    for name in ("mmrun --help", "mmrun list", "mmrun plugins"):
        args = name.split()[1:]
        count, torch_loaded = modules_imported(args)
        rows.append({
            "command": name,
            "median_s": round(medians[name], 4),
            "ratio_to_torch_import": round(medians[name] / torch_time, 3),
            "modules": count,
            "imports_torch": torch_loaded,
            "target_met": medians[name] <= 0.35 and medians[name] <= torch_time / 5,
        })
    return {"benchmark": "startup", "repetitions": repetitions, "import_torch_median_s": round(torch_time, 4),
            "rows": rows}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
