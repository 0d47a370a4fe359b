"""`make bench`: run every benchmark in one invocation and write results/latest.{md,json}.

Each benchmark module exposes ``run() -> dict`` with a ``benchmark`` name and ``rows`` (a list
of flat dicts); the markdown file renders one table per benchmark, with the machine described.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["startup", "runner_overhead", "padding", "annotations", "scaling", "feature_cache", "predict",
              "serve_batching"]


def machine(load_before: tuple[float, ...]) -> dict:
    """The machine, and its load average (1/5/15 min) before and after the run: on a shared
    machine absolute numbers move with the load; the side-by-side ratios much less."""
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_avg_before": " ".join(f"{v:.1f}" for v in load_before),
            "load_avg_after": " ".join(f"{v:.1f}" for v in os.getloadavg())}


def render(results: list[dict], info: dict) -> str:
    lines = ["# Benchmark results", "", "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), ""]
    for result in results:
        lines += [f"## {result['benchmark']}", ""]
        notes = {k: v for k, v in result.items() if k not in ("benchmark", "rows")}
        if notes:
            lines += [", ".join(f"{k}: {v}" for k, v in notes.items()), ""]
        rows = result.get("rows", [])
        if rows:
            header = list(rows[0])
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(str(row.get(h, "")) for h in header) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def merge_results(path: Path, fresh: list[dict]) -> list[dict]:
    """The results in ``path`` with the benchmarks in ``fresh`` replaced (order of BENCHMARKS)."""
    previous = json.loads(path.read_text())["results"] if path.exists() else []
    by_name = {r["benchmark"]: r for r in previous}
    by_name.update({r["benchmark"]: r for r in fresh})
    order = {name: i for i, name in enumerate(BENCHMARKS)}
    return sorted(by_name.values(), key=lambda r: order.get(r["benchmark"], len(order)))


def main(names: list[str]) -> int:
    sys.path.insert(0, str(HERE))
    load_before = os.getloadavg()
    started = time.perf_counter()
    results = []
    for name in names or BENCHMARKS:
        if not (HERE / f"{name}.py").exists():
            continue
        print(f"running {name} ...", flush=True)
        start = time.perf_counter()
        result = importlib.import_module(name).run()
        result["seconds"] = round(time.perf_counter() - start, 1)
        results.append(result)
    info = machine(load_before)
    info["total_s"] = round(time.perf_counter() - started, 1)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    if names:  # a partial run updates its benchmarks and keeps the others' last results
        results = merge_results(out / "latest.json", results)
    (out / "latest.json").write_text(json.dumps({"machine": info, "results": results}, indent=1))
    (out / "latest.md").write_text(render(results, info))
    print((out / "latest.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
